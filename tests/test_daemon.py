"""End to end: a real aiflowd process on a temporary folder, driven only with the real aiflowctl."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import cli_env, pid_alive, wait_for
from .daemon_harness import Daemon


def statuses(rows: list[dict]) -> list[tuple[str, str]]:
    return sorted((row["job"], row["status"]) for row in rows)


def test_dropped_workflow_runs_and_is_listed(daemon: Daemon) -> None:
    daemon.write_workflow(
        "etl.yaml",
        """
        extract:
          job_type: bash
          bash_command: echo extracted; exit 0
        load:
          job_type: bash
          bash_command: echo loading; exit 3
          action_on_job_status: [{upstream_job: extract}]
        """,
    )
    rows = daemon.wait_jobs("etl", lambda rows: len(rows) == 2 and all(r["ended_at"] for r in rows))
    assert statuses(rows) == [("extract", "FINISHED"), ("load", "FAILED")]
    load = next(r for r in rows if r["job"] == "load")
    assert {"workflow", "job", "execution_id", "status", "started_at", "ended_at", "exit_code"} <= set(load)
    assert load["exit_code"] == 3
    assert daemon.ctl("job", "logs", "etl", "load").stdout == "loading\n"
    [execution] = daemon.json("workflow", "list-executions", "etl")
    assert (execution["status"], execution["trigger"]) == ("FAILED", "file added")
    human = daemon.ctl("job", "list-executions", "etl").stdout
    assert human.splitlines()[0].split()[:4] == ["EXECUTION_ID", "JOB", "ATTEMPT", "STATUS"]


def test_change_restarts_a_running_execution_and_invalid_versions_never_replace_valid_ones(daemon: Daemon) -> None:
    path = daemon.write_workflow("svc.yaml", "serve:\n  job_type: bash\n  bash_command: echo v1; sleep 30\n")
    daemon.wait_jobs("svc", lambda rows: statuses(rows) == [("serve", "RUNNING")])
    version = daemon.json("workflow", "show", "svc")["version"]

    path.write_text("serve:\n  job_tpye: bash\n")  # a broken edit
    wait_for(lambda: daemon.json("workflow", "show", "svc")["problems"], timeout=10)
    show = daemon.json("workflow", "show", "svc")
    assert show["version"] == version and show["status"] == "active"
    assert show["problems"] == [f"{path}:2:3: serve.job_tpye: unknown key (did you mean 'job_type'?)"]
    assert statuses(daemon.jobs("svc")) == [("serve", "RUNNING")]

    # An editor's atomic save: write a temporary file, rename it over the original.
    temporary = path.with_name(".svc.yaml.swp")
    temporary.write_text("serve:\n  job_type: bash\n  bash_command: echo v2; sleep 30\n")
    os.replace(temporary, path)
    rows = daemon.wait_jobs("svc", lambda rows: len(rows) == 2 and rows[0]["status"] == "RUNNING" and rows[1]["status"] == "KILLED")
    assert rows[1]["message"] == "workflow changed"
    assert daemon.json("workflow", "show", "svc")["problems"] == []
    wait_for(lambda: daemon.ctl("job", "logs", "svc", "serve").stdout == "v2\n")


def test_no_op_saves_start_nothing_and_removal_retires(daemon: Daemon) -> None:
    path = daemon.write_workflow("quiet.yaml", "a:\n  job_type: bash\n  bash_command: sleep 30\n")
    daemon.wait_jobs("quiet", lambda rows: statuses(rows) == [("a", "RUNNING")])
    path.write_text(path.read_text())  # same content
    os.utime(path)
    daemon.write_workflow("marker.yaml", "m:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.wait_jobs("marker", lambda rows: statuses(rows) == [("m", "FINISHED")])  # the no-op events were handled before this
    assert len(daemon.jobs("quiet")) == 1
    path.unlink()
    rows = daemon.wait_jobs("quiet", lambda rows: statuses(rows) == [("a", "KILLED")])
    assert rows[0]["message"] == "workflow removed"
    listed = {row["workflow"]: row["status"] for row in daemon.json("workflow", "list", "--all")}
    assert listed["quiet"] == "retired"
    assert "quiet" not in {row["workflow"] for row in daemon.json("workflow", "list")}


def test_folder_workflow_assets_and_the_whole_folder_recreated(daemon: Daemon) -> None:
    daemon.write_workflow("pipe/pipe.yaml", "job:\n  job_type: python\n  processor: steps:Say\n  args: {word: one}\n")
    daemon.write_workflow(
        "pipe/steps.py",
        "from aiflowd import PythonProcessor\nclass Say(PythonProcessor):\n    def __init__(self, word):\n        self.word = word\n    def process(self, ctx, inputs):\n        print(self.word)\n        return []\n",
    )
    daemon.wait_jobs("pipe", lambda rows: rows and rows[0]["status"] == "FINISHED")
    daemon.write_workflow(
        "pipe/steps.py", (daemon.workflows / "pipe" / "steps.py").read_text().replace("print(self.word)", "print(self.word * 2)")
    )
    daemon.wait_jobs("pipe", lambda rows: len(rows) == 2 and rows[0]["status"] == "FINISHED")
    assert daemon.ctl("job", "logs", "pipe", "job").stdout == "oneone\n"

    import shutil

    shutil.rmtree(daemon.workflows)
    wait_for(lambda: all(r["status"] == "retired" for r in daemon.json("workflow", "list", "--all")), timeout=10)
    daemon.workflows.mkdir()
    daemon.write_workflow("back.yaml", "b:\n  job_type: bash\n  bash_command: echo back\n")
    daemon.wait_jobs("back", lambda rows: statuses(rows) == [("b", "FINISHED")])


def test_events_rules_and_manual_control(daemon: Daemon) -> None:
    daemon.write_workflow(
        "model.yaml",
        """
        train:
          job_type: bash
          bash_command: echo trained
        serve:
          job_type: bash
          bash_command: sleep 30
          action_on_event:
            - {event_key: model_updated, action: RESTART}
        """,
    )
    daemon.wait_jobs("model", lambda rows: statuses(rows) == [("train", "FINISHED")])
    daemon.ctl("event", "send", "model_updated", "v1")
    daemon.wait_jobs("model", lambda rows: ("serve", "RUNNING") in statuses(rows))
    daemon.ctl("event", "send", "model_updated", "v2")
    rows = daemon.wait_jobs("model", lambda rows: statuses(rows).count(("serve", "KILLED")) == 1 and ("serve", "RUNNING") in statuses(rows))
    assert rows[0]["reason"] == "event model_updated=v2"
    daemon.ctl("job", "stop-execution", "model", "serve")
    daemon.wait_jobs("model", lambda rows: statuses(rows).count(("serve", "KILLED")) == 2)
    refused = daemon.ctl("job", "stop-execution", "model", "serve", check=False)
    assert refused.returncode == 1 and "not running" in refused.stderr
    assert daemon.ctl("workflow", "show", "nope", check=False).returncode == 1
    events = daemon.json("event", "list")
    assert [(e["key"], e["value"]) for e in events] == [("model_updated", "v1"), ("model_updated", "v2")]


def test_periodic_runs_and_pausing(daemon: Daemon) -> None:
    daemon.write_workflow("tick.yaml", "periodic_config: {interval: 0.3s}\nt:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.wait_jobs("tick", lambda rows: len(rows) >= 3)
    daemon.ctl("workflow", "pause-scheduling", "tick")
    paused_at = len(daemon.json("workflow", "list-executions", "tick"))
    daemon.write_workflow("marker.yaml", "m:\n  job_type: bash\n  bash_command: sleep 0.7\n")
    daemon.wait_jobs("marker", lambda rows: statuses(rows) == [("m", "FINISHED")])
    assert len(daemon.json("workflow", "list-executions", "tick")) <= paused_at + 1  # one tick may have been in flight
    assert all(e["trigger"].startswith("periodic ") for e in daemon.json("workflow", "list-executions", "tick"))


def test_timers_show_when_they_fire_next(daemon: Daemon) -> None:
    daemon.write_workflow("hourly.yaml", "periodic_config: {interval: 1h}\nh:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.write_workflow("fives.yaml", "f:\n  job_type: bash\n  bash_command: 'true'\n  periodic_config: {cron: '*/5 * * * *'}\n")
    daemon.wait_jobs("hourly", lambda rows: statuses(rows) == [("h", "FINISHED")])  # the first slot: when it appeared
    [first] = daemon.json("workflow", "list-executions", "hourly")
    [timer] = daemon.json("workflow", "show", "hourly")["schedules"]
    next_hour = _slot(first["trigger"]) + 3600  # the trigger shows milliseconds
    assert (timer["job"], timer["schedule"]) == (None, "every 1h") and abs(timer["next_run"] - next_hour) < 0.01
    wait_for(lambda: daemon.known("fives"))
    [timer] = daemon.json("workflow", "show", "fives")["schedules"]
    assert timer["job"] == "f" and timer["schedule"] == "cron '*/5 * * * *'"
    assert timer["next_run"] % 300 == 0 and 0 < timer["next_run"] - time.time() <= 300
    shown = daemon.ctl("workflow", "show", "fives").stdout
    assert "timer:    job f: cron '*/5 * * * *'; next " in shown and " (in " in shown
    listed = {row["workflow"]: row["next_run"] for row in daemon.json("workflow", "list")}
    assert listed["fives"] == timer["next_run"] and abs(listed["hourly"] - next_hour) < 0.01
    assert daemon.ctl("workflow", "list").stdout.splitlines()[0].split()[-1] == "NEXT_RUN"


def test_stop_a_job_whose_children_trap_sigterm(daemon: Daemon, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    daemon.write_workflow(
        "stubborn.yaml",
        f"""
        s:
          job_type: bash
          bash_command: "for i in 1 2; do (trap '' TERM; sleep 300) & echo $! >> {pids}; done; trap '' TERM; wait"
        """,
    )
    children = wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2 and [int(p) for p in pids.read_text().split()])
    daemon.ctl("job", "stop-execution", "stubborn", "s")
    rows = daemon.wait_jobs("stubborn", lambda rows: rows[0]["status"] == "KILLED")
    assert rows[0]["exit_code"] == 137  # SIGTERM was ignored; SIGKILL after the 1 s grace
    wait_for(lambda: not any(pid_alive(pid) for pid in children), timeout=5)


def test_kill_9_mid_run_then_restart(daemon: Daemon, tmp_path: Path) -> None:
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    daemon.write_workflow(
        "crash.yaml",
        f"""
        slow:
          job_type: bash
          bash_command: echo slow >> {runs}; while [ ! -e {gate} ]; do sleep 0.02; done; exit 4
        survivor:
          job_type: bash
          bash_command: echo survivor >> {runs}; while [ ! -e {gate}.2 ]; do sleep 0.02; done
        after_failure:
          job_type: bash
          bash_command: echo after >> {runs}
          action_on_job_status: [{{upstream_job: slow, upstream_job_status: FAILED}}]
        """,
    )
    daemon.wait_jobs("crash", lambda rows: statuses(rows) == [("slow", "RUNNING"), ("survivor", "RUNNING")])
    wait_for(lambda: runs.exists() and len(runs.read_text().split()) == 2)
    slow = _pid_of(daemon, "slow")
    daemon.kill9()
    gate.touch()  # 'slow' ends while no daemon runs: its exit status must not be lost
    wait_for(lambda: not pid_alive(slow), timeout=10)
    restarted = time.time()
    daemon.start()
    rows = daemon.wait_jobs("crash", lambda rows: ("after_failure", "FINISHED") in statuses(rows))
    assert statuses(rows) == [("after_failure", "FINISHED"), ("slow", "FAILED"), ("survivor", "RUNNING")]
    slow_row = next(r for r in rows if r["job"] == "slow")
    assert slow_row["exit_code"] == 4
    assert slow_row["ended_at"] < restarted  # when it really ended, not when the daemon learned it
    (tmp_path / "gate.2").touch()
    daemon.wait_jobs("crash", lambda rows: ("survivor", "FINISHED") in statuses(rows))
    assert sorted(runs.read_text().split()) == ["after", "slow", "survivor"]  # nothing ran twice
    [execution] = daemon.json("workflow", "list-executions", "crash")
    assert execution["status"] == "FAILED"


#: A job started once both events 'a' and 'b' have come (AIFlow's MeetAllEventCondition).
BOTH_ON_A_AND_B = """
both:
  job_type: bash
  bash_command: echo both
  action_on_events:
    - condition: all
      events: [{event_key: a}, {event_key: b}]
      action: START
"""


def test_what_several_event_conditions_saw_survives_a_kill_9(daemon: Daemon) -> None:
    """One event of two before the daemon dies, the other after: the rule and the trigger fire all the same."""
    daemon.write_workflow("pair.yaml", "watch:\n  job_type: bash\n  bash_command: sleep 300\n" + BOTH_ON_A_AND_B)
    daemon.write_workflow(
        "batch.yaml",
        """
        start_new_workflow_execution_on_events:
          - condition: all
            events: [{event_key: x}, {event_key: y}]
        job:
          job_type: bash
          bash_command: echo batch
        """,
    )
    daemon.wait_jobs("pair", lambda rows: statuses(rows) == [("watch", "RUNNING")])
    wait_for(lambda: daemon.known("batch"))
    daemon.ctl("event", "send", "a", "1")
    daemon.ctl("event", "send", "x", "1")
    wait_for(lambda: [e["key"] for e in daemon.json("event", "list")] == ["a", "x"])
    daemon.kill9()
    daemon.start()
    daemon.ctl("event", "send", "b", "1")
    daemon.ctl("event", "send", "y", "1")
    rows = daemon.wait_jobs("pair", lambda rows: ("both", "FINISHED") in statuses(rows))
    assert next(r for r in rows if r["job"] == "both")["reason"] == "all of 2 events, the last b=1"
    daemon.wait_jobs("batch", lambda rows: statuses(rows) == [("job", "FINISHED")])
    [execution] = daemon.json("workflow", "list-executions", "batch")
    assert execution["trigger"] == "event y=1"
    daemon.ctl("workflow", "stop-execution", "pair")


def _wait_until_held_back(daemon: Daemon, workflow: str) -> None:
    """Until the daemon serves a version newer than the one its latest execution runs."""
    wait_for(lambda: daemon.json("workflow", "show", workflow)["version"] != daemon.json("workflow", "list-executions", workflow)[0]["version"])


def _pid_of(daemon: Daemon, job: str) -> int:
    import sqlite3

    with sqlite3.connect(daemon.state / "aiflowd.db") as db:
        (handle,) = db.execute("SELECT handle FROM job_executions WHERE job = ? ORDER BY id DESC LIMIT 1", (job,)).fetchone()
    import json

    return int(json.loads(handle)["pid"])


def _slot(trigger: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(trigger.removeprefix("periodic ")).timestamp()


def _shift_history(state: Path, seconds: float) -> None:
    """Move every fired tick, and the triggers naming them, ``seconds`` into the past (the daemon is down)."""
    import datetime
    import sqlite3

    with sqlite3.connect(state / "aiflowd.db") as db:
        db.execute("UPDATE ticks SET fired_for = fired_for - ?", (seconds,))
        for execution_id, trigger in db.execute("SELECT id, trigger FROM executions").fetchall():
            moved = datetime.datetime.fromtimestamp(_slot(trigger) - seconds).isoformat(timespec="milliseconds")
            db.execute("UPDATE executions SET trigger = ? WHERE id = ?", (f"periodic {moved}", execution_id))


def test_periodic_ticks_survive_kill_9_without_loss_or_double(daemon: Daemon, tmp_path: Path) -> None:
    """Slots missed while the daemon is down fire once at restart, coalesced (systemd's
    ``Persistent=true``): never lost, never doubled, for workflow-level and job-level schedules.

    The downtime is made, not waited for: with hourly slots, the history is moved three hours
    back while the daemon is down, so no machine is too slow or too fast for the test. The
    job-level job still runs when the daemon dies, so its catch-up comes while it runs.
    """
    import datetime

    gate = tmp_path / "gate"
    # Slots half an hour away from now on either side: no slot comes due while the test runs.
    start = datetime.datetime.fromtimestamp(time.time() - 5 * 3600 - 1800, datetime.UTC)
    hourly = f"{{interval: 1h, start_date: '{start.isoformat()}'}}"
    daemon.write_workflow("beat.yaml", f"periodic_config: {hourly}\nb:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.write_workflow(
        "jobbeat.yaml", f"j:\n  job_type: bash\n  bash_command: 'while [ ! -e {gate} ]; do sleep 0.02; done'\n  periodic_config: {hourly}\n"
    )
    daemon.wait_jobs("beat", lambda rows: statuses(rows) == [("b", "FINISHED")])
    daemon.wait_jobs("jobbeat", lambda rows: statuses(rows) == [("j", "RUNNING")])
    daemon.kill9()
    _shift_history(daemon.state, 3 * 3600)
    daemon.start()

    daemon.wait_jobs("beat", lambda rows: len(rows) >= 2)
    daemon.wait_jobs("jobbeat", lambda rows: statuses(rows) == [("j", "RUNNING")])  # taken over, not started again
    gate.touch()  # the job-level catch-up waited for the running job: now it starts
    daemon.wait_jobs("jobbeat", lambda rows: statuses(rows) == [("j", "FINISHED"), ("j", "FINISHED")])
    # Anything doubled would have been handled before this marker's execution.
    daemon.write_workflow("marker.yaml", "m:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.wait_jobs("marker", lambda rows: statuses(rows) == [("m", "FINISHED")])

    now = time.time()
    beat = [e["trigger"] for e in reversed(daemon.json("workflow", "list-executions", "beat"))]
    [jobbeat] = daemon.json("workflow", "list-executions", "jobbeat")  # the catch-up ran in the open execution
    job_level = [jobbeat["trigger"], daemon.jobs("jobbeat")[0]["reason"]]
    for triggers in (beat, job_level):
        slots = [_slot(t) for t in triggers]
        assert len(slots) == 2, triggers  # the first tick and one catch-up: none lost, none doubled
        first, catch_up = slots
        assert (catch_up - first) % 3600 == 0 and catch_up - first >= 3 * 3600, triggers  # on the grid, three slots coalesced
        assert catch_up <= now < catch_up + 3600, triggers  # the latest slot missed, not a later one
        assert catch_up == first + 3 * 3600, triggers
    assert len(daemon.jobs("beat")) == 2


def test_sigterm_stops_jobs_and_exits_0(daemon: Daemon) -> None:
    daemon.write_workflow("long.yaml", "l:\n  job_type: bash\n  bash_command: sleep 300\n")
    daemon.wait_jobs("long", lambda rows: statuses(rows) == [("l", "RUNNING")])
    pid = _pid_of(daemon, "l")
    assert daemon.stop() == 0
    assert not pid_alive(pid)
    assert daemon.notifications is not None and daemon.notifications.count("STOPPING=1") == 1
    assert not daemon.socket.exists()
    daemon.start()
    [row] = daemon.jobs("long")
    assert (row["status"], row["message"]) == ("KILLED", "aiflowd stopped")


def test_an_execution_open_for_events_outlives_a_daemon_restart(daemon: Daemon) -> None:
    """A stop ends the jobs, not the execution: the next daemon's events still reach its rules."""
    daemon.write_workflow(
        "serving.yaml",
        """
        prepare:
          job_type: bash
          bash_command: echo prepared
        serve:
          job_type: bash
          bash_command: echo "serving $AIFLOWD_EVENT_VALUE"; exec sleep 300
          action_on_event:
            - {event_key: deploy, action: RESTART}
        """,
    )
    daemon.wait_jobs("serving", lambda rows: statuses(rows) == [("prepare", "FINISHED")])
    daemon.ctl("event", "send", "deploy", "v1")
    daemon.wait_jobs("serving", lambda rows: ("serve", "RUNNING") in statuses(rows))
    pid = _pid_of(daemon, "serve")
    assert daemon.stop() == 0
    assert not pid_alive(pid)
    daemon.start()
    [execution] = daemon.json("workflow", "list-executions", "serving")
    assert execution["status"] == "RUNNING"
    assert next(r for r in daemon.jobs("serving") if r["job"] == "serve")["message"] == "aiflowd stopped"
    daemon.ctl("event", "send", "deploy", "v2")
    rows = daemon.wait_jobs("serving", lambda rows: rows[0]["job"] == "serve" and rows[0]["status"] == "RUNNING")
    assert rows[0]["reason"] == "event deploy=v2" and rows[0]["execution_id"] == execution["id"]
    assert statuses(rows) == [("prepare", "FINISHED"), ("serve", "KILLED"), ("serve", "RUNNING")]  # nothing ran again
    wait_for(lambda: "serving v2" in daemon.ctl("job", "logs", "serving", "serve").stdout)
    daemon.ctl("workflow", "stop-execution", "serving")
    wait_for(lambda: daemon.json("workflow", "list-executions", "serving")[0]["status"] == "KILLED")


def test_a_version_edited_while_the_daemon_was_stopped_starts_in_place_of_the_open_execution(daemon: Daemon) -> None:
    """The open execution (kept for its events) gives way to the new version, as it would to a live edit."""
    text = """
        prepare:
          job_type: bash
          bash_command: echo prepared {version}
        serve:
          job_type: bash
          bash_command: exec sleep 300
          action_on_event:
            - {{event_key: deploy, action: RESTART}}
        """
    daemon.write_workflow("serving.yaml", text.format(version="v1"))
    daemon.wait_jobs("serving", lambda rows: statuses(rows) == [("prepare", "FINISHED")])
    daemon.ctl("event", "send", "deploy", "1")
    daemon.wait_jobs("serving", lambda rows: ("serve", "RUNNING") in statuses(rows))
    assert daemon.stop() == 0
    daemon.write_workflow("serving.yaml", text.format(version="v2"))
    daemon.start()
    rows = daemon.wait_jobs("serving", lambda rows: (rows[0]["execution_id"], rows[0]["job"], rows[0]["status"]) == (2, "prepare", "FINISHED"))
    assert [e["trigger"] for e in daemon.json("workflow", "list-executions", "serving")] == ["file changed", "file added"]
    daemon.ctl("event", "send", "deploy", "2")
    rows = daemon.wait_jobs("serving", lambda rows: (rows[0]["job"], rows[0]["status"]) == ("serve", "RUNNING"))
    assert rows[0]["execution_id"] == 2
    daemon.write_workflow("serving.yaml", text.format(version="v3"))  # and live: the same
    daemon.wait_jobs("serving", lambda rows: (rows[0]["execution_id"], rows[0]["job"], rows[0]["status"]) == (3, "prepare", "FINISHED"))
    daemon.ctl("workflow", "stop-execution", "serving")


def test_a_version_waiting_for_its_turn_when_the_daemon_stops_starts_at_the_next_start(daemon: Daemon) -> None:
    """``on_change: wait`` held v2 back behind a running v1; a stop in between must not forget v2."""
    text = "on_change: wait\nbusy:\n  job_type: bash\n  bash_command: echo {version}; exec sleep 300\n"
    daemon.write_workflow("held.yaml", text.format(version="v1"))
    daemon.wait_jobs("held", lambda rows: statuses(rows) == [("busy", "RUNNING")])
    daemon.write_workflow("held.yaml", text.format(version="v2"))
    _wait_until_held_back(daemon, "held")
    assert daemon.stop() == 0
    daemon.start()
    rows = daemon.wait_jobs("held", lambda rows: len(rows) == 2 and rows[0]["status"] == "RUNNING")
    assert [e["trigger"] for e in daemon.json("workflow", "list-executions", "held")] == ["file changed", "file added"]
    wait_for(lambda: daemon.ctl("job", "logs", "held", "busy").stdout == "v2\n")
    assert rows[0]["execution_id"] == 2
    daemon.ctl("workflow", "stop-execution", "held")


def test_a_new_version_replaces_open_executions_once(daemon: Daemon) -> None:
    """Two executions open (one idle for its events, one running), edited while down: one new execution, no more."""
    text = """
        long:
          job_type: bash
          bash_command: echo {version}; exec sleep 300
        ev:
          job_type: bash
          bash_command: echo ev
          action_on_event: [{{event_key: go}}]
        """
    daemon.write_workflow("twice.yaml", text.format(version="v1"))
    daemon.wait_jobs("twice", lambda rows: statuses(rows) == [("long", "RUNNING")])
    daemon.ctl("workflow", "start-execution", "twice")
    daemon.wait_jobs("twice", lambda rows: statuses(rows) == [("long", "RUNNING"), ("long", "RUNNING")])
    assert daemon.stop() == 0
    daemon.write_workflow("twice.yaml", text.format(version="v2"))
    daemon.start()
    daemon.wait_jobs("twice", lambda rows: len(rows) == 3 and rows[0]["status"] == "RUNNING")
    daemon.write_workflow("marker.yaml", "m:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.wait_jobs("marker", lambda rows: statuses(rows) == [("m", "FINISHED")])
    executions = daemon.json("workflow", "list-executions", "twice")
    assert [(e["id"], e["status"], e["trigger"]) for e in executions] == [
        (3, "RUNNING", "file changed"),
        (2, "KILLED", "manual"),
        (1, "KILLED", "file added"),
    ]
    daemon.ctl("workflow", "stop-execution", "twice")


def test_on_change_wait_does_not_wait_for_an_execution_only_open_for_events(daemon: Daemon) -> None:
    text = "on_change: wait\nprep:\n  job_type: bash\n  bash_command: echo {version}\nev:\n  job_type: bash\n  bash_command: echo ev\n  action_on_event: [{{event_key: go}}]\n"
    daemon.write_workflow("idle.yaml", text.format(version="v1"))
    daemon.wait_jobs("idle", lambda rows: statuses(rows) == [("prep", "FINISHED")])
    daemon.write_workflow("idle.yaml", text.format(version="v2"))
    daemon.wait_jobs("idle", lambda rows: statuses(rows) == [("prep", "FINISHED"), ("prep", "FINISHED")])
    executions = daemon.json("workflow", "list-executions", "idle")
    assert [(e["status"], e["trigger"]) for e in executions] == [("RUNNING", "file changed"), ("FINISHED", "file added")]
    daemon.ctl("workflow", "stop-execution", "idle")


def test_a_held_back_version_starts_once_the_old_execution_has_only_events_to_wait_for(daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    text = (
        "on_change: wait\nprep:\n  job_type: bash\n  bash_command: while [ ! -e {gate} ]; do sleep 0.02; done; echo {version}\n"
        "serve:\n  job_type: bash\n  bash_command: echo serve\n  action_on_event: [{{event_key: go}}]\n"
    )
    daemon.write_workflow("held.yaml", text.format(gate=gate, version="v1"))
    daemon.wait_jobs("held", lambda rows: statuses(rows) == [("prep", "RUNNING")])
    daemon.write_workflow("held.yaml", text.format(gate=gate, version="v2"))
    _wait_until_held_back(daemon, "held")
    gate.touch()
    daemon.wait_jobs("held", lambda rows: statuses(rows) == [("prep", "FINISHED"), ("prep", "FINISHED")])
    executions = daemon.json("workflow", "list-executions", "held")
    assert [(e["status"], e["trigger"]) for e in executions] == [("RUNNING", "file changed"), ("FINISHED", "file added")]
    daemon.ctl("workflow", "stop-execution", "held")


def test_a_stop_trigger_keeps_what_it_saw_for_a_version_held_back_across_a_restart(daemon: Daemon) -> None:
    text = """
        on_change: wait
        stop_workflow_execution_on_events:
          - condition: all
            events: [{{event_key: x}}, {{event_key: y}}]
        busy:
          job_type: bash
          bash_command: echo {version}; exec sleep 300
        """
    daemon.write_workflow("guarded.yaml", text.format(version="v1"))
    daemon.wait_jobs("guarded", lambda rows: statuses(rows) == [("busy", "RUNNING")])
    daemon.write_workflow("guarded.yaml", text.format(version="v2"))  # held back behind the running v1
    _wait_until_held_back(daemon, "guarded")
    daemon.ctl("event", "send", "x", "1")  # seen by v2's stop trigger
    assert daemon.stop() == 0
    daemon.start()
    daemon.wait_jobs("guarded", lambda rows: (rows[0]["execution_id"], rows[0]["status"]) == (2, "RUNNING"))  # v2, started now
    daemon.ctl("event", "send", "y", "1")
    wait_for(lambda: daemon.json("workflow", "list-executions", "guarded")[0]["status"] == "KILLED")


def test_a_single_job_start_does_not_take_the_place_of_a_held_back_version(daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    text = (
        f"long:\n  job_type: bash\n  bash_command: trap 'while [ ! -e {gate} ]; do sleep 0.02; done; exit 0' TERM; echo {{version}}; sleep 300 & wait\n"
        "other:\n  job_type: bash\n  bash_command: echo other\n"
    )
    daemon.write_workflow("h.yaml", text.format(version="v1"))
    daemon.wait_jobs("h", lambda rows: ("long", "RUNNING") in statuses(rows) and ("other", "FINISHED") in statuses(rows))
    daemon.write_workflow("h.yaml", text.format(version="v2"))  # on_change: restart; 'long' takes its time to stop
    _wait_until_held_back(daemon, "h")
    daemon.ctl("job", "start-execution", "h", "other")
    gate.touch()
    wait_for(lambda: daemon.json("workflow", "list-executions", "h")[0]["trigger"] == "file changed")
    triggers = [e["trigger"] for e in daemon.json("workflow", "list-executions", "h")]
    assert triggers == ["file changed", "manual", "file added"]
    daemon.ctl("workflow", "stop-execution", "h")


def test_a_workflow_removed_while_a_new_version_waits_starts_nothing(daemon: Daemon) -> None:
    text = "on_change: wait\nf:\n  job_type: bash\n  bash_command: echo {version}; exit 1\n  retries: 3\n  retry_delay: 1h\n"
    path = daemon.write_workflow("gone.yaml", text.format(version="v1"))
    daemon.wait_jobs("gone", lambda rows: statuses(rows) == [("f", "FAILED")])  # a retry waits an hour
    daemon.write_workflow("gone.yaml", text.format(version="v2"))
    _wait_until_held_back(daemon, "gone")
    path.unlink()
    wait_for(lambda: daemon.json("workflow", "show", "gone")["status"] == "retired")
    assert [e["id"] for e in daemon.json("workflow", "list-executions", "gone")] == [1]  # no new version started


def test_ignore_after_a_held_back_version_starts_at_once(daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    text = "on_change: {policy}\nj:\n  job_type: bash\n  bash_command: echo {version}; while [ ! -e {gate} ]; do sleep 0.02; done\n"
    daemon.write_workflow("mixed.yaml", text.format(policy="wait", version="v1", gate=gate))
    daemon.wait_jobs("mixed", lambda rows: statuses(rows) == [("j", "RUNNING")])
    daemon.write_workflow("mixed.yaml", text.format(policy="wait", version="v2", gate=gate))  # held back
    _wait_until_held_back(daemon, "mixed")
    daemon.write_workflow("mixed.yaml", text.format(policy="ignore", version="v3", gate=gate))  # starts beside v1
    daemon.wait_jobs("mixed", lambda rows: statuses(rows) == [("j", "RUNNING"), ("j", "RUNNING")])
    gate.touch()
    daemon.wait_jobs("mixed", lambda rows: statuses(rows) == [("j", "FINISHED"), ("j", "FINISHED")])
    assert [e["trigger"] for e in daemon.json("workflow", "list-executions", "mixed")] == ["file changed", "file added"]


def test_a_workflow_whose_only_rule_waits_for_all_of_two_events_stays_open_for_them(daemon: Daemon) -> None:
    daemon.write_workflow("pair.yaml", BOTH_ON_A_AND_B)
    wait_for(lambda: daemon.json("workflow", "list-executions", "pair"))
    daemon.ctl("event", "send", "a", "1")
    assert daemon.stop() == 0  # between the two events: the execution and what it saw are kept
    daemon.start()
    daemon.ctl("event", "send", "b", "1")
    daemon.wait_jobs("pair", lambda rows: statuses(rows) == [("both", "FINISHED")])
    [execution] = daemon.json("workflow", "list-executions", "pair")
    assert execution["status"] == "RUNNING"  # open for the next pair
    daemon.ctl("workflow", "stop-execution", "pair")


def test_requests_while_the_daemon_stops_are_refused_not_lost(daemon: Daemon, tmp_path: Path) -> None:
    """A start or an event taken while jobs are being stopped would never run: the sender is told to ask again."""
    gate = tmp_path / "gate"
    daemon.stop()
    daemon.write_config("stop_grace_period: 60s\n")
    daemon.start()
    daemon.write_workflow(
        "slow.yaml", f"s:\n  job_type: bash\n  bash_command: trap 'while [ ! -e {gate} ]; do sleep 0.02; done' TERM; sleep 300 & wait\n"
    )
    daemon.write_workflow("other.yaml", "o:\n  job_type: bash\n  bash_command: echo o\n  action_on_event: [{event_key: go}]\n")
    daemon.wait_jobs("slow", lambda rows: statuses(rows) == [("s", "RUNNING")])
    wait_for(lambda: daemon.json("workflow", "list-executions", "other"))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "aiflowd stopping" in daemon.log())
    for args in (("workflow", "start-execution", "other"), ("job", "start-execution", "other", "o"), ("event", "send", "go", "1")):
        refused = daemon.ctl(*args, check=False)
        assert refused.returncode == 1 and refused.stderr.strip() == "aiflowctl: aiflowd is stopping: ask again once it is back", args
    assert daemon.ctl("job", "stop-execution", "slow", "s", check=False).returncode == 0  # a stop is still a stop
    gate.touch()
    assert daemon.process.wait(timeout=30) == 0
    daemon.start()
    assert [e["trigger"] for e in daemon.json("workflow", "list-executions", "other")] == ["file added"]
    assert daemon.jobs("other") == []
    daemon.ctl("event", "send", "go", "2")  # the open execution took the next daemon's event
    daemon.wait_jobs("other", lambda rows: statuses(rows) == [("o", "FINISHED")])


def test_what_a_rule_saw_counts_only_for_the_version_it_belongs_to(daemon: Daemon) -> None:
    text = """
        on_change: wait
        pair:
          job_type: bash
          bash_command: echo pair
          action_on_events:
            - condition: all
              events: [{{event_key: {first}}}, {{event_key: {second}}}]
              action: START
        """
    daemon.write_workflow("versions.yaml", text.format(first="a", second="b"))
    wait_for(lambda: daemon.json("workflow", "list-executions", "versions"))
    daemon.ctl("event", "send", "a", "1")
    assert daemon.stop() == 0
    daemon.write_workflow("versions.yaml", text.format(first="c", second="d"))
    daemon.start()
    daemon.ctl("event", "send", "d", "1")  # 'a' was seen for the old rule, which is gone
    daemon.write_workflow("marker.yaml", "m:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.wait_jobs("marker", lambda rows: statuses(rows) == [("m", "FINISHED")])
    assert daemon.jobs("versions") == []
    daemon.ctl("event", "send", "c", "1")
    daemon.wait_jobs("versions", lambda rows: statuses(rows) == [("pair", "FINISHED")])
    daemon.ctl("workflow", "stop-execution", "versions")


def test_job_environment_has_no_service_manager_variables(daemon: Daemon) -> None:
    daemon.write_workflow(
        "env.yaml",
        "e:\n  job_type: bash\n  bash_command: 'echo notify=${NOTIFY_SOCKET-none} listen=${LISTEN_FDS-none} wd=${WATCHDOG_USEC-none}'\n",
    )
    daemon.wait_jobs("env", lambda rows: statuses(rows) == [("e", "FINISHED")])
    assert daemon.ctl("job", "logs", "env", "e").stdout == "notify=none listen=none wd=none\n"


def test_logs_follow_until_the_job_ends(daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    daemon.write_workflow(
        "talk.yaml", f"t:\n  job_type: bash\n  bash_command: 'echo first; while [ ! -e {gate} ]; do sleep 0.02; done; echo last'\n"
    )
    daemon.wait_jobs("talk", lambda rows: statuses(rows) == [("t", "RUNNING")])
    follower = subprocess.Popen(
        [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(daemon.socket), "job", "logs", "-f", "talk", "t"],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert follower.stdout is not None
    assert follower.stdout.readline() == "first\n"
    gate.touch()
    rest, _ = follower.communicate(timeout=20)
    assert rest == "last\n" and follower.returncode == 0


#: What aiflowctl needs to talk to a daemon: the standard library and these modules.
CLIENT_MODULES = ("__init__.py", "control/__init__.py", "control/client.py", "control/protocol.py", "cli/__init__.py", "cli/aiflowctl.py")


@pytest.fixture
def other_user_aiflowctl() -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """Run the real aiflowctl as another user, wherever this checkout is.

    Another user may not be able to read the checkout (a clone in a 0700 folder) or this
    virtualenv, so aiflowctl's modules (stdlib only) are copied into a world-readable
    folder and run with an interpreter that user can run; the socket's permissions are the
    real ones.
    """
    import aiflowd

    folder = Path(tempfile.mkdtemp(prefix="aiflowctl-"))
    os.chmod(folder, 0o755)
    source = Path(aiflowd.__file__).parent
    for name in CLIENT_MODULES:
        (folder / "aiflowd" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, folder / "aiflowd" / name)
    launcher = folder / "aiflowctl.py"
    launcher.write_text("import sys\nfrom aiflowd.cli.aiflowctl import main\nsys.exit(main())\n")
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def as_user(uid: int) -> list[str]:
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]

    candidates = [getattr(sys, "_base_executable", sys.executable), sys.executable, shutil.which("python3") or ""]
    python = next(
        (c for c in candidates if c and subprocess.run([*as_user(65533), c, "-c", "pass"], cwd="/", capture_output=True).returncode == 0),
        None,
    )
    if python is None:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip("no Python interpreter that another user may run")

    def run(*args: str, uid: int) -> subprocess.CompletedProcess[str]:
        # -s -E: neither the user's site nor PYTHONPATH; the script's folder comes first on sys.path.
        command = [*as_user(uid), python, "-s", "-E", str(launcher), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd="/")

    try:
        yield run
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_socket_permissions_and_a_stranger(tmp_path: Path, other_user_aiflowctl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    daemon = Daemon(tmp_path, config="control_group: nogroup\n")
    try:
        daemon.start()
        mode = os.stat(daemon.socket).st_mode & 0o777
        assert mode == 0o660
        aiflowctl = other_user_aiflowctl
        # uid/gid 65534 (nobody/nogroup) is in the control group: it may read, not act.
        reader = aiflowctl("--socket", str(daemon.socket), "--json", "status", uid=65534)
        assert reader.returncode == 0, reader.stderr
        assert json.loads(reader.stdout)["pid"] == daemon.process.pid
        writer = aiflowctl("--socket", str(daemon.socket), "workflow", "start-execution", "x", uid=65534)
        assert writer.returncode == 1 and "may only read" in writer.stderr
        # Another uid and group cannot even open the socket: a refusal (1) that says who may, not "unreachable" (3).
        stranger = aiflowctl("--socket", str(daemon.socket), "status", uid=65533)
        assert stranger.returncode == 1, stranger.stderr
        [line] = stranger.stderr.splitlines()
        assert f"the socket {daemon.socket} refuses uid 65533" in line  # no such user: its uid
        assert "members of group 'nogroup' (the control_group, who may read)" in line
    finally:
        daemon.close()


def test_without_a_control_group_only_the_owner_may_connect(
    tmp_path: Path, other_user_aiflowctl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.start()
        assert os.stat(daemon.socket).st_mode & 0o777 == 0o600
        stranger = other_user_aiflowctl("--socket", str(daemon.socket), "status", uid=65534)
        assert stranger.returncode == 1, stranger.stderr
        [line] = stranger.stderr.splitlines()
        assert "(uid 65534)" in line and "(the daemon sets no control_group)" in line
    finally:
        daemon.close()


def test_malformed_requests_get_errors_and_the_daemon_lives(daemon: Daemon) -> None:
    def exchange(payload: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(daemon.socket))
            data = b""
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                while chunk := sock.recv(65536):
                    data += chunk
            except (ConnectionResetError, BrokenPipeError):
                data += b"<closed>"  # the daemon hung up on us, as it may on hostile input
            return data

    assert b'"code":"bad_request"' in exchange(b"this is not json\n")
    assert b'"code":"bad_request"' in exchange(b"[1, 2]\n")
    assert b'"code":"unknown_method"' in exchange(b'{"id": 7, "method": "rm -rf"}\n')
    oversized = exchange(b"x" * (200 * 1024))
    assert b"request longer than" in oversized or oversized.endswith(b"<closed>")
    assert exchange(b'{"id": 1, "method": "sta') == b""  # truncated: the connection just closes
    assert b'"id":9' in exchange(b'{"id": 9, "method": "workflow.show", "params": {"workflow": 5}}\n')
    assert daemon.json("status")["pid"] == daemon.process.pid


def test_reload_with_sighup_and_aiflowctl_and_a_bad_config(daemon: Daemon) -> None:
    assert daemon.notifications is not None
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.notifications.count("READY=1") == 2)
    reloading = [m for m in daemon.notifications.messages if "RELOADING=1" in m]
    assert reloading and "MONOTONIC_USEC=" in reloading[0]
    daemon.write_config("stop_grace_perod: 5\n")
    result = daemon.ctl("reload", check=False)
    assert result.returncode == 1 and "stop_grace_perod: unknown key" in result.stderr
    assert daemon.json("status")["pid"] == daemon.process.pid  # still serving, old config


def test_a_reload_names_the_settings_it_cannot_apply(daemon: Daemon) -> None:
    daemon.write_config("max_parallel_loads: 1\nwarm_start: false\n")
    answer = daemon.json("reload")
    # The compile slots are made at start; warm_start applies to compiles and jobs at once.
    assert answer["reloaded"] and answer["needs_restart"] == ["max_parallel_loads"]


def test_unreachable_daemon_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(tmp_path / "none.sock"), "status"],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert result.returncode == 3 and "no aiflowd answers" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is not installed")
def test_socket_activation(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(daemon.socket),
            "-E",
            f"PATH={os.environ['PATH']}",
            sys.executable,
            "-m",
            "aiflowd.cli.aiflowd",
            "--config",
            str(daemon.config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    try:
        wait_for(lambda: daemon.socket.exists())
        status = daemon.json("status")  # the first connection starts the daemon
        assert status["pid"] == activator.pid  # systemd-socket-activate execs the daemon in place
        assert daemon.json("status")["workflows"] == {}
    finally:
        activator.send_signal(signal.SIGTERM)
        activator.wait(timeout=20)
        daemon.close()


def test_a_second_sigterm_stops_waiting_and_kills_the_jobs(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, config="stop_grace_period: 60s\n")
    try:
        daemon.start()
        daemon.write_workflow("deaf.yaml", "d:\n  job_type: bash\n  bash_command: \"trap '' TERM; while true; do sleep 0.05; done\"\n")
        daemon.wait_jobs("deaf", lambda rows: statuses(rows) == [("d", "RUNNING")])
        pid = _pid_of(daemon, "d")
        assert daemon.process is not None and daemon.notifications is not None
        daemon.process.send_signal(signal.SIGTERM)
        wait_for(lambda: daemon.notifications.count("STOPPING=1") == 1)
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=20) == 0
        assert time.monotonic() - started < 10  # not the 60 s grace
        wait_for(lambda: not pid_alive(pid), timeout=5)
        # Recorded before the daemon ended (it used to stay RUNNING: "exit status lost" at the next start).
        import sqlite3

        with sqlite3.connect(daemon.state / "aiflowd.db") as db:
            status, ended_at, message = db.execute("SELECT status, ended_at, message FROM job_executions").fetchone()
            (execution,) = db.execute("SELECT status FROM executions").fetchone()
        assert (status, execution) == ("KILLED", "KILLED") and ended_at is not None, message
        assert "second stop signal" in message
    finally:
        daemon.close()


def test_event_list_follow_streams_new_events(daemon: Daemon) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(daemon.socket), "--json", "event", "list", "-f"],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert follower.stdout is not None
        daemon.ctl("event", "send", "k1", "v1")
        daemon.ctl("event", "send", "k2", "v2", "--namespace", "ns")
        first, second = json.loads(follower.stdout.readline()), json.loads(follower.stdout.readline())
        assert (first["key"], first["value"], second["key"], second["namespace"]) == ("k1", "v1", "k2", "ns")
    finally:
        follower.kill()
        follower.communicate()
