"""The daemon's life under faults: bad reloads, a second daemon, broken state, a failing part.

Each test drives a real aiflowd process (tests/daemon_harness.py) and pins a defect of
issue 7 that used to end or stop the daemon.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ..conftest import cli_env, pid_alive, wait_for
from ..daemon_harness import Daemon


def start_failure(config: Path, cwd: Path, limit_file_size: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run aiflowd expecting it not to start; stderr and stdout apart."""

    def limits() -> None:
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        preexec_fn=limits,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("aiflowd: cannot start: "), line
    for part in parts:
        assert part in line, line


def running_job(daemon: Daemon, workflow: str = "long") -> int:
    daemon.write_workflow(f"{workflow}.yaml", "l:\n  job_type: bash\n  bash_command: sleep 300\n")
    rows = daemon.wait_jobs(workflow, lambda rows: rows and rows[0]["status"] == "RUNNING")
    return int(next(r for r in rows if r["status"] == "RUNNING")["job_execution_id"])


def test_sighup_with_a_bad_config_keeps_the_old_config_serving(daemon: Daemon) -> None:
    """Issue 7, defect 2: `_signals` awaited reload(), whose ControlError ended the daemon."""
    assert daemon.process is not None and daemon.notifications is not None
    job = running_job(daemon)
    daemon.write_config("stop_grace_perod: 5\n")
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.notifications.count("READY=1") == 2 or daemon.process.poll() is not None, timeout=20)
    assert daemon.process.poll() is None, daemon.log()
    assert daemon.notifications.count("RELOADING=1") == 1
    assert any("STATUS=reload refused: the config has errors" in m for m in daemon.notifications.messages)
    assert "stop_grace_perod: unknown key" in daemon.log()
    # Still serving, with the old config, the same job still running; a new workflow still runs.
    assert daemon.json("status")["pid"] == daemon.process.pid
    daemon.write_workflow("after.yaml", "a:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.wait_jobs("after", lambda rows: rows and rows[0]["status"] == "FINISHED")
    assert [r["status"] for r in daemon.jobs("long") if r["job_execution_id"] == job] == ["RUNNING"]
    refused = daemon.ctl("reload", check=False)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[1].startswith(f"{daemon.config}:")
    assert "stop_grace_perod: unknown key" in refused.stderr
    # A good config afterwards reloads.
    daemon.write_config("")
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: any("STATUS=reloaded" in m for m in daemon.notifications.messages), timeout=20)


def test_a_second_daemon_on_the_same_state_dir_exits_1_naming_the_first(daemon: Daemon, tmp_path: Path) -> None:
    """Issue 7, defect 3: a second daemon with another socket started and ran every job twice."""
    assert daemon.process is not None
    second = Daemon(tmp_path / "second")
    try:
        second.write_config(f"state_dir: {daemon.state}\n")
        result = start_failure(second.config, second.root)
        assert_one_line(result, str(daemon.state), f"another aiflowd (pid {daemon.process.pid})")
        assert not second.socket.exists()
    finally:
        second.close()
    assert daemon.json("status")["pid"] == daemon.process.pid  # the first one goes on, its socket intact
    # After the first stops (even by kill -9), the state dir is free again.
    daemon.kill9()
    daemon.start()


def test_a_corrupt_database_is_one_line(tmp_path: Path) -> None:
    """Issue 7, defect 8: a corrupt database printed a 31-line traceback."""
    daemon = Daemon(tmp_path)
    daemon.state.mkdir(parents=True)
    (daemon.state / "aiflowd.db").write_bytes(b"this is not an SQLite database\n" * 100)
    try:
        assert_one_line(start_failure(daemon.config, tmp_path), str(daemon.state / "aiflowd.db"), "file is not a database")
    finally:
        daemon.close()


def test_a_full_disk_at_start_is_one_line(tmp_path: Path) -> None:
    """Issue 7, defect 8: a full disk at start printed a traceback. A file size limit of 0
    makes every write fail as a full disk would (EFBIG instead of ENOSPC)."""
    daemon = Daemon(tmp_path)
    try:
        result = start_failure(daemon.config, tmp_path, limit_file_size=0)
        assert_one_line(result, str(daemon.state))
    finally:
        daemon.close()


def test_a_dangling_symlink_at_the_socket_path_is_replaced(tmp_path: Path) -> None:
    """Issue 7, defect 8: a dangling symlink at the socket path stopped startup."""
    daemon = Daemon(tmp_path)
    try:
        daemon.socket.symlink_to(tmp_path / "nowhere.sock")
        daemon.start()
        assert daemon.socket.is_socket() and not daemon.socket.is_symlink()
        assert daemon.json("status")["pid"] == daemon.process.pid
    finally:
        daemon.close()


def test_something_else_at_the_socket_path_is_one_line_and_left_alone(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.socket.write_text("precious\n")
        assert_one_line(start_failure(daemon.config, tmp_path), str(daemon.socket), "not a socket")
        assert daemon.socket.read_text() == "precious\n"
        target = tmp_path / "target"
        target.write_text("precious too\n")
        daemon.socket.unlink()
        daemon.socket.symlink_to(target)
        assert_one_line(start_failure(daemon.config, tmp_path), str(daemon.socket), "symbolic link")
        assert target.read_text() == "precious too\n"
    finally:
        daemon.close()


#: Loaded into the daemon through sitecustomize: the watcher task fails once, when told to
#: (a file named ``boom`` appears), as a bug in it or in what it calls would.
FAULTY_WATCHER = textwrap.dedent(
    """
    import os

    if os.environ.pop("AIFLOWD_TEST_FAULTY_WATCHER", None):
        import anyio
        from aiflowd import watcher

        original = watcher.FolderWatcher.run
        failed = []

        async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED):
            if failed:
                return await original(self, task_status=task_status)
            task_status.started()
            trigger = os.path.join(self.folder, "boom")
            while not os.path.exists(trigger):
                await anyio.sleep(0.02)
            failed.append(True)
            raise RuntimeError("injected watcher failure")

        watcher.FolderWatcher.run = run
    """
)


def test_a_failing_watcher_is_logged_counted_and_restarted(tmp_path: Path) -> None:
    """Issue 7, supervised parts: an exception in the watcher task used to end the daemon (and its jobs)."""
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "sitecustomize.py").write_text(FAULTY_WATCHER)
    daemon = Daemon(tmp_path / "d")
    try:
        path = os.pathsep.join(p for p in (str(faults), os.environ.get("PYTHONPATH", "")) if p)
        before = daemon.write_workflow("before.yaml", "b:\n  job_type: bash\n  bash_command: sleep 300\n")  # found by the scan
        daemon.start(extra_env={"PYTHONPATH": path, "AIFLOWD_TEST_FAULTY_WATCHER": "1"})
        assert daemon.process is not None
        assert daemon.json("status")["restarts"] == {}
        pid = _job_pid(daemon, before)
        (daemon.workflows / "boom").touch()
        wait_for(lambda: daemon.json("status")["restarts"] == {"watcher": 1}, timeout=20)
        assert "injected watcher failure" in daemon.log() and "supervised part failed" in daemon.log()
        # The restarted watcher sees new workflows; the job that ran meanwhile runs on.
        daemon.write_workflow("after.yaml", "a:\n  job_type: bash\n  bash_command: 'true'\n")
        daemon.wait_jobs("after", lambda rows: rows and rows[0]["status"] == "FINISHED")
        assert pid_alive(pid) and daemon.process.poll() is None
        assert "restarts: watcher 1" in daemon.ctl("status").stdout
    finally:
        daemon.close()


def _job_pid(daemon: Daemon, path: Path) -> int:
    import json
    import sqlite3

    name = path.stem
    daemon.wait_jobs(name, lambda rows: rows and rows[0]["status"] == "RUNNING")
    with sqlite3.connect(daemon.state / "aiflowd.db") as db:
        (handle,) = db.execute("SELECT handle FROM job_executions WHERE workflow = ? ORDER BY id DESC LIMIT 1", (name,)).fetchone()
    return int(json.loads(handle)["pid"])


def test_a_plugin_that_exits_on_reload_does_not_end_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    """A plugin module imported on reload (SIGHUP or aiflowctl) that calls sys.exit() is its failure, not the daemon's."""
    assert daemon.process is not None and daemon.notifications is not None
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    daemon.write_config(f"plugin_paths: [{plugins}]\nplugin_modules: [quitter]\n")
    reloaded = daemon.ctl("reload", check=False)
    assert reloaded.returncode in (0, 1), reloaded.stderr  # an answer (the plugin's error), not a dead daemon
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.notifications.count("READY=1") >= 3 or daemon.process.poll() is not None, timeout=20)
    assert daemon.process.poll() is None, daemon.log()
    assert daemon.json("status")["pid"] == daemon.process.pid
