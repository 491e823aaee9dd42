"""aiflowd: runs AIFlow-style workflows as a daemon; this module is its public API.

Names load on first use, so that importing aiflowd (in a workflow definition, a job
process or ``aiflowctl``) costs only what is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # workflow authors
    "job_config": "aiflowd.workflows.dsl",
    "user_define_operation": "aiflowd.workflows.dsl",
    "action_on_job_status": "aiflowd.workflows.dsl",
    "action_on_event": "aiflowd.workflows.dsl",
    "workflow_scheduling": "aiflowd.workflows.dsl",
    "JobAction": "aiflowd.model",
    "Status": "aiflowd.model",
    "BashProcessor": "aiflowd.plugins.bash",
    "PythonProcessor": "aiflowd.plugins.python",
    "ExecutionContext": "aiflowd.plugins.python",
    "FlinkJavaProcessor": "aiflowd.plugins.flink",
    "FlinkPythonProcessor": "aiflowd.plugins.flink",
    "FlinkSqlProcessor": "aiflowd.plugins.flink",
    # plugin authors
    "Job": "aiflowd.plugin_interface",
    "JobGenerator": "aiflowd.plugin_interface",
    "JobController": "aiflowd.plugin_interface",
    "JobHandle": "aiflowd.plugin_interface",
    "JobRuntimeEnv": "aiflowd.plugin_interface",
    "JobExecutionInfo": "aiflowd.plugin_interface",
    "JobPluginFactory": "aiflowd.plugin_interface",
    "JobGenerationError": "aiflowd.plugin_interface",
    "register_job_plugin_factory": "aiflowd.plugin_interface",
    "AISubGraph": "aiflowd.model",
    "AINode": "aiflowd.model",
    "DataEdge": "aiflowd.model",
    "JobConfig": "aiflowd.model",
}

__all__ = [
    "AINode",
    "AISubGraph",
    "BashProcessor",
    "DataEdge",
    "ExecutionContext",
    "FlinkJavaProcessor",
    "FlinkPythonProcessor",
    "FlinkSqlProcessor",
    "Job",
    "JobAction",
    "JobConfig",
    "JobController",
    "JobExecutionInfo",
    "JobGenerationError",
    "JobGenerator",
    "JobHandle",
    "JobPluginFactory",
    "JobRuntimeEnv",
    "PythonProcessor",
    "Status",
    "action_on_event",
    "action_on_job_status",
    "job_config",
    "register_job_plugin_factory",
    "user_define_operation",
    "workflow_scheduling",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiflowd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from aiflowd.model import AINode, AISubGraph, DataEdge, JobAction, JobConfig, Status
    from aiflowd.plugin_interface import (
        Job,
        JobController,
        JobExecutionInfo,
        JobGenerationError,
        JobGenerator,
        JobHandle,
        JobPluginFactory,
        JobRuntimeEnv,
        register_job_plugin_factory,
    )
    from aiflowd.plugins.bash import BashProcessor
    from aiflowd.plugins.flink import FlinkJavaProcessor, FlinkPythonProcessor, FlinkSqlProcessor
    from aiflowd.plugins.python import ExecutionContext, PythonProcessor
    from aiflowd.workflows.dsl import action_on_event, action_on_job_status, job_config, user_define_operation, workflow_scheduling
