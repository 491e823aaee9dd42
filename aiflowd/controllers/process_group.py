"""The one place aiflowd starts, watches and stops local processes.

A job runs as its own session and process group under a tiny ``sh`` wrapper that waits
for the command and writes its exit status to a file, as container shims do: if the
process that started the job dies, the job goes on, and whoever comes next learns its
true exit status from that file. Identity is pid plus kernel start time, so a recycled
pid is never mistaken for the job. Exits are awaited through pidfds, without threads.

Nothing a job starts outlives it: the wrapper is a child subreaper, so a process that
leaves the group (``setsid cmd &``, a double fork) is re-parented to it; when the command
ends with such processes left, the wrapper execs ``aiflowd/runners/reaper.py`` (same pid,
same children), which ends and reaps them before recording the status. A stop reaches
them too: signals go to the group and to every descendant of the wrapper. The flag can
only be set between fork and exec, which this big threaded process does slowly: a small
spawner process (``reaper.py spawner``) forks the wrappers and hands back their pidfds.

Warm starts: the same spawner, started ``warm``, is also the fork server. It imports the
DSL, the processors' base classes and the compat layer once; a definition compile
(``run_helper``) or a Python job (``ProcessGroup.spawn``) then runs in a fork of it
instead of a new interpreter, with the same session, folder, environment, output, limits
and owner rules (see ``reaper.spawner``). Only ``python -m`` of aiflowd's own runners
under this interpreter goes warm, and only when the environment changes nothing about how
an interpreter starts (``warm_module``); anything else starts cold, as before.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio
import structlog

from aiflowd.runners import reaper
from aiflowd.runners.reaper import (
    PR_SET_CHILD_SUBREAPER,
    WARM_MODULES,
    kill_tree,
    live_descendants,
    process_table,
    receive_message,
    send_message,
    stat_fields,
)

log = structlog.get_logger("aiflowd")

# Waits for the command, then records its status. A trap (a handler, not an ignore) lets
# the wrapper outlive a SIGTERM to the group while the command, which gets default
# dispositions on exec, receives it; POSIX defers the trap until the command is done.
# A signal that lands before the command starts is remembered, so it is not swallowed.
# $1 $2 $3 are the reaper's interpreter, script and grace. When the wrapper has children
# left once the command is done (escaped processes re-parented to it, the subreaper), it
# becomes the reaper; the common case costs one read of /proc, no process.
_WRAPPER = (
    'trap "s=1" TERM INT HUP; [ -n "$s" ] && { echo 143 > "$0"; exit 143; }; p=$1 r=$2 g=$3; shift 3; '
    '"$@"; rc=$?; c=/proc/$$/task/$$/children; k=1; [ -r $c ] && { k=; read -r k < $c; }; '
    '[ -n "$k" ] && [ -x "$p" ] && [ -r "$r" ] && exec "$p" -I -S "$r" reap "$0" "$rc" "$g"; '
    'echo "$rc" > "$0"; exit "$rc"'
)
REAPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runners", "reaper.py")
_REAPER_ARG = b"\0" + os.fsencode(REAPER) + b"\0"
#: How long processes a job leaves behind get between SIGTERM and SIGKILL, by default.
DEFAULT_REAP_GRACE = 2.0
_STRAGGLER_POLL = 0.02
_KILL_SETTLE = 2.0
_TREE_POLL = 0.005
#: Variables of the service manager that must never reach a job.
SERVICE_MANAGER_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


#: ``os.environ``'s variables as CPython keeps them (encoded) when last looked at, and what
#: ``helper_environment`` made of them.
_environment: tuple[dict[bytes, bytes], dict[str, str]] = ({}, {})


def helper_environment() -> dict[str, str]:
    """This process's environment without the service manager's variables: what compiles start with.

    Kept between calls while ``os.environ`` stays the same (compared as raw bytes, at C
    speed): building it through ``os.environ`` for each compile was a twentieth of the
    daemon's CPU while it loaded thousands of definitions.
    """
    global _environment
    raw: dict[bytes, bytes] = os.environ._data  # type: ignore[attr-defined]  # CPython's own, always a dict on POSIX
    if raw != _environment[0]:
        _environment = (dict(raw), {k: v for k, v in os.environ.items() if k not in SERVICE_MANAGER_VARIABLES})
    return dict(_environment[1])


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


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
    #: Started by this process (through the spawner): it saw the end, the status file did not.
    _watched: bool = False
    #: The SIGKILL that explains an end with no status recorded came from here.
    _killed: bool = False
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
        reap_grace: float = DEFAULT_REAP_GRACE,
        die_with_owner: bool = False,
        warm: WarmMode = False,
    ) -> ProcessGroup:
        """Start ``argv`` under the wrapper in a new session, output appended to ``log_path``.

        The wrapper outlives this process (a daemon's jobs survive its crash), unless
        ``die_with_owner``: then it is ``reaper.py supervise``, which ends the job and all
        it started when this process dies (``aiflowd run-once``'s jobs). ``reap_grace`` is
        what processes the command leaves behind get between SIGTERM and SIGKILL.
        ``warm``: a Python job that may start warm (``warm_module``) is forked by the fork
        server, wrapper and all; the wrapper records its status as the ``sh`` one does.
        Raises ``JobLogError`` when the log cannot be written.
        """
        log = open_log(log_path)
        module = warm_module(argv, env) if warm and not die_with_owner else None
        if module is not None:
            with log:
                request = {
                    "kind": "job",
                    "module": module,
                    "args": list(argv[3:]),
                    "env": dict(env),
                    "cwd": cwd,
                    "status_path": status_path,
                    "grace": reap_grace,
                }
                started = _SPAWNER.start(request, [log.fileno()], _mode(warm))
            if started is not None:
                pid, start_time, pidfd = started
                return cls(pid, start_time, status_path, _pidfd=pidfd, _watched=True)
            log = open_log(log_path)
        if die_with_owner:
            wrapper = [sys.executable, "-I", "-S", REAPER, "supervise", status_path, f"{reap_grace:g}", str(os.getpid()), *argv]
        else:
            wrapper = ["/bin/sh", "-c", _WRAPPER, status_path, sys.executable, REAPER, f"{reap_grace:g}", *argv]
        with log:
            if not die_with_owner:
                request = {"kind": "wrapper", "argv": wrapper, "env": dict(env), "cwd": cwd, "status_path": status_path}
                started = _SPAWNER.start(request, [log.fileno()], "")
                if started is not None:
                    pid, start_time, pidfd = started
                    return cls(pid, start_time, status_path, _pidfd=pidfd, _watched=True)
            popen = subprocess.Popen(
                wrapper,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                # The supervising wrapper makes itself the subreaper; the sh one cannot (slow path).
                preexec_fn=None if die_with_owner else _subreaper_preexec(),
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
        if self._pidfd is not None:
            ended, _, _ = select.select([self._pidfd], [], [], 0)  # readable once it has exited
            if not ended:
                return True
        elif process_start_time(self.pid) == self.start_time:
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
        """Send a signal to every process of the group and every process that escaped it.

        Escaped processes (``setsid cmd &``, double forks) are found below the wrapper,
        their subreaper, while it lives; they are signalled first, so none is re-parented
        away by the wrapper's death. False when no process is left.
        """
        if self.pid <= 0:
            return False  # known only by its status file: killpg(0) would hit our own group
        escaped = self._escaped()
        for pid in escaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            if self._wrapper_alive():
                # Forked by the spawner but not yet in its own session (the spawner answers
                # before the exec): the group does not exist yet, the wrapper-to-be does.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signum)
                    return True
            return bool(escaped)
        except PermissionError:
            return True
        return True

    def has_members(self) -> bool:
        """Whether any process of the group (or escaped from it) lives; zombies do not count."""
        if self.pid <= 0:
            return False
        wrapper_alive = self._wrapper_alive()
        try:
            os.killpg(self.pid, 0)
            group_left = True
        except ProcessLookupError:
            group_left = False
        except PermissionError:
            group_left = True
        if not group_left:
            return wrapper_alive  # alive without its group: forked, its session not made yet
        if not wrapper_alive and _can_reap() and read_exit_status(self.status_path) is not None:
            # The common case at a job's end (the wrapper's zombie lingers a moment in its
            # spawner), without reading all of /proc: a subreaper wrapper records a status
            # only once it has reaped every process below it, the group's members included.
            return False
        if not os.path.isdir("/proc"):
            return group_left  # no /proc: trust kill(0), which counts zombies too
        table = process_table()
        if any(pgid == self.pid and not zombie for _, pgid, zombie in table.values()):
            return True
        return bool(self._escaped(table))

    def _escaped(self, table: dict[int, tuple[int, int, bool]] | None = None) -> list[int]:
        """Live descendants of the wrapper outside its process group (found only while it lives)."""
        if not self._wrapper_alive():
            return []
        table = process_table() if table is None else table
        return [pid for pid in live_descendants(self.pid, table) if table[pid][1] != self.pid]

    def _wrapper_alive(self) -> bool:
        """Whether the wrapper has not exited (a zombie has); with no pidfd, by pid and start time."""
        if self.pid <= 0 or self._ended:
            return False
        if self._pidfd is not None:
            exited, _, _ = select.select([self._pidfd], [], [], 0)
            return not exited
        return process_start_time(self.pid) == self.start_time

    async def terminate(self, grace: float) -> None:
        """SIGTERM to the group and what escaped it, up to ``grace`` seconds for all to exit, then SIGKILL."""
        if not self.signal_group(signal.SIGTERM):
            await self.wait()
            return
        with anyio.move_on_after(grace):
            await self.wait()
            while self.has_members():
                await anyio.sleep(_STRAGGLER_POLL)
        # Escaped processes first, while the wrapper lives to adopt their children; each
        # round finds the children of the last one's victims.
        with anyio.move_on_after(_KILL_SETTLE):
            while escaped := self._escaped():
                for pid in escaped:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                await anyio.sleep(_STRAGGLER_POLL)
        if self.has_members():
            self._killed = True
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
        self.ended_at = self._status_time() if self._popen is None and not self._watched else time.time()
        if returncode is None and self._killed and read_exit_status(self.status_path) is None:
            returncode = 128 + signal.SIGKILL  # the wrapper itself was killed here, before it could record
        # The wrapper exits with the command's status. Only when it was killed itself (or
        # is not our child) does the file it leaves tell more than its exit code.
        if returncode is None or returncode > 128:
            recorded = read_exit_status(self.status_path)
            returncode = recorded if recorded is not None else returncode
        self._returncode = returncode
        self.close()


class JobLogError(OSError):
    """The job's log cannot be written; the message names the file and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


def open_log(log_path: str) -> BinaryIO:
    """Open a job's log for appending (making its folder); a full or unwritable one is a ``JobLogError``.

    A full file system still lets a file be opened, and the job's first write would fail
    where nobody reads it (its own output goes to that log): so fullness is checked here.
    """
    try:
        try:
            log = open(log_path, "ab", buffering=0)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            log = open(log_path, "ab", buffering=0)
        try:
            stats = os.fstatvfs(log.fileno())
        except OSError:
            return log  # cannot tell: the job will show whether it can write
        free = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail
        if stats.f_blocks and free == 0:
            log.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), log_path)
    except OSError as err:
        raise JobLogError(err.errno, f"cannot write the job's log {log_path}: {err.strerror or err}") from err
    return log


@functools.cache
def _can_reap() -> bool:
    """Whether wrappers become subreapers here (Linux 3.4+): then a recorded status means nothing is left."""
    return reaper.prctl(PR_SET_CHILD_SUBREAPER, 0)


def _subreaper_preexec() -> Callable[[], object] | None:
    """What a forked child runs before exec to become a child subreaper (the flag survives exec).

    The slow path, for when no spawner runs. prctl is looked up here, in the parent (a
    call that clears a flag this process does not have): the child only makes the call.
    """
    return reaper.become_subreaper if _can_reap() else None


#: ``False``: cold; ``True``: warm; ``"pyflink"``: warm, with PyFlink imported in the fork server too.
WarmMode = bool | str
#: Variables a warm child may see set: they change nothing an interpreter decides as it starts.
_WARM_NEUTRAL = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
#: Room for the command line a forked job wrapper writes over its own (``reaper._set_cmdline``).
_CMDLINE_ROOM = " " * 4096
#: How often, at most, the fork server's code is compared with the files on disk.
_CODE_CHECK_INTERVAL = 1.0
#: How long a spawner that could not start is left alone before the next try: meanwhile
#: its requests go the slow way (cold); a half-written upgrade is over in far less.
_RETRY_AFTER = 5.0


def warm_module(argv: Sequence[str], env: Mapping[str, str], *, pythonpath: bool = False) -> str | None:
    """The aiflowd runner ``argv`` runs, when a fork of the fork server can run it as ``argv`` would; else None.

    Only ``python -m RUNNER`` under this interpreter, and only when ``env`` sets no
    variable that changes how an interpreter starts or imports (``PYTHONPATH``,
    ``PYTHONHOME``, ``PYTHONSAFEPATH``, a hash seed...): another interpreter, or another
    import path, starts cold. ``pythonpath``: the compiler's own ``PYTHONPATH`` (plugin
    folders) is allowed, the fork puts it first on the import path as ``python`` would;
    so is one naming only the folder this aiflowd is imported from.
    """
    if len(argv) < 3 or argv[0] != sys.executable or argv[1] != "-m" or argv[2] not in WARM_MODULES:
        return None
    for name, value in env.items():
        if name == "PYTHONPATH" and (pythonpath or all(p == _import_root() for p in value.split(os.pathsep) if p)):
            continue  # put first on the import path as `python` would; aiflowd's own root adds nothing
        if name.startswith("PYTHON") and name not in _WARM_NEUTRAL:
            return None
    return argv[2]


def _mode(warm: WarmMode) -> str:
    return "pyflink" if warm == "pyflink" else "warm"


@functools.cache
def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def _import_root() -> str:
    """The folder aiflowd is imported from: the fork server puts it first on its import path."""
    return os.path.dirname(_package_root())


#: A module file changed this close to a fork server's start may have been imported before
#: the change or after it (its signature is taken after the imports): taken as changed.
_CHANGE_MARGIN_NS = 1_000_000_000


def changed_files(files: Sequence[Sequence[Any]], started_ns: int) -> list[str]:
    """Those of ``files`` (as ``reaper.module_files`` gives them) that differ on disk now, or
    changed (their inode's change time, which no copy keeps) around ``started_ns``, the
    fork server's start."""
    changed = []
    for path, inode, size, mtime, ctime in files:
        try:
            st = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (st.st_ino, st.st_size, st.st_mtime_ns) != (inode, size, mtime) or ctime >= started_ns - _CHANGE_MARGIN_NS:
            changed.append(path)
    return changed


class _Spawner:
    """Starts job wrappers (and, warm, compiles and Python jobs) through ``reaper.py spawner``.

    The wrapper must be a child subreaper, a flag only the process itself can set, between
    fork and exec. In this big, threaded process that means ``preexec_fn``: a full fork
    under the GIL, which cut the launch rate from ~640 to ~70 jobs/s. The helper is small and
    single-threaded: it forks cheaply, and hands back a pidfd of each child. It ends when
    this process does (end of file on its socket); the wrappers, like the jobs, go on.
    Started warm (the fork server), it is replaced when the code it imported changes on
    disk (aiflowd's, the standard library's, any module it preloaded): the old one
    finishes its running compiles, then ends. Plugin modules and definitions are not
    imported there, but in each child, from disk.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._retired: list[subprocess.Popen[bytes]] = []
        #: Until when (monotonic) a spawner that could not start is not tried again.
        self._retry_at = 0.0
        self.mode = ""
        #: The files of the modules the running fork server imported, as it saw them.
        self._code: list[list[Any]] = []
        self._started_ns = 0
        self._checked = 0.0

    def start(self, request: dict[str, Any], fds: Sequence[int], mode: str) -> tuple[int, int, int] | None:
        """(pid, start time, pidfd) of the started process; None when there is no spawner here.

        ``mode`` "": any spawner serves (a wrapper); "warm" or "pyflink": one started so.
        Raises the OSError of the fork. One of the exec (a ``cwd`` gone) is told in the
        job's log, with 127 as its status.
        """
        with self._lock:
            if mode and (mode != self.mode or self._code_changed()):
                self._retire()
                self.mode = mode
            for last in (False, True):
                sock = self._connect()
                if sock is None:
                    return None
                try:
                    send_message(sock, request, fds)
                    reply, received = receive_message(sock)
                    break
                except (BrokenPipeError, ConnectionResetError):
                    # The spawner is gone and never read the request (a peer that closes
                    # with unread data resets): it started nothing; once more, with a new one.
                    self._close()
                    if last:
                        raise
                except (OSError, EOFError) as err:
                    # It read the request and ended before answering: the job may be
                    # running, so it must not be started again.
                    self._close()
                    what = request.get("argv", [request.get("module")])[-1]
                    raise OSError(errno.EIO, f"the job spawner ended while starting {what!r}") from err
        if "pid" not in reply:
            raise OSError(reply["errno"], reply["strerror"], reply.get("filename"))
        return int(reply["pid"]), int(reply["start_time"]), received[0]

    def _code_changed(self, now: bool = False) -> bool:
        """Whether the running fork server's code changed on disk (looked at once a second at most, unless ``now``)."""
        moment = time.monotonic()
        if self._sock is None or not self._code or (not now and moment - self._checked < _CODE_CHECK_INTERVAL):
            return False
        self._checked = moment
        changed = changed_files(self._code, self._started_ns)
        if changed:
            log.info("fork server out of date: replaced", changed=changed[:5], pid=self._process.pid if self._process else None)
        return bool(changed)

    def refresh(self) -> bool:
        """Retire the fork server now if its code changed on disk (a reload asks); whether it did."""
        with self._lock:
            if not self._code_changed(now=True):
                return False
            self._retire()
            return True

    def _connect(self) -> socket.socket | None:
        if self._sock is not None or time.monotonic() < self._retry_at:
            return self._sock
        self._retired = [p for p in self._retired if p.poll() is None]
        self._code, self._started_ns = [], time.time_ns()
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            with theirs:
                if self.mode:
                    # Not -S: the preloaded modules' dependencies live in site-packages.
                    argv = [sys.executable, "-I", REAPER, "spawner", str(theirs.fileno()), self.mode, _CMDLINE_ROOM]
                else:
                    argv = [sys.executable, "-I", "-S", REAPER, "spawner", str(theirs.fileno())]
                self._process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    cwd="/",
                    # A fork server starts with ours: a compile's or a job's environment is
                    # mostly the same, and its forks set only what differs.
                    env=helper_environment() if self.mode else {},
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,  # a Ctrl-C to our terminal is for us to handle
                )
        except OSError as err:
            self._give_up_for_now(err)  # the slow path (preexec_fn, cold) still works
            return None
        self._sock = ours
        if self.mode:
            # Its first message, once it has imported what it preloads: the files of its code.
            try:
                hello, _ = receive_message(ours)
            except (OSError, EOFError) as err:
                self._close()
                self._give_up_for_now(err)  # it could not start: the slow way, cold, for a while
                return None
            self._code, self._checked = list(hello.get("modules", [])), time.monotonic()
        return ours

    def _give_up_for_now(self, err: BaseException) -> None:
        self._retry_at = time.monotonic() + _RETRY_AFTER
        log.warning("job spawner could not start: jobs start the slow way for a while", error=repr(err), retry_in=_RETRY_AFTER)

    def _retire(self) -> None:
        """Let go of the spawner without waiting: it ends once its running compiles have."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            self._retired.append(self._process)
            self._process = None

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=_KILL_SETTLE)  # it exits at end of file
            self._process = None


class _Spawners:
    """A few spawners, used by whichever thread comes: while one forks, another is asked."""

    def __init__(self, count: int) -> None:
        self._idle: queue.SimpleQueue[_Spawner] = queue.SimpleQueue()
        self._all = [_Spawner() for _ in range(count)]
        for spawner in self._all:
            self._idle.put(spawner)
        #: The mode a new spawner starts in: warm once anything asked for warm, so wrappers do not churn it.
        self._mode = ""

    def start(self, request: dict[str, Any], fds: Sequence[int], mode: str) -> tuple[int, int, int] | None:
        if mode:
            self._mode = mode
        spawner = self._idle.get()
        try:
            if not mode and spawner._sock is None:
                spawner.mode = self._mode  # a spawner about to start: warm, if anything asked for warm
            return spawner.start(request, fds, mode)
        finally:
            self._idle.put(spawner)

    def refresh(self) -> int:
        """Replace the fork servers whose code changed on disk (at a reload); how many were.

        A retired one ends once the compiles it runs have ended; new ones start at the
        next request. Blocking (it may wait for a spawner in use): call it from a thread.
        """
        return sum(spawner.refresh() for spawner in self._all)

    def pids(self) -> list[int]:
        """The spawners' pids (running ones): for measurements and tests."""
        return [s._process.pid for s in self._all if s._process is not None and s._process.poll() is None]


#: Four: a request waits for its answer, so each spawner serves one at a time, and on a
#: busy machine each waits to be scheduled; four kept bash job launches at 0.57-0.63 of
#: bare asyncio where two gave 0.39-0.47, in the same session. Idle, they cost memory only.
_SPAWNER = _Spawners(4)


def refresh_fork_servers() -> int:
    """Replace the fork servers whose code changed on disk since they started (a reload asks); how many were."""
    return _SPAWNER.refresh()


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
        is_wrapper = cmdline.startswith(b"/bin/sh\0-c\0") or _REAPER_ARG in cmdline
        if is_wrapper and fragment in cmdline:
            start = process_start_time(pid)
            if start is not None:
                found.append((pid, start))
    return found


def _pids() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


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
    cancelled: bool = False


#: The helper's expected parent: it exits at once if it was re-parented before it could ask
#: the kernel for a parent-death signal (``aiflowd.runners.reaper.die_with_parent``).
HELPER_PARENT_VARIABLE = "AIFLOWD_HELPER_PARENT"


class HelperCancel:
    """Cancels a ``run_helper`` running in another thread: the helper and all it started are killed."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        self._lock = threading.Lock()
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            if not self.cancelled and self._write >= 0:
                self.cancelled = True
                os.write(self._write, b"x")

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        with self._lock:
            for fd in (self._read, self._write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._read = self._write = -1


def run_helper(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    timeout: float,
    keep_output: int = 16384,
    cancel: HelperCancel | None = None,
    warm: WarmMode = False,
) -> HelperResult:
    """Run a short-lived helper (the workflow compiler) to its end, its time limit or a cancel.

    Its output is drained as it comes and only the last ``keep_output`` bytes are kept,
    so a helper that prints without end neither blocks nor fills memory. It runs in its
    own process group and learns our pid (``AIFLOWD_HELPER_PARENT``) to die with us. On
    time-out, cancel or an exception here, it is killed with every process it started,
    those that left its group included (``kill_tree``). Blocking: call it from a worker
    thread in async code; that thread lives until the helper is gone, so a parent-death
    signal (which follows the thread that forked) comes only when this process dies.
    ``warm``: when ``argv`` is an aiflowd runner that may start warm (``warm_module``), it
    runs in a fork of the fork server instead, which dies with us, and it with it.
    """
    helper_env = dict(env)
    helper_env[HELPER_PARENT_VARIABLE] = str(os.getpid())
    module = warm_module(argv, env, pythonpath=True) if warm else None
    if module is not None:
        result = _run_warm_helper(module, argv, helper_env, cwd, timeout, keep_output, cancel, _mode(warm))
        if result is not None:
            return result
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=helper_env,
        start_new_session=True,
    )
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        tail, timed_out, cancelled = _drain(popen.stdout.fileno(), deadline, keep_output, cancel)
        if not (timed_out or cancelled):
            try:
                popen.wait(timeout=max(deadline - time.monotonic(), 0.001))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        # The helper reaps what it started before it ends; whatever is left (it was cut
        # short, or is not ours) dies here, the helper last.
        if popen.poll() is None:
            kill_tree(popen.pid, _KILL_SETTLE)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.stdout.close()
        returncode = popen.wait()
    return HelperResult(None if timed_out or cancelled else returncode, timed_out, bytes(tail), cancelled)


def _drain(fd: int, deadline: float, keep_output: int, cancel: HelperCancel | None) -> tuple[bytearray, bool, bool]:
    """Read ``fd`` to its end, the deadline or a cancel; the last ``keep_output`` bytes, timed out, cancelled."""
    tail = bytearray()
    watched = [fd] if cancel is None else [fd, cancel.fileno()]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return tail, True, False
        ready, _, _ = select.select(watched, [], [], remaining)
        if cancel is not None and cancel.fileno() in ready:
            return tail, False, True
        if fd not in ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return tail, False, False
        tail += chunk
        if len(tail) > keep_output:
            del tail[: len(tail) - keep_output]


def _run_warm_helper(
    module: str,
    argv: Sequence[str],
    env: dict[str, str],
    cwd: str | None,
    timeout: float,
    keep_output: int,
    cancel: HelperCancel | None,
    mode: str,
) -> HelperResult | None:
    """``run_helper`` in a fork of the fork server; None when there is no fork server (then: cold).

    The fork server sends the child's exit status down a pipe once it has reaped it; the
    output comes down another, as from a cold helper.
    """
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    request = {"kind": "compile", "module": module, "args": list(argv[3:]), "env": env, "cwd": cwd or os.getcwd()}
    try:
        started = _SPAWNER.start(request, [out_w, status_w], mode)
    except BaseException:
        for fd in (out_r, status_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(status_w)
    if started is None:
        os.close(out_r)
        os.close(status_r)
        return None
    pid, _, pidfd = started
    deadline = time.monotonic() + timeout
    timed_out = cancelled = False
    tail = bytearray()
    returncode: int | None = None
    try:
        tail, timed_out, cancelled = _drain(out_r, deadline, keep_output, cancel)
        if not (timed_out or cancelled):
            ready, _, _ = select.select([status_r], [], [], max(deadline - time.monotonic(), 0.001))
            timed_out = not ready
    finally:
        exited, _, _ = select.select([pidfd], [], [], 0)
        if not exited:  # still running (its pidfd is not readable): cut short
            kill_tree(pid, _KILL_SETTLE)
        os.close(pidfd)
        # The fork server reaps it and sends its status; nothing comes if the fork server died.
        ready, _, _ = select.select([status_r], [], [], _KILL_SETTLE)
        data = os.read(status_r, 4) if ready else b""
        if len(data) == 4:
            returncode = int.from_bytes(data, "big", signed=True)
        os.close(out_r)
        os.close(status_r)
    return HelperResult(None if timed_out or cancelled else returncode, timed_out, bytes(tail), cancelled)
