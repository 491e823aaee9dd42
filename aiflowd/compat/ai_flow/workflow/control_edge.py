"""``ai_flow.workflow.control_edge``: the names AIFlow's event rules are built from.

``JobAction`` is aiflowd's. The event conditions are plain records here: the rule
functions of ``ai_flow.api.ops`` turn them into aiflowd rules when the definition runs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from aiflowd.model import DEFAULT_NAMESPACE, JOB_STATUS_CHANGED, JobAction

#: The event type AIFlow gives events sent without one; aiflowd matches it as any type.
UNDEFINED_EVENT_TYPE = "UNDEFINED"

__all__ = [
    "DEFAULT_NAMESPACE",
    "UNDEFINED_EVENT_TYPE",
    "AIFlowInternalEventType",
    "ConditionType",
    "EventCondition",
    "EventLife",
    "EventMeetConfig",
    "JobAction",
    "MeetAllEventCondition",
    "MeetAnyEventCondition",
    "ValueCondition",
    "WorkflowAction",
]


class ConditionType(str, enum.Enum):
    """Whether all the events of a condition must have been seen, or any one of them."""

    MEET_ALL = "MEET_ALL"
    MEET_ANY = "MEET_ANY"


class WorkflowAction(str, enum.Enum):
    """What a workflow trigger does: start a new execution, or stop the running ones."""

    START = "START"
    STOP = "STOP"
    NONE = "NONE"


class EventLife(str, enum.Enum):
    """Whether a seen event counts once or keeps counting after its MEET_ALL rule fired.

    ONCE: the event must come again before the rule can fire again; REPEATED: it stays
    seen, so each new match of the other events fires again. No effect on MEET_ANY.
    """

    ONCE = "ONCE"
    REPEATED = "REPEATED"


class ValueCondition(str, enum.Enum):
    """EQUALS: the event must carry the given value; UPDATED: any new value of the key counts."""

    EQUALS = "EQUALS"
    UPDATED = "UPDATE"


class AIFlowInternalEventType:
    """Event types the system itself sends."""

    JOB_STATUS_CHANGED = JOB_STATUS_CHANGED
    PERIODIC_ACTION = "PERIODIC_ACTION"
    DATASET_CHANGED = "DATASET_CHANGED"


@dataclass
class EventMeetConfig:
    """One event a condition waits for; ``sender`` None means any sender."""

    event_key: str
    event_value: str
    event_type: str = UNDEFINED_EVENT_TYPE
    namespace: str = DEFAULT_NAMESPACE
    sender: str | None = None
    life: EventLife = EventLife.ONCE
    value_condition: ValueCondition = ValueCondition.EQUALS


@dataclass
class EventCondition:
    """Events and whether all or any of them make the condition hold."""

    events: list[EventMeetConfig] = field(default_factory=list)
    condition_type: ConditionType = ConditionType.MEET_ANY

    def add_event(
        self,
        event_key: str,
        event_value: str,
        event_type: str = UNDEFINED_EVENT_TYPE,
        namespace: str = DEFAULT_NAMESPACE,
        sender: str | None = None,
        life: EventLife = EventLife.ONCE,
        value_condition: ValueCondition = ValueCondition.EQUALS,
    ) -> EventCondition:
        """Wait for one more event (a duplicate is ignored); returns the condition to chain calls."""
        wanted = EventMeetConfig(event_key, event_value, event_type, namespace, sender, life, value_condition)
        if wanted not in self.events:
            self.events.append(wanted)
        return self


class MeetAllEventCondition(EventCondition):
    """Holds when every one of its events has been seen."""

    def __init__(self, events: list[EventMeetConfig] | None = None) -> None:
        super().__init__(list(events or []), ConditionType.MEET_ALL)


class MeetAnyEventCondition(EventCondition):
    """Holds when any one of its events is seen."""

    def __init__(self, events: list[EventMeetConfig] | None = None) -> None:
        super().__init__(list(events or []), ConditionType.MEET_ANY)
