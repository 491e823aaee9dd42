"""``ai_flow_plugins.job_plugins.python``: AIFlow's PythonProcessor and ExecutionContext are aiflowd's.

``execution_context.config`` is the node's config (the keyword arguments of
``user_define_operation`` with ``name`` and ``node_type``), as in AIFlow.
"""

from aiflowd.plugins.python import ExecutionContext, PythonProcessor

__all__ = ["ExecutionContext", "PythonProcessor"]
