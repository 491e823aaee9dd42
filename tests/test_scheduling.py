"""Scheduling semantics: overlapping periodic runs, max_active_executions, retry backoff,
execution parameters and the event that started a job.

The engine tests move a ManualClock and end test jobs by hand (the harness of
``test_engine``), so every slot, delay and overlap is exact; the daemon tests run a real
aiflowd with real bash jobs, driven through the real aiflowctl.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from aiflowd.client import Client
from aiflowd.control.protocol import ControlError
from aiflowd.engine import EngineError, JobRun
from aiflowd.model import EventCondition, JobConfig, OverlapPolicy, RetryBackoff, Rule
from aiflowd.plugin_interface import PluginRegistry
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import LoadedWorkflow, WorkflowLoader

from .conftest import wait_for, write
from .daemon_harness import Daemon
from .test_engine import T0, ManualClock, World, _slot, crash, every, job, running, workflow


def periodic(name: str, seconds: float, *, on_overlap: OverlapPolicy | None = None, limit: int | None = None) -> tuple[str, LoadedWorkflow]:
    """A workflow of one job ``a`` started every ``seconds`` from T0."""
    path, loaded = workflow(name, job("a"), periodic=every(interval_seconds=seconds))
    if on_overlap is not None:
        loaded.workflow.on_overlap = on_overlap
    loaded.workflow.max_active_executions = limit
    return path, loaded


def started_by_hand(name: str, *jobs: JobConfig, rules: tuple[Rule, ...] = ()) -> tuple[str, LoadedWorkflow]:
    """A workflow a file change does not start (it waits for an event): only requests start it."""
    path, loaded = workflow(name, *jobs, rules=rules)
    loaded.workflow.start_on_events = [EventCondition("never sent")]
    return path, loaded


def triggers(executions: list[dict[str, Any]]) -> list[float]:
    return [_slot(e["trigger"]) for e in executions]


# -- overlapping periodic runs ----------------------------------------------------------


def test_the_default_never_overlaps_and_queues() -> None:
    assert periodic("x", 2)[1].workflow.on_overlap == OverlapPolicy.QUEUE


async def test_queue_holds_one_slot_until_the_active_execution_ends(tmp_path: Path) -> None:
    """A 2 s timer, a job that runs on: one execution at a time, the latest missed slot next."""
    world = World(blocking={"a"})
    async with running(tmp_path, [periodic("beat", 2)], world=world) as h:
        await h.advance_to(T0 + 5)  # T0+2 and T0+4 come while the first runs
        assert triggers(h.executions("beat")) == [T0]
        assert h.engine.workflows["beat"].queued_tick == T0 + 4
        assert h.store.last_tick("beat", "") == T0  # a queued slot is not recorded: a restart fires it again
        world.running("a").end(0)
        await h.settle()
        assert triggers(h.executions("beat")) == [T0, T0 + 4]  # T0+2 coalesced into T0+4, started at once
        assert [e["status"] for e in h.executions("beat")] == ["FINISHED", "RUNNING"]
        await h.advance_to(T0 + 7)
        world.running("a").end(0)
        await h.settle()
        assert triggers(h.executions("beat")) == [T0, T0 + 4, T0 + 6]
        assert h.engine.skipped_starts == 0


async def test_skip_drops_the_slots_that_come_while_an_execution_runs(tmp_path: Path) -> None:
    world = World(blocking={"a"})
    async with running(tmp_path, [periodic("beat", 2, on_overlap=OverlapPolicy.SKIP)], world=world) as h:
        await h.advance_to(T0 + 5)
        world.running("a").end(0)
        await h.settle()
        assert triggers(h.executions("beat")) == [T0]  # nothing waits: the next slot is the next chance
        assert h.store.last_tick("beat", "") == T0 + 4  # skipped slots count as fired: never fired again
        assert h.engine.skipped_starts == h.engine.workflows["beat"].skipped_starts == 2
        await h.advance_to(T0 + 6)
        assert triggers(h.executions("beat")) == [T0, T0 + 6]


async def test_allow_overlaps_up_to_max_active_executions_then_queues(tmp_path: Path) -> None:
    world = World(blocking={"a"})
    async with running(tmp_path, [periodic("beat", 2, on_overlap=OverlapPolicy.ALLOW, limit=2)], world=world) as h:
        await h.advance_to(T0 + 5)
        assert triggers(h.executions("beat")) == [T0, T0 + 2]  # two at once; T0+4 waits
        assert len(h.engine.active_executions("beat")) == 2
        next(e for e in world.executions.values() if e.code is None).end(0)
        await h.settle()
        assert triggers(h.executions("beat")) == [T0, T0 + 2, T0 + 4]
        assert len(h.engine.active_executions("beat")) == 2


async def test_allow_without_a_limit_is_the_old_behaviour(tmp_path: Path) -> None:
    world = World(blocking={"a"})
    async with running(tmp_path, [periodic("beat", 2, on_overlap=OverlapPolicy.ALLOW)], world=world) as h:
        await h.advance_to(T0 + 5)
        assert triggers(h.executions("beat")) == [T0, T0 + 2, T0 + 4]


async def test_a_manual_start_beyond_max_active_executions_is_refused(tmp_path: Path) -> None:
    path, loaded = workflow("etl", job("a"))
    loaded.workflow.max_active_executions = 1
    world = World(blocking={"a"})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        [first] = [e["id"] for e in h.executions("etl")]  # started as the file appeared
        with pytest.raises(EngineError) as refused:
            await h.engine.request(lambda engine: engine.start_execution("etl"))
        assert str(refused.value) == (
            "workflow 'etl' has 1 active execution, its max_active_executions:"
            " wait for one to end, or stop one (aiflowctl workflow stop-execution etl)"
        )
        assert [e["id"] for e in h.executions("etl")] == [first]
        world.running("a").end(0)
        await h.settle()
        assert await h.engine.request(lambda engine: engine.start_execution("etl")) == first + 1


async def test_an_event_trigger_beyond_max_active_executions_is_skipped(tmp_path: Path) -> None:
    path, loaded = workflow("on_event", job("a"))
    loaded.workflow.start_on_events = [EventCondition("go")]
    loaded.workflow.max_active_executions = 1
    world = World(blocking={"a"})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        h.engine.send_event(_event("go", "1"))
        await h.settle()
        h.engine.send_event(_event("go", "2"))
        await h.settle()
        assert [e["trigger"] for e in h.executions("on_event")] == ["event go=1"]
        assert h.engine.skipped_starts == 1
        assert h.engine.contained_errors == 0  # the skip is logged, not an error the loop had to contain


async def test_a_catch_up_slot_after_a_crash_waits_for_the_execution_it_finds(tmp_path: Path) -> None:
    """Down from T0+1 to T0+35 with a 10 s timer while the T0 execution runs on: the
    catch-up (T0+30) queues behind it, is lost in a second crash with it, fires again as the
    catch-up of the second downtime, and starts once the execution ends: never twice."""
    world, clock = World(blocking={"a"}), ManualClock(T0)
    async with running(tmp_path, [periodic("beat", 10)], world=world, clock=clock) as h:
        await h.advance_to(T0 + 1)
        store = crash(h)
    clock.set(T0 + 35)
    world.crashed = False
    async with running(tmp_path, [periodic("beat", 10)], world=world, clock=clock, store=store) as h:
        assert world.submitted == ["1.a.1"]  # taken over, not started again
        assert h.engine.workflows["beat"].queued_tick == T0 + 30
        store = crash(h)
    clock.set(T0 + 47)
    world.crashed = False
    async with running(tmp_path, [periodic("beat", 10)], world=world, clock=clock, store=store) as h:
        assert h.engine.workflows["beat"].queued_tick == T0 + 40
        world.running("a").end(0)
        await h.settle()
        assert triggers(h.executions("beat")) == [T0, T0 + 40]
        assert world.submitted == ["1.a.1", "2.a.1"]


async def test_a_job_level_slot_while_its_job_runs_is_dropped_under_skip(tmp_path: Path) -> None:
    path, loaded = workflow("slow", job("a", periodic_config=every(interval_seconds=10)))
    loaded.workflow.on_overlap = OverlapPolicy.SKIP
    world = World(blocking={"a"})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        await h.advance_to(T0 + 25)
        world.blocking.clear()
        world.running("a").end(0)
        await h.settle()
        assert world.submitted == ["1.a.1"]  # T0+10 and T0+20 skipped, nothing deferred
        assert h.engine.skipped_starts == 2
        await h.advance_to(T0 + 30)
        assert world.submitted == ["1.a.1", "2.a.1"]


async def test_a_paused_workflow_drops_its_queued_slot(tmp_path: Path) -> None:
    world = World(blocking={"a"})
    async with running(tmp_path, [periodic("beat", 2)], world=world) as h:
        await h.advance_to(T0 + 3)
        await h.engine.request(lambda engine: engine.set_paused("beat", True))
        world.running("a").end(0)
        await h.settle()
        assert triggers(h.executions("beat")) == [T0]
        assert h.store.last_tick("beat", "") == T0 + 2  # held, as a tick while paused is


# -- retry backoff ----------------------------------------------------------------------


def test_backoff_delays() -> None:
    fixed = JobConfig("a", "bash", retry_delay=10, retry_max_delay=15)
    assert [fixed.retry_delay_for(n) for n in (1, 2, 3)] == [10, 10, 10]  # a cap is for the exponential backoff
    grows = JobConfig("a", "bash", retry_delay=10, retry_backoff=RetryBackoff.EXPONENTIAL)
    assert [grows.retry_delay_for(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    capped = JobConfig("a", "bash", retry_delay=10, retry_backoff=RetryBackoff.EXPONENTIAL, retry_max_delay=25)
    assert [capped.retry_delay_for(n) for n in (1, 2, 3, 200)] == [10, 20, 25, 25]


async def test_exponential_backoff_waits_on_the_clock(tmp_path: Path) -> None:
    config = job("a", retries=3, retry_delay=10, retry_backoff=RetryBackoff.EXPONENTIAL, retry_max_delay=25)
    path, loaded = workflow("flaky", config)
    world = World(exit_codes={"a": [1, 1, 1, 0]})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        starts: list[float] = []
        for due in (T0 + 10, T0 + 30, T0 + 55):  # waits of 10, 20, then 40 capped at 25
            await h.advance_to(due - 0.01)
            assert len(world.submitted) == len(starts) + 1
            await h.advance_to(due)
            starts.append(h.clock.now())
            assert len(world.submitted) == len(starts) + 1
        assert [r["status"] for r in h.rows("flaky")] == ["FAILED", "FAILED", "FAILED", "FINISHED"]
        assert [r["reason"] for r in h.rows("flaky")][1:] == ["retry 1 of 3", "retry 2 of 3", "retry 3 of 3"]


async def test_a_backoff_waiting_at_a_crash_keeps_its_grown_delay(tmp_path: Path) -> None:
    config = job("a", retries=2, retry_delay=10, retry_backoff=RetryBackoff.EXPONENTIAL)
    path, loaded = workflow("flaky", config)
    world, clock = World(exit_codes={"a": [1, 1, 0]}), ManualClock(T0)
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock) as h:
        await h.advance_to(T0 + 10)  # retry 1 started and failed at T0+10: retry 2 is due at T0+30
        assert len(world.submitted) == 2
        store = crash(h)
    world.crashed = False
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock, store=store) as h:
        await h.advance_to(T0 + 29.9)
        assert len(world.submitted) == 2
        await h.advance_to(T0 + 30)
        assert len(world.submitted) == 3


# -- parameters and events reach the jobs ------------------------------------------------


async def test_params_reach_every_job_and_its_retries_and_survive_a_crash(tmp_path: Path) -> None:
    path, loaded = started_by_hand("etl", job("a", retries=2, retry_delay=30), job("b"))
    world, clock = World(exit_codes={"a": [1, 1, 0]}), ManualClock(T0)
    envs: list[JobRun] = []
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock, on_job_change=envs.append) as h:
        await h.engine.request(lambda engine: engine.start_execution("etl", params={"DAY": "2024-01-31", "mode": "full"}))
        await h.advance_to(T0 + 31)  # a failed twice, its second retry waits
        assert h.executions("etl")[0]["params"] == {"DAY": "2024-01-31", "mode": "full"}
        store = crash(h)
    world.crashed = False
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock, store=store, on_job_change=envs.append) as h:
        await h.advance_to(T0 + 61)
        assert [r["status"] for r in h.rows("etl") if r["job"] == "a"] == ["FAILED", "FAILED", "FINISHED"]
    started = {(run.job, run.attempt): run.env.variables for run in envs}
    assert set(started) == {("a", 1), ("a", 2), ("a", 3), ("b", 1)}
    for variables in started.values():  # the third attempt ran under the restarted engine
        assert variables == {"AIFLOWD_PARAM_DAY": "2024-01-31", "AIFLOWD_PARAM_mode": "full"}


@pytest.mark.parametrize("bad", [{"1X": "v"}, {"A-B": "v"}, {"": "v"}, {"A": 3}])
async def test_bad_params_are_refused_in_one_line(tmp_path: Path, bad: dict[str, Any]) -> None:
    path, loaded = started_by_hand("etl", job("a"))
    async with running(tmp_path, [(path, loaded)]) as h:
        with pytest.raises(EngineError) as refused:
            await h.engine.request(lambda engine: engine.start_execution("etl", params=bad))
        assert "\n" not in str(refused.value) and "parameter" in str(refused.value)
        assert h.executions("etl") == []


async def test_the_starting_event_reaches_the_jobs_it_starts(tmp_path: Path) -> None:
    """The event of a start trigger reaches every job; a job's own event rule gives it its event."""
    path, loaded = workflow("react", job("a"), job("b"), rules=(Rule("b", EventCondition("more")),))
    loaded.workflow.start_on_events = [EventCondition("go")]
    envs: list[JobRun] = []
    async with running(tmp_path, [(path, loaded)], world=World(blocking={"b"}), on_job_change=envs.append) as h:
        h.engine.send_event(_event("go", "42", sender="cli"))
        await h.settle()
        h.engine.send_event(_event("more", "7"))
        await h.settle()
        [execution] = h.executions("react")
        assert execution["event"]["key"] == "go"
    started = {run.job: run.env.variables for run in envs}
    assert started["a"]["AIFLOWD_EVENT_KEY"] == "go" and started["a"]["AIFLOWD_EVENT_VALUE"] == "42"
    assert started["a"]["AIFLOWD_EVENT_SENDER"] == "cli"
    assert started["b"]["AIFLOWD_EVENT_KEY"] == "more" and started["b"]["AIFLOWD_EVENT_VALUE"] == "7"


def _event(key: str, value: str, sender: str = "") -> Any:
    from aiflowd.model import Event

    return Event(key, value, sender=sender)


# -- the YAML ---------------------------------------------------------------------------


def test_the_keys_load(registry: PluginRegistry, tmp_path: Path) -> None:
    path = write(
        tmp_path / "wf.yaml",
        """
        on_overlap: skip
        max_active_executions: 2
        job_1:
          job_type: bash
          bash_command: 'true'
          retries: 3
          retry_delay: 10s
          retry_backoff: exponential
          retry_max_delay: 1m
        job_2:
          job_type: bash
          bash_command: 'true'
          retry_max_delay: 1m
        """,
    )
    loaded = WorkflowLoader(registry).load(str(path))
    assert loaded.workflow.on_overlap == OverlapPolicy.SKIP and loaded.workflow.max_active_executions == 2
    config = loaded.workflow.jobs["job_1"].config
    assert (config.retry_backoff, config.retry_delay, config.retry_max_delay) == (RetryBackoff.EXPONENTIAL, 10, 60)
    assert [str(w) for w in loaded.warnings] == [
        f"{path}:13:3: job_2.retry_max_delay: warning: retry_max_delay caps only 'retry_backoff: exponential'; a fixed delay ignores it"
    ]


# -- a real daemon, real bash jobs, the real aiflowctl ---------------------------------------


def served(daemon: Daemon, *names: str) -> bool:
    """Whether the daemon serves a valid version of each workflow (not merely lists it, loading)."""
    active = {row["workflow"] for row in daemon.json("workflow", "list") if row["status"] == "active"}
    return active >= set(names)


#: A job writing the parameters and event it got, whole or not at all (the test waits for the file).
ECHO_ENV = "env | grep -E '^AIFLOWD_(PARAM|EVENT)_' | sort > {out}/.$$ && mv {out}/.$$ {out}/$AIFLOWD_JOB.$AIFLOWD_JOB_EXECUTION_ID"


def test_params_and_the_event_reach_real_bash_jobs(daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    gate = tmp_path / "gate"
    daemon.write_workflow(
        "etl.yaml",
        f"""
        max_active_executions: 1
        start_new_workflow_execution_on_events: [{{event_key: rerun}}]  # so a file change starts none
        first:
          job_type: bash
          bash_command: |
            {ECHO_ENV.format(out=out)}; while [ ! -e {gate} ]; do sleep 0.02; done
        """,
    )
    daemon.write_workflow(
        "react.yaml",
        f"""
        start_new_workflow_execution_on_events: [{{event_key: dataset, event_value: '*'}}]
        job:
          job_type: bash
          bash_command: |
            {ECHO_ENV.format(out=out)}
        """,
    )
    wait_for(lambda: served(daemon, "etl", "react"))
    started = daemon.ctl("workflow", "start-execution", "etl", "--param", "DAY=2024-01-31", "--param", "note=a b=c")
    assert started.stdout.strip() == "execution_id=1"
    refused = daemon.ctl("workflow", "start-execution", "etl", check=False)
    assert refused.returncode != 0
    assert "has 1 active execution, its max_active_executions" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    bad = daemon.ctl("workflow", "start-execution", "etl", "--param", "9lives=x", check=False)
    assert bad.returncode != 0 and "'9lives' is not an identifier" in bad.stderr
    wait_for(lambda: (out / "first.1.first.1").exists())
    assert (out / "first.1.first.1").read_text().splitlines() == ["AIFLOWD_PARAM_DAY=2024-01-31", "AIFLOWD_PARAM_note=a b=c"]
    listing = daemon.ctl("workflow", "list-executions", "etl").stdout
    assert "DAY=2024-01-31 note=a b=c" in listing

    # A restart: the execution is taken over, and a job started after it still gets the params.
    daemon.kill9()
    daemon.start()
    [execution] = daemon.json("workflow", "list-executions", "etl")
    assert execution["params"] == {"DAY": "2024-01-31", "note": "a b=c"}
    daemon.ctl("job", "restart-execution", "etl", "first")
    wait_for(lambda: (out / "first.1.first.2").exists())
    assert (out / "first.1.first.2").read_text() == (out / "first.1.first.1").read_text()
    gate.touch()

    daemon.ctl("event", "send", "dataset", "orders", "--sender", "loader")
    rows = daemon.wait_jobs("react", lambda rows: rows and rows[0]["status"] == "FINISHED")
    written = (out / f"job.{rows[0]['execution_id']}.job.1").read_text().splitlines()
    assert written == [
        "AIFLOWD_EVENT_KEY=dataset",
        "AIFLOWD_EVENT_NAMESPACE=default",
        "AIFLOWD_EVENT_SENDER=loader",
        "AIFLOWD_EVENT_TYPE=*",
        "AIFLOWD_EVENT_VALUE=orders",
    ]
    assert json.loads(json.dumps(daemon.json("workflow", "list-executions", "react")[0]["event"]))["value"] == "orders"


def test_a_periodic_workflow_never_overlaps_in_a_real_daemon(daemon: Daemon, tmp_path: Path) -> None:
    """The report that started this: a 1 s timer and a job running longer ran several at once."""
    gate = tmp_path / "gate"
    daemon.write_workflow(
        "beat.yaml",
        f"""
        periodic_config: {{interval: 1s}}
        slow:
          job_type: bash
          bash_command: "while [ ! -e {gate} ]; do sleep 0.02; done"
        """,
    )
    daemon.wait_jobs("beat", lambda rows: rows and rows[0]["status"] == "RUNNING")
    wait_for(lambda: daemon.json("workflow", "show", "beat")["queued_slot"] is not None, timeout=10)  # a slot came meanwhile
    assert "overlap:  queue; a slot waits: " in daemon.ctl("workflow", "show", "beat").stdout
    assert [e["status"] for e in daemon.json("workflow", "list-executions", "beat")] == ["RUNNING"]
    gate.touch()
    daemon.wait_jobs("beat", lambda rows: len(rows) >= 3)  # the queued slot at once, then the timer's
    daemon.ctl("workflow", "pause-scheduling", "beat")
    wait_for(lambda: all(e["status"] != "RUNNING" for e in daemon.json("workflow", "list-executions", "beat")))
    executions = sorted(daemon.json("workflow", "list-executions", "beat"), key=lambda e: e["id"])
    for before, after in itertools.pairwise(executions):
        assert after["started_at"] >= before["ended_at"], executions  # one at a time


def test_a_python_processor_sees_params_and_event_in_its_context(daemon: Daemon, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    folder = daemon.workflows / "py"
    write(
        folder / "py.yaml",
        """
        start_new_workflow_execution_on_events: [{event_key: go}]
        job:
          job_type: python
          processor: steps:Show
        """,
    )
    write(
        folder / "steps.py",
        f"""
        import json

        from aiflowd import PythonProcessor


        class Show(PythonProcessor):
            def process(self, ctx, inputs):
                event = ctx.event
                with open({str(seen)!r}, "w") as out:
                    json.dump({{"params": ctx.params, "event": event and [event.key, event.value, event.sender]}}, out)
                return []
        """,
    )
    wait_for(lambda: served(daemon, "py"))
    client = Client(str(daemon.socket))  # the Python client, as a notebook or a job would start it
    with pytest.raises(ControlError, match="parameter name 'bad name' is not an identifier"):
        client.start_execution("py", params={"bad name": "x"})
    client.start_execution("py", params={"LIMIT": "10"})
    daemon.wait_jobs("py", lambda rows: rows and rows[0]["status"] == "FINISHED")
    assert json.loads(seen.read_text()) == {"params": {"LIMIT": "10"}, "event": None}
    daemon.ctl("event", "send", "go", "now", "--sender", "me")
    daemon.wait_jobs("py", lambda rows: len(rows) == 2 and rows[0]["status"] == "FINISHED")
    assert json.loads(seen.read_text()) == {"params": {}, "event": ["go", "now", "me"]}


def test_the_definition_sets_the_overlap_rules(registry: PluginRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "flow"
    write(folder / "flow.yaml", "periodic_config: {interval: 1m}\n")
    definition = """
        from aiflowd import BashProcessor, job_config, user_define_operation, workflow_scheduling
        with job_config("say"):
            user_define_operation(processor=BashProcessor("echo hi"))
        workflow_scheduling(max_active_executions=2, on_overlap={overlap!r})
        """
    write(folder / "flow.py", definition.format(overlap="allow"))
    loader = WorkflowLoader(registry)
    loaded = loader.load(str(folder))
    assert (loaded.workflow.on_overlap, loaded.workflow.max_active_executions) == (OverlapPolicy.ALLOW, 2)

    write(folder / "flow.py", definition.format(overlap="sometimes"))
    with pytest.raises(LoadError) as bad:
        loader.load(str(folder))
    [problem] = [str(p) for p in bad.value.problems]
    assert problem.startswith(f"{folder}/flow.py:4:") and "on_overlap must be one of skip, queue, allow; got 'sometimes'" in problem

    write(folder / "flow.yaml", "periodic_config: {interval: 1m}\non_overlap: skip\n")
    write(folder / "flow.py", definition.format(overlap="allow"))
    with pytest.raises(LoadError) as twice:
        loader.load(str(folder))
    assert [str(p) for p in twice.value.problems] == [
        f"{folder}/flow.yaml:2:1: on_overlap: also given by workflow_scheduling() at {folder}/flow.py:4: give it in one place"
    ]
