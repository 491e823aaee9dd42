"""Faults the engine must contain, on a real daemon: schedules, restarts, its database.

Each test reproduces a defect seen on a running aiflowd and waits on conditions only.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import cli_env, wait_for, write
from ..daemon_harness import Daemon


def statuses(rows: list[dict]) -> list[tuple[str, str]]:
    return sorted((row["job"], row["status"]) for row in rows)


# AIFlow's periodic_job demo: a schedule for the workflow and one for a job.
TWO_SCHEDULES = """
periodic_config: {{interval: 0.2s}}
every_run:
  job_type: bash
  bash_command: echo w >> {ledger}
own_beat:
  job_type: bash
  bash_command: echo j >> {ledger}
  periodic_config: {{interval: 0.3s}}
"""


def test_two_periodic_configs_in_one_workflow_keep_the_daemon_serving(daemon: Daemon, tmp_path: Path) -> None:
    """Regression: the second timer reused the first one's CancelScope and ended the daemon."""
    ledger = tmp_path / "ledger"
    daemon.write_workflow("periodic_job.yaml", TWO_SCHEDULES.format(ledger=ledger))
    executions = wait_for(
        lambda: [e for e in daemon.json("workflow", "list-executions", "periodic_job") if e["status"] != "RUNNING"] or None,
        timeout=20,
    )
    wait_for(lambda: sum(1 for e in daemon.json("workflow", "list-executions", "periodic_job") if e["only_job"] is None) >= 3, timeout=20)
    wait_for(
        lambda: (
            any(e["only_job"] == "own_beat" for e in daemon.json("workflow", "list-executions", "periodic_job"))
            or any(r["reason"].startswith("periodic") for r in daemon.jobs("periodic_job"))
        ),
        timeout=20,
    )
    assert executions and daemon.process is not None and daemon.process.poll() is None
    assert daemon.json("status")["pid"] == daemon.process.pid


def test_run_once_of_a_periodic_workflow_runs_exactly_one_execution(tmp_path: Path) -> None:
    """Regression: run-once armed the schedules too (and died of the shared CancelScope)."""
    ledger = tmp_path / "ledger"
    path = write(tmp_path / "wf" / "periodic_job.yaml", TWO_SCHEDULES.format(ledger=ledger).replace("echo w", "sleep 0.5; echo w"))
    config = write(tmp_path / "aiflowd.yaml", f"state_dir: {tmp_path / 'state'}\nlog_dir: {tmp_path / 'logs'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(config), "run-once", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(ledger.read_text().split()) == ["j", "w"]
    assert "execution 1" in result.stdout and "execution 2" not in result.stdout


def test_a_job_being_started_at_kill_9_is_adopted_not_started_again(daemon: Daemon, tmp_path: Path) -> None:
    """kill -9 between starting a job and recording its pid leaves it INIT without a handle:
    the next daemon finds the running wrapper by its exit-status file, never starts a second."""
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    daemon.write_workflow(
        "w.yaml", f"j:\n  job_type: bash\n  bash_command: 'echo $$ >> {ledger}; while [ ! -e {gate} ]; do sleep 0.02; done'\n"
    )
    daemon.wait_jobs("w", lambda rows: statuses(rows) == [("j", "RUNNING")])
    wait_for(lambda: ledger.exists() and ledger.read_text().strip())
    daemon.kill9()
    with sqlite3.connect(daemon.state / "aiflowd.db") as db:  # as if it died before the pid was recorded
        db.execute("UPDATE job_executions SET status = 'INIT', handle = NULL, started_at = NULL")
    daemon.start()
    daemon.wait_jobs("w", lambda rows: statuses(rows) == [("j", "RUNNING")])
    gate.touch()
    rows = daemon.wait_jobs("w", lambda rows: statuses(rows) == [("j", "FINISHED")])
    assert len(rows) == 1 and rows[0]["exit_code"] == 0
    assert len(ledger.read_text().split()) == 1  # it ran once


def test_a_deleted_database_is_noticed_and_written_back(daemon: Daemon, tmp_path: Path) -> None:
    """Regression: deleting the state database while aiflowd ran went unnoticed, and the
    next start had forgotten every workflow, execution and running job."""
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    daemon.write_workflow(
        "keep.yaml", f"k:\n  job_type: bash\n  bash_command: 'echo run >> {ledger}; while [ ! -e {gate} ]; do sleep 0.02; done'\n"
    )
    daemon.wait_jobs("keep", lambda rows: statuses(rows) == [("k", "RUNNING")])
    database = daemon.state / "aiflowd.db"
    for suffix in ("", "-wal", "-shm"):
        os.unlink(f"{database}{suffix}")
    daemon.ctl("event", "send", "after", "deletion")  # a commit: the engine looks at its file then
    wait_for(database.exists, timeout=20)
    assert "written back" in daemon.log()
    daemon.kill9()
    daemon.start()
    assert statuses(daemon.jobs("keep")) == [("k", "RUNNING")]  # remembered and adopted
    gate.touch()
    daemon.wait_jobs("keep", lambda rows: statuses(rows) == [("k", "FINISHED")])
    assert ledger.read_text() == "run\n"  # never started again
    assert [e["key"] for e in daemon.json("event", "list")] == ["after"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system of its own (a tmpfs; needs the right to mount, else the test is skipped)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_keeps_jobs_running_and_the_daemon_catches_up(tmp_path: Path, small_disk: Path) -> None:
    """Regression: a full state folder ended the daemon (and so its jobs). Now the running job
    goes on, what follows it waits until its start can be recorded, then runs; nothing is lost."""
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    daemon = Daemon(tmp_path, config=f"state_dir: {small_disk}\nlog_dir: {tmp_path / 'logs'}\nrun_dir: {tmp_path / 'run'}\n")
    try:
        daemon.start()
        daemon.write_workflow(
            "chain.yaml",
            f"""
            first:
              job_type: bash
              bash_command: 'while [ ! -e {gate} ]; do sleep 0.02; done; echo first >> {ledger}'
            second:
              job_type: bash
              bash_command: 'echo second >> {ledger}'
              action_on_job_status: [{{upstream_job: first}}]
            """,
        )
        daemon.wait_jobs("chain", lambda rows: statuses(rows) == [("first", "RUNNING")])
        filler = _fill(small_disk)
        gate.touch()
        wait_for(lambda: "state store refuses writes" in daemon.log(), timeout=20)
        wait_for(lambda: ledger.exists() and ledger.read_text() == "first\n")
        assert daemon.process is not None and daemon.process.poll() is None
        assert "second" not in ledger.read_text()  # its start is not recorded, so it has not started
        filler.unlink()
        daemon.wait_jobs("chain", lambda rows: statuses(rows) == [("first", "FINISHED"), ("second", "FINISHED")])
        assert ledger.read_text() == "first\nsecond\n"
        assert "state store writes again" in daemon.log()
    finally:
        daemon.close()
