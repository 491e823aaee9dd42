"""The one place aiflowd starts, watches and stops local processes.

A job runs as its own session and process group under a tiny ``sh`` wrapper that waits
for the command and writes its exit status to a file, as container shims do: if the
process that started the job dies, the job goes on, and whoever comes next learns its
true exit status from that file. Identity is pid plus kernel start time, so a recycled
pid is never mistaken for the job. Exits are awaited through pidfds, without threads.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio

# Waits for the command, then records its status. A trap (a handler, not an ignore) lets
# the wrapper outlive a SIGTERM to the group while the command, which gets default
# dispositions on exec, receives it; POSIX defers the trap until the command is done.
# A signal that lands before the command starts is remembered, so it is not swallowed.
_WRAPPER = 'trap "s=1" TERM INT HUP; [ -n "$s" ] && { echo 143 > "$0"; exit 143; }; "$@"; rc=$?; echo "$rc" > "$0"; exit "$rc"'
_STRAGGLER_POLL = 0.02
_KILL_SETTLE = 2.0
#: Variables of the service manager that must never reach a job.
SERVICE_MANAGER_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def read_exit_status(status_path: str) -> int | None:
    """The exit status the wrapper wrote, or None while there is none (or only part of one)."""
    try:
        with open(status_path, "rb") as fh:
            text = fh.read(32)
    except OSError:
        return None
    if not text.endswith(b"\n"):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _shell_status(returncode: int) -> int:
    """Exit status as a shell reports it: 128+N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class ProcessGroup:
    """A job's process group, started here or found again after a restart."""

    pid: int
    start_time: int
    status_path: str
    _popen: subprocess.Popen[bytes] | None = None
    _pidfd: int | None = None
    _returncode: int | None = None
    _ended: bool = False
    _lock: anyio.Lock | None = None
    ended_at: float | None = None

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        log_path: str,
        status_path: str,
    ) -> ProcessGroup:
        """Start ``argv`` under the wrapper in a new session, output appended to ``log_path``."""
        try:
            log = open(log_path, "ab", buffering=0)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            log = open(log_path, "ab", buffering=0)
        with log:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", _WRAPPER, status_path, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
            )
        start_time = process_start_time(popen.pid) or 0
        group = cls(popen.pid, start_time, status_path, _popen=popen)
        group._pidfd = _pidfd_open(popen.pid)
        return group

    @classmethod
    def attach(cls, pid: int, start_time: int, status_path: str) -> ProcessGroup:
        """Find a job started by another process: alive (same pid and start time) or ended."""
        group = cls(pid, start_time, status_path)
        pidfd = _pidfd_open(pid)
        if pidfd is not None and process_start_time(pid) == start_time:
            group._pidfd = pidfd
            return group
        if pidfd is not None:
            os.close(pidfd)
        if pidfd is None and process_start_time(pid) == start_time:
            return group  # no pidfd support: wait() polls
        group._ended = True
        group._returncode = read_exit_status(status_path)
        group.ended_at = group._status_time()
        return group

    def _status_time(self) -> float | None:
        """When the job ended, as its status file says (it ended while nobody watched)."""
        try:
            return os.stat(self.status_path).st_mtime
        except OSError:
            return None

    @classmethod
    def ended(cls, status_path: str) -> ProcessGroup:
        """A job known only by the status file it left."""
        group = cls(0, 0, status_path, _ended=True)
        group._returncode = read_exit_status(status_path)
        group.ended_at = group._status_time()
        return group

    @property
    def returncode(self) -> int | None:
        """The exit status once ended (None while running, or when it was lost)."""
        return self._returncode

    @property
    def running(self) -> bool:
        if self._ended:
            return False
        if self._popen is not None:
            if self._popen.poll() is None:
                return True
            self._finish(_shell_status(self._popen.returncode))
            return False
        if process_start_time(self.pid) == self.start_time:
            return True
        self._finish(read_exit_status(self.status_path))
        return False

    async def wait(self) -> int | None:
        """Wait for the wrapper to end; its exit status, or None when nothing recorded one."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            while not self._ended:
                if self._pidfd is not None:
                    await anyio.wait_readable(self._pidfd)
                    if self._popen is not None:
                        self._finish(_shell_status(self._popen.wait()))
                    else:
                        self._finish(read_exit_status(self.status_path))
                elif self.running:
                    await anyio.sleep(0.05)  # kernels without pidfd_open: nothing to wait on but time
        return self._returncode

    def signal_group(self, signum: int) -> bool:
        """Send a signal to every process of the group; False when none is left."""
        if self.pid <= 0:
            return False  # known only by its status file: killpg(0) would hit our own group
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def has_members(self) -> bool:
        """Whether any process of the group still lives (zombies awaiting their reaper do not)."""
        return self.signal_group(0) and _group_has_live_member(self.pid)

    async def terminate(self, grace: float) -> None:
        """SIGTERM to the group, up to ``grace`` seconds for all of it to exit, then SIGKILL."""
        if not self.signal_group(signal.SIGTERM):
            await self.wait()
            return
        with anyio.move_on_after(grace):
            await self.wait()
            while self.has_members():
                await anyio.sleep(_STRAGGLER_POLL)
        if self.has_members():
            self.signal_group(signal.SIGKILL)
        await self.wait()
        # SIGKILL is delivered at once but takes effect as each process is scheduled.
        with anyio.move_on_after(_KILL_SETTLE):
            while self.has_members():
                await anyio.sleep(_STRAGGLER_POLL)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _finish(self, returncode: int | None) -> None:
        self._ended = True
        self.ended_at = self._status_time() if self._popen is None else time.time()
        # The wrapper exits with the command's status. Only when it was killed itself (or
        # is not our child) does the file it leaves tell more than its exit code.
        if returncode is None or returncode > 128:
            recorded = read_exit_status(self.status_path)
            returncode = recorded if recorded is not None else returncode
        self._returncode = returncode
        self.close()


def find_wrapper(status_path: str) -> tuple[int, int] | None:
    """The (pid, start time) of the wrapper recording into ``status_path``, if one runs.

    Finds a job whose start was decided but whose pid was never recorded (the starter
    died in between): the wrapper's command line names its status file.
    """
    found = wrappers(b"\0" + os.fsencode(status_path) + b"\0")
    return found[0] if found else None


def wrappers(fragment: bytes) -> list[tuple[int, int]]:
    """(pid, start time) of every job wrapper whose command line contains ``fragment``."""
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if cmdline.startswith(b"/bin/sh\0-c\0") and fragment in cmdline:
            start = process_start_time(pid)
            if start is not None:
                found.append((pid, start))
    return found


def _pids() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def _group_has_live_member(pgid: int) -> bool:
    if not os.path.isdir("/proc"):
        return True  # no /proc: trust kill(0), which counts zombies too
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


@dataclass
class HelperResult:
    returncode: int | None
    timed_out: bool
    output: bytes


def run_helper(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    timeout: float,
    keep_output: int = 16384,
) -> HelperResult:
    """Run a short-lived helper (the workflow compiler) to its end or its time limit.

    Its output is drained as it comes and only the last ``keep_output`` bytes are kept,
    so a helper that prints without end neither blocks nor fills memory. On time-out its
    whole process group is killed. Blocking: call it from a worker thread in async code.
    """
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    tail = bytearray()
    timed_out = False
    fd = popen.stdout.fileno()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            tail += chunk
            if len(tail) > keep_output:
                del tail[: len(tail) - keep_output]
        if not timed_out:
            try:
                popen.wait(timeout=max(deadline - time.monotonic(), 0.001))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        # Kills the helper if it is still running and whatever it left behind in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.stdout.close()
        returncode = popen.wait()
    return HelperResult(None if timed_out else returncode, timed_out, bytes(tail))
