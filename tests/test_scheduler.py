"""Scheduling decisions as pure functions of (workflow, job states, event): no processes."""

from __future__ import annotations

import pytest

from aiflowd import scheduler
from aiflowd.model import (
    AISubGraph,
    Event,
    EventCondition,
    JobAction,
    JobConfig,
    JobStatusCondition,
    PeriodicConfig,
    Rule,
    Status,
    Workflow,
    parse_duration,
)
from aiflowd.scheduler import Decision, JobState


def workflow(*rules: Rule, jobs: tuple[str, ...] = ("a", "b", "c"), retries: int = 0) -> Workflow:
    graphs = {name: AISubGraph(JobConfig(name, "bash", retries=retries, retry_delay=2.0)) for name in jobs}
    return Workflow("wf", "/wf.yaml", "/", "v1", jobs=graphs, rules=list(rules))


def test_jobs_without_rules_start_with_the_execution() -> None:
    wf = workflow(Rule("b", JobStatusCondition("a")))
    assert [d.job for d in scheduler.initial_decisions(wf)] == ["a", "c"]
    assert scheduler.initial_decisions(wf, only_job="b") == [Decision("b", JobAction.START, "started alone")]


def test_status_rule_fires_on_matching_status_only() -> None:
    wf = workflow(Rule("b", JobStatusCondition("a", "FINISHED")))
    states = {"a": JobState(Status.FINISHED, 1), "b": JobState(), "c": JobState()}
    finished = scheduler.job_status_event("wf", "a", Status.FINISHED)
    failed = scheduler.job_status_event("wf", "a", Status.FAILED)
    assert scheduler.on_event(wf, states, finished) == [Decision("b", JobAction.START, "a FINISHED")]
    assert scheduler.on_event(wf, states, failed) == []


def test_any_status_wildcard_matches_final_statuses_only() -> None:
    wf = workflow(Rule("b", JobStatusCondition("a", "*")))
    states = {"b": JobState()}
    assert scheduler.on_event(wf, states, scheduler.job_status_event("wf", "a", Status.KILLED))
    assert not scheduler.on_event(wf, states, scheduler.job_status_event("wf", "a", Status.RUNNING))


@pytest.mark.parametrize(
    ("action", "running", "expected"),
    [
        (JobAction.START, False, JobAction.START),
        (JobAction.START, True, None),
        (JobAction.RESTART, True, JobAction.RESTART),
        (JobAction.RESTART, False, JobAction.START),
        (JobAction.STOP, True, JobAction.STOP),
        (JobAction.STOP, False, None),
        (JobAction.NONE, True, None),
    ],
)
def test_actions_depend_on_whether_the_job_runs(action: JobAction, running: bool, expected: JobAction | None) -> None:
    wf = workflow(Rule("b", EventCondition("model_updated"), action))
    states = {"b": JobState(Status.RUNNING if running else Status.FINISHED, 1)}
    decisions = scheduler.on_event(wf, states, Event("model_updated", "v2"))
    assert [d.action for d in decisions] == ([] if expected is None else [expected])


def test_event_conditions_with_wildcards() -> None:
    condition = EventCondition("k", "*", "*", "*", "default")
    assert condition.matches(Event("k", "anything", "t", "default", "me"))
    assert not condition.matches(Event("k", "v", "t", "other", "me"))
    assert not condition.matches(Event("other", "v"))
    assert EventCondition("*", "done", "*", "*", "*").matches(Event("x", "done", namespace="ns"))


def test_failed_job_with_retries_left_is_retried_silently() -> None:
    wf = workflow(Rule("b", JobStatusCondition("a", "FAILED")), retries=2)
    decisions, event = scheduler.on_job_ended(wf, "a", JobState(Status.FAILED, 1), Status.FAILED)
    assert decisions == [Decision("a", JobAction.START, "retry 1 of 2", delay=2.0)] and event is None
    decisions, event = scheduler.on_job_ended(wf, "a", JobState(Status.FAILED, 3), Status.FAILED)
    assert decisions == [] and event == scheduler.job_status_event("wf", "a", Status.FAILED)


def test_execution_status() -> None:
    assert scheduler.execution_status({"a": JobState(Status.FINISHED), "b": JobState(Status.FAILED)}) == Status.FAILED
    assert scheduler.execution_status({"a": JobState(Status.FINISHED), "b": JobState(None)}) == Status.FINISHED
    assert scheduler.execution_status({"a": JobState(Status.FINISHED)}, stopped=True) == Status.KILLED


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("0,0,5,0", 300.0),
        ("1,2,3,4", 93784.0),
        ("250ms", 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "-1", True, "1,2,3", [5]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_topological_order_keeps_declaration_order_and_finds_cycles() -> None:
    from aiflowd.model import AINode, DataEdge

    graph = AISubGraph(JobConfig("j", "python"))
    for name in ("report", "split", "load"):
        graph.add_node(AINode(name, name, None))
    graph.edges += [DataEdge("split", "report", 0), DataEdge("load", "split", 0)]
    assert graph.topological_order() == ["load", "split", "report"]
    graph.edges.append(DataEdge("report", "load", 0))
    with pytest.raises(ValueError, match="cycle"):
        graph.topological_order()


def test_interval_slots_start_at_the_anchor_and_coalesce_missed_ones() -> None:
    from aiflowd.model import PeriodicConfig

    every_10s = PeriodicConfig(interval_seconds=10)
    assert scheduler.next_slot(every_10s, None, now=1000.0, anchor=1000.0) == 1000.0  # fires at once
    assert scheduler.next_slot(every_10s, 1000.0, now=1003.0, anchor=1000.0) == 1010.0
    # down from 1005 to 1047: the slots 1010..1040 were missed; 1040 fires once, then 1050.
    assert scheduler.next_slot(every_10s, 1000.0, now=1047.0, anchor=1000.0) == 1040.0
    assert scheduler.next_slot(every_10s, 1040.0, now=1047.5, anchor=1000.0) == 1050.0


def test_cron_slots_in_a_time_zone() -> None:
    import datetime

    from aiflowd.model import PeriodicConfig

    hourly = PeriodicConfig(cron="0 * * * *", timezone="UTC")
    t = datetime.datetime(2026, 1, 1, 10, 30, tzinfo=datetime.UTC).timestamp()
    assert scheduler.next_slot(hourly, None, now=t, anchor=t) == t + 1800
    # last fired at 08:00; at 10:30 the 09:00 and 10:00 slots were missed: 10:00 fires once.
    assert scheduler.next_slot(hourly, t - 9000, now=t, anchor=t) == t - 1800
    every_5s = PeriodicConfig(cron="* * * * *", cron_seconds="*/5", timezone="UTC")
    assert scheduler.next_slot(every_5s, None, now=t + 1, anchor=t) == t + 5


def test_event_memory_says_when_it_changed_and_survives_json() -> None:
    """The engine stores the memory only when it changed: an event that teaches it nothing costs no write."""
    from aiflowd.model import AllEventsCondition

    condition = AllEventsCondition((EventCondition("a"), EventCondition("b"), EventCondition("c")), (False, False, True))
    memory = scheduler.EventMemory()
    assert not scheduler.condition_met(condition, Event("zzz", "1"), memory, ("rule", 0)) and not memory.changed
    assert not scheduler.condition_met(condition, Event("a", "1"), memory, ("rule", 0)) and memory.changed
    memory.changed = False
    assert not scheduler.condition_met(condition, Event("a", "1"), memory, ("rule", 0)) and not memory.changed  # seen already
    assert not scheduler.condition_met(condition, Event("c", "1"), memory, ("rule", 0))
    restored = scheduler.EventMemory.from_json(memory.to_json())
    assert restored.seen == {("rule", 0): {0, 2}} and not restored.changed
    assert scheduler.condition_met(condition, Event("b", "1"), restored, ("rule", 0)) and restored.changed
    assert restored.to_json() == [[["rule", 0], [2]]]  # the REPEATED event stays seen; the ONCE ones are used up


@pytest.mark.parametrize(
    ("config", "shown"),
    [
        (PeriodicConfig(interval_seconds=90), "every 1m30s"),
        (PeriodicConfig(interval_seconds=5400), "every 1h30m"),
        (PeriodicConfig(interval_seconds=0.5), "every 0.5s"),
        (PeriodicConfig(interval_seconds=2 * 86400, start_date="2026-01-01T00:00:00"), "every 2d, from 2026-01-01T00:00:00"),
        (PeriodicConfig(cron="*/5 * * * *"), "cron '*/5 * * * *'"),
        (PeriodicConfig(cron="0 3 * * *", cron_seconds="30", timezone="Europe/Berlin"), "cron '0 3 * * *' at second 30 (Europe/Berlin)"),
    ],
)
def test_a_schedule_is_described_in_one_line(config: PeriodicConfig, shown: str) -> None:
    assert config.describe() == shown
