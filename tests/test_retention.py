"""Retention: old rows and files go, in bounded batches; what runs, and each workflow's latest, stay.

Real SQLite files, real folders and a ManualClock; the end-to-end test ages the data of a
real daemon and watches it go through the real aiflowctl.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from aiflowd.clock import ManualClock
from aiflowd.config import load_config
from aiflowd.engine import Engine, EnginePaths
from aiflowd.model import Event, EventCondition, Rule
from aiflowd.retention import Retention
from aiflowd.store import Store
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import WorkflowLoader

from . import test_engine
from .conftest import REPO, wait_for, write
from .daemon_harness import Daemon

DAY = 86400.0
NOW = time.time()
KEEP = {"executions": 90 * DAY, "logs": 30 * DAY, "work_dirs": 7 * DAY, "interval": 3600.0}


def execution(store: Store, workflow: str, *, ended_days_ago: float | None, jobs: int = 1, handle: dict[str, Any] | None = None) -> int:
    """One execution with ``jobs`` job executions; ``ended_days_ago`` None: still running."""
    execution_id = store.create_execution(workflow, "v1", "manual", None)
    status = "RUNNING" if ended_days_ago is None else "FINISHED"
    for n in range(jobs):
        store.create_job_execution(
            execution_id=execution_id,
            workflow=workflow,
            job=f"j{n}",
            job_type="bash",
            attempt=1,
            status=status,
            created_at=NOW,
            log_path="",
            working_dir="",
            handle=json.dumps(handle) if handle else None,
        )
    if ended_days_ago is not None:
        store.end_execution(execution_id, status)
    store.commit()
    if ended_days_ago is not None:  # its age: what the clock compares with
        ended = NOW - ended_days_ago * DAY
        store.db.execute("UPDATE executions SET started_at = ?, ended_at = ? WHERE id = ?", (ended - 60, ended, execution_id))
        store.db.execute("UPDATE job_executions SET ended_at = ? WHERE execution_id = ?", (ended, execution_id))
        store.db.commit()
    return execution_id


def ids(store: Store, workflow: str | None = None) -> list[int]:
    return sorted(row["id"] for row in store.executions(workflow=workflow, limit=1_000_000))


def count(store: Store, table: str) -> int:
    return int(store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def retention(store: Store, tmp_path: Path, clock: ManualClock, **keep: float) -> Retention:
    return Retention(store, str(tmp_path / "state"), str(tmp_path / "logs"), {**KEEP, **keep}, clock=clock)


async def test_old_finished_executions_go_in_batches_with_their_jobs_and_events(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    clock = ManualClock(NOW)
    old = [execution(store, "a", ended_days_ago=100, jobs=2) for _ in range(1200)]
    running = execution(store, "a", ended_days_ago=None)
    store.db.execute("UPDATE executions SET started_at = ? WHERE id = ?", (NOW - 400 * DAY, running))
    store.db.commit()
    recent = [execution(store, "a", ended_days_ago=1, jobs=2) for _ in range(3)]
    only_b = execution(store, "b", ended_days_ago=200)  # b's latest: kept however old
    for n in range(700):
        store.add_event(f"old{n}", "v", "*", "default", "", NOW - 100 * DAY)
    store.add_event("recent", "v", "*", "default", "", NOW - DAY)
    store.record_tick("a", "", NOW - 100 * DAY)
    store.commit()

    report = await retention(store, tmp_path, clock).sweep()
    assert (report.executions, report.events) == (1200, 700)
    # 500 + 500 + 200 executions, none of open executions, 500 + 200 events: one transaction each
    assert report.batches == 3 + 1 + 2
    assert ids(store, "a") == sorted([running, *recent]) and ids(store, "b") == [only_b]
    assert {row["execution_id"] for row in store.job_executions(limit=1_000_000)} == {running, *recent, only_b}
    assert count(store, "job_executions") == 1 + 2 * 3 + 1
    assert [e["key"] for e in store.events()] == ["recent"]
    assert store.last_tick("a", "") == NOW - 100 * DAY  # what catch-up reads is never retention's
    assert old[0] not in ids(store)

    clock.advance(90 * DAY)  # the recent ones are 91 days old now: all but a's latest go
    report = await retention(store, tmp_path, clock).sweep()
    assert report.executions == 2
    assert ids(store, "a") == [running, recent[-1]] and ids(store, "b") == [only_b]
    assert count(store, "events") == 0
    # New executions take new ids: a deleted one's id is never handed out again.
    assert store.create_execution("a", "v1", "manual", None) > recent[-1]
    store.close()


async def test_a_duration_of_never_keeps_that_kind(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    execution(store, "a", ended_days_ago=1000)
    execution(store, "a", ended_days_ago=1000)
    log = write(tmp_path / "logs" / "a" / "1" / "j0.log", "old\n")
    os.utime(log, (NOW - 1000 * DAY,) * 2)
    report = await retention(store, tmp_path, ManualClock(NOW), executions=0, logs=0, work_dirs=0).sweep()
    assert (report.executions, report.log_files, report.batches) == (0, 0, 0)
    assert ids(store) == [1, 2] and log.exists()
    store.close()


def age(path: Path, days: float) -> None:
    """Make everything under ``path`` (and ``path``) look last written ``days`` ago."""
    moment = NOW - days * DAY
    for parent, dirs, files in os.walk(path, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(parent, name), (moment, moment), follow_symlinks=False)
    os.utime(path, (moment, moment))


async def test_logs_and_working_folders_go_when_old_never_while_their_execution_runs(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    finished = execution(store, "a", ended_days_ago=40)
    running = execution(store, "a", ended_days_ago=None)
    recent = execution(store, "a", ended_days_ago=1)
    logs, work = tmp_path / "logs" / "a", tmp_path / "state" / "work" / "a"
    store.db.execute(  # its job runs: its log and working folder are in use
        "UPDATE job_executions SET log_path = ?, working_dir = ? WHERE execution_id = ?",
        (str(logs / str(running) / "j0.log"), str(work / str(running) / "j0.1"), running),
    )
    store.db.commit()
    for number in (finished, running, recent):
        write(logs / str(number) / "j0.log", "log\n")
        write(work / str(number) / "j0.1" / "out.txt", "data\n")
    write(logs / str(finished) / "j0.2.log", "a retry, written yesterday\n")
    resources = tmp_path / "workflows" / "a" / "resources"
    write(resources / "model.bin", "precious\n")
    (work / str(finished) / "j0.1" / "resources").symlink_to(resources)  # as make_working_dir links it
    write(work / "99" / "j0.1" / "out.txt", "an execution begun after the pass read the store\n")
    write(work / "notes" / "x.txt", "not an execution's folder\n")
    for folder in (logs / str(finished), logs / str(running), work / str(finished), work / str(running), work / "99", work / "notes"):
        age(folder, 40)
    age(resources, 40)
    os.utime(logs / str(finished) / "j0.2.log", (NOW - DAY, NOW - DAY))

    report = await retention(store, tmp_path, ManualClock(NOW)).sweep()
    assert (report.log_files, report.work_dirs) == (1, 1)
    assert not (logs / str(finished) / "j0.log").exists() and (logs / str(finished) / "j0.2.log").exists()
    assert not (work / str(finished)).exists()
    assert (resources / "model.bin").read_text() == "precious\n"  # a link is removed, never followed
    for kept in (logs / str(running) / "j0.log", work / str(running) / "j0.1" / "out.txt", logs / str(recent) / "j0.log"):
        assert kept.exists(), kept
    assert (work / str(recent)).exists() and (work / "99").exists() and (work / "notes").exists()
    assert ids(store) == [finished, running, recent]  # rows are kept longer than files

    store.end_execution(running, "FINISHED")
    store.commit()
    store.db.execute("UPDATE job_executions SET status = 'FINISHED' WHERE execution_id = ?", (running,))
    store.db.commit()
    report = await retention(store, tmp_path, ManualClock(NOW + 31 * DAY)).sweep()
    assert not (logs / str(running)).exists() and not (logs / str(finished)).exists()  # emptied folders go too
    assert not (work / str(running)).exists() and not (work / str(recent)).exists()
    store.close()


async def test_an_execution_open_for_months_loses_old_job_executions_but_not_what_recovery_reads(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    logs, work = tmp_path / "logs" / "a", tmp_path / "state" / "work" / "a"
    opened = store.create_execution("a", "v1", "event k=v", None)  # open for events: RUNNING, for ever
    rows: dict[str, int] = {}

    def job_execution(job: str, attempt: int, kind: str, status: str, ended_days_ago: float | None) -> None:
        name = f"{job}.log" if attempt == 1 else f"{job}.{attempt}.log"
        log_path, working_dir = logs / str(opened) / name, work / str(opened) / f"{job}.{attempt}"
        ended = None if ended_days_ago is None else NOW - ended_days_ago * DAY
        rows[f"{job}{attempt}"] = store.create_job_execution(
            execution_id=opened,
            workflow="a",
            job=job,
            job_type="bash",
            attempt=attempt,
            status=status,
            kind=kind,
            created_at=NOW - 200 * DAY,
            ended_at=ended,
            log_path=str(log_path),
            working_dir=str(working_dir),
        )
        write(log_path, "log\n")
        write(working_dir / "out.txt", "data\n")
        age(log_path, 200)
        age(working_dir, 200)

    # 'e' started by events again and again; its latest start (attempt 3) failed and was retried.
    job_execution("e", 1, "start", "FINISHED", 150)
    job_execution("e", 2, "restart", "KILLED", 140)
    job_execution("e", 3, "start", "FAILED", 130)
    job_execution("e", 4, "retry", "FAILED", 120)
    job_execution("k", 1, "start", "FINISHED", 150)
    job_execution("k", 2, "start", "RUNNING", None)  # running for months, its log silent as long
    store.commit()

    report = await retention(store, tmp_path, ManualClock(NOW)).sweep()
    kept = {row["id"] for row in store.job_executions(execution_id=opened)}
    assert kept == {rows["e3"], rows["e4"], rows["k2"]}  # e's attempt, retries done and status rebuild the same
    assert report.job_executions == 3 and ids(store) == [opened]
    assert sorted(os.listdir(logs / str(opened))) == ["k.2.log"]  # logs: old and not in use
    assert sorted(os.listdir(work / str(opened))) == ["k.2"]  # old and not in use: gone; the running job's: kept
    assert (logs / str(opened)).is_dir()  # an open execution's folders stay: its next job execution writes there
    store.close()


async def test_a_restart_after_retention_rebuilds_an_open_execution_as_before(tmp_path: Path) -> None:
    """The rows retention keeps of an open execution are enough: attempts count on, a due retry is made."""
    path, loaded = test_engine.workflow("ev", test_engine.job("a", retries=1, retry_delay=30), rules=(Rule("a", EventCondition("go")),))
    world, clock = test_engine.World(exit_codes={"a": [0, 1, 0]}), ManualClock(test_engine.T0)
    async with test_engine.running(tmp_path, [(path, loaded)], world=world, clock=clock) as h:
        h.engine.send_event(Event("go", "1"))
        await h.advance_to(test_engine.T0 + DAY)
        h.engine.send_event(Event("go", "2"))  # attempt 2 fails; its retry is due 30 s later
        await h.advance_to(test_engine.T0 + DAY + 10)
        assert world.submitted == ["1.a.1", "1.a.2"]
        store = test_engine.crash(h)
    later = test_engine.T0 + 100 * DAY
    report = await Retention(store, str(tmp_path / "state"), str(tmp_path / "logs"), KEEP, clock=ManualClock(later)).sweep()
    assert report.job_executions == 1  # attempt 1; attempt 2 is the latest start
    world.crashed = False
    clock.set(later)
    async with test_engine.running(tmp_path, [(path, loaded)], world=world, clock=clock, store=store) as h:
        await h.advance_to(later + 1)  # the overdue retry is made at once (on the clock: a moment later)
        assert world.submitted == ["1.a.1", "1.a.2", "1.a.3"]  # numbered on from the kept rows
        assert [(r["attempt"], r["kind"], r["status"]) for r in h.rows("ev")] == [(2, "start", "FAILED"), (3, "retry", "FINISHED")]
        h.engine.send_event(Event("go", "3"))
        await h.settle()
        assert world.submitted[-1] == "1.a.4"


async def test_exit_status_files_of_deleted_job_executions_go_with_them(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    status_dir = tmp_path / "run" / "exit-status"
    old, running = status_dir / "a.1.j0.1", status_dir / "a.2.j0.1"
    execution(store, "a", ended_days_ago=100, handle={"pid": 1, "status_path": str(old)})
    execution(store, "a", ended_days_ago=None, handle={"pid": 2, "status_path": str(running)})
    execution(store, "a", ended_days_ago=100, handle={"pid": 3, "status_path": str(status_dir / "gone-already")})
    execution(store, "a", ended_days_ago=1)  # the latest
    for path in (old, running):
        write(path, "0\n")
    report = await retention(store, tmp_path, ManualClock(NOW)).sweep()
    assert (report.executions, report.status_files) == (2, 1)
    assert not old.exists() and running.exists()
    store.close()


async def test_nothing_is_deleted_while_the_engine_has_writes_waiting(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    execution(store, "a", ended_days_ago=100)
    execution(store, "a", ended_days_ago=100)
    store.set_paused("a", True)  # written, not yet committed: a retention commit would commit it early
    report = await retention(store, tmp_path, ManualClock(NOW)).sweep()
    assert report.executions == 0 and report.errors == ["the engine has writes waiting for their commit"]
    assert ids(store) == [1, 2]
    store.commit()
    assert (await retention(store, tmp_path, ManualClock(NOW)).sweep()).executions == 1
    store.close()


async def test_passes_run_shortly_after_start_then_every_interval_on_the_clock(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    execution(store, "a", ended_days_ago=100)
    execution(store, "a", ended_days_ago=100)
    clock = ManualClock(NOW)
    part = Retention(store, str(tmp_path / "state"), str(tmp_path / "logs"), KEEP, clock=clock, first_pass_delay=60)

    async def passes(number: int) -> None:
        while part.passes < number:
            await anyio.sleep(0.005)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(part.run)
            assert clock.deadlines == [NOW + 60]
            assert part.passes == 0 and ids(store) == [1, 2]
            clock.advance(60)
            await passes(1)
            assert ids(store) == [2] and part.last_at == NOW + 60
            await anyio.sleep(0)
            assert clock.deadlines == [NOW + 60 + 3600]
            execution(store, "a", ended_days_ago=100)  # a's latest is 3 now; 2 is old and no longer the latest
            clock.advance(3600)
            await passes(2)
            assert ids(store) == [3]
            assert part.status()["last_pass"]["executions"] == 1
            tg.cancel_scope.cancel()
    store.close()


async def test_the_engine_removes_an_exit_status_file_only_once_the_end_is_committed(tmp_path: Path, loader: WorkflowLoader) -> None:
    class Disk:
        """The store's connection, whose commits fail while ``full``."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db, self.full = db, False

        def commit(self) -> None:
            if self.full:
                raise sqlite3.OperationalError("database or disk is full")
            self.db.commit()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.db, name)

    go = tmp_path / "go"
    path = write(
        tmp_path / "wf" / "ends.yaml", f"j:\n  job_type: bash\n  bash_command: 'while [ ! -e {go} ]; do sleep 0.02; done; exit 3'\n"
    )
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    disk = Disk(store.db)
    store.db = disk  # type: ignore[assignment]
    engine = Engine(
        loader.registry,
        store,
        EnginePaths(str(tmp_path / "state"), str(tmp_path / "logs")),
        settings={"stop_grace_period": 1.0, "run_dir": str(tmp_path / "run"), "job_env": {"PYTHONPATH": str(REPO)}},
        keep_open_for_events=False,
        store_check_interval=0,
    )
    status_file = tmp_path / "run" / "exit-status" / "ends.1.j.1"

    def committed_status() -> str:
        with sqlite3.connect(store.path) as db:
            rows = db.execute("SELECT status FROM job_executions").fetchall()
        return rows[0][0] if rows else ""

    loaded = loader.load(str(path))
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(engine.serve)
            execution_run = await engine.request(lambda e: e.run_workflow(loaded))
            while committed_status() != "RUNNING":
                await anyio.sleep(0.01)
            disk.full = True
            go.touch()
            while not (status_file.exists() and store.problem is not None):
                await anyio.sleep(0.01)
            assert committed_status() == "RUNNING"  # its end is not in the store: the file is still needed
            failures = engine._store_failures
            while engine._store_failures < failures + 2:  # the engine retries its commit, refused again
                await anyio.sleep(0.01)
            assert status_file.exists()
            disk.full = False
            await execution_run.ended.wait()
            while status_file.exists():
                await anyio.sleep(0.01)
            assert committed_status() == "FAILED"
            tg.cancel_scope.cancel()
    store.close()


def test_config_durations_never_and_located_errors(tmp_path: Path) -> None:
    config = tmp_path / "aiflowd.yaml"
    config.write_text("retention:\n  executions: 1w\n  logs: never\n  work_dirs: 0\n")
    assert load_config(str(config)).retention == {"executions": 7 * DAY, "logs": 0.0, "work_dirs": 0.0, "interval": 3600.0}
    assert load_config(None, environ={}).retention == KEEP
    config.write_text("retention:\n  executions: soon\n  log: 1d\n  interval: 0\n")
    with pytest.raises(LoadError) as raised:
        load_config(str(config))
    problems = [str(p) for p in raised.value.problems]
    assert len(problems) == 3
    assert any(f"{config}:2" in p and "retention.executions" in p and "soon" in p for p in problems), problems
    assert any(f"{config}:3" in p and "did you mean 'logs'?" in p for p in problems), problems
    assert any(f"{config}:4" in p and "retention.interval" in p and "longer than 0" in p for p in problems), problems


# -- a real daemon ------------------------------------------------------------------------


def test_a_daemon_deletes_old_history_and_files_and_keeps_what_runs(daemon: Daemon) -> None:
    daemon.write_workflow("etl.yaml", "j:\n  job_type: bash\n  bash_command: echo hi; mkdir -p out; echo x > out/data\n")
    daemon.wait_jobs("etl", lambda rows: len(rows) == 1 and rows[0]["ended_at"])
    for n in (2, 3, 4):
        daemon.ctl("workflow", "start-execution", "etl")
        daemon.wait_jobs("etl", lambda rows, n=n: len(rows) == n and all(r["ended_at"] for r in rows))
    daemon.ctl("event", "send", "old-key", "v")
    assert daemon.stop() == 0

    # Age what the first daemon left: executions 1 and 2 by 100 days, 3 by 40, 4 stays recent.
    logs, work = daemon.state / "logs" / "etl", daemon.state / "work" / "etl"
    with sqlite3.connect(daemon.state / "aiflowd.db") as db:
        for number, days in ((1, 100), (2, 100), (3, 40)):
            ended = NOW - days * DAY
            db.execute("UPDATE executions SET started_at = ?, ended_at = ? WHERE id = ?", (ended - 1, ended, number))
            db.execute("UPDATE job_executions SET started_at = ?, ended_at = ? WHERE execution_id = ?", (ended - 1, ended, number))
            age(logs / str(number), days)
            age(work / str(number), days)
        db.execute("UPDATE events SET time = ?", (NOW - 100 * DAY,))
    assert sorted(os.listdir(daemon.state / "run" / "exit-status")) == []  # removed once each end was committed

    daemon.write_config("retention:\n  executions: 90d\n  logs: 30d\n  work_dirs: 7d\n  interval: 0.2s\n")
    daemon.start()
    daemon.write_workflow("forever.yaml", "f:\n  job_type: bash\n  bash_command: echo started; exec sleep 600\n")
    daemon.wait_jobs("forever", lambda rows: [r["status"] for r in rows] == ["RUNNING"])
    [forever] = daemon.json("workflow", "list-executions", "forever")
    with sqlite3.connect(daemon.state / "aiflowd.db") as db:  # a running execution looks a year old
        db.execute("UPDATE executions SET started_at = ? WHERE id = ?", (NOW - 365 * DAY, forever["id"]))
    wait_for(lambda: (daemon.state / "logs" / "forever" / str(forever["id"]) / "f.log").exists())
    age(daemon.state / "logs" / "forever", 365)
    age(daemon.state / "work" / "forever", 365)
    passes = daemon.json("status")["retention"]["passes"]
    wait_for(lambda: daemon.json("status")["retention"]["passes"] >= passes + 2, timeout=30)

    assert [e["id"] for e in daemon.json("workflow", "list-executions", "etl")] == [4, 3]
    assert sorted(os.listdir(logs)) == ["4"] and sorted(os.listdir(work)) == ["4"]
    assert daemon.json("event", "list") == []
    assert [r["execution_id"] for r in daemon.jobs("etl")] == [4, 3]
    gone = daemon.ctl("job", "logs", "etl", "j", "--execution", "3", check=False)  # its row is kept, its log is not
    assert gone.returncode != 0 and "the log of execution 3 of 'etl.j' is gone (retention keeps logs 30 days)" in gone.stderr
    assert daemon.ctl("job", "logs", "etl", "j").stdout == "hi\n"  # the latest's log is there
    history = daemon.ctl("workflow", "list-executions", "etl").stdout.splitlines()
    assert len(history) == 3 and history[1].split()[0] == "4"  # the human history, header and two rows
    assert [r["status"] for r in daemon.jobs("forever")] == ["RUNNING"]
    assert (daemon.state / "logs" / "forever" / str(forever["id"]) / "f.log").read_text() == "started\n"
    assert (daemon.state / "work" / "forever" / str(forever["id"])).is_dir()
    status = daemon.json("status")
    assert status["retention"]["keep"]["executions"] == 90 * DAY and status["restarts"] == {}
    assert "retention: last pass removed 0 executions" in daemon.ctl("status").stdout  # the first passes removed it all
    daemon.write_config("retention:\n  executions: never\n  interval: 0.2s\n")
    daemon.ctl("reload")
    assert daemon.json("status")["retention"]["keep"] == {"executions": 0, "logs": 30 * DAY, "work_dirs": 7 * DAY, "interval": 0.2}


def test_a_daemon_refuses_a_database_from_a_newer_aiflowd_in_one_line(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    try:
        refused(daemon)
    finally:
        daemon.close()


def refused(daemon: Daemon) -> None:
    daemon.state.mkdir(parents=True)
    with sqlite3.connect(daemon.state / "aiflowd.db") as db:
        db.execute("CREATE TABLE later_things (x)")
        db.execute("PRAGMA user_version = 1000")
    daemon.start(wait=False)
    assert daemon.process is not None and daemon.process.wait(timeout=30) == 1
    lines = [line for line in daemon.log().splitlines() if "cannot start" in line]
    assert len(lines) == 1, daemon.log()
    assert str(daemon.state / "aiflowd.db") in lines[0] and "schema version 1000 is from a newer aiflowd" in lines[0]
    with sqlite3.connect(daemon.state / "aiflowd.db") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1000,)
        assert [row[0] for row in db.execute("SELECT name FROM sqlite_master")] == ["later_things"]
