"""``ai_flow.plugin_interface.job_plugin_interface``: the job plugin contract, as aiflowd's.

aiflowd's ``JobController`` methods are async; a controller that keeps AIFlow's blocking
methods still works (aiflowd runs them in a worker thread).
"""

from aiflowd.model import Status
from aiflowd.plugin_interface import (
    Job,
    JobController,
    JobExecutionInfo,
    JobGenerator,
    JobHandle,
    JobPluginFactory,
    JobRuntimeEnv,
    register_job_plugin_factory,
)

__all__ = [
    "Job",
    "JobController",
    "JobExecutionInfo",
    "JobGenerator",
    "JobHandle",
    "JobPluginFactory",
    "JobRuntimeEnv",
    "Status",
    "register_job_plugin_factory",
]
