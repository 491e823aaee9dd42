"""``ai_flow.api.workflow_operation`` (``af.workflow_operation``): control executions from Python.

AIFlow's calls with AIFlow's argument names and result classes, each a request to the
daemon through ``aiflowd.client`` (the socket found as aiflowctl finds it; inside a job,
the daemon that runs it). What differs, and why:

- Execution ids are aiflowd's (unique across workflows), as strings.
- A job is started, stopped or restarted in its workflow's open execution (the one
  named, when it is open); starting a job with no open execution opens one for it.
- ``context`` (AIFlow's context extractors) is accepted and not used.
- ``submit_workflow`` / ``delete_workflow`` have no daemon call: a workflow is served
  by being in the watched folder.
- The event triggers (``start_new_workflow_execution_on_events`` and
  ``stop_workflow_execution_on_events``) belong in the workflow definition (or its YAML):
  called while the daemon compiles the definition they set the triggers; called
  elsewhere they raise, as aiflowd's triggers are part of a workflow's version.
"""

from __future__ import annotations

from typing import Any

from ai_flow.api.ops import trigger_conditions
from ai_flow.plugin_interface.scheduler_interface import JobExecutionInfo, WorkflowExecutionInfo, WorkflowInfo
from ai_flow.workflow.control_edge import EventCondition

from aiflowd.client import Client, ControlError
from aiflowd.model import Status
from aiflowd.workflows import dsl

__all__ = [
    "get_job_execution",
    "get_job_executions",
    "get_workflow",
    "get_workflow_execution",
    "list_job_executions",
    "list_workflow_executions",
    "list_workflows",
    "pause_workflow_scheduling",
    "restart_job_execution",
    "resume_scheduling_job",
    "resume_workflow_scheduling",
    "start_job_execution",
    "start_new_workflow_execution",
    "start_new_workflow_execution_on_events",
    "stop_all_workflow_executions",
    "stop_job_execution",
    "stop_scheduling_job",
    "stop_workflow_execution",
    "stop_workflow_execution_on_events",
]

_client: Client | None = None


def client() -> Client:
    """The client the calls use, made on first use (replace it with ``set_client``)."""
    global _client
    if _client is None:
        _client = Client()
    return _client


def set_client(new: Client | None) -> None:
    """Use ``new`` for the calls (a notebook reaching a daemon by an explicit socket)."""
    global _client
    _client = new


def _current_workflow(workflow_name: str | None) -> str:
    if workflow_name:
        return workflow_name
    from ai_flow.context.workflow_config_loader import current_workflow_config

    return str(current_workflow_config().workflow_name)


def _execution_info(row: dict[str, Any]) -> WorkflowExecutionInfo:
    return WorkflowExecutionInfo(
        workflow_execution_id=str(row["id"]),
        workflow_info=WorkflowInfo(row["workflow"]),
        status=Status(row["status"]),
        properties={"trigger": row.get("trigger"), "version": row.get("version")},
        start_date=row.get("started_at"),
        end_date=row.get("ended_at"),
    )


def _job_info(row: dict[str, Any]) -> JobExecutionInfo:
    return JobExecutionInfo(
        workflow_name=row["workflow"],
        job_name=row["job"],
        workflow_execution_id=str(row["execution_id"]),
        job_execution_id=str(row["job_execution_id"]),
        attempt=int(row["attempt"]),
        status=Status(row["status"]),
        start_date=row.get("started_at"),
        end_date=row.get("ended_at"),
    )


# -- workflows ---------------------------------------------------------------------------


def list_workflows(page_size: int | None = None, offset: int = 0) -> list[WorkflowInfo]:
    """The workflows the daemon serves, by name (a page of them with ``page_size``/``offset``)."""
    rows = client().list_workflows()
    rows = rows[offset : offset + page_size] if page_size is not None else rows[offset:]
    return [WorkflowInfo(row["workflow"]) for row in rows]


def get_workflow(workflow_name: str | None = None) -> WorkflowInfo | None:
    """The workflow (the current one by default), or None when the daemon does not serve it."""
    name = _current_workflow(workflow_name)
    try:
        shown = client().show_workflow(name)
    except ControlError:
        return None
    return WorkflowInfo(name, properties={"status": shown["status"], "paused": shown["paused"], "version": shown["version"]})


def pause_workflow_scheduling(workflow_name: str | None = None) -> WorkflowInfo:
    """Start no new execution and fire no event rule of the workflow until resumed."""
    name = _current_workflow(workflow_name)
    client().pause_scheduling(name)
    return WorkflowInfo(name, properties={"paused": True})


def resume_workflow_scheduling(workflow_name: str | None = None) -> WorkflowInfo:
    name = _current_workflow(workflow_name)
    client().resume_scheduling(name)
    return WorkflowInfo(name, properties={"paused": False})


def start_new_workflow_execution_on_events(workflow_name: str, event_conditions: list[EventCondition]) -> None:
    """Start an execution whenever one of ``event_conditions`` holds (in a definition only; see above)."""
    _triggers(workflow_name, event_conditions, dsl.start_workflow_execution_on_events, "start_new_workflow_execution_on_events")


def stop_workflow_execution_on_events(workflow_name: str, event_conditions: list[EventCondition]) -> None:
    """Stop the running executions whenever one of ``event_conditions`` holds (in a definition only)."""
    _triggers(workflow_name, event_conditions, dsl.stop_workflow_execution_on_events, "stop_workflow_execution_on_events")


def _triggers(workflow_name: str, conditions: list[EventCondition], record: Any, key: str) -> None:
    if not dsl.defining():
        raise NotImplementedError(
            f"{key}() sets a trigger of the workflow's version in aiflowd: call it in the workflow definition "
            f"(or use the YAML key '{key}'), not from a running program"
        )
    record(trigger_conditions(conditions))


# -- workflow executions -------------------------------------------------------------------


def start_new_workflow_execution(workflow_name: str, context: str | None = None) -> WorkflowExecutionInfo:
    """Start an execution now (``context`` is accepted and not used)."""
    return get_workflow_execution(str(client().start_execution(workflow_name)))


def stop_all_workflow_executions(workflow_name: str) -> list[WorkflowExecutionInfo]:
    """Stop every running execution of the workflow; what they are now (stopping, or ended)."""
    return [get_workflow_execution(str(i)) for i in client().stop_execution(workflow_name)]


def stop_workflow_execution(execution_id: str) -> WorkflowExecutionInfo:
    """Stop one execution by id."""
    row = client().get_execution(int(execution_id))
    client().stop_execution(row["workflow"], int(execution_id))
    return get_workflow_execution(execution_id)


def list_workflow_executions(workflow_name: str) -> list[WorkflowExecutionInfo]:
    """The workflow's executions, newest first."""
    return [_execution_info(row) for row in client().list_executions(workflow_name)]


def get_workflow_execution(execution_id: str) -> WorkflowExecutionInfo:
    return _execution_info(client().get_execution(int(execution_id)))


# -- job executions --------------------------------------------------------------------------


def _job_action(job_name: str, execution_id: str, action: str) -> JobExecutionInfo:
    workflow = client().get_execution(int(execution_id))["workflow"]
    acted_in = getattr(client(), f"{action}_job")(workflow, job_name)
    return get_job_execution(job_name, str(acted_in))


def start_job_execution(job_name: str, execution_id: str) -> JobExecutionInfo:
    """Start the job in its workflow's open execution; its new job execution."""
    return _job_action(job_name, execution_id, "start")


def stop_job_execution(job_name: str, execution_id: str) -> JobExecutionInfo:
    """Stop the running job; its job execution (KILLED once the stop is done)."""
    return _job_action(job_name, execution_id, "stop")


def restart_job_execution(job_name: str, execution_id: str) -> JobExecutionInfo:
    """Stop the job if it runs, then start it again."""
    return _job_action(job_name, execution_id, "restart")


def list_job_executions(execution_id: str) -> list[JobExecutionInfo]:
    """Every job execution of one workflow execution, in start order."""
    return [_job_info(row) for row in client().get_execution(int(execution_id))["jobs"]]


def get_job_executions(job_name: str, execution_id: str) -> list[JobExecutionInfo]:
    """The job's executions in one workflow execution (a retry or restart adds one), in start order."""
    return [info for info in list_job_executions(execution_id) if info.job_name == job_name]


def get_job_execution(job_name: str, execution_id: str) -> JobExecutionInfo:
    """The job's latest execution in one workflow execution."""
    found = get_job_executions(job_name, execution_id)
    if not found:
        raise ControlError("refused", f"job '{job_name}' has no execution in workflow execution {execution_id}")
    return found[-1]


def stop_scheduling_job(execution_id: str, job_name: str) -> None:
    """Hold the job's rules in one running execution: events no longer start, stop or restart it."""
    client().stop_scheduling_job(int(execution_id), job_name)


def resume_scheduling_job(execution_id: str, job_name: str) -> None:
    """Let the job's rules act again in that execution."""
    client().resume_scheduling_job(int(execution_id), job_name)
