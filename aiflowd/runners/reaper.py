"""Leaves nothing behind: reaps what a job or a compile left running, and kills on owner death.

A job or a definition may start processes that leave its process group (``setsid cmd &``)
or its tree (a double fork). The job wrapper and the compile helper make themselves
*child subreapers*, so such processes are re-parented to them instead of to init; when the
main command ends they are sent SIGTERM, get a short grace, then SIGKILL, and are reaped,
before the exit status (or the compile's answer) is written.

Run by path with ``python -I -S`` (standard library only, so it starts fast and sees no
site packages), in three modes:

``spawner FD``
    Starts ``sh`` job wrappers as subreapers for the daemon at the other end of socket
    ``FD`` (see ``spawner``); ends with it, leaving the wrappers running.
``reap STATUS_FILE RC GRACE``
    Exec'd by the ``sh`` job wrapper (same pid, so it keeps the wrapper's children) when
    its command ended with descendants left: reaps them, then records ``RC``.
``supervise STATUS_FILE GRACE OWNER_PID COMMAND...``
    The wrapper of a job that must die with its owner (``aiflowd run-once``): runs the
    command, records its status; if the owner dies, ends every descendant at once.

The compile helper imports ``die_with_parent`` and ``reap_descendants`` from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: How long one wait for SIGCHLD lasts at most: a grandchild's exit signals its own parent, not us.
_POLL = 0.05
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: The supervising wrapper's parent-death signal: one no stop sends, so each means what it says.
_PARENT_DEATH = signal.SIGUSR2
#: What a supervised job gets back at its default: our handlers, and what Python ignores.
_DEFAULTED = (*_STOP_SIGNALS, _PARENT_DEATH, signal.SIGPIPE, signal.SIGXFSZ)


_prctl: Any = None
_DEVNULL = -1


def prctl(option: int, value: int) -> bool:
    """Linux prctl(2) through ctypes; False where it is not available or refused.

    The function is looked up once, so that a forked child only makes the call.
    """
    global _prctl
    if _prctl is None:
        try:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _prctl = False
    return bool(_prctl and _prctl(option, value, 0, 0, 0) == 0)


def die_with_parent(expected_parent: str | None, signum: int = signal.SIGKILL) -> None:
    """Have the kernel send ``signum`` when the parent dies; exit now if it already has.

    The parent may die between our fork and the prctl call; then we were re-parented
    already and no signal will ever come: comparing ``getppid()`` with the pid the parent
    passed closes that race.
    """
    prctl(PR_SET_PDEATHSIG, signum)
    if expected_parent and expected_parent.isdigit() and os.getppid() != int(expected_parent):
        os._exit(1)


def become_subreaper() -> bool:
    """Have orphaned descendants re-parented to this process (it must then reap them)."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def process_table() -> dict[int, tuple[int, int, bool]]:
    """Every process's (parent pid, process group, is it a zombie), read from /proc."""
    found = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(b")") + 2 :].split()
        found[int(entry)] = (int(fields[1]), int(fields[2]), fields[0] in (b"Z", b"X"))
    return found


def live_descendants(root: int, table: dict[int, tuple[int, int, bool]] | None = None) -> list[int]:
    """Pids of every live (not zombie) process below ``root``, parents before children."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        if not table[pid][2]:
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _reap_zombies() -> None:
    """Collect every child that has exited (ours and re-parented ones), without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wait_a_little(deadline: float) -> None:
    """Wait for a child's exit (SIGCHLD) until ``deadline``, at most one poll interval."""
    remaining = min(deadline - time.monotonic(), _POLL)
    if remaining > 0:
        signal.sigtimedwait([signal.SIGCHLD], remaining)
    _reap_zombies()


class _Hurry:
    """Set by a stop signal during the grace period: SIGKILL at once."""

    now = False

    @classmethod
    def handler(cls, signum: int, frame: object) -> None:
        cls.now = True


def reap_descendants(grace: float) -> None:
    """SIGTERM every descendant, up to ``grace`` seconds for them to exit, SIGKILL the rest; reap all.

    Processes killed here leave their own children to us (we are their subreaper), so
    the killing repeats until nothing is left below us.
    """
    me = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    try:
        pids = live_descendants(me)
        if pids:
            _signal_all(pids, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while not _Hurry.now and time.monotonic() < deadline and live_descendants(me):
                _wait_a_little(deadline)
        while pids := live_descendants(me):
            _signal_all(pids, signal.SIGKILL)
            _wait_a_little(time.monotonic() + _POLL)
        _reap_zombies()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])


def _record(status_file: str, rc: int) -> None:
    with contextlib.suppress(OSError), open(status_file, "w", encoding="ascii") as fh:
        fh.write(f"{rc}\n")


def reap(status_file: str, rc: int, grace: float) -> int:
    """The end of the ``sh`` wrapper: the command is done; reap what it left, then record."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _Hurry.handler)
    reap_descendants(grace)
    _record(status_file, rc)
    return rc


class _OwnerGone(Exception):
    """The process that started this job died: the job must end with it."""


def supervise(status_file: str, grace: float, owner: int, argv: list[str]) -> int:
    """Run ``argv`` as the job of an owner it must not outlive; record its exit status."""
    started = False
    stopped_before_start = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopped_before_start
        if os.getppid() != owner:
            raise _OwnerGone
        # Otherwise a stop of the job's group: the command got it too, and its exit is
        # what we record (as the sh wrapper's trap does); before it started, it is the stop.
        stopped_before_start = stopped_before_start or not started

    def on_parent_death(signum: int, frame: object) -> None:
        # Also sent when the thread that started us ends while its process lives on.
        if os.getppid() != owner:
            raise _OwnerGone

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    signal.signal(_PARENT_DEATH, on_parent_death)
    become_subreaper()
    try:
        # Not SIGKILL: this process must live on to end the job's descendants.
        prctl(PR_SET_PDEATHSIG, _PARENT_DEATH)
        if os.getppid() != owner:
            raise _OwnerGone
        if stopped_before_start:
            _record(status_file, 143)
            return 143
        try:
            child = os.posix_spawnp(argv[0], argv, os.environ, setsigdef=_DEFAULTED, setsigmask=())
        except OSError as err:
            print(f"aiflowd: cannot run {argv[0]}: {err.strerror}", file=sys.stderr, flush=True)
            rc = 127 if isinstance(err, FileNotFoundError) else 126
        else:
            started = True
            _, status = os.waitpid(child, 0)
            rc = os.waitstatus_to_exitcode(status)
            rc = 128 - rc if rc < 0 else rc
    except _OwnerGone:
        for signum in (*_STOP_SIGNALS, _PARENT_DEATH):
            signal.signal(signum, signal.SIG_IGN)
        reap_descendants(grace)
        _record(status_file, 143)
        return 143
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _Hurry.handler)
    signal.signal(_PARENT_DEATH, _Hurry.handler)
    reap_descendants(grace)
    _record(status_file, rc)
    return rc


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def send_message(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """One length-prefixed JSON message, with file descriptors riding on its first byte."""
    body = json.dumps(message).encode()
    data = len(body).to_bytes(4, "big") + body
    sent = socket.send_fds(sock, [data], list(fds)) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def receive_message(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The next message of ``send_message`` and the descriptors it carried; EOFError at the end."""
    header, fds, _, _ = socket.recv_fds(sock, 4, 4)
    if not header:
        raise EOFError
    header += _read_exactly(sock, 4 - len(header))
    return json.loads(_read_exactly(sock, int.from_bytes(header, "big"))), fds


def _start_wrapper(request: dict[str, Any], log_fd: int) -> dict[str, Any]:
    """Fork one job wrapper (a subreaper, in a new session) and return its pid at once.

    The exec is not waited for, so the next request is served while it happens: should it
    fail (a ``cwd`` gone meanwhile), the child says why in the job's log and records 127
    as the job's status, as ``sh`` does for a command it cannot run.
    """
    argv, env, cwd, status_path = request["argv"], request["env"], request["cwd"], request["status_path"]
    pid = os.fork()
    if pid == 0:
        # Only a few calls between fork and exec: every descriptor of the spawner but the
        # log is close-on-exec, and the children's signal state is set in ``spawner``.
        try:
            # Python ignores SIGPIPE and SIGXFSZ at start, and an ignored signal stays ignored
            # across exec: a job must get the defaults (`yes | head` ends quietly by SIGPIPE).
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            os.setsid()
            become_subreaper()
            os.dup2(_DEVNULL, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            if log_fd > 2:
                os.close(log_fd)
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.write(2, f"aiflowd: cannot start the job: {err.strerror}: {err.filename or argv[0]}\n".encode())
                _record(status_path, 127)
        finally:
            os._exit(127)
    with open(f"/proc/{pid}/stat", "rb") as fh:  # ours, not reaped yet: the pid cannot be another's
        stat = fh.read()
    return {"pid": pid, "start_time": int(stat[stat.rindex(b")") + 2 :].split()[19])}


def spawner(fd: int) -> int:
    """Start job wrappers on request from the process at the other end of socket ``fd``.

    A small single-threaded process forks cheaply and may run code between fork and exec
    (the subreaper flag), which the daemon, big and threaded, cannot do fast. Each reply
    carries a pidfd of the new wrapper, so its owner watches it as its own. Children are
    reaped as they end; at EOF (the owner is gone) it exits, leaving running wrappers to init.
    """
    global _DEVNULL
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    prctl(PR_SET_CHILD_SUBREAPER, 0)  # looks the function up for the children (and clears the flag)
    _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    # A handler, reset to the default by exec; nothing is blocked, and the signals Python
    # ignores are given back their defaults in each child, since both would be inherited.
    # In its own session, no terminal's signal reaches this process.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            _reap_zombies()
        if sock.fileno() not in ready:
            continue
        try:
            request, fds = receive_message(sock)
        except (EOFError, ConnectionError):
            return 0
        try:
            reply = _start_wrapper(request, fds[0])
        except OSError as err:
            reply = {"errno": err.errno, "strerror": err.strerror, "filename": None}
        finally:
            for received in fds:
                os.close(received)
        pidfd = os.pidfd_open(reply["pid"]) if "pid" in reply else None
        try:
            send_message(sock, reply, [pidfd] if pidfd is not None else [])
        except OSError:
            return 0
        finally:
            if pidfd is not None:
                os.close(pidfd)


def main(argv: list[str]) -> int:
    mode = argv[1]
    if mode == "spawner":
        return spawner(int(argv[2]))
    if mode == "reap":
        return reap(argv[2], int(argv[3]), float(argv[4]))
    if mode == "supervise":
        return supervise(argv[2], float(argv[3]), int(argv[4]), argv[5:])
    print(f"aiflowd reaper: unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
