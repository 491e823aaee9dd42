"""``import ai_flow as af`` for AIFlow 0.3 definitions and jobs, served by aiflowd.

The names a workflow definition uses map onto aiflowd's (docs/aiflow.md has the table).
Names of AIFlow that aiflowd does not offer yet raise NotImplementedError when used,
saying so, rather than an AttributeError that looks like a typo.
"""

from __future__ import annotations

from typing import Any

from ai_flow.api import workflow_operation
from ai_flow.api.ai_flow_context import init_ai_flow_context
from ai_flow.api.ops import action_on_event, action_on_events, action_on_job_status, transform, user_define_operation
from ai_flow.client.ai_flow_client import get_ai_flow_client
from ai_flow.client.notification_client import get_notification_client
from ai_flow.context.job_context import current_job_name, job_config
from ai_flow.context.workflow_config_loader import current_workflow_config
from ai_flow.workflow.control_edge import (
    EventCondition,
    EventLife,
    JobAction,
    MeetAllEventCondition,
    MeetAnyEventCondition,
    ValueCondition,
    WorkflowAction,
)
from ai_flow.workflow.job_config import JobConfig
from ai_flow.workflow.status import Status
from ai_flow.workflow.workflow_config import WorkflowConfig

__all__ = [
    "EventCondition",
    "EventLife",
    "JobAction",
    "JobConfig",
    "MeetAllEventCondition",
    "MeetAnyEventCondition",
    "Status",
    "ValueCondition",
    "WorkflowAction",
    "WorkflowConfig",
    "action_on_event",
    "action_on_events",
    "action_on_job_status",
    "current_job_name",
    "current_workflow_config",
    "get_ai_flow_client",
    "get_notification_client",
    "init_ai_flow_context",
    "job_config",
    "transform",
    "user_define_operation",
    "workflow_operation",
]

#: AIFlow 0.3 names aiflowd does not offer yet, and what to use meanwhile.
NOT_YET = {
    "current_graph": "",
    "current_project_config": "",
    "current_project_context": "",
    "init_notebook_context": "",
    "init_ai_flow_client": "",
    "set_context_extractor": "",
    "action_on_model_version_event": "AIFlow's metadata services are not part of aiflowd",
    "read_dataset": "AIFlow's metadata services are not part of aiflowd; use user_define_operation",
    "write_dataset": "AIFlow's metadata services are not part of aiflowd; use user_define_operation",
    "train": "AIFlow's metadata services are not part of aiflowd; use user_define_operation",
    "predict": "AIFlow's metadata services are not part of aiflowd; use user_define_operation",
    "evaluate": "AIFlow's metadata services are not part of aiflowd; use user_define_operation",
    "dataset_validate": "AIFlow's metadata services are not part of aiflowd; use user_define_operation",
    "model_validate": "AIFlow's metadata services are not part of aiflowd; use user_define_operation",
    "push_model": "AIFlow's metadata services are not part of aiflowd; use user_define_operation",
    "AIFlowServerRunner": "aiflowd is the server: run 'aiflowd' or 'aiflowd run-once PATH'",
}


def __getattr__(name: str) -> Any:
    if name in NOT_YET:
        hint = NOT_YET[name]
        hint = f": {hint}" if hint else ""
        raise NotImplementedError(f"ai_flow.{name} is not available in aiflowd yet{hint} (see docs/aiflow.md)")
    raise AttributeError(f"module 'ai_flow' has no attribute {name!r}")
