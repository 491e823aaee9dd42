"""``ai_flow.runtime.job_runtime_env``: a job execution's folders and identity, as aiflowd's."""

from aiflowd.plugin_interface import JobRuntimeEnv

__all__ = ["JobRuntimeEnv"]
