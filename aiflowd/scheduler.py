"""The scheduling decisions inside a workflow execution: (state, event) -> actions. No I/O.

Jobs without rules start when the execution starts. Every event (a job status change
or a user event) is matched against the workflow's rules, AIFlow's control edges, and
each match asks for its action: START (nothing if the job runs), RESTART (stop, then
start), STOP (nothing if it does not run), NONE. A FAILED job with retries left is
started again after its ``retry_delay`` (doubling from retry to retry, up to
``retry_max_delay``, under ``retry_backoff: exponential``) and its failure is not
announced, as Airflow's "up for retry". Because decisions depend only on their arguments, the same stored state
and events give the same decisions after a restart. ``next_slot`` computes timer ticks.

A rule waiting for several events (``AllEventsCondition``, AIFlow's MEET_ALL) needs to
remember which it has seen: the caller owns an ``EventMemory`` per execution (and one per
workflow for its triggers) and passes it in; the functions here only update it. Every
decision says why the job starts (``kind``: a fresh ``start``, a ``retry`` of a failure,
a ``restart`` of a job that ran in this execution).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiflowd.model import (
    ANY,
    JOB_STATUS_CHANGED,
    AllEventsCondition,
    Condition,
    Event,
    EventCondition,
    JobAction,
    JobStatusCondition,
    PeriodicConfig,
    Rule,
    Status,
    TriggerCondition,
    Workflow,
)

#: Why a job execution started: the kinds a Decision and a job execution record.
START, RETRY, RESTART = "start", "retry", "restart"


@dataclass
class JobState:
    """What the scheduler knows of a job in one execution: its last status and attempts."""

    status: Status | None = None
    attempt: int = 0
    #: The attempt of the latest start that was not a retry: retries left are counted from it.
    fresh_attempt: int = 1

    @property
    def retries_done(self) -> int:
        return max(0, self.attempt - self.fresh_attempt)

    @property
    def running(self) -> bool:
        return self.status in (Status.INIT, Status.RUNNING)


@dataclass(frozen=True)
class Decision:
    """Do ``action`` to ``job`` (after ``delay`` seconds), because of ``reason``."""

    job: str
    action: JobAction
    reason: str
    delay: float = 0.0
    #: Why the job would start: ``start``, ``retry`` or ``restart`` (a label, not part of equality).
    kind: str = field(default=START, compare=False)
    #: The event whose rule asked for it (None otherwise): the job it starts is given it.
    event: Event | None = field(default=None, compare=False)


@dataclass
class EventMemory:
    """Which events of each several-event condition have been seen (see ``AllEventsCondition``).

    Keyed by the condition's place (a rule's index, a trigger's); owned by the caller, one
    per execution for job rules, one per workflow version for its triggers. ``changed``
    tells the caller that what was seen differs since it last stored it (and reset it).
    """

    seen: dict[Hashable, set[int]] = field(default_factory=dict)
    changed: bool = False

    def to_json(self) -> list[list[Any]]:
        """What was seen as JSON: ``[[key as a list, [indexes]], ...]`` (keys are tuples of str and int)."""
        return [[list(key) if isinstance(key, tuple) else key, sorted(seen)] for key, seen in self.seen.items() if seen]

    @classmethod
    def from_json(cls, data: list[list[Any]]) -> EventMemory:
        return cls({tuple(key) if isinstance(key, list) else key: set(seen) for key, seen in data})


def condition_met(condition: Condition, event: Event, memory: EventMemory | None = None, key: Hashable = None) -> bool:
    """Whether ``event`` makes ``condition`` hold, remembering (in ``memory``) what it needs to."""
    if isinstance(condition, JobStatusCondition):
        if event.event_type != JOB_STATUS_CHANGED or event.key != condition.upstream_job:
            return False
        if condition.status == ANY:
            return event.value in (Status.FINISHED.value, Status.FAILED.value, Status.KILLED.value)
        return event.value == condition.status
    if isinstance(condition, EventCondition):
        return condition.matches(event)
    assert isinstance(condition, AllEventsCondition)
    matched = condition.matching(event)
    if not matched:
        return False
    memory = memory if memory is not None else EventMemory()
    seen = memory.seen.setdefault(key, set())
    if not matched <= seen:
        memory.changed = True
        seen |= matched
    if len(seen) < len(condition.events):
        return False
    kept = {i for i in seen if condition.repeated[i]}  # ONCE events must come again
    if kept != seen:
        memory.changed = True
    memory.seen[key] = kept
    return True


def triggers_met(conditions: Sequence[TriggerCondition], event: Event, memory: EventMemory, tag: str) -> bool:
    """Whether ``event`` makes any of a workflow's trigger conditions hold (each remembers apart)."""
    met = False
    for i, condition in enumerate(conditions):
        met = condition_met(condition, event, memory, (tag, i)) or met  # every condition sees the event
    return met


def job_status_event(workflow: str, job: str, status: Status, time: float = 0.0) -> Event:
    """The event announcing a job's new status: key is the job, value the status."""
    return Event(key=job, value=status.value, event_type=JOB_STATUS_CHANGED, namespace=workflow, sender=job, time=time)


def initial_decisions(workflow: Workflow, only_job: str | None = None) -> list[Decision]:
    """What starts with the execution: the jobs no rule governs (or just ``only_job``)."""
    if only_job is not None:
        return [Decision(only_job, JobAction.START, "started alone")]
    governed = {rule.job for rule in workflow.rules}
    return [Decision(job, JobAction.START, "execution started") for job in workflow.jobs if job not in governed]


def condition_holds(rule: Rule, event: Event, memory: EventMemory | None = None, key: Hashable = None) -> bool:
    return condition_met(rule.condition, event, memory, key)


def on_event(workflow: Workflow, jobs: Mapping[str, JobState], event: Event, memory: EventMemory | None = None) -> list[Decision]:
    """The actions the rules ask for when ``event`` happens, given the jobs' states.

    ``memory`` is the execution's (see ``EventMemory``); without it, several-event
    conditions remember nothing beyond this call.
    """
    memory = memory if memory is not None else EventMemory()
    decisions: list[Decision] = []
    for index, rule in enumerate(workflow.rules):
        if rule.job not in workflow.jobs or not condition_holds(rule, event, memory, ("rule", index)):
            continue
        state = jobs.get(rule.job, JobState())
        reason = _describe(rule, event)
        if rule.action == JobAction.START and not state.running:
            decisions.append(Decision(rule.job, JobAction.START, reason, event=event))
        elif rule.action == JobAction.RESTART:
            kind = RESTART if state.attempt else START  # never ran in this execution: a first start
            decisions.append(Decision(rule.job, JobAction.RESTART if state.running else JobAction.START, reason, kind=kind, event=event))
        elif rule.action == JobAction.STOP and state.running:
            decisions.append(Decision(rule.job, JobAction.STOP, reason))
    return decisions


def on_job_ended(workflow: Workflow, job: str, state: JobState, status: Status) -> tuple[list[Decision], Event | None]:
    """After a job execution ends: a retry, or the status event that rules may act on."""
    config = workflow.jobs[job].config
    if status == Status.FAILED and state.retries_done < config.retries:
        retry = state.retries_done + 1
        reason = f"retry {retry} of {config.retries}"
        return [Decision(job, JobAction.START, reason, delay=config.retry_delay_for(retry), kind=RETRY)], None
    return [], job_status_event(workflow.name, job, status)


def execution_status(jobs: Mapping[str, JobState], stopped: bool = False) -> Status:
    """An ended execution's status: FAILED if a job failed, KILLED if stopped, else FINISHED."""
    statuses = {state.status for state in jobs.values()}
    if Status.FAILED in statuses:
        return Status.FAILED
    if stopped or Status.KILLED in statuses:
        return Status.KILLED
    return Status.FINISHED


def _describe(rule: Rule, event: Event) -> str:
    if isinstance(rule.condition, JobStatusCondition):
        return f"{rule.condition.upstream_job} {event.value}"
    if isinstance(rule.condition, AllEventsCondition):
        return f"all of {len(rule.condition.events)} events, the last {event.key}={event.value}"
    return f"event {event.key}={event.value}"


def next_slot(config: PeriodicConfig, last: float | None, now: float, anchor: float) -> float:
    """The scheduled time of the next tick to fire (at or before ``now`` means: fire now).

    ``last`` is the slot fired last (stored), ``anchor`` when the schedule began (its
    ``start_date``, else when the workflow appeared). Missed slots are coalesced: after a
    downtime the latest missed slot fires once, like systemd's ``Persistent=true``, so no
    tick is lost and none is doubled.
    """
    if config.start_date is not None:
        anchor = _timestamp(config.start_date, config.timezone)
    if config.interval_seconds is not None:
        step = config.interval_seconds
        base = anchor if last is None else last + step
        if base > now:
            return base
        return base + math.floor((now - base) / step) * step
    cron = _Cron(config)
    if last is None:
        return cron.after(max(now, anchor) if config.start_date else now)
    following = cron.after(last)
    if following > now:
        return following
    return max(following, cron.at_or_before(now))


class _Cron:
    def __init__(self, config: PeriodicConfig) -> None:
        from croniter import croniter

        self._croniter = croniter
        self.expression = f"{config.cron} {config.cron_seconds}"
        self.tz = _zone(config.timezone)

    def after(self, at: float) -> float:
        start = datetime.datetime.fromtimestamp(at, self.tz)
        return float(self._croniter(self.expression, start).get_next(float))

    def at_or_before(self, at: float) -> float:
        start = datetime.datetime.fromtimestamp(at + 1, self.tz)
        return float(self._croniter(self.expression, start).get_prev(float))


def _zone(name: str | None) -> datetime.tzinfo | None:
    if name is None:
        return datetime.datetime.now().astimezone().tzinfo
    import zoneinfo

    return zoneinfo.ZoneInfo(name)


def _timestamp(text: str, timezone: str | None) -> float:
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_zone(timezone))
    return moment.timestamp()
