"""``ai_flow.workflow.job``: ``Job``, what a generator makes and a controller runs, as aiflowd's."""

from aiflowd.plugin_interface import Job

__all__ = ["Job"]
