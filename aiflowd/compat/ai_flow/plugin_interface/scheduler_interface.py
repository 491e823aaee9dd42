"""``ai_flow.plugin_interface.scheduler_interface``: which run a job execution is, and what
``ai_flow.api.workflow_operation`` answers about workflows and their executions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiflowd.model import Status
from aiflowd.plugin_interface import JobExecutionInfo

__all__ = ["JobExecutionInfo", "WorkflowExecutionInfo", "WorkflowInfo"]


@dataclass
class WorkflowInfo:
    """A workflow the daemon serves; ``namespace`` is AIFlow's project name (aiflowd has none: 'default')."""

    workflow_name: str
    namespace: str = "default"
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkflowExecutionInfo:
    """One workflow execution; ids are strings and dates seconds since the epoch."""

    workflow_execution_id: str
    workflow_info: WorkflowInfo | None = None
    status: Status = Status.INIT
    properties: dict[str, Any] = field(default_factory=dict)
    start_date: float | None = None
    end_date: float | None = None
    context: str | None = None
