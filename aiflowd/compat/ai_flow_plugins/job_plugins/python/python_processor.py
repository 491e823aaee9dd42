"""``ai_flow_plugins.job_plugins.python.python_processor``: where AIFlow code imports these two from."""

from aiflowd.plugins.python import ExecutionContext, PythonProcessor

__all__ = ["ExecutionContext", "PythonProcessor"]
