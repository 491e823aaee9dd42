"""History that answers questions, through the real aiflowctl against a real daemon: durations,
``--limit``/``--since``/``--status``, ``job logs --attempt``, and ``status``'s counts."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiflowd.control.protocol import ControlError
from aiflowd.daemon.methods import history_filters, parse_since, with_duration

from .conftest import wait_for
from .daemon_harness import Daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path)
    try:
        yield daemon
    finally:
        daemon.close()


def test_since_takes_durations_iso_times_and_epoch_numbers() -> None:
    now = 1_700_000_000.0
    assert parse_since("1h", now) == now - 3600
    assert parse_since("90", now) == now - 90
    assert parse_since(12.5, now) == 12.5
    local = datetime.datetime(2024, 5, 1, 12, 0)
    assert parse_since("2024-05-01T12:00", now) == local.timestamp()
    assert parse_since("2024-05-01T12:00+00:00", now) == datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC).timestamp()
    with pytest.raises(ControlError, match="'since' must be a duration like 1h"):
        parse_since("last tuesday", now)
    assert history_filters({"status": "failed", "limit": "3"}) == (3, None, "FAILED")
    with pytest.raises(ControlError, match="'status' must be one of INIT, RUNNING, FINISHED, FAILED, KILLED"):
        history_filters({"status": "broken"})
    with pytest.raises(ControlError, match="'limit' must be 1 or more"):
        history_filters({"limit": 0})
    assert with_duration({"started_at": 10.0, "ended_at": 12.5})["duration"] == 2.5
    assert with_duration({"started_at": 10.0, "ended_at": None}, now=11.0)["duration"] == 1.0
    assert with_duration({"started_at": None, "ended_at": None})["duration"] is None


def test_history_filters_durations_attempts_and_status_counts(daemon: Daemon, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    daemon.write_workflow(
        "flaky.yaml",
        f"""
        flaky:
          job_type: bash
          retries: 1
          bash_command: n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; echo attempt-$n; exit 1
        steady:
          job_type: bash
          bash_command: echo steady
        """,
    )
    daemon.start()
    rows = daemon.wait_jobs("flaky", lambda rows: len(rows) == 3 and all(r["status"] in ("FINISHED", "FAILED") for r in rows))
    flaky = [r for r in rows if r["job"] == "flaky"]
    assert [(r["attempt"], r["kind"], r["status"]) for r in flaky] == [(2, "retry", "FAILED"), (1, "start", "FAILED")]
    assert all(isinstance(r["duration"], float) for r in rows)

    # Each attempt's own log.
    assert daemon.ctl("job", "logs", "flaky", "flaky", "--attempt", "1").stdout == "attempt-1\n"
    assert daemon.ctl("job", "logs", "flaky", "flaky", "--attempt", "2").stdout == "attempt-2\n"
    assert daemon.ctl("job", "logs", "flaky", "flaky").stdout == "attempt-2\n"
    none = daemon.ctl("job", "logs", "flaky", "flaky", "--attempt", "3", check=False)
    assert none.returncode == 1 and none.stderr == "aiflowctl: no execution of job 'flaky' of 'flaky' with attempt 3\n"

    # Filters.
    failed = daemon.json("job", "list-executions", "flaky", "--status", "failed")
    assert [(r["job"], r["attempt"]) for r in failed] == [("flaky", 2), ("flaky", 1)]
    assert [r["job"] for r in daemon.json("job", "list-executions", "flaky", "--status", "FINISHED")] == ["steady"]
    assert len(daemon.json("job", "list-executions", "flaky", "--limit", "1")) == 1
    assert len(daemon.json("job", "list-executions", "flaky", "--since", "1h")) == 3
    tomorrow = (datetime.datetime.now() + datetime.timedelta(days=1)).isoformat(timespec="seconds")
    assert daemon.json("job", "list-executions", "flaky", "--since", tomorrow) == []
    executions = daemon.json("workflow", "list-executions", "flaky", "--status", "failed", "--since", "10m")
    assert [e["status"] for e in executions] == ["FAILED"] and executions[0]["duration"] >= 0
    assert daemon.json("workflow", "list-executions", "flaky", "--status", "finished") == []
    bad = daemon.ctl("job", "list-executions", "flaky", "--since", "soonish", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("aiflowctl: 'since' must be a duration like 1h or 30m")
    usage = daemon.ctl("job", "list-executions", "flaky", "--status", "nope", check=False)
    assert usage.returncode == 2 and "invalid choice: 'NOPE'" in usage.stderr

    # Tables show durations, and which attempt was a retry.
    table = daemon.ctl("job", "list-executions", "flaky", "flaky").stdout.splitlines()
    assert table[0].split() == ["EXECUTION_ID", "JOB", "ATTEMPT", "STATUS", "EXIT_CODE", "STARTED_AT", "ENDED_AT", "DURATION", "MESSAGE"]
    assert "2 (retry)" in table[1] and "1 (start)" in table[2]
    assert "DURATION" in daemon.ctl("workflow", "list-executions", "flaky").stdout.splitlines()[0]

    # status: running, queued and failed in the last hour.
    status = daemon.json("status")
    assert (status["jobs_active"], status["jobs_queued"], status["jobs_failed_last_hour"]) == (0, 0, 2)
    assert "jobs: 0 running, 0 queued, 2 failed in the last hour" in daemon.ctl("status").stdout


def test_status_counts_queued_jobs_apart_from_running_ones(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, "max_concurrent_jobs: 1\n")
    try:
        daemon.write_workflow(
            "slow.yaml", "a:\n  job_type: bash\n  bash_command: sleep 60\nb:\n  job_type: bash\n  bash_command: sleep 60\n"
        )
        daemon.start()

        counts = wait_for(lambda: (s := daemon.json("status")) and (s["jobs_active"], s["jobs_queued"]) == (1, 1) and s, timeout=20)
        assert counts["jobs_running"] == 2
        running = daemon.json("workflow", "list-executions", "slow", "--status", "running")
        assert len(running) == 1 and running[0]["ended_at"] is None and running[0]["duration"] >= 0
        daemon.ctl("workflow", "stop-execution", "slow")
        daemon.wait_jobs("slow", lambda rows: all(r["status"] == "KILLED" for r in rows))
    finally:
        daemon.close()
