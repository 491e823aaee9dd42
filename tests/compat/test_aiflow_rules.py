"""AIFlow's rule kinds: MEET_ALL / MEET_ANY conditions, EventLife, ValueCondition, the workflow
triggers, and the retry/restart kinds, from the scheduler's decisions to a loaded definition."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflowd import scheduler
from aiflowd.model import AISubGraph, AllEventsCondition, Event, EventCondition, JobAction, JobConfig, Rule, Status, Workflow
from aiflowd.scheduler import EventMemory, JobState
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import WorkflowLoader

from ..conftest import write
from .conftest import aiflow_workflow

HEAD = "import ai_flow as af\nfrom ai_flow_plugins.job_plugins.bash import BashProcessor\naf.init_ai_flow_context()\n"
JOBS = "with af.job_config('job_1'):\n    af.user_define_operation(processor=BashProcessor('echo 1'))\n"


def workflow_with(rule: Rule, retries: int = 0) -> Workflow:
    wf = Workflow("wf", "/wf.yaml", "/", "v1")
    wf.jobs = {"train": AISubGraph(JobConfig("train", "bash", retries=retries))}
    wf.rules = [rule]
    return wf


def all_of(*keys: str, repeated: tuple[bool, ...] = ()) -> AllEventsCondition:
    return AllEventsCondition(tuple(EventCondition(key) for key in keys), repeated)


def fired(wf: Workflow, memory: EventMemory, *keys: str) -> list[bool]:
    """For each event sent in turn: whether the rule asked for its action."""
    return [bool(scheduler.on_event(wf, {}, Event(key, "v"), memory)) for key in keys]


def test_meet_all_fires_once_every_event_has_been_seen_then_counts_afresh() -> None:
    wf = workflow_with(Rule("train", all_of("a", "b")))
    memory = EventMemory()
    # a twice is still only a; b completes it; after firing, both are needed again (EventLife.ONCE)
    assert fired(wf, memory, "a", "a", "b", "b", "c", "a") == [False, False, True, False, False, True]


def test_meet_all_with_a_repeated_event_fires_on_each_new_match_of_the_others() -> None:
    wf = workflow_with(Rule("train", all_of("config", "data", repeated=(True, False))))
    memory = EventMemory()
    # config (REPEATED) stays seen after a firing: each new data event fires again
    assert fired(wf, memory, "data", "config", "data", "data") == [False, True, True, True]


def test_meet_all_memory_belongs_to_its_execution() -> None:
    wf = workflow_with(Rule("train", all_of("a", "b")))
    first, second = EventMemory(), EventMemory()
    assert fired(wf, first, "a") == [False]
    assert fired(wf, second, "b") == [False], "an event seen by another execution does not count here"
    assert fired(wf, first, "b") == [True]


def test_a_restart_by_a_rule_is_a_restart_and_retries_count_from_the_last_fresh_start() -> None:
    wf = workflow_with(Rule("train", EventCondition("go"), JobAction.RESTART), retries=1)
    [first] = scheduler.on_event(wf, {"train": JobState()}, Event("go", "1"))
    assert (first.action, first.kind) == (JobAction.START, scheduler.START), "never ran here: a first start"
    [again] = scheduler.on_event(wf, {"train": JobState(Status.FINISHED, 1)}, Event("go", "2"))
    assert (again.action, again.kind) == (JobAction.START, scheduler.RESTART)
    # restarted as attempt 2, then failed: its one retry is still due
    decisions, _ = scheduler.on_job_ended(wf, "train", JobState(Status.FAILED, 2, fresh_attempt=2), Status.FAILED)
    assert [(d.reason, d.kind) for d in decisions] == [("retry 1 of 1", scheduler.RETRY)]


def test_triggers_remember_each_condition_apart() -> None:
    memory = EventMemory()
    conditions = [all_of("a", "b"), EventCondition("c")]
    met = [scheduler.triggers_met(conditions, Event(key, "v"), memory, "start") for key in ("a", "c", "b")]
    assert met == [False, True, True]


def test_aiflow_rules_compile_to_aiflowd_conditions(loader: WorkflowLoader, tmp_path: Path) -> None:
    definition = (
        HEAD
        + JOBS
        + "from ai_flow.workflow.control_edge import EventLife, ValueCondition\n"
        + "any_ = af.MeetAnyEventCondition().add_event('a', 'x').add_event('b', 'y', value_condition=ValueCondition.UPDATED)\n"
        + "af.action_on_events('job_1', any_, af.JobAction.RESTART)\n"
        + "all_ = af.MeetAllEventCondition().add_event('c', 'z', life=EventLife.REPEATED).add_event('d', 'w', event_type='T')\n"
        + "af.action_on_events('job_1', all_, af.JobAction.STOP)\n"
        + "af.workflow_operation.start_new_workflow_execution_on_events('all', [all_])\n"
        + "af.workflow_operation.stop_workflow_execution_on_events('all', [any_])\n"
    )
    folder = aiflow_workflow(tmp_path, "all", "job_1:\n  job_type: bash\n", definition)
    workflow = loader.load(str(folder)).workflow
    a = EventCondition("a", "x", sender="*", namespace="default")
    b = EventCondition("b", "*", sender="*", namespace="default")
    both = AllEventsCondition(
        (EventCondition("c", "z", sender="*", namespace="default"), EventCondition("d", "w", "T", sender="*", namespace="default")),
        (True, False),
    )
    assert [(r.condition, r.action) for r in workflow.rules] == [(a, JobAction.RESTART), (b, JobAction.RESTART), (both, JobAction.STOP)]
    assert workflow.start_on_events == [both]
    assert workflow.stop_on_events == [a, b]


def test_workflow_triggers_are_set_in_a_definition_only() -> None:
    from aiflowd.compat import enable

    enable()
    import ai_flow as af

    with pytest.raises(NotImplementedError, match="call it in the workflow definition"):
        af.workflow_operation.stop_workflow_execution_on_events("wf", [af.MeetAnyEventCondition().add_event("a", "b")])


def test_yaml_rule_kinds(loader: WorkflowLoader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "rules.yaml",
        """
        start_new_workflow_execution_on_events:
          - {event_key: begin}
          - condition: all
            events: [{event_key: x}, {event_key: y, life: REPEATED}]
        stop_workflow_execution_on_events:
          - {event_key: halt, value_condition: UPDATED, event_value: ignored}
        train:
          job_type: bash
          bash_command: echo train
          action_on_event:
            - {event_key: model, event_value: v1, value_condition: EQUALS}
          action_on_events:
            - condition: all
              events: [{event_key: a}, {event_key: b}]
              action: RESTART
            - condition: any
              events: [{event_key: c}, {event_key: d}]
        """,
    )
    workflow = loader.load(str(path)).workflow

    def ev(key: str, value: str = "*") -> EventCondition:
        return EventCondition(key, value, namespace="default")

    assert workflow.start_on_events == [ev("begin"), AllEventsCondition((ev("x"), ev("y")), (False, True))]
    assert workflow.stop_on_events == [ev("halt")]
    assert [(r.condition, r.action) for r in workflow.rules] == [
        (ev("model", "v1"), JobAction.START),
        (AllEventsCondition((ev("a"), ev("b"))), JobAction.RESTART),
        (ev("c"), JobAction.START),
        (ev("d"), JobAction.START),
    ]


def test_yaml_rule_mistakes_are_located(loader: WorkflowLoader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.yaml",
        """
        stop_workflow_execution_on_events:
          - condition: most
            events: [{event_key: a}]
        train:
          job_type: bash
          bash_command: echo train
          action_on_events:
            - condition: all
              evnets: [{event_key: a}]
            - events: [{event_key: a, life: FOREVER}]
        """,
    )
    with pytest.raises(LoadError) as caught:
        loader.load(str(path))
    messages = sorted(p.message for p in caught.value.problems)
    assert any("must be 'all' or 'any'" in m for m in messages), messages
    assert any("did you mean 'events'" in m for m in messages), messages
    assert any("must be ONCE or REPEATED" in m for m in messages), messages


def test_a_database_written_before_job_kinds_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    from aiflowd.store import SCHEMA, Store

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.replace("    kind TEXT NOT NULL DEFAULT 'start', -- why it started: start, retry or restart\n", ""))
    old.execute(
        "INSERT INTO job_executions (execution_id, workflow, job, job_type, attempt, status, created_at, log_path, working_dir)"
        " VALUES (1, 'wf', 'a', 'bash', 1, 'FINISHED', 0, '', '')"
    )
    old.commit()
    assert "kind" not in {row[1] for row in old.execute("PRAGMA table_info(job_executions)")}
    old.close()
    store = Store(str(path))
    try:
        new_id = store.create_job_execution(
            execution_id=1,
            workflow="wf",
            job="a",
            job_type="bash",
            attempt=2,
            status="INIT",
            kind="restart",
            created_at=1.0,
            log_path="",
            working_dir="",
        )
        store.commit()
        assert [(row["id"], row["kind"]) for row in store.job_executions(workflow="wf")] == [(new_id, "restart"), (1, "start")]
    finally:
        store.close()
