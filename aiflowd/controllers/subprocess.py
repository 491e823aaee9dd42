"""What every job type that runs local process groups shares (bash, python, local Flink).

``SubprocessController`` starts a command under the status-writing wrapper with its log
file, stops it with SIGTERM, grace and SIGKILL, and reattaches by pid and start time; a
job type's controller only says which command to run. Here too: the clean job
environment and the import path that lets another interpreter import aiflowd.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

import aiflowd
from aiflowd.controllers.process_group import SERVICE_MANAGER_VARIABLES, JobLogError, ProcessGroup, find_wrapper, read_exit_status
from aiflowd.controllers.supervisor import JobStartError
from aiflowd.model import Status
from aiflowd.plugin_interface import Job, JobController, JobHandle, JobRuntimeEnv, make_working_dir

DEFAULT_STOP_GRACE_PERIOD = 10.0
#: Variables a job inherits from the daemon; everything else comes from config and properties.
INHERITED_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SHELL", "JAVA_HOME")
STATUS_FILE = "exit-status"


def status_path(env: JobRuntimeEnv) -> str:
    """Where the wrapper records a job's exit status.

    In the daemon's ``run_dir`` when it has one (``$RUNTIME_DIRECTORY``, a tmpfs under
    systemd, as container shims keep theirs in /run: it outlives the daemon, and a file
    there costs no disk write), else in the execution's working folder.
    """
    run_dir = env.settings.get("run_dir")
    if not run_dir:
        return os.path.join(env.working_dir, STATUS_FILE)
    folder = os.path.join(run_dir, "exit-status")
    if folder not in _made_dirs:
        os.makedirs(folder, exist_ok=True)
        _made_dirs.add(folder)
    info = env.job_execution_info
    return os.path.join(folder, f"{info.workflow_name}.{info.job_execution_id}")


_made_dirs: set[str] = set()


@functools.cache
def _inherited_environment() -> dict[str, str]:
    """What jobs inherit from the daemon's environment, read once: every job launch needs it."""
    return {k: v for k, v in os.environ.items() if k in INHERITED_VARIABLES or k.startswith("LC_")}


def job_environment(env: JobRuntimeEnv, extra: Mapping[str, str]) -> dict[str, str]:
    """A job's environment: a clean base, ``job_env``, the job's ``env``, ``env.variables``, its ids.

    ``env.variables`` are the execution's parameters and the event that started the job.

    The base keeps only what programs need to run (``PATH``, ``HOME``, locale, ...); the
    service manager's notify, watchdog and socket variables never pass.
    """
    base = dict(_inherited_environment())
    base.update(env.settings.get("job_env") or {})
    base.update(extra)
    base.update(env.variables)  # the execution's parameters and event win over a job's own env
    info = env.job_execution_info
    base.update(
        {
            "AIFLOWD_WORKFLOW": info.workflow_name,
            "AIFLOWD_JOB": info.job_name,
            "AIFLOWD_WORKFLOW_EXECUTION_ID": info.workflow_execution_id,
            "AIFLOWD_JOB_EXECUTION_ID": info.job_execution_id,
            "AIFLOWD_WORKFLOW_DIR": env.workflow_dir,
        }
    )
    for name in SERVICE_MANAGER_VARIABLES:
        base.pop(name, None)
    return base


@dataclass
class Command:
    """What to run for a job execution: argument list, environment additions, working folder."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    #: May start in a fork of the fork server (``process_group.warm_module`` decides whether it can).
    warm: bool | str = False


class SubprocessJobHandle(JobHandle):
    """A job execution running as a local process group."""

    def __init__(self, job: Job, job_execution: Any, pid: int, start_time: int, status_path: str, log_path: str) -> None:
        super().__init__(job, job_execution)
        self.pid = pid
        self.start_time = start_time
        self.status_path = status_path
        self.log_path = log_path
        self.stopped = False
        self._group: ProcessGroup | None = None

    @property
    def ended_at(self) -> float | None:
        """When the job ended (for one that ended while no daemon watched: when its status file was written)."""
        return self._group.ended_at if self._group is not None else None

    @property
    def group(self) -> ProcessGroup:
        assert self._group is not None, "handle was not made by submit_job or reattach"
        return self._group


class SubprocessController(JobController):
    """Runs each job execution as a process group; subclasses give the command."""

    #: ``submit_job`` makes the execution's working folder itself (in its spawning thread).
    creates_working_dir = True

    @abstractmethod
    def command(self, job: Job, env: JobRuntimeEnv) -> Command:
        """The command of one job execution."""

    async def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        env = job_runtime_env
        # Folder and file creation cost a disk's metadata latency; in a worker thread it
        # overlaps with other jobs' spawning instead of stalling the event loop.
        group = await anyio.to_thread.run_sync(self._spawn, job, env)
        handle = SubprocessJobHandle(job, env.job_execution_info, group.pid, group.start_time, group.status_path, env.log_path)
        handle._group = group
        return handle

    def _spawn(self, job: Job, env: JobRuntimeEnv) -> ProcessGroup:
        make_working_dir(env)
        command = self.command(job, env)
        cwd = env.working_dir
        if command.cwd is not None:
            cwd = os.path.join(env.working_dir, command.cwd)
            os.makedirs(cwd, exist_ok=True)
        status = status_path(env)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(status)  # a stale file from an earlier life of the state folder would lie
        try:
            return ProcessGroup.spawn(
                command.argv,
                env=job_environment(env, command.env),
                cwd=cwd,
                log_path=env.log_path,
                status_path=status,
                reap_grace=_grace(env),
                # run-once owns its jobs; a daemon's jobs outlive its crash, to be adopted again.
                die_with_owner=bool(env.settings.get("jobs_die_with_owner")),
                warm=command.warm,
            )
        except JobLogError as err:
            raise JobStartError(str(err)) from err

    async def stop_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> None:
        handle = _subprocess_handle(job_handle)
        if handle.group.running or handle.group.has_members():
            handle.stopped = True
        await handle.group.terminate(_grace(job_runtime_env))

    async def cleanup_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> None:
        """Stop what the job left running in its group (as systemd does when a service's main process exits)."""
        handle = _subprocess_handle(job_handle)
        if handle.group.has_members():
            await handle.group.terminate(_grace(job_runtime_env))
        handle.group.close()

    async def get_result(self, job_handle: JobHandle, blocking: bool = True) -> object:
        """The exit status (128+N when killed by signal N); None while running, or if lost."""
        group = _subprocess_handle(job_handle).group
        if blocking:
            return await group.wait()
        return None if group.running else group.returncode

    async def get_job_status(self, job_handle: JobHandle) -> Status:
        handle = _subprocess_handle(job_handle)
        if handle.group.running:
            return Status.RUNNING
        if handle.stopped:
            return Status.KILLED
        return Status.FINISHED if handle.group.returncode == 0 else Status.FAILED

    async def reattach(self, handle_record: dict[str, Any], job_runtime_env: JobRuntimeEnv) -> JobHandle | None:
        """Find the execution again: by its recorded pid and start time, else by its status file.

        Without a recorded pid (the starter died before recording it) the wrapper is looked
        for by the status file its command line names; a status file alone means it ended.
        None means it never started.
        """
        env = job_runtime_env
        recorded_status = handle_record.get("status_path")
        status = str(recorded_status) if recorded_status else status_path(env)
        try:
            pid, start_time = int(handle_record["pid"]), int(handle_record["start_time"])
        except (KeyError, TypeError, ValueError):
            found = find_wrapper(status)
            if found is None and read_exit_status(status) is None:
                return None
            pid, start_time = found if found is not None else (0, 0)
        group = ProcessGroup.attach(pid, start_time, status) if pid else ProcessGroup.ended(status)
        handle = SubprocessJobHandle(
            None,  # type: ignore[arg-type]  # the caller sets the job it regenerated
            env.job_execution_info,
            pid,
            start_time,
            status,
            str(handle_record.get("log_path", env.log_path)),
        )
        handle.stopped = bool(handle_record.get("stopped", False))
        handle._group = group
        return handle


def _grace(env: JobRuntimeEnv) -> float:
    """How long a job's processes get between SIGTERM and SIGKILL (``stop_grace_period``)."""
    return float(env.settings.get("stop_grace_period", DEFAULT_STOP_GRACE_PERIOD))


def _subprocess_handle(job_handle: JobHandle) -> SubprocessJobHandle:
    if not isinstance(job_handle, SubprocessJobHandle):
        raise TypeError(f"expected a SubprocessJobHandle, got {type(job_handle).__name__}")
    return job_handle


_PACKAGE_DIR = os.path.dirname(os.path.abspath(aiflowd.__file__))


def aiflowd_import_path(python: str, scratch_dir: str, pythonpath: str | None = None) -> dict[str, str]:
    """Environment that lets ``python`` import aiflowd, and nothing else of this interpreter's packages.

    The same interpreter needs nothing. Another one (a job's virtualenv) gets a folder
    holding only a link to this aiflowd package, so this venv's packages never shadow its own.
    """
    if python == sys.executable:
        return {"PYTHONPATH": pythonpath} if pythonpath else {}
    lib = os.path.join(scratch_dir, ".aiflowd-lib")
    os.makedirs(lib, exist_ok=True)
    if not os.path.lexists(os.path.join(lib, "aiflowd")):
        os.symlink(_PACKAGE_DIR, os.path.join(lib, "aiflowd"))
    return {"PYTHONPATH": os.pathsep.join(p for p in (lib, pythonpath) if p)}
