"""Pure data of a workflow: jobs, their graphs, the rules between them, statuses and events.

Nothing here does I/O, so the scheduler and the tests can use it without processes,
and the job processes can import it under any interpreter (it needs only the stdlib).
Names follow AIFlow so that its users and plugin authors feel at home.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """Status of a job execution or workflow execution, as in AIFlow."""

    INIT = "INIT"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def is_final(self) -> bool:
        return self in (Status.FINISHED, Status.FAILED, Status.KILLED)

    def __str__(self) -> str:
        return self.value


class JobAction(str, enum.Enum):
    """What a rule does to its job when its condition holds, as in AIFlow."""

    START = "START"
    RESTART = "RESTART"
    STOP = "STOP"
    NONE = "NONE"

    def __str__(self) -> str:
        return self.value


class OverlapPolicy(str, enum.Enum):
    """What a periodic tick does while an execution of its workflow is still active."""

    #: The tick is dropped (logged and counted): the next slot is the next chance.
    SKIP = "skip"
    #: The tick waits, unrecorded, and starts an execution once none is active; ticks
    #: coming meanwhile coalesce into the latest (at most one start is pending).
    QUEUE = "queue"
    #: The tick starts another execution beside the active ones (up to ``max_active_executions``).
    ALLOW = "allow"


class RetryBackoff(str, enum.Enum):
    """How the delay before a retry grows from one attempt to the next."""

    #: Every retry waits ``retry_delay``.
    FIXED = "fixed"
    #: Retry N waits ``retry_delay * 2**(N-1)``, capped by ``retry_max_delay``.
    EXPONENTIAL = "exponential"


class ChangePolicy(str, enum.Enum):
    """What a new workflow version does to an execution of the old one still running."""

    RESTART = "restart"
    WAIT = "wait"
    IGNORE = "ignore"


#: Event type of the events aiflowd emits when a job execution changes status.
JOB_STATUS_CHANGED = "JOB_STATUS_CHANGED"
#: Namespace of events sent without one.
DEFAULT_NAMESPACE = "default"
#: Matches any value in a rule condition.
ANY = "*"


@dataclass(frozen=True)
class Event:
    """Something that happened: a user event, a timer, or a job status change."""

    key: str
    value: str
    event_type: str = ANY
    namespace: str = DEFAULT_NAMESPACE
    sender: str = ""
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class PeriodicConfig:
    """When to start executions on a timer: exactly one of ``cron`` and ``interval_seconds``.

    ``cron`` is kept in the 5-field form (AIFlow's 7-field form is converted when loaded,
    its seconds field in ``cron_seconds``).
    """

    cron: str | None = None
    cron_seconds: str = "0"
    interval_seconds: float | None = None
    start_date: str | None = None
    timezone: str | None = None

    def describe(self) -> str:
        """One line for people: ``every 1h30m``, ``cron '*/5 * * * *' (Europe/Berlin)``, ``..., from 2026-01-01``."""
        if self.interval_seconds is not None:
            text = f"every {_compact_duration(self.interval_seconds)}"
        else:
            text = f"cron '{self.cron}'" + (f" at second {self.cron_seconds}" if self.cron_seconds != "0" else "")
        if self.timezone:
            text += f" ({self.timezone})"
        return text + (f", from {self.start_date}" if self.start_date else "")


def _compact_duration(seconds: float) -> str:
    """``90s`` -> ``1m30s``, ``5400`` -> ``1h30m``, ``0.5`` -> ``0.5s``: as durations are written in workflows."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


@dataclass
class JobConfig:
    """How one job is run: its type, free-form plugin properties and scheduling knobs."""

    job_name: str
    job_type: str
    properties: dict[str, Any] = field(default_factory=dict)
    periodic_config: PeriodicConfig | None = None
    job_label_report_interval: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    #: How the delay grows between retries (``retry_delay`` each time, or doubling).
    retry_backoff: RetryBackoff = RetryBackoff.FIXED
    #: The longest delay the exponential backoff reaches (None: no cap; unused by a fixed delay).
    retry_max_delay: float | None = None

    def retry_delay_for(self, retry: int) -> float:
        """The delay before retry number ``retry`` (1 for the first): fixed, or doubling up to the cap."""
        if self.retry_backoff != RetryBackoff.EXPONENTIAL:
            return self.retry_delay
        delay = self.retry_delay * 2.0 ** max(0, min(retry - 1, 64))
        return delay if self.retry_max_delay is None else min(delay, self.retry_max_delay)


@dataclass
class AINode:
    """One step of a job: a processor (the logic) and how many outputs it has."""

    node_id: str
    name: str
    processor: Any
    output_num: int = 1
    config: dict[str, Any] = field(default_factory=dict)

    def get_processor(self) -> Any:
        """The node's processor (AIFlow's accessor, which job generators call)."""
        return self.processor


@dataclass(frozen=True)
class DataEdge:
    """Passes output ``port`` of node ``source`` to the input list of node ``destination``."""

    source: str
    destination: str
    port: int = 0


@dataclass
class AISubGraph:
    """All nodes of one job and the DataEdges between them."""

    config: JobConfig
    nodes: dict[str, AINode] = field(default_factory=dict)
    edges: list[DataEdge] = field(default_factory=list)

    def add_node(self, node: AINode) -> None:
        self.nodes[node.node_id] = node

    def inputs_of(self, node_id: str) -> list[DataEdge]:
        """The edges into a node, in the order its inputs were declared."""
        return [edge for edge in self.edges if edge.destination == node_id]

    def topological_order(self) -> list[str]:
        """Node ids so that every node comes after the nodes it reads from.

        Declaration order is kept among independent nodes. A cycle cannot be built with
        the DSL (a channel exists only after its node), but a hand-made graph could have
        one: it raises ValueError naming the nodes involved.
        """
        remaining = {node_id: {e.source for e in self.inputs_of(node_id)} for node_id in self.nodes}
        order: list[str] = []
        while remaining:
            ready = [n for n, deps in remaining.items() if not deps - set(order)]
            if not ready:
                raise ValueError(f"data edges form a cycle between nodes {sorted(remaining)}")
            for node_id in ready:
                order.append(node_id)
                del remaining[node_id]
        return order


@dataclass(frozen=True)
class JobStatusCondition:
    """Holds when ``upstream_job`` reaches ``status`` (``*`` for any final status)."""

    upstream_job: str
    status: str = Status.FINISHED.value


@dataclass(frozen=True)
class EventCondition:
    """Holds when an event matches; every field may be ``*``."""

    key: str
    value: str = ANY
    event_type: str = ANY
    sender: str = ANY
    namespace: str = ANY

    def matches(self, event: Event) -> bool:
        return all(
            want == ANY or want == got
            for want, got in (
                (self.key, event.key),
                (self.value, event.value),
                (self.event_type, event.event_type),
                (self.sender, event.sender),
                (self.namespace, event.namespace),
            )
        )


@dataclass(frozen=True)
class AllEventsCondition:
    """Holds once every one of ``events`` has been seen: AIFlow's ``MeetAllEventCondition``.

    Seen counts from the start of the execution (for a job rule) or of the workflow's
    version (for a workflow trigger), and again from the last time the condition held:
    then each event is forgotten, unless its ``repeated`` flag (AIFlow's
    ``EventLife.REPEATED``) keeps it counted, so that the next match of the others
    fires again. The scheduler keeps what has been seen (``scheduler.EventMemory``).
    """

    events: tuple[EventCondition, ...]
    repeated: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if not self.repeated:
            object.__setattr__(self, "repeated", tuple(False for _ in self.events))
        if len(self.repeated) != len(self.events):
            raise ValueError("AllEventsCondition needs one 'repeated' flag per event")

    def matching(self, event: Event) -> set[int]:
        """The indexes of the events this one matches."""
        return {i for i, wanted in enumerate(self.events) if wanted.matches(event)}


#: What a job rule waits for; a workflow trigger waits for the last two kinds.
Condition = JobStatusCondition | EventCondition | AllEventsCondition
#: What starts or stops a workflow execution when it happens.
TriggerCondition = EventCondition | AllEventsCondition


@dataclass(frozen=True)
class Rule:
    """AIFlow's control edge: when ``condition`` holds, do ``action`` to ``job``."""

    job: str
    condition: Condition
    action: JobAction = JobAction.START


@dataclass(frozen=True)
class Hook:
    """What to do when a job execution ends a certain way: run ``command`` or POST to ``webhook``.

    ``command`` is a line for ``sh -c`` or an argument list; ``cwd`` is where it runs.
    A webhook is tried ``1 + retries`` times, ``backoff`` seconds apart (doubling).
    Delivery is ``aiflowd.alerts``'s.
    """

    command: str | tuple[str, ...] | None = None
    webhook: str | None = None
    timeout: float = 30.0
    retries: int = 0
    backoff: float = 1.0
    headers: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None


@dataclass
class Workflow:
    """A loaded, validated workflow version: its jobs, rules and triggers."""

    name: str
    path: str
    workflow_dir: str
    version: str
    jobs: dict[str, AISubGraph] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    periodic_config: PeriodicConfig | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    dependencies: dict[str, Any] = field(default_factory=dict)
    #: None: ``restart`` for change-triggered workflows, ``wait`` for scheduled ones.
    on_change: ChangePolicy | None = None
    #: Start a new execution whenever one of these holds (AIFlow's start_new_workflow_execution_on_events).
    start_on_events: list[TriggerCondition] = field(default_factory=list)
    #: Stop the running executions whenever one of these holds (AIFlow's stop_workflow_execution_on_events).
    stop_on_events: list[TriggerCondition] = field(default_factory=list)
    #: Hooks by moment (``on_failure``, ``on_retry``, ``on_success``) for this workflow's jobs.
    hooks: dict[str, tuple[Hook, ...]] = field(default_factory=dict)
    #: The most executions of this workflow active at once (None: no limit but ``on_overlap``'s).
    max_active_executions: int | None = None
    #: What a workflow-level periodic tick does while an execution is active.
    on_overlap: OverlapPolicy = OverlapPolicy.QUEUE

    def rules_for(self, job: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.job == job]


@dataclass(frozen=True)
class ProcessorRef:
    """A processor made of user code, as the daemon holds it: never executed there.

    The compiler builds the real object in a subprocess and sends back its class
    (``bases``: qualified names of the class and its bases, to check its kind without
    importing it) and ``payload``, the pickled object that only the job process opens.
    """

    module: str
    qualname: str
    bases: tuple[str, ...]
    payload: str

    @property
    def class_name(self) -> str:
        return f"{self.module}.{self.qualname}"

    def is_a(self, cls: type) -> bool:
        return f"{cls.__module__}.{cls.__qualname__}" in self.bases


#: Prefix of the environment variable an execution parameter reaches its jobs as: ``AIFLOWD_PARAM_K``.
PARAM_PREFIX = "AIFLOWD_PARAM_"

#: The environment variables the event that started a job reaches it as, and the fields they carry.
_EVENT_VARIABLES = {
    "AIFLOWD_EVENT_KEY": "key",
    "AIFLOWD_EVENT_VALUE": "value",
    "AIFLOWD_EVENT_TYPE": "event_type",
    "AIFLOWD_EVENT_NAMESPACE": "namespace",
    "AIFLOWD_EVENT_SENDER": "sender",
}


def event_variables(event: Event) -> dict[str, str]:
    """The event that started a job, as that job's environment variables (``AIFLOWD_EVENT_KEY``, ...)."""
    return {name: getattr(event, attr) for name, attr in _EVENT_VARIABLES.items()}


def event_from_variables(environ: Mapping[str, str]) -> Event | None:
    """The event ``event_variables`` put in a job's environment, if one did."""
    if "AIFLOWD_EVENT_KEY" not in environ:
        return None
    fields: dict[str, Any] = {attr: environ.get(name, "") for name, attr in _EVENT_VARIABLES.items()}
    return Event(**fields)


def check_params(params: object) -> dict[str, str]:
    """An execution's parameters, checked: names are identifiers, values strings.

    Raises ValueError with one line fit for a user, naming the first bad parameter.
    """
    import re

    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValueError(f"parameters must be a mapping of names to values, got {type(params).__name__}")
    for name, value in params.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"parameter name {name!r} is not an identifier (letters, digits and '_', not starting with a digit)")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"parameter {name}: the value must be a string without NUL, got {value!r}")
    return dict(params)


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object) -> float:
    """Seconds from a number, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or AIFlow's ``"d,h,m,s"``.

    Raises ValueError with a message fit for a user.
    """
    import re

    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '90s', '5m' or '1h', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a duration like '90s', '5m' or '1h', got {value!r}")
    text = value.strip()
    if "," in text:
        parts = text.split(",")
        if len(parts) != 4 or not all(re.fullmatch(r"\s*\d+(\.\d+)?\s*", p) for p in parts):
            raise ValueError(f"AIFlow's interval form is 'days,hours,minutes,seconds' (like '0,0,5,0'), got {value!r}")
        days, hours, minutes, seconds = (float(p) for p in parts)
        return days * 86400 + hours * 3600 + minutes * 60 + seconds
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pieces = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", text)
    if not pieces or re.sub(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", "", text).strip():
        raise ValueError(f"expected a duration like '90s', '5m', '1h30m' or '0,0,5,0', got {value!r}")
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in pieces)
