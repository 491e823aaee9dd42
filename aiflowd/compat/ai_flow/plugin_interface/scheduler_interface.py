"""``ai_flow.plugin_interface.scheduler_interface``: which run a job execution is, and what
``ai_flow.api.workflow_operation`` answers about workflows and their executions.

The classes are aiflowd's own (``aiflowd.plugin_interface``): a job's
``job_execution_info.workflow_execution`` is a ``WorkflowExecutionInfo`` of this module.
"""

from aiflowd.plugin_interface import JobExecutionInfo, WorkflowExecutionInfo, WorkflowInfo

__all__ = ["JobExecutionInfo", "WorkflowExecutionInfo", "WorkflowInfo"]
