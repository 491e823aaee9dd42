"""``ai_flow.workflow.status``: AIFlow's Status is aiflowd's, with the same five values."""

from aiflowd.model import Status

__all__ = ["Status"]
