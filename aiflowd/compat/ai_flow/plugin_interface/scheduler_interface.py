"""``ai_flow.plugin_interface.scheduler_interface``: which run a job execution is."""

from aiflowd.plugin_interface import JobExecutionInfo

__all__ = ["JobExecutionInfo"]
