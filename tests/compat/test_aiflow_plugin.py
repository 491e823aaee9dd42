"""A job plugin written as AIFlow 0.3's job-plugin guide shows, on a real daemon.

``tests/plugins/aiflow_style_plugin`` is a package in the guide's layout: AIFlow's import
names, blocking controller methods, AIFlow's ``generate(sub_graph, resource_dir)``, its
processes started with ``Popen`` in a session of their own and no ``reattach``. It loads,
runs, stops, and after a ``kill -9`` of the daemon its job's processes are stopped by the
next daemon instead of running on, orphaned.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..conftest import REPO, wait_for
from ..daemon_harness import Daemon
from .conftest import aiflow_workflow

PLUGINS = REPO / "tests" / "plugins"

DEFINITION = """
import ai_flow as af
from aiflow_style_plugin import ShellLineProcessor

af.init_ai_flow_context()

with af.job_config('hello'):
    af.user_define_operation(processor=ShellLineProcessor('echo "hello from execution $WORKFLOW_EXECUTION_ID"'))
with af.job_config('sleeper'):
    af.user_define_operation(processor=ShellLineProcessor('echo $$ > {pids}/$AIFLOWD_RUN; exec sleep 300'))

af.action_on_job_status('sleeper', 'hello')
"""
YAML = "hello:\n  job_type: shell_line\nsleeper:\n  job_type: shell_line\n"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def test_a_plugin_written_as_aiflows_guide_shows_loads_runs_stops_and_leaves_no_orphan(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    daemon = Daemon(
        tmp_path / "d",
        config=f"plugin_paths: [{PLUGINS}]\nplugin_modules: [aiflow_style_plugin]\njob_env:\n  PYTHONPATH: {REPO}\n",
    )
    orphan: int | None = None
    try:
        daemon.start(extra_env={"AIFLOWD_RUN": "first"})
        assert {row["job_type"]: row["module"] for row in daemon.json("plugins")}["shell_line"] == "aiflow_style_plugin"
        folder = aiflow_workflow(tmp_path / "staging", "lines", YAML, DEFINITION.format(pids=pids))
        folder.rename(daemon.workflows / "lines")

        # It runs: the job's output is where the plugin put it, with AIFlow's execution info.
        rows = daemon.wait_jobs("lines", lambda rows: any(r["job"] == "sleeper" and r["status"] == "RUNNING" for r in rows))
        [hello] = [r for r in rows if r["job"] == "hello"]
        assert hello["status"] == "FINISHED"
        output = Path(daemon.state / "work" / "lines" / str(hello["execution_id"]) / "hello.1" / "output.txt").read_text()
        assert output == f"hello from execution {hello['execution_id']}\n"
        orphan = int(wait_for(lambda: (pids / "first").exists() and (pids / "first").read_text().strip()))

        # kill -9: the plugin's process runs on (its own session), then the next daemon stops it.
        daemon.kill9()
        assert alive(orphan)
        daemon.start(extra_env={"AIFLOWD_RUN": "second"})
        rows = daemon.wait_jobs("lines", lambda rows: any(r["job"] == "sleeper" and r["status"] == "KILLED" for r in rows))
        [sleeper] = [r for r in rows if r["job"] == "sleeper"]
        assert f"cannot reattach: the processes it had started (pid {orphan}) were stopped" in sleeper["message"]
        assert sleeper["message"].startswith("lost in a restart: ")
        wait_for(lambda: not alive(orphan))

        # It stops: a job started by request is stopped by request, its process with it.
        daemon.ctl("job", "start-execution", "lines", "sleeper")
        running = wait_for(lambda: (pids / "second").exists() and (pids / "second").read_text().strip())
        daemon.ctl("job", "stop-execution", "lines", "sleeper")
        rows = daemon.wait_jobs("lines", lambda rows: [r["status"] for r in rows if r["job"] == "sleeper"].count("KILLED") == 2)
        assert not alive(int(running))
    finally:
        daemon.close()
        if orphan is not None and alive(orphan):
            os.kill(orphan, 9)
