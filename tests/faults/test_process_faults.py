"""Containment of processes: nothing a job or a definition starts outlives its owner.

Real processes throughout. Escaped processes are ``sleep 1000.<marker>``: a number no
other process on the machine carries, so they are found by their command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiflowd.controllers import process_group
from aiflowd.controllers.process_group import REAPER, HelperCancel, ProcessGroup, run_helper
from aiflowd.controllers.subprocess import SubprocessJobHandle
from aiflowd.controllers.supervisor import JobSupervisor
from aiflowd.model import JobConfig, Status
from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
from aiflowd.plugins.bash import BashJob
from aiflowd.plugins.bash.controller import BashJobController
from aiflowd.runners.reaper import live_descendants, process_table
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import LoaderSettings, WorkflowLoader

from ..conftest import cli_env, pid_alive, wait_for, write
from ..daemon_harness import Daemon


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique ``sleep`` argument; any process still carrying it at the end is killed (and failed on)."""
    value = f"1000.{uuid.uuid4().int % 10**12:012d}"
    yield value
    for pid in carrying(value):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def carrying(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if needle in cmdline.split(b"\0") and pid_alive(int(entry)):
            found.append(int(entry))
    return found


async def submit(controller: BashJobController, job: BashJob, env: JobRuntimeEnv) -> SubprocessJobHandle:
    handle = await controller.submit_job(job, env)
    assert isinstance(handle, SubprocessJobHandle)
    return handle


def bash_job(command: str) -> BashJob:
    return BashJob(JobConfig("job", "bash"), command, "utf-8", {}, None)


def runtime_env(tmp_path: Path, grace: float = 1.0, log_path: Path | None = None, **settings: object) -> JobRuntimeEnv:
    return JobRuntimeEnv(
        working_dir=str(tmp_path / "work"),
        log_path=str(log_path or tmp_path / "logs" / "job.log"),
        workflow_dir=str(tmp_path),
        job_execution_info=JobExecutionInfo("wf", "job", "e1", "e1.job.1"),
        settings={"stop_grace_period": grace, **settings},
    )


# --- jobs: escaped processes end with the job -------------------------------------------


ESCAPES = {
    # its own session and group
    "setsid": "setsid sh -c 'echo $$ > {f}; exec sleep {m}' &",
    # a double fork: re-parented, still in the group
    "double-fork": "( ( sh -c 'echo $$ > {f}; exec sleep {m}' & ) & )",
    # ignores SIGTERM (the ignore survives exec): needs the SIGKILL
    "ignores-term": "setsid sh -c 'trap \"\" TERM; echo $$ > {f}; exec sleep {m}' &",
}


def escaping(kind: str, marker: str, pid_file: Path) -> str:
    """Shell lines that start an escaping ``sleep MARKER`` and wait until it has written its pid."""
    return f"{ESCAPES[kind].format(f=pid_file, m=marker)}\nwhile [ ! -s {pid_file} ]; do :; done\n"


@pytest.mark.parametrize("kind", list(ESCAPES))
async def test_processes_a_job_leaves_behind_end_before_its_status_is_written(tmp_path: Path, marker: str, kind: str) -> None:
    pid_file = tmp_path / "escaped.pid"
    env = runtime_env(tmp_path, grace=0.3)
    controller = BashJobController()
    handle = await submit(controller, bash_job(escaping(kind, marker, pid_file) + "exit 3"), env)
    assert await controller.get_result(handle) == 3  # the job's own status, not the reaper's
    assert not pid_alive(int(pid_file.read_text()))  # gone when the wrapper ended: no waiting
    assert carrying(marker) == []
    assert await controller.get_job_status(handle) == Status.FAILED
    await controller.cleanup_job(handle, env)


async def test_a_job_that_leaves_nothing_behind_is_not_slowed(tmp_path: Path) -> None:
    env = runtime_env(tmp_path)
    controller = BashJobController()
    handle = await submit(controller, bash_job("sleep 0.01 & wait; exit 4"), env)
    assert await controller.get_result(handle) == 4
    assert Path(handle.status_path).read_text() == "4\n"


@pytest.mark.parametrize("owned", [False, True], ids=["daemon-job", "run-once-job"])
async def test_a_job_gets_default_signal_dispositions(tmp_path: Path, owned: bool) -> None:
    """A job started through a Python process must not inherit the SIGPIPE/SIGXFSZ that
    Python ignores: ``yes | head`` then ends quietly instead of "Broken pipe" errors."""
    env = runtime_env(tmp_path, jobs_die_with_owner=owned)
    controller = BashJobController()
    handle = await submit(controller, bash_job("grep SigIgn /proc/self/status; yes | head -c 4"), env)
    assert await controller.get_result(handle) == 0
    text = Path(env.log_path).read_text()
    ignored = int(text.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGXFSZ - 1)), text
    assert "Broken pipe" not in text and text.endswith("y\ny\n")


def is_spawner(pid: int) -> bool:
    """A spawner, cold (``python -I -S REAPER spawner``) or warm (``python -I REAPER spawner FD warm``)."""
    parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return REAPER.encode() in parts and parts[parts.index(REAPER.encode()) + 1 : parts.index(REAPER.encode()) + 2] == [b"spawner"]


async def test_a_killed_spawner_is_replaced_and_its_jobs_go_on(tmp_path: Path, marker: str) -> None:
    controller = BashJobController()
    first = await submit(controller, bash_job(f"sleep {marker}"), runtime_env(tmp_path / "1"))
    table = process_table()
    spawners = [pid for pid in live_descendants(os.getpid(), table) if table[pid][0] == os.getpid() and is_spawner(pid)]
    assert spawners
    for pid in spawners:
        os.kill(pid, signal.SIGKILL)
    handle = await submit(controller, bash_job("exit 5"), runtime_env(tmp_path / "2"))
    assert await controller.get_result(handle) == 5
    assert first.group.running  # a job outlives the spawner that started it
    await controller.stop_job(first, runtime_env(tmp_path / "1"))
    assert carrying(marker) == []


async def test_without_the_spawner_jobs_still_reap_what_they_leave(tmp_path: Path, marker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_group._SPAWNER, "start", lambda *args: None)  # the slow path: preexec_fn
    pid_file = tmp_path / "escaped.pid"
    controller = BashJobController()
    handle = await submit(controller, bash_job(escaping("setsid", marker, pid_file) + "exit 3"), runtime_env(tmp_path))
    assert await controller.get_result(handle) == 3
    assert not pid_alive(int(pid_file.read_text()))


async def test_a_working_folder_gone_before_the_exec_is_told_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    status = tmp_path / "status"
    group = ProcessGroup.spawn(["true"], env={}, cwd=str(tmp_path / "gone"), log_path=str(log), status_path=str(status))
    assert await group.wait() == 127
    assert log.read_text() == f"aiflowd: cannot start the job: No such file or directory: {tmp_path / 'gone'}\n"


async def test_stopping_a_job_reaches_the_processes_that_escaped_its_group(tmp_path: Path, marker: str) -> None:
    command = f"setsid bash -c 'trap \"\" TERM; sleep {marker}' & sleep {marker}"
    env = runtime_env(tmp_path, grace=0.3)
    controller = BashJobController()
    handle = await submit(controller, bash_job(command), env)
    wait_for(lambda: len(carrying(marker)) == 2)
    await controller.stop_job(handle, env)
    assert await controller.get_job_status(handle) == Status.KILLED
    assert carrying(marker) == []
    await controller.cleanup_job(handle, env)


SPAWNER = """
import asyncio, json, sys
from pathlib import Path
from aiflowd.controllers.subprocess import SubprocessJobHandle
from aiflowd.model import JobConfig
from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
from aiflowd.plugins.bash import BashJob
from aiflowd.plugins.bash.controller import BashJobController
from aiflowd.runners.reaper import live_descendants, process_table

async def main():
    tmp = Path(sys.argv[1])
    env = JobRuntimeEnv(str(tmp / "work"), str(tmp / "job.log"), str(tmp), JobExecutionInfo("wf", "job", "e", "e.job.1"))
    handle = await BashJobController().submit_job(BashJob(JobConfig("job", "bash"), sys.argv[2], "utf-8", {}, None), env)
    print(json.dumps(handle.to_json()))

asyncio.run(main())
"""


async def test_a_job_started_by_a_process_that_died_keeps_running_and_is_stopped_whole(tmp_path: Path, marker: str) -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-c", SPAWNER, str(tmp_path), f"setsid sleep {marker} & sleep {marker}"],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(out.stdout)
    wait_for(lambda: len(carrying(marker)) == 2)  # the starter is gone; the job (and what it started) is not
    group = ProcessGroup.attach(int(record["pid"]), int(record["start_time"]), str(record["status_path"]))
    assert group.running
    await group.terminate(0.5)
    assert carrying(marker) == []


# --- run-once owns its jobs --------------------------------------------------------------


def test_run_once_killed_with_sigkill_takes_its_jobs_along(tmp_path: Path, marker: str) -> None:
    pids = tmp_path / "pids"
    path = write(
        tmp_path / "owned.yaml",
        f"""
        a:
          job_type: bash
          bash_command: "echo $$ >> {pids}; setsid sleep {marker} & sleep {marker}"
        """,
    )
    config = write(tmp_path / "aiflowd.yaml", "stop_grace_period: 0.5\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(config), "run-once", str(path)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    try:
        wait_for(lambda: len(carrying(marker)) == 2, timeout=30)
        job = int(pids.read_text().split()[0])
        process.kill()
    finally:
        process.kill()
        process.wait()
    wait_for(lambda: not carrying(marker) and not pid_alive(job), timeout=5)


async def test_a_job_that_must_die_with_its_owner_runs_as_usual_otherwise(tmp_path: Path) -> None:
    env = runtime_env(tmp_path, jobs_die_with_owner=True)
    controller = BashJobController()
    handle = await submit(controller, bash_job("echo out; echo err >&2; exit 7"), env)
    assert await controller.get_result(handle) == 7
    assert Path(env.log_path).read_text() == "out\nerr\n"
    assert Path(handle.status_path).read_text() == "7\n"
    handle = await submit(controller, bash_job("sleep 30"), runtime_env(tmp_path / "2", grace=0.5, jobs_die_with_owner=True))
    await controller.stop_job(handle, env)
    assert await controller.get_job_status(handle) == Status.KILLED
    assert await controller.get_result(handle) == 128 + signal.SIGTERM


# --- compile helpers ---------------------------------------------------------------------

LOOPING_DEFINITION = """
import os, subprocess
subprocess.Popen(["setsid", "sleep", "{marker}"])
with open({pid_file!r}, "w") as fh:
    fh.write(str(os.getpid()))
while True:
    pass
"""


def looping_workflow(tmp_path: Path, marker: str, body: str = LOOPING_DEFINITION) -> tuple[Path, Path]:
    pid_file = tmp_path / "helper.pid"
    folder = tmp_path / "spin"
    write(folder / "spin.yaml", "{}\n")
    write(folder / "spin.py", body.format(marker=marker, pid_file=str(pid_file)))
    return folder, pid_file


def test_killing_validate_mid_compile_kills_the_compile_helper(tmp_path: Path, marker: str, warm: bool) -> None:
    folder, pid_file = looping_workflow(tmp_path, marker)
    config = write(tmp_path / "aiflowd.yaml", f"warm_start: {str(warm).lower()}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--config", str(config), "validate", str(folder)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    try:
        helper = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30))
        assert pid_alive(helper)
    finally:
        process.kill()
        process.wait()
    wait_for(lambda: not pid_alive(helper), timeout=5)
    if warm:  # the fork server ends the whole compile; a cold helper's parent-death SIGKILL leaves what escaped it
        wait_for(lambda: not carrying(marker), timeout=5)


def test_a_compile_helper_that_lost_its_parent_before_it_could_ask_exits_at_once(tmp_path: Path) -> None:
    # The race the parent-death signal cannot close: the parent named in the environment is not ours.
    result = subprocess.run(
        [sys.executable, "-m", "aiflowd.runners.compile_workflow", "/nonexistent/request.json", str(tmp_path / "out.json")],
        env=cli_env(AIFLOWD_HELPER_PARENT="1" if os.getppid() != 1 else "2"),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1 and result.stderr == b""  # it never read the request


@pytest.fixture(params=[True, False], ids=["warm", "cold"])
def warm(request: pytest.FixtureRequest) -> bool:
    """Compiles and Python jobs in forks of the fork server, and each in a new interpreter."""
    return bool(request.param)


def test_a_compile_that_times_out_kills_what_the_definition_started(registry, tmp_path: Path, marker: str, warm: bool) -> None:  # type: ignore[no-untyped-def]
    folder, pid_file = looping_workflow(tmp_path, marker)
    loader = WorkflowLoader(registry, LoaderSettings(compile_timeout=2, warm_start=warm))
    with pytest.raises(LoadError, match="did not finish within 2s"):
        loader.load(str(folder))
    assert not pid_alive(int(pid_file.read_text()))
    assert carrying(marker) == []


def test_a_compile_ends_what_the_definition_left_running(registry, tmp_path: Path, marker: str, warm: bool) -> None:  # type: ignore[no-untyped-def]
    body = """
import subprocess
from aiflowd import job_config, user_define_operation, BashProcessor
subprocess.Popen(["setsid", "sleep", "{marker}"])
subprocess.Popen(["sh", "-c", "sleep {marker} &"])
with job_config("a"):
    user_define_operation(processor=BashProcessor("true"))
"""
    folder, _ = looping_workflow(tmp_path, marker, body)
    loaded = WorkflowLoader(registry, LoaderSettings(compile_timeout=20, warm_start=warm)).load(str(folder))
    assert list(loaded.workflow.jobs) == ["a"]
    assert carrying(marker) == []


def test_a_cancelled_helper_is_killed_with_what_it_started(tmp_path: Path, marker: str) -> None:
    started = tmp_path / "started"
    script = f"setsid sleep {marker} & touch {started}; while :; do :; done"
    cancel = HelperCancel()
    results = []
    worker = threading.Thread(target=lambda: results.append(run_helper(["sh", "-c", script], env=cli_env(), timeout=60, cancel=cancel)))
    worker.start()
    try:
        wait_for(lambda: started.exists() and carrying(marker))
        cancel.cancel()
        worker.join(timeout=10)
    finally:
        cancel.cancel()
        worker.join()
        cancel.close()
    assert results[0].cancelled and results[0].returncode is None
    assert carrying(marker) == []


# --- a log that cannot be written --------------------------------------------------------


async def failed_outcome(tmp_path: Path, log_path: Path) -> str:
    outcome = await JobSupervisor(BashJobController(), bash_job("echo hello"), runtime_env(tmp_path, log_path=log_path)).run()
    assert outcome.status == Status.FAILED
    assert outcome.message is not None
    return outcome.message


async def test_a_log_folder_that_is_a_file_fails_the_job_with_the_path_and_the_reason(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("not a folder")
    log = tmp_path / "logs" / "job.log"
    assert await failed_outcome(tmp_path, log) == f"cannot write the job's log {log}: Not a directory"


@contextlib.contextmanager
def tiny_tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_full_log_folder_fails_the_job_with_the_path_and_the_reason(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "full", "size=16k") as full:
        with contextlib.suppress(OSError), open(full / "filler", "wb") as fh:
            while True:
                fh.write(b"x" * 4096)
                fh.flush()
        log = full / "job.log"
        assert await failed_outcome(tmp_path, log) == f"cannot write the job's log {log}: No space left on device"


async def test_a_read_only_log_folder_fails_the_job_with_the_path_and_the_reason(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # chmod does not stop root: a read-only file system does.
        with tiny_tmpfs(tmp_path / "ro", "size=16k,ro") as read_only:
            log = read_only / "job.log"
            assert await failed_outcome(tmp_path, log) == f"cannot write the job's log {log}: Read-only file system"
        return
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    log = folder / "job.log"
    assert await failed_outcome(tmp_path, log) == f"cannot write the job's log {log}: Permission denied"


# --- the daemon ---------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path, warm: bool) -> Iterator[Daemon]:
    running = Daemon(tmp_path, config=f"warm_start: {str(warm).lower()}\n")
    try:
        yield running.start()
    finally:
        running.close()


def test_what_a_daemon_job_leaves_behind_ends_with_the_job(daemon: Daemon, marker: str) -> None:
    pid_file = daemon.root / "escaped.pid"
    script = daemon.root / "leaky.sh"
    script.write_text(escaping("setsid", marker, pid_file))
    daemon.write_workflow("leaky.yaml", f"a:\n  job_type: bash\n  bash_command: sh {script}\n")
    daemon.wait_jobs("leaky", lambda rows: rows and rows[0]["status"] == "FINISHED")
    assert not pid_alive(int(pid_file.read_text()))
    assert carrying(marker) == []


def test_a_daemon_stopped_with_sigterm_leaves_no_process_behind(daemon: Daemon, marker: str) -> None:
    daemon.write_workflow(
        "leaky.yaml",
        f"""
        a:
          job_type: bash
          bash_command: setsid sleep {marker} & sleep {marker}
        """,
    )
    wait_for(lambda: len(carrying(marker)) == 2, timeout=20)
    assert daemon.stop() == 0
    assert carrying(marker) == []


def test_a_daemon_killed_mid_compile_leaves_no_compile_helper(daemon: Daemon, tmp_path: Path, marker: str, warm: bool) -> None:
    pid_file = tmp_path / "helper.pid"
    daemon.write_workflow("spin/spin.yaml", "{}\n")
    daemon.write_workflow("spin/spin.py", LOOPING_DEFINITION.format(marker=marker, pid_file=str(pid_file)))
    helper = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30))
    daemon.kill9()
    wait_for(lambda: not pid_alive(helper), timeout=5)
    if warm:  # as above: the fork server ends what escaped too
        wait_for(lambda: not carrying(marker), timeout=5)


def test_a_daemon_killed_with_sigkill_leaves_its_jobs_running(daemon: Daemon, marker: str) -> None:
    daemon.write_workflow("long.yaml", f"a:\n  job_type: bash\n  bash_command: sleep {marker}\n")
    job = wait_for(lambda: carrying(marker), timeout=20)[0]
    daemon.kill9()
    assert pid_alive(job)


async def test_a_wrapper_stopped_before_it_made_its_session_is_still_stopped(tmp_path: Path) -> None:
    """The spawner answers before its child's setsid and exec: a stop in that moment found no
    group, reported "nothing left" and then waited for the job for ever (seen as a restart
    request that did nothing). A process not yet leading a group stands in for that child."""
    child = subprocess.Popen(["sleep", "30"])  # in our group, so no group has its pid
    try:
        group = ProcessGroup.attach(child.pid, process_group.process_start_time(child.pid) or 0, str(tmp_path / "status"))
        assert group.has_members()
        assert group.signal_group(signal.SIGTERM)
        assert child.wait(timeout=10) == -signal.SIGTERM
        group.close()
    finally:
        child.kill()
        child.wait()


# --- Python jobs, warm and cold ----------------------------------------------------------------


def python_job(registry, tmp_path: Path, body: str, warm: bool):  # type: ignore[no-untyped-def]
    """The one job of a workflow whose processor runs ``body`` (shell-free Python), loaded warm or cold."""
    folder = tmp_path / "py"
    write(folder / "py.yaml", "job:\n  job_type: python\n  processor: steps:Step\n")
    indented = "\n".join("        " + line for line in body.strip("\n").splitlines())
    write(
        folder / "steps.py",
        f"import os, subprocess, sys, time\nfrom aiflowd import PythonProcessor\n\nclass Step(PythonProcessor):\n    def process(self, ctx, inputs):\n{indented}\n        return []\n",
    )
    loaded = WorkflowLoader(registry, LoaderSettings(compile_timeout=20, warm_start=warm)).load(str(folder))
    return loaded.jobs["job"]


def python_env(tmp_path: Path, warm: bool, grace: float = 0.5) -> JobRuntimeEnv:
    env = runtime_env(tmp_path, grace=grace, warm_start=warm, job_env={"PYTHONPATH": str(Path(REPO_ROOT))})
    env.workflow_dir = str(tmp_path / "py")
    return env


REPO_ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("kind", list(ESCAPES))
async def test_what_a_python_job_leaves_behind_ends_before_its_status_is_written(
    registry,
    tmp_path: Path,
    marker: str,
    kind: str,
    warm: bool,  # type: ignore[no-untyped-def]
) -> None:
    from aiflowd.plugins.python.controller import PythonJobController

    pid_file = tmp_path / "escaped.pid"
    script = escaping(kind, marker, pid_file)
    job = python_job(registry, tmp_path, f"subprocess.run(['sh', '-c', {script!r}])\nsys.exit(3)", warm)
    controller = PythonJobController()
    env = python_env(tmp_path, warm, grace=0.3)
    handle = await controller.submit_job(job, env)
    assert isinstance(handle, SubprocessJobHandle)
    assert await controller.get_result(handle) == 3
    assert not pid_alive(int(pid_file.read_text()))
    assert carrying(marker) == []
    await controller.cleanup_job(handle, env)


async def test_stopping_a_python_job_ends_it_and_what_escaped_it(registry, tmp_path: Path, marker: str, warm: bool) -> None:  # type: ignore[no-untyped-def]
    from aiflowd.plugins.python.controller import PythonJobController

    job = python_job(registry, tmp_path, f"subprocess.Popen(['setsid', 'sleep', '{marker}'])\ntime.sleep(300)", warm)
    controller = PythonJobController()
    env = python_env(tmp_path, warm)
    handle = await controller.submit_job(job, env)
    wait_for(lambda: carrying(marker))
    await controller.stop_job(handle, env)
    assert await controller.get_job_status(handle) == Status.KILLED
    assert await controller.get_result(handle) == 128 + signal.SIGTERM
    assert carrying(marker) == []


async def test_a_killed_fork_server_is_replaced_and_its_python_jobs_go_on(registry, tmp_path: Path, marker: str) -> None:  # type: ignore[no-untyped-def]
    from aiflowd.plugins.python.controller import PythonJobController

    controller = PythonJobController()
    first = await controller.submit_job(
        python_job(registry, tmp_path / "1", f"subprocess.run(['sleep', '{marker}'])", True), python_env(tmp_path / "1", True)
    )
    assert isinstance(first, SubprocessJobHandle)
    wait_for(lambda: carrying(marker))
    for pid in process_group._SPAWNER.pids():
        os.kill(pid, signal.SIGKILL)
    second = await controller.submit_job(python_job(registry, tmp_path / "2", "sys.exit(5)", True), python_env(tmp_path / "2", True))
    assert await controller.get_result(second) == 5
    assert first.group.running  # a job outlives the fork server that forked it
    await controller.stop_job(first, python_env(tmp_path / "1", True))
    assert carrying(marker) == []


async def test_a_python_job_whose_folder_is_gone_is_told_in_the_log(registry, tmp_path: Path, warm: bool) -> None:  # type: ignore[no-untyped-def]
    job = python_job(registry, tmp_path, "pass", warm)
    argv = [sys.executable, "-m", "aiflowd.runners.python_job", str(tmp_path / "job.json")]
    log, status = tmp_path / "job.log", tmp_path / "status"
    group = ProcessGroup.spawn(argv, env={}, cwd=str(tmp_path / "gone"), log_path=str(log), status_path=str(status), warm=warm)
    assert job is not None and await group.wait() == 127
    assert log.read_text() == f"aiflowd: cannot start the job: No such file or directory: {tmp_path / 'gone'}\n"


def test_a_daemon_killed_with_sigkill_leaves_its_python_jobs_running_and_adopts_them_again(daemon: Daemon, marker: str, warm: bool) -> None:
    daemon.write_workflow("long/long.yaml", "a:\n  job_type: python\n  processor: steps:Wait\n")
    daemon.write_workflow(
        "long/steps.py",
        f"""
        import subprocess
        from aiflowd import PythonProcessor

        class Wait(PythonProcessor):
            def process(self, ctx, inputs):
                subprocess.run(["sleep", "{marker}"])
                return []
        """,
    )
    job = wait_for(lambda: carrying(marker), timeout=30)[0]
    daemon.kill9()
    assert pid_alive(job)
    daemon.start()
    daemon.wait_jobs("long", lambda rows: rows and rows[0]["status"] == "RUNNING")
    os.kill(job, signal.SIGTERM)  # the job ends while the new daemon watches: it learns the real status
    rows = daemon.wait_jobs("long", lambda rows: rows and rows[0]["status"] in ("FINISHED", "FAILED"))
    assert rows[0]["status"] == "FINISHED"  # subprocess.run returned; the processor finished
    assert carrying(marker) == []


async def test_a_warm_job_wrapper_is_found_by_its_status_file(registry, tmp_path: Path, marker: str) -> None:  # type: ignore[no-untyped-def]
    """A daemon that died between starting a job and recording its pid finds the wrapper by
    the status file its command line names: a forked wrapper writes one of its own."""
    from aiflowd.plugins.python.controller import PythonJobController

    controller = PythonJobController()
    env = python_env(tmp_path, True)
    handle = await controller.submit_job(python_job(registry, tmp_path, f"subprocess.run(['sleep', '{marker}'])", True), env)
    assert isinstance(handle, SubprocessJobHandle)
    assert wait_for(lambda: process_group.find_wrapper(handle.status_path)) == (handle.pid, handle.start_time)
    await controller.stop_job(handle, env)
    assert carrying(marker) == []


def test_a_fork_server_is_replaced_when_aiflowds_code_changes_and_the_old_one_ends(
    registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    folder = tmp_path / "w"
    write(folder / "w.yaml", "{}\n")
    write(folder / "w.py", "from aiflowd import *\nwith job_config('a'):\n    user_define_operation(processor=BashProcessor('true'))\n")
    loader = WorkflowLoader(registry, LoaderSettings(compile_timeout=20, warm_start=True))
    for _ in range(2 * len(process_group._SPAWNER._all)):  # every spawner runs warm
        loader.load(str(folder))
    before = set(process_group._SPAWNER.pids())
    assert before
    monkeypatch.setattr(process_group, "_CODE_CHECK_INTERVAL", 0.0)
    for spawner in process_group._SPAWNER._all:
        assert any(path.endswith("/aiflowd/workflows/dsl.py") for path, *_ in spawner._code)  # what it reported it runs
        spawner._code[0][3] -= 1  # as after an upgrade on disk: a file of its code differs from what it imported
    for _ in range(2 * len(process_group._SPAWNER._all)):
        assert list(loader.load(str(folder)).workflow.jobs) == ["a"]
    after = set(process_group._SPAWNER.pids())
    assert after and not after & before
    wait_for(lambda: not any(pid_alive(pid) for pid in before))  # they ended at end of file, and were reaped


def test_a_reload_replaces_a_fork_server_whose_code_changed_even_with_its_old_time(tmp_path: Path) -> None:
    """A real daemon run from a copy of aiflowd: its DSL is changed on disk, keeping the file's
    modification time (as a copy that keeps times does), and a plugin module is changed;
    after SIGHUP a definition compiled again sees both, and the old fork servers end."""
    import shutil

    code = tmp_path / "code"
    shutil.copytree(Path(REPO_ROOT) / "aiflowd", code / "aiflowd", ignore=shutil.ignore_patterns("__pycache__"))
    plugins = write(tmp_path / "plugins" / "naming.py", "SUFFIX = 'one'\n").parent
    daemon = Daemon(tmp_path / "d", config=f"warm_start: true\nplugin_paths: [{plugins}]\n")
    try:
        daemon.start(extra_env={"PYTHONPATH": str(code)})
        definition = (
            "import naming\nfrom aiflowd import BashProcessor, job_config, user_define_operation\nfrom aiflowd.workflows import dsl\n\n"
            "with job_config(getattr(dsl, 'JOB_PREFIX', 'old') + '_' + naming.SUFFIX):\n"
            "    user_define_operation(processor=BashProcessor('true'))\n"
        )
        daemon.write_workflow("named/named.yaml", "{}\n")
        daemon.write_workflow("named/named.py", definition)

        def jobs() -> list[str]:
            shown = daemon.ctl("--json", "workflow", "show", "named", check=False)
            if shown.returncode != 0:
                return []  # not served yet
            return [job["job"] for job in json.loads(shown.stdout)["jobs"]]

        assert wait_for(lambda: jobs() == ["old_one"], timeout=30)
        assert daemon.process is not None and daemon.notifications is not None
        old_servers = _fork_servers_of(daemon.process.pid)
        assert old_servers
        dsl = code / "aiflowd" / "workflows" / "dsl.py"
        before = dsl.stat()
        replacement = dsl.with_suffix(".new")
        replacement.write_text(dsl.read_text() + "\nJOB_PREFIX = 'new'\n")
        os.replace(replacement, dsl)
        os.utime(dsl, ns=(before.st_atime_ns, before.st_mtime_ns))  # the newest time in the package is as it was
        write(plugins / "naming.py", "SUFFIX = 'two'\n")
        daemon.process.send_signal(signal.SIGHUP)
        notifications = daemon.notifications
        wait_for(lambda: notifications.count("READY=1") >= 2, timeout=30)
        daemon.write_workflow("named/named.py", definition + "# saved again\n")
        assert wait_for(lambda: jobs() == ["new_two"], timeout=30), jobs()
        replaced = {json.loads(line)["pid"] for line in daemon.log().splitlines() if "fork server out of date: replaced" in line}
        assert replaced & old_servers
        wait_for(lambda: not any(pid_alive(pid) for pid in replaced))  # they had nothing left to compile: ended
    finally:
        daemon.close()


def _fork_servers_of(pid: int) -> set[int]:
    """The warm spawners (fork servers) the process ``pid`` runs now."""
    found = set()
    for child, (ppid, _, _) in process_table().items():
        if ppid != pid:
            continue
        with contextlib.suppress(OSError):
            if b"warm" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                found.add(child)
    return found


def test_a_cancelled_warm_compile_is_killed_with_what_it_started(tmp_path: Path, marker: str) -> None:
    folder, pid_file = looping_workflow(tmp_path, marker)
    request = tmp_path / "request.json"
    request.write_text(f'{{"workflow_dir": "{folder}", "definition": "{folder}/spin.py", "module": "spin", "yaml_processors": {{}}}}')
    argv = [sys.executable, "-m", "aiflowd.runners.compile_workflow", str(request), str(tmp_path / "result.json")]
    cancel = HelperCancel()
    results = []
    worker = threading.Thread(
        target=lambda: results.append(run_helper(argv, env={}, cwd=str(folder), timeout=60, cancel=cancel, warm=True))
    )
    worker.start()
    try:
        helper = int(wait_for(lambda: pid_file.exists() and pid_file.read_text() and carrying(marker) and pid_file.read_text()))
        parent = process_table()[helper][0]
        assert b"spawner" in Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")  # a fork of the fork server
        cancel.cancel()
        worker.join(timeout=10)
    finally:
        cancel.cancel()
        worker.join()
        cancel.close()
    assert results[0].cancelled and results[0].returncode is None
    assert not pid_alive(helper)
    assert carrying(marker) == []


def test_a_fork_server_that_could_not_start_is_tried_again_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork server that dies before its first message (a half-written upgrade) is not given up for good."""
    dies = tmp_path / "dies.py"
    dies.write_text("raise SystemExit(1)\n")
    spawner = process_group._Spawner()
    spawner.mode = "warm"
    monkeypatch.setattr(process_group, "REAPER", str(dies))
    assert spawner._connect() is None  # meanwhile: the slow way
    monkeypatch.setattr(process_group, "REAPER", REAPER)
    assert spawner._connect() is None  # not tried again at once
    monkeypatch.setattr(process_group, "_RETRY_AFTER", 0.0)
    spawner._retry_at = 0.0  # the wait is over
    try:
        assert spawner._connect() is not None
        assert spawner._code  # its first message arrived: a working fork server
    finally:
        spawner._close()
