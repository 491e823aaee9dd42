"""The engine with a clock the test moves and jobs the test ends: schedules, restarts, faults.

Jobs here are of a test job type whose executions live in a ``World`` shared by the
engines of one test, so a "crash" (an engine dropped without stopping its jobs) and a
restart (a new engine on the same database) are exact, and so are ticks and retry
delays: time moves only when the test says so.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from aiflowd.clock import ManualClock
from aiflowd.engine import Engine, EnginePaths, JobRun
from aiflowd.inbox import CheckStore, Removed, Tick, UserEvent
from aiflowd.model import AISubGraph, Event, JobConfig, JobStatusCondition, PeriodicConfig, Rule, Status, Workflow
from aiflowd.plugin_interface import Job, JobController, JobGenerator, JobHandle, JobPluginFactory, JobRuntimeEnv, PluginRegistry
from aiflowd.store import Store
from aiflowd.workflows.errors import LoadError, Problem
from aiflowd.workflows.loader import LoadedWorkflow, WorkflowLoader

from .conftest import pid_alive, write

T0 = 1_700_000_000.0


# -- a job type whose executions the test ends -----------------------------------------


@dataclass
class Execution:
    """One job execution in the test's world: it ends when the test says so (or at once)."""

    job: str
    code: int | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    def end(self, code: int = 0) -> None:
        if self.code is None:
            self.code = code
            self.done.set()


@dataclass
class World:
    """Where test jobs run: it outlives an engine, as processes outlive a killed daemon."""

    #: Jobs that run until the test ends them; others finish (exit 0) at once, or with ``exit_codes``.
    blocking: set[str] = field(default_factory=set)
    exit_codes: dict[str, list[int]] = field(default_factory=dict)
    executions: dict[str, Execution] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    #: While set, stopping does nothing: the engine is "killed -9", its jobs go on.
    crashed: bool = False

    def running(self, job: str) -> Execution:
        [execution] = [e for e in self.executions.values() if e.job == job and e.code is None]
        return execution


class FakeHandle(JobHandle):
    def __init__(self, job: Job, info: Any, key: str) -> None:
        super().__init__(job, info)
        self.key = key


class FakeController(JobController):
    """Runs test jobs in the World; finds them again after a restart by their execution id."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        key = job_runtime_env.job_execution_info.job_execution_id
        self.world.submitted.append(key)
        execution = self.world.executions[key] = Execution(job.job_name)
        if job.job_name not in self.world.blocking:
            codes = self.world.exit_codes.get(job.job_name)
            execution.end(codes.pop(0) if codes else 0)
        return FakeHandle(job, job_runtime_env.job_execution_info, key)

    async def stop_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> None:
        if not self.world.crashed:
            self.world.executions[job_handle.key].end(143)  # type: ignore[attr-defined]

    async def cleanup_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> None:
        pass

    async def get_result(self, job_handle: JobHandle, blocking: bool = True) -> object:
        execution = self.world.executions[job_handle.key]  # type: ignore[attr-defined]
        if blocking:
            await execution.done.wait()
        return execution.code

    async def get_job_status(self, job_handle: JobHandle) -> Status:
        code = self.world.executions[job_handle.key].code  # type: ignore[attr-defined]
        return Status.RUNNING if code is None else Status.FINISHED if code == 0 else Status.FAILED

    async def reattach(self, handle_record: dict[str, Any], job_runtime_env: JobRuntimeEnv) -> JobHandle | None:
        key = job_runtime_env.job_execution_info.job_execution_id
        if key not in self.world.executions:
            return None
        return FakeHandle(None, job_runtime_env.job_execution_info, key)  # type: ignore[arg-type]


class AIFlowStyleController(FakeController):
    """A controller as AIFlow's plugins have them: it cannot find an execution again."""

    reattach = JobController.reattach  # type: ignore[assignment]


class FakeGenerator(JobGenerator):
    def generate(self, sub_graph: AISubGraph, job_config: JobConfig, resource_dir: str | None = None) -> Job:
        return Job(job_config)


class FakeFactory(JobPluginFactory):
    def __init__(self, controller: JobController) -> None:
        self.controller = controller

    def job_type(self) -> str:
        return "test"

    def get_job_generator(self) -> JobGenerator:
        return FakeGenerator()

    def get_job_controller(self) -> JobController:
        return self.controller


def workflow(
    name: str,
    *jobs: JobConfig,
    rules: tuple[Rule, ...] = (),
    periodic: PeriodicConfig | None = None,
) -> tuple[str, LoadedWorkflow]:
    graphs = {config.job_name: AISubGraph(config) for config in jobs}
    loaded = LoadedWorkflow(
        Workflow(name, f"/workflows/{name}.yaml", "/workflows", f"v-{name}", jobs=graphs, rules=list(rules), periodic_config=periodic),
        {config.job_name: Job(config) for config in jobs},
    )
    return f"/workflows/{name}.yaml", loaded


def job(name: str, **knobs: Any) -> JobConfig:
    return JobConfig(name, "test", **knobs)


every = PeriodicConfig


# -- running an engine ------------------------------------------------------------------


@dataclass
class Harness:
    engine: Engine
    clock: ManualClock
    world: World
    store: Store
    changes: list[JobRun]

    async def settle(self) -> None:
        """Until every task that can run has run and the loop has handled what they posted."""
        for _ in range(5):
            await self.engine.request(lambda engine: None)
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
        await self.engine.request(lambda engine: None)

    async def advance_to(self, moment: float) -> None:
        """Move the clock one due deadline at a time, letting the engine act at each."""
        await self.settle()
        while (deadlines := [d for d in self.clock.deadlines if d <= moment]) and deadlines[0] <= moment:
            self.clock.set(deadlines[0])
            await self.settle()
        self.clock.set(moment)
        await self.settle()

    def rows(self, workflow: str) -> list[dict[str, Any]]:
        return list(reversed(self.store.job_executions(workflow=workflow)))

    def executions(self, workflow: str) -> list[dict[str, Any]]:
        return list(reversed(self.store.executions(workflow=workflow)))


@asynccontextmanager
async def running(
    tmp_path: Path,
    initial: list[tuple[str, LoadedWorkflow | LoadError]],
    *,
    world: World | None = None,
    clock: ManualClock | None = None,
    store: Store | None = None,
    controller: type[FakeController] = FakeController,
    registry: PluginRegistry | None = None,
    on_job_change: Callable[[JobRun], None] | None = None,
) -> AsyncIterator[Harness]:
    world = world or World()
    clock = clock or ManualClock(T0)
    store = store or Store(str(tmp_path / "state" / "aiflowd.db"))
    if registry is None:
        registry = PluginRegistry()
        registry.register(FakeFactory(controller(world)), module="tests.test_engine")
    changes: list[JobRun] = []

    def changed(run: JobRun) -> None:
        changes.append(run)
        if on_job_change is not None:
            on_job_change(run)

    engine = Engine(
        registry,
        store,
        EnginePaths(str(tmp_path / "state"), str(tmp_path / "logs")),
        settings={"stop_grace_period": 1.0, "run_dir": str(tmp_path / "run")},
        clock=clock,
        store_check_interval=0,
        on_job_change=changed,
    )
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(engine.serve, initial)
            harness = Harness(engine, clock, world, store, changes)
            await harness.settle()
            yield harness
            tg.cancel_scope.cancel()


def crash(harness: Harness) -> Store:
    """What kill -9 leaves: the committed database; the jobs go on (reopen the store to restart)."""
    harness.world.crashed = True
    path = harness.store.path
    harness.store.db.close()
    return Store(path)


# -- schedules --------------------------------------------------------------------------


async def test_two_schedules_in_one_workflow_tick_independently(tmp_path: Path) -> None:
    """Regression: a workflow-level and a job-level periodic_config shared one CancelScope,
    and the second timer task ended the daemon ("Each CancelScope may only be used for a
    single 'with' block")."""
    path, loaded = workflow("both", job("a"), job("b", periodic_config=every(interval_seconds=15)), periodic=every(interval_seconds=10))
    async with running(tmp_path, [(path, loaded)]) as h:
        await h.advance_to(T0 + 30)
        executions = h.executions("both")
        workflow_level = [_slot(e["trigger"]) for e in executions if e["only_job"] is None]
        # A job-level tick starts its job alone, or in the execution open at that moment.
        job_level = [_slot(e["trigger"]) for e in executions if e["only_job"] == "b"]
        job_level += [_slot(r["reason"]) for r in h.rows("both") if r["reason"].startswith("periodic")]
        assert workflow_level == [T0, T0 + 10, T0 + 20, T0 + 30]
        assert sorted(job_level) == [T0, T0 + 15, T0 + 30]
        assert h.engine.contained_errors == 0


async def test_a_new_version_rearms_its_timers_and_removal_stops_them(tmp_path: Path) -> None:
    path, loaded = workflow("beat", job("a"), periodic=every(interval_seconds=10))
    async with running(tmp_path, [(path, loaded)]) as h:
        await h.advance_to(T0 + 10)
        _, faster = workflow("beat", job("a"), job("b", periodic_config=every(interval_seconds=5)), periodic=every(interval_seconds=7))
        faster.workflow.version = "v2"
        h.engine.loaded(path, faster)
        await h.advance_to(T0 + 17)
        assert len(h.clock.deadlines) == 2  # exactly the new version's two timers sleep
        h.engine.post(Removed("beat"))
        await h.settle()
        assert h.clock.deadlines == []
        count = len(h.executions("beat"))
        await h.advance_to(T0 + 100)
        assert len(h.executions("beat")) == count


async def test_missed_slots_coalesce_into_one_catch_up_after_a_crash(tmp_path: Path) -> None:
    """Down from T0+5 to T0+47 with a 10 s schedule: the slots T0+10..T0+40 fire once, as T0+40."""
    path, loaded = workflow("beat", job("a"), periodic=every(interval_seconds=10))
    world, clock = World(), ManualClock(T0)
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock) as h:
        await h.advance_to(T0 + 5)
        store = crash(h)
    clock.set(T0 + 47)
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock, store=store) as h:
        await h.advance_to(T0 + 55)
        assert [_slot(e["trigger"]) for e in h.executions("beat")] == [T0, T0 + 40, T0 + 50]


async def test_a_job_level_catch_up_waits_for_the_run_it_finds_and_is_not_lost(tmp_path: Path) -> None:
    """Regression: the catch-up tick of a job-level schedule was dropped (recorded as fired)
    when the job it should start was still running, taken over after the restart."""
    path, loaded = workflow("nightly", job("a", periodic_config=every(interval_seconds=10)))
    world, clock = World(blocking={"a"}), ManualClock(T0)
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock) as h:
        assert world.submitted == ["1.a.1"]
        store = crash(h)
    clock.set(T0 + 35)
    world.crashed = False
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock, store=store) as h:
        assert world.submitted == ["1.a.1"]  # taken over, not started again
        world.running("a").end(0)
        world.blocking.clear()
        await h.settle()
        assert world.submitted == ["1.a.1", "1.a.2"]
        assert h.rows("nightly")[1]["reason"] == f"periodic {_iso(T0 + 30)}"
        await h.advance_to(T0 + 45)
        assert world.submitted == ["1.a.1", "1.a.2", "2.a.1"]  # then on schedule again: T0+40


async def test_slots_while_a_job_runs_coalesce_into_one_start_after_it(tmp_path: Path) -> None:
    path, loaded = workflow("slow", job("a", periodic_config=every(interval_seconds=10)))
    world = World(blocking={"a"})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        await h.advance_to(T0 + 35)  # T0+10, +20, +30 come while the first run goes on
        assert world.submitted == ["1.a.1"]
        world.blocking.clear()
        world.running("a").end(0)
        await h.settle()
        assert world.submitted == ["1.a.1", "1.a.2"]
        assert h.rows("slow")[1]["reason"] == f"periodic {_iso(T0 + 30)}"


async def test_retry_delay_waits_on_the_clock(tmp_path: Path) -> None:
    path, loaded = workflow("flaky", job("a", retries=2, retry_delay=30))
    world = World(exit_codes={"a": [1, 1, 0]})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        await h.settle()
        assert world.submitted == ["1.a.1"]
        await h.advance_to(T0 + 29.9)
        assert world.submitted == ["1.a.1"]
        await h.advance_to(T0 + 30)
        assert world.submitted == ["1.a.1", "1.a.2"]
        await h.advance_to(T0 + 60)
        assert [r["status"] for r in h.rows("flaky")] == ["FAILED", "FAILED", "FINISHED"]


async def test_a_retry_waiting_at_a_crash_keeps_its_due_time(tmp_path: Path) -> None:
    path, loaded = workflow("flaky", job("a", retries=1, retry_delay=30))
    world, clock = World(exit_codes={"a": [1, 0]}), ManualClock(T0)
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock) as h:
        await h.advance_to(T0 + 10)
        store = crash(h)
    world.crashed = False
    async with running(tmp_path, [(path, loaded)], world=world, clock=clock, store=store) as h:
        await h.advance_to(T0 + 29)
        assert world.submitted == ["1.a.1"]
        await h.advance_to(T0 + 30)
        assert world.submitted == ["1.a.1", "1.a.2"]


# -- restarts never run anything twice --------------------------------------------------


@pytest.mark.parametrize("started", [True, False], ids=["recorded-running", "init-without-handle"])
async def test_a_job_a_restarted_engine_cannot_find_is_never_started_again(tmp_path: Path, started: bool) -> None:
    """Regression: after kill -9, a job whose controller cannot find it again (AIFlow-style
    controllers have no ``reattach``) was marked FAILED and retried, or started again from
    INIT, while the first still ran, orphaned."""
    path, loaded = workflow("twice", job("a", retries=2))
    world = World(blocking={"a"})
    async with running(tmp_path, [(path, loaded)], world=world, controller=AIFlowStyleController) as h:
        await h.settle()
        store = crash(h)
    if not started:  # the daemon died between starting the job and recording its handle
        store.db.execute("UPDATE job_executions SET status = 'INIT', handle = NULL, started_at = NULL")
        store.db.commit()
    world.crashed = False
    async with running(tmp_path, [(path, loaded)], world=world, store=store, controller=AIFlowStyleController) as h:
        [row] = h.rows("twice")
        assert world.submitted == ["1.a.1"]
        assert row["status"] == "FAILED"
        assert ("could not be found again" if started else "cannot tell whether it started") in row["message"]
        assert world.running("a")  # left alone: it may be doing its work
        store = crash(h)
    async with running(tmp_path, [(path, loaded)], world=world, store=store, controller=AIFlowStyleController) as h:
        assert world.submitted == ["1.a.1"]  # nor retried at a later start


async def test_a_job_found_again_after_a_crash_is_adopted_not_restarted(tmp_path: Path) -> None:
    path, loaded = workflow("adopt", job("a"), job("b"), rules=(Rule("b", JobStatusCondition("a")),))
    world = World(blocking={"a"})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        await h.settle()
        store = crash(h)
    store.db.execute("UPDATE job_executions SET status = 'INIT', handle = NULL")
    store.db.commit()
    world.crashed = False
    async with running(tmp_path, [(path, loaded)], world=world, store=store) as h:
        world.running("a").end(0)
        await h.settle()
        assert world.submitted == ["1.a.1", "1.b.1"]
        assert [(r["job"], r["status"]) for r in h.rows("adopt")] == [("a", "FINISHED"), ("b", "FINISHED")]


async def test_an_execution_whose_workflow_does_not_load_at_restart_runs_on_until_it_does(tmp_path: Path) -> None:
    """Regression: a workflow that did not load at a restart (a broken edit made while down,
    a definition still compiling) had its running jobs killed, then started again from
    scratch once it loaded: the same work twice."""
    path, loaded = workflow("slowload", job("a"))
    world = World(blocking={"a"})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        store = crash(h)
    world.crashed = False
    broken = LoadError([Problem(path, 1, 1, "a", "a broken edit")])
    async with running(tmp_path, [(path, broken)], world=world, store=store) as h:
        assert world.running("a")  # not stopped
        assert [r["status"] for r in h.rows("slowload")] == ["RUNNING"]
        h.engine.loaded(path, loaded)  # fixed (or compiled at last): taken over, not started again
        await h.settle()
        world.running("a").end(0)
        await h.settle()
        assert world.submitted == ["1.a.1"]
        assert [r["status"] for r in h.rows("slowload")] == ["FINISHED"]
        assert [e["status"] for e in h.executions("slowload")] == ["FINISHED"]


# -- the second stop signal -------------------------------------------------------------


async def test_kill_all_records_the_killed_jobs_before_returning(tmp_path: Path, loader: WorkflowLoader) -> None:
    """Regression: the second stop signal SIGKILLed the jobs and left their records RUNNING."""
    path = write(tmp_path / "wf" / "deaf.yaml", "d:\n  job_type: bash\n  bash_command: \"trap '' TERM; sleep 300\"\n")
    loaded = loader.load(str(path))
    async with running(tmp_path, [], registry=loader.registry) as h:
        await h.engine.request(lambda engine: engine.run_workflow(loaded))
        await _until(lambda: bool(h.rows("deaf")) and h.rows("deaf")[0]["status"] == "RUNNING")
        pid = int(h.rows("deaf")[0]["handle"]["pid"])
        assert h.engine.kill_all() == 1
        # Recorded and committed at once: another connection sees it before anything else runs.
        with sqlite3.connect(h.store.path) as db:
            status, ended_at, message = db.execute("SELECT status, ended_at, message FROM job_executions").fetchone()
            (execution_status,) = db.execute("SELECT status FROM executions").fetchone()
        assert (status, execution_status) == ("KILLED", "KILLED") and ended_at is not None
        assert "second stop signal" in message
        await _until(lambda: not pid_alive(pid))


# -- the store --------------------------------------------------------------------------


class FullDisk:
    """A connection whose commits fail while ``full`` (disk full, read-only folder)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.full = False

    def commit(self) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        self.db.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_store_that_cannot_write_degrades_and_acts_only_once_committed(tmp_path: Path) -> None:
    path, loaded = workflow("chain", job("a"), job("b"), rules=(Rule("b", JobStatusCondition("a")),))
    world = World(blocking={"a"})
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    disk = FullDisk(store.db)
    store.db = disk  # type: ignore[assignment]
    async with running(tmp_path, [(path, loaded)], world=world, store=store) as h:
        await h.settle()
        disk.full = True
        world.running("a").end(0)
        await h.settle()
        # 'a' ended and 'b' is decided, but nothing is committed: 'b' must not start yet.
        assert world.submitted == ["1.a.1"]
        assert h.engine.store_problem is not None and "disk is full" in h.engine.store_problem
        assert await h.engine.request(lambda engine: engine.store_problem) == h.engine.store_problem  # reads answer
        h.engine.send_event(Event("k", "v"))  # more writes while degraded: kept
        await h.settle()
        disk.full = False
        await h.settle()
        assert h.engine.store_problem is None
        assert world.submitted == ["1.a.1", "1.b.1"]
        with sqlite3.connect(store.path) as db:
            rows = db.execute("SELECT id, job, status FROM job_executions ORDER BY id").fetchall()
            events = db.execute("SELECT key FROM events").fetchall()
        assert [(job, status) for _, job, status in rows] == [("a", "FINISHED"), ("b", "FINISHED")]
        assert next(run.id for run in h.changes if run.job == "b") == rows[1][0]  # the id the engine used
        assert events == [("k",)]


async def test_a_deleted_database_is_written_back_with_everything(tmp_path: Path) -> None:
    path, loaded = workflow("kept", job("a"))
    async with running(tmp_path, [(path, loaded)]) as h:  # added: its execution starts
        for suffix in ("", "-wal", "-shm"):
            os.unlink(h.store.path + suffix)
        h.engine.post(CheckStore())
        await h.settle()
        assert os.path.exists(h.store.path)
        h.engine.post(_start("kept"))  # and it goes on writing into the file at its path
        await h.settle()
        with sqlite3.connect(h.store.path) as db:
            assert db.execute("SELECT name FROM workflows").fetchall() == [("kept",)]
            assert db.execute("SELECT id, status FROM executions").fetchall() == [(1, "FINISHED"), (2, "FINISHED")]


def test_events_after_an_id_are_the_oldest_first(tmp_path: Path) -> None:
    """Regression: ``events(after, limit)`` gave the newest rows, so a follower skipped events
    when more than ``limit`` arrived between two polls."""
    store = Store(":memory:")
    for n in range(1, 11):
        store.add_event(f"k{n}", "v", "*", "default", "", float(n))
    store.commit()
    assert [e["id"] for e in store.events(0, 3)] == [1, 2, 3]
    assert [e["id"] for e in store.events(3, 3)] == [4, 5, 6]
    assert [e["id"] for e in store.events(8, 5)] == [9, 10]
    assert [e["id"] for e in store.events(0, 3, newest=True)] == [8, 9, 10]


# -- the inbox and containment ----------------------------------------------------------


async def test_the_inbox_takes_typed_messages_and_the_old_form(tmp_path: Path) -> None:
    path, loaded = workflow("typed", job("a"))
    async with running(tmp_path, []) as h:
        h.engine.loaded(path, loaded)
        await h.settle()
        assert h.engine.workflows["typed"].loaded is loaded
        h.engine.post("event", Event("k", "v"))  # the deprecated form still works
        h.engine.removed("typed")
        await h.settle()
        assert h.engine.workflows["typed"].status == "retired"
        assert [e["key"] for e in h.store.events()] == ["k"]
        with pytest.raises(TypeError):
            h.engine.post("evnet", Event("k", "v"))


async def test_a_message_that_fails_is_contained(tmp_path: Path) -> None:
    path, loaded = workflow("sturdy", job("a"))
    async with running(tmp_path, [(path, loaded)]) as h:
        h.engine.post(object())  # type: ignore[arg-type]
        h.engine.post(Tick("sturdy", "no-such-job", T0))
        h.engine.post(UserEvent(None))  # type: ignore[arg-type]
        await h.settle()
        assert h.engine.contained_errors >= 1
        assert await h.engine.request(lambda engine: engine.start_execution("sturdy")) == 2
        await h.settle()
        assert [r["status"] for r in h.rows("sturdy")] == ["FINISHED", "FINISHED"]


async def test_a_failing_job_change_callback_fails_nothing_else(tmp_path: Path) -> None:
    def broken(run: JobRun) -> None:
        raise RuntimeError("a display that breaks")

    path, loaded = workflow("shown", job("a"), job("b"), rules=(Rule("b", JobStatusCondition("a")),))
    async with running(tmp_path, [(path, loaded)], on_job_change=broken) as h:
        await h.settle()
        assert [(r["job"], r["status"]) for r in h.rows("shown")] == [("a", "FINISHED"), ("b", "FINISHED")]
        assert h.engine.contained_errors > 0


# -- helpers ----------------------------------------------------------------------------


def _start(name: str) -> Any:
    from aiflowd.inbox import Call, Reply

    return Call(lambda engine: engine.start_execution(name), Reply())


def _slot(trigger: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(trigger.removeprefix("periodic ")).timestamp()


def _iso(moment: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(moment).isoformat(timespec="milliseconds")


async def _until(predicate: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait for a condition of the world outside the engine (a real process)."""
    with anyio.fail_after(15):
        while not predicate():
            await anyio.sleep(0.01)


async def test_an_execution_whose_job_end_fails_to_be_handled_still_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, loaded = workflow("odd", job("a"), job("b"), rules=(Rule("b", JobStatusCondition("a")),))
    world = World(blocking={"a"})
    async with running(tmp_path, [(path, loaded)], world=world) as h:
        monkeypatch.setattr("aiflowd.scheduler.on_job_ended", _raise)
        world.running("a").end(0)
        await h.settle()
        assert h.engine.contained_errors == 1
        assert h.engine.executions == {}  # ended, not left open for ever
        assert world.submitted == ["1.a.1"]


def _raise(*args: object) -> None:
    raise RuntimeError("a bug in a rule")


class ReportingController(FakeController):
    """A test controller that keeps each execution's runtime env, to report conditions through it."""

    envs: dict[str, JobRuntimeEnv] = {}

    async def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        self.envs[job.job_name] = job_runtime_env
        return await super().submit_job(job, job_runtime_env)

    async def reattach(self, handle_record: dict[str, Any], job_runtime_env: JobRuntimeEnv) -> JobHandle | None:
        self.envs[job_runtime_env.job_name] = job_runtime_env
        return await super().reattach(handle_record, job_runtime_env)


async def test_a_reported_condition_is_shown_but_rules_still_see_the_job_running(tmp_path: Path) -> None:
    from aiflowd.daemon.methods import _job_row, shown_execution

    path, loaded = workflow(
        "cond", job("a"), job("b"), job("c"), rules=(Rule("b", JobStatusCondition("a", "RUNNING")), Rule("c", JobStatusCondition("a")))
    )
    world = World(blocking={"a", "b"})
    ReportingController.envs = {}
    async with running(tmp_path, [(path, loaded)], world=world, controller=ReportingController) as h:
        await h.settle()
        env = ReportingController.envs["a"]
        env.report_condition("UNREACHABLE", "the cluster at X does not answer", "X", T0 - 5)
        await h.settle()
        [a, b] = h.rows("cond")
        assert (a["status"], a["condition"], a["condition_since"], a["message"]) == (
            "RUNNING",
            "UNREACHABLE",
            T0 - 5,
            "the cluster at X does not answer",
        )
        assert (_job_row(a)["status"], _job_row(a)["status_since"]) == ("UNREACHABLE", T0 - 5)
        assert _job_row(b)["status"] == "RUNNING" and b["job"] == "b"  # started by a's RUNNING, before the report
        [execution] = await h.engine.request(lambda e: [shown_execution(e, row) for row in e.store.executions(workflow="cond")])
        assert (execution["status"], execution["status_since"]) == ("UNREACHABLE", T0 - 5)
        run = next(iter(h.engine.executions.values())).running["a"]
        assert (run.status, run.shown_status) == (Status.RUNNING, "UNREACHABLE")
        # From a blocking controller's worker thread too; back to RUNNING.
        await anyio.to_thread.run_sync(env.report_condition, None, "", "X", None)
        await h.settle()
        a = h.rows("cond")[0]
        assert (a["condition"], a["condition_since"], a["message"], _job_row(a)["status"]) == (None, None, None, "RUNNING")
        env.report_condition("UNREACHABLE", "again", "X", None)  # no since: the engine's clock says when
        await h.settle()
        assert h.rows("cond")[0]["condition_since"] == h.clock.now()
        assert len(h.rows("cond")) == 2  # c waits for a to end: an UNREACHABLE job has not ended
        world.running("a").end(0)
        await h.settle()
        rows = h.rows("cond")
        assert [(r["job"], r["status"], r["condition"]) for r in rows] == [
            ("a", "FINISHED", None),
            ("b", "RUNNING", None),
            ("c", "FINISHED", None),
        ]
        env.report_condition("UNREACHABLE", "late", "X", None)  # after its end: ignored
        await h.settle()
        assert h.rows("cond")[0]["condition"] is None and h.rows("cond")[0]["message"] is None
        assert [r.job for r in h.changes if r.job == "a"].count("a") == 3  # created, running, ended: a condition is no change


async def test_a_condition_outlives_a_restart_until_the_controller_says_otherwise(tmp_path: Path) -> None:
    from aiflowd.daemon.methods import _job_row

    path, loaded = workflow("again", job("a"))
    world = World(blocking={"a"})
    ReportingController.envs = {}
    async with running(tmp_path, [(path, loaded)], world=world, controller=ReportingController) as h:
        await h.settle()
        ReportingController.envs["a"].report_condition("UNREACHABLE", "silent", "X", T0 - 60)
        await h.settle()
        store = crash(h)
    world.crashed = False
    async with running(tmp_path, [(path, loaded)], world=world, store=store, controller=ReportingController) as h:
        await h.settle()
        [row] = h.rows("again")
        assert (_job_row(row)["status"], _job_row(row)["status_since"]) == ("UNREACHABLE", T0 - 60)  # as it was
        env = ReportingController.envs["a"]
        env.report_condition("UNREACHABLE", "silent", "X", T0 + 5)  # the new daemon's first poll: still silent
        await h.settle()
        assert h.rows("again")[0]["condition_since"] == T0 - 60  # since the first report, not the restart
        env.report_condition(None, "", "X", None)
        await h.settle()
        assert _job_row(h.rows("again")[0])["status"] == "RUNNING"
        world.running("a").end(0)
        await h.settle()
        assert h.rows("again")[0]["status"] == "FINISHED"


def test_a_database_from_before_conditions_gets_the_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # job_executions as it was before conditions (and kinds) were kept
        db.execute(
            "CREATE TABLE job_executions (id INTEGER PRIMARY KEY AUTOINCREMENT, execution_id INTEGER NOT NULL, workflow TEXT NOT NULL,"
            " job TEXT NOT NULL, job_type TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',"
            " created_at REAL NOT NULL, started_at REAL, ended_at REAL, exit_code INTEGER, message TEXT, log_path TEXT NOT NULL,"
            " working_dir TEXT NOT NULL, handle TEXT)"
        )
        db.execute(
            "INSERT INTO job_executions (execution_id, workflow, job, job_type, attempt, status, created_at, log_path, working_dir)"
            " VALUES (1, 'w', 'j', 'bash', 1, 'RUNNING', 1.0, 'l', 'd')"
        )
    store = Store(str(path))
    [row] = store.job_executions()
    assert (row["status"], row["kind"], row["condition"], row["condition_since"]) == ("RUNNING", "start", None, None)
    store.update_job_execution(row["id"], condition="UNREACHABLE", condition_since=2.0)
    store.commit()
    assert store.job_executions()[0]["condition"] == "UNREACHABLE"
    store.close()
