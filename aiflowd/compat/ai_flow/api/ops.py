"""``ai_flow.api.ops``: the operations and rules of an AIFlow definition, onto aiflowd's DSL.

``user_define_operation`` and ``job_config`` are aiflowd's own (same signatures);
``action_on_job_status`` is aiflowd's, marking its rules as AIFlow's (whose upstream job
may be missing: a warning, as AIFlow accepts such a rule). ``transform`` is a named ``user_define_operation``. AIFlow's event
rules are translated: a MEET_ANY condition becomes one aiflowd rule per event, a
MEET_ALL one of several events one rule waiting for all of them (each event's
``EventLife`` kept), the ``UNDEFINED`` event type means any type, and
``ValueCondition.UPDATED`` any value.
"""

from __future__ import annotations

from typing import Any

from ai_flow.workflow.control_edge import (
    UNDEFINED_EVENT_TYPE,
    ConditionType,
    EventCondition,
    EventLife,
    EventMeetConfig,
    MeetAnyEventCondition,
    ValueCondition,
)

from aiflowd.model import ANY, DEFAULT_NAMESPACE, JobAction, Status
from aiflowd.workflows import dsl
from aiflowd.workflows.dsl import Channel, WorkflowDefinitionError, user_define_operation

__all__ = ["action_on_event", "action_on_events", "action_on_job_status", "transform", "trigger_conditions", "user_define_operation"]


def transform(
    input: Channel | list[Channel] | tuple[Channel, ...] | None,  # noqa: A002 - AIFlow's parameter name
    transform_processor: Any,
    output_num: int = 1,
    name: str | None = None,
) -> Channel | tuple[Channel, ...] | None:
    """A node that transforms its inputs: ``user_define_operation`` with node_type ``transform``."""
    return user_define_operation(input=input, processor=transform_processor, output_num=output_num, name=name, operation_type="transform")


def action_on_job_status(
    job_name: str,
    upstream_job_name: str,
    upstream_job_status: Status | str = Status.FINISHED,
    action: JobAction | str = JobAction.START,
) -> None:
    """When ``upstream_job_name`` reaches ``upstream_job_status``, do ``action`` to ``job_name``.

    aiflowd's rule, marked as AIFlow's: an upstream job the workflow lacks is then a
    warning (the rule never fires, as in AIFlow), not a load error.
    """
    dsl.action_on_job_status(job_name, upstream_job_name, upstream_job_status, action)
    dsl.last_rule().condition["aiflow"] = True


def action_on_event(
    job_name: str,
    event_key: str,
    event_value: str,
    event_type: str = UNDEFINED_EVENT_TYPE,
    sender: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    value_condition: ValueCondition = ValueCondition.EQUALS,
    action: JobAction = JobAction.START,
) -> None:
    """When a matching event arrives, do ``action`` to ``job_name`` (AIFlow's signature and order)."""
    condition = MeetAnyEventCondition().add_event(event_key, event_value, event_type, namespace, sender, value_condition=value_condition)
    action_on_events(job_name, condition, action)


def action_on_events(job_name: str, event_condition: EventCondition, action: JobAction) -> None:
    """When ``event_condition`` holds, do ``action`` to ``job_name``.

    MEET_ANY: any one of its events; MEET_ALL: each of its events seen since the execution
    started, or since the rule last fired (an event of ``EventLife.REPEATED`` stays seen).
    """
    _check(event_condition)
    if event_condition.condition_type == ConditionType.MEET_ALL and len(event_condition.events) > 1:
        repeated = [EventLife(wanted.life) == EventLife.REPEATED for wanted in event_condition.events]
        dsl.action_on_all_events(job_name, [_fields(wanted) for wanted in event_condition.events], action, repeated)
        return
    for wanted in event_condition.events:
        dsl.action_on_event(job_name, action=action, **_arguments(wanted))


def trigger_conditions(conditions: list[EventCondition]) -> list[dict[str, Any]]:
    """AIFlow's workflow trigger conditions as aiflowd's DSL takes them (one per MEET_ANY event)."""
    if not isinstance(conditions, (list, tuple)):
        raise WorkflowDefinitionError(f"event_conditions must be a list of MeetAnyEventCondition/MeetAllEventCondition, got {conditions!r}")
    result: list[dict[str, Any]] = []
    for condition in conditions:
        _check(condition)
        if condition.condition_type == ConditionType.MEET_ALL and len(condition.events) > 1:
            repeated = [EventLife(wanted.life) == EventLife.REPEATED for wanted in condition.events]
            result.append({"all": [_fields(wanted) for wanted in condition.events], "repeated": repeated})
        else:
            result += [_fields(wanted) for wanted in condition.events]
    return result


def _check(event_condition: Any) -> None:
    if not isinstance(event_condition, EventCondition):
        raise WorkflowDefinitionError(f"event_condition must be a MeetAnyEventCondition or MeetAllEventCondition, got {event_condition!r}")
    if not event_condition.events:
        raise WorkflowDefinitionError("event_condition has no events: add some with add_event()")


def _arguments(wanted: EventMeetConfig) -> dict[str, Any]:
    return {
        "event_key": wanted.event_key,
        "event_value": wanted.event_value,
        "event_type": ANY if wanted.event_type in (None, UNDEFINED_EVENT_TYPE) else wanted.event_type,
        "sender": wanted.sender,
        "namespace": wanted.namespace,
        "value_condition": ValueCondition(wanted.value_condition).name,
    }


def _fields(wanted: EventMeetConfig) -> dict[str, str]:
    return dsl.event_fields(**_arguments(wanted))
