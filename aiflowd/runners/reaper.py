"""Leaves nothing behind: reaps what a job or a compile left running, and kills on owner death.

A job or a definition may start processes that leave its process group (``setsid cmd &``)
or its tree (a double fork). The job wrapper and the compile helper make themselves
*child subreapers*, so such processes are re-parented to them instead of to init; when the
main command ends they are sent SIGTERM, get a short grace, then SIGKILL, and are reaped,
before the exit status (or the compile's answer) is written.

Run by path with ``python -I -S`` (standard library only, so it starts fast and sees no
site packages), in three modes:

``spawner FD [warm|pyflink]``
    Starts ``sh`` job wrappers as subreapers for the daemon at the other end of socket
    ``FD`` (see ``spawner``); ends with it, leaving the wrappers running. With ``warm``
    it is also the *fork server*: it imports aiflowd's DSL, processor base classes and
    compat layer (``pyflink``: PyFlink too) once, then forks a definition compile or a
    Python job per request, each with what a cold interpreter would have had.
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
import marshal
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
#: Linux's __WALL: a wait that also sees children whose exit signal is not SIGCHLD (clone(2) without it).
_WALL = 0x40000000
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


def stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None if gone.

    The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)  # os-level: a fifth of the cost of open()
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


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
        fields = stat_fields(entry)
        if fields is None:
            continue
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


def _reap_zombies() -> list[tuple[int, int]]:
    """Collect every child that has exited (ours and re-parented ones), without blocking; (pid, wait status) of each."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


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


def has_children() -> bool:
    """Whether any thread of this process has a child (zombies included); True when it cannot tell.

    One system call (a wait that reaps nothing), where ``live_descendants`` reads all of
    /proc: a subreaper with no child has no descendant left, since each orphan below it
    becomes its child. A wait covers the children of every thread of the process.
    """
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT | _WALL)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def reap_descendants(grace: float) -> None:
    """SIGTERM every descendant, up to ``grace`` seconds for them to exit, SIGKILL the rest; reap all.

    Processes killed here leave their own children to us (we are their subreaper), so
    the killing repeats until nothing is left below us.
    """
    _reap_zombies()
    if not has_children():
        return  # the common case: nothing left, found without reading all of /proc
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
    """Write ``rc`` to the status file.

    With bare descriptors: in a fork of the fork server a text-mode ``open`` builds a
    codec and three stream objects, each a copied page (~1.3 ms a job, 300 page faults).
    """
    with contextlib.suppress(OSError):
        fd = os.open(status_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            os.write(fd, b"%d\n" % rc)
        finally:
            os.close(fd)


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


#: What one read of a message takes at most. Messages never follow each other unanswered
#: (a request waits for its reply), so a read never takes part of the next one.
_RECEIVE_SIZE = 65536


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def send_message(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """One length-prefixed message, with file descriptors riding on its first byte.

    ``marshal``: both ends are the same interpreter (the spawner is started with the
    daemon's own), and it reads and writes a job's environment ten times faster than JSON.
    """
    body = marshal.dumps(message)
    data = len(body).to_bytes(4, "big") + body
    sent = socket.send_fds(sock, [data], list(fds)) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def receive_message(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The next message of ``send_message`` and the descriptors it carried; EOFError at the end.

    One read takes what has come (a whole request, usually), the rest is read after it.
    """
    data, fds, _, _ = socket.recv_fds(sock, _RECEIVE_SIZE, 4)
    if not data:
        raise EOFError
    if len(data) < 4:
        data += _read_exactly(sock, 4 - len(data))
    size = int.from_bytes(data[:4], "big")
    body = data[4:]
    if len(body) < size:
        body += _read_exactly(sock, size - len(body))
    message = marshal.loads(body)
    if not isinstance(message, dict):
        raise EOFError
    return message, fds


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
    return {"pid": pid, "start_time": _start_time(pid)}


def kill_tree(pid: int, settle: float = 2.0) -> None:
    """SIGKILL ``pid`` with every process below it, those that left its group included.

    ``pid`` is stopped first and killed last: stopped it forks no more, and, being their
    subreaper, it adopts the children of each process killed, so the next round finds them.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + settle
    while (below := live_descendants(pid)) and time.monotonic() < deadline:
        _signal_all(below, signal.SIGKILL)
        time.sleep(0.005)  # killed processes vanish when next scheduled: nothing to wait on
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# -- the fork server ("zygote") ---------------------------------------------------------------

#: The modules a warm child may run, as ``python -m MODULE ARGS`` would: nothing else is forked.
WARM_MODULES = ("aiflowd.runners.compile_workflow", "aiflowd.runners.python_job")
#: Imported once by a warm spawner, so that each child starts with them (and their imports) loaded.
_PRELOADED = (
    "aiflowd.workflows.dsl",
    "aiflowd.plugin_interface",
    "aiflowd.plugins.python",
    "aiflowd.plugins.bash",
    "aiflowd.plugins.flink",
    "aiflowd.compat",
    "atexit",  # run at each child's end
    *WARM_MODULES,
)
#: Descriptors of the spawner a forked child must not keep (its socket, its wake-up pipe, status pipes).
_OWN_FDS: set[int] = set()
#: Compile children alive: pid -> the pipe their wait status goes to once they are reaped.
_COMPILES: dict[int, int] = {}


def _preload(mode: str) -> None:
    """Import what every definition and Python job imports (``pyflink`` too in that mode, when installed)."""
    import importlib

    for name in _PRELOADED:
        importlib.import_module(name)
    exec("from aiflowd import *", {})  # what definitions begin with: names the package provides lazily too
    if mode == "pyflink":
        with contextlib.suppress(Exception):  # the extra may be absent: jobs then import it as they would cold
            importlib.import_module("pyflink.datastream")
            importlib.import_module("pyflink.table")
    import gc

    # What is loaded now is shared with every child until written: a collection in a child
    # would touch (and so copy) every page of it; frozen objects are never looked at again.
    gc.collect()
    gc.freeze()


def module_files() -> list[list[Any]]:
    """[path, inode, size, mtime, ctime (ns)] of the file of every module imported here: the fork server's code.

    Sent to the daemon once the fork server has imported what it preloads: a file that
    differs later (a new inode, size or modification time: an upgrade, an edit, a copy
    that kept the old time) means the fork server runs code that is no longer on disk.
    """
    found = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.append([path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return sorted(found)


#: Where this process's original argv strings lie (/proc/PID/stat's arg_start, arg_end).
_ARGS_AREA: tuple[int, int] | None = None


def _args_area() -> tuple[int, int]:
    """(start, end) of the original argv strings; the same in every fork, so looked up once, in the fork server."""
    global _ARGS_AREA
    if _ARGS_AREA is None:
        try:
            with open("/proc/self/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            _ARGS_AREA = (int(fields[45]), int(fields[46]))
        except (OSError, IndexError, ValueError):
            _ARGS_AREA = (0, 0)
    return _ARGS_AREA


def _set_cmdline(*args: str) -> None:
    """Show ``args`` as this process's command line (``/proc/PID/cmdline``, ``ps``), as setproctitle does.

    A forked child keeps its parent's command line; a job wrapper must be found by the
    status file it names (``find_wrapper``), so its own is written over the original argv
    strings (the spawner starts with a long blank argument to make room). Too long: left as is.
    """
    arg_start, arg_end = _args_area()
    text = b"\0".join(os.fsencode(a) for a in args) + b"\0"
    if not arg_start or len(text) > arg_end - arg_start:
        return
    import ctypes

    ctypes.memmove(arg_start, text.ljust(arg_end - arg_start, b"\0"), arg_end - arg_start)


def _child_start(request: dict[str, Any]) -> None:
    """In a fresh fork: drop the spawner's descriptors and handlers; signals as a new interpreter has them."""
    for fd in _OWN_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _run_module(request: dict[str, Any]) -> int:
    """Run ``python -m MODULE ARGS`` in this forked process: its environment, import path and stdio, then exit."""
    import importlib
    import io
    import traceback

    env = request["env"]
    # Only what differs: the fork server started with the daemon's environment, which a
    # compile's or a job's mostly is; each variable set in a fork costs copied pages.
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    # What `python -m` gives: the working folder first, then PYTHONPATH, then the interpreter's own.
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *extra, *(p for p in sys.path if p not in extra)]
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))

    def stream(fd: int, errors: str) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        buffered: Any = raw if unbuffered else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding="utf-8", errors=errors, write_through=unbuffered, line_buffering=False)

    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = stream(1, "strict")
    sys.stderr = stream(2, "backslashreplace")
    module = importlib.import_module(request["module"])
    sys.argv = [module.__file__ or request["module"], *request["args"]]
    _set_cmdline(sys.executable, "-m", request["module"], *request["args"])
    interrupted = False
    try:
        rc = module.main(sys.argv)
    except SystemExit as exit_:
        code = exit_.code
        if code is None or isinstance(code, int):
            rc = code or 0
        else:
            print(code, file=sys.stderr)
            rc = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        rc, interrupted = 128 + signal.SIGINT, True
    except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
        traceback.print_exc()
        rc = 1
    # What the interpreter does at exit: wait for threads, run atexit, flush. Only code
    # that imported threading can have started a thread it knows of.
    threading: Any = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    import atexit

    atexit._run_exitfuncs()
    for out in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            out.flush()
    if interrupted:  # as the interpreter ends on an uncaught KeyboardInterrupt: by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return int(rc) & 0xFF if isinstance(rc, int) else 1


def _std_fds(out_fd: int) -> None:
    os.dup2(_DEVNULL, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    if out_fd > 2:
        os.close(out_fd)


def _start_compile(request: dict[str, Any], fds: list[int], owner: int) -> dict[str, Any]:
    """Fork a definition compile: own session, output to ``fds[0]``, its wait status later to ``fds[1]``.

    The child dies with this process (a parent-death SIGKILL, as the cold helper dies with
    the daemon's thread), adopts what the definition starts (subreaper) and runs the
    compiler as ``python -m`` would.
    """
    out_fd, status_fd = fds[0], fds[1]
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        rc = 127
        try:
            _child_start(request)
            os.close(status_fd)
            os.setsid()
            die_with_parent(str(me))
            _std_fds(out_fd)
            os.chdir(request["cwd"])
            request["env"]["AIFLOWD_HELPER_PARENT"] = str(me)
            become_subreaper()
            rc = _run_module(request)
        except BaseException as err:  # noqa: BLE001 - the compile's status says it failed; the output why
            with contextlib.suppress(BaseException):
                os.write(2, f"aiflowd: cannot start the compile: {err}\n".encode())
        finally:
            os._exit(rc)
    os.set_inheritable(status_fd, False)
    _COMPILES[pid] = status_fd
    _OWN_FDS.add(status_fd)
    fds.remove(status_fd)  # kept until the child is reaped
    return {"pid": pid, "start_time": _start_time(pid)}


def _start_warm_job(request: dict[str, Any], log_fd: int) -> dict[str, Any]:
    """Fork a job wrapper that runs a Python job in its own fork, as the ``sh`` wrapper runs a command.

    The wrapper: a new session, a subreaper, stdin from /dev/null, output to the log, the
    job's working folder; a stop to the group before the job starts is recorded as 143,
    after it the job's own exit; what the job leaves behind is reaped before the status is
    recorded. It is not this process's to end: the daemon's jobs outlive it, like cold ones.
    """
    status_path, grace = request["status_path"], float(request["grace"])
    pid = os.fork()
    if pid == 0:
        rc = 127
        try:
            _child_start(request)
            os.setsid()
            become_subreaper()
            _set_cmdline("aiflowd-job-wrapper", os.path.abspath(__file__), status_path)
            rc = _warm_wrapper(request, log_fd, status_path, grace)
        except BaseException as err:  # noqa: BLE001 - told in the job's log, 127 as the status
            with contextlib.suppress(BaseException):
                os.write(2, f"aiflowd: cannot start the job: {err}\n".encode())
                _record(status_path, 127)
        finally:
            os._exit(rc)
    return {"pid": pid, "start_time": _start_time(pid)}


def _warm_wrapper(request: dict[str, Any], log_fd: int, status_path: str, grace: float) -> int:
    stopped = False

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True  # the job got it too (same group); its exit is what counts once started

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_stop)
    try:
        _std_fds(log_fd)
        os.chdir(request["cwd"])
    except OSError as err:
        with contextlib.suppress(OSError):
            os.write(2, f"aiflowd: cannot start the job: {err.strerror}: {err.filename}\n".encode())
        _record(status_path, 127)
        return 127
    # A stop between the look at `stopped` and the job's fork would reach no job: held
    # back over that moment, then passed on to the job.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    if stopped:
        _record(status_path, 143)
        return 143
    child = os.fork()
    if child == 0:
        rc = 1
        try:
            for signum in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            rc = _run_module(request)
        finally:
            os._exit(rc)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    rc = os.waitstatus_to_exitcode(status)
    if rc < 0 and -rc not in (signal.SIGINT, signal.SIGPIPE):
        # What the sh wrapper says of a command a signal ended (dash: quiet for these two).
        said = signal.strsignal(-rc) or f"Signal {-rc}"
        with contextlib.suppress(OSError):
            os.write(2, f"{said}{' (core dumped)' if os.WCOREDUMP(status) else ''}\n".encode())
    rc = 128 - rc if rc < 0 else rc
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _Hurry.handler)
    reap_descendants(grace)
    _record(status_path, rc)
    return rc


def _start_time(pid: int) -> int:
    fields = stat_fields(pid)  # ours, not reaped yet: the pid cannot be another's, nor gone
    assert fields is not None
    return int(fields[19])


def _tell_compiles(reaped: list[tuple[int, int]]) -> None:
    """Send each reaped compile child's wait status to whoever waits for it."""
    for pid, status in reaped:
        status_fd = _COMPILES.pop(pid, None)
        if status_fd is None:
            continue
        with contextlib.suppress(OSError):
            os.write(status_fd, os.waitstatus_to_exitcode(status).to_bytes(4, "big", signed=True))
        _OWN_FDS.discard(status_fd)
        os.close(status_fd)


def spawner(fd: int, mode: str = "") -> int:
    """Start job wrappers (and, warm, compiles and Python jobs) on request from the process at ``fd``.

    A small single-threaded process forks cheaply and may run code between fork and exec
    (the subreaper flag), which the daemon, big and threaded, cannot do fast. Each reply
    carries a pidfd of the new process, so its owner watches it as its own. Children are
    reaped as they end. At EOF it exits, leaving running wrappers to init: if the owner
    died, compiles die first, whole (they must not outlive it); if it only let go of this
    spawner (a newer one replaces it), running compiles are waited for.
    """
    global _DEVNULL
    owner = os.getppid()
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    prctl(PR_SET_CHILD_SUBREAPER, 0)  # looks the function up for the children (and clears the flag)
    _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _OWN_FDS.update((fd, wake_r, wake_w))
    if mode:
        # Run by path with -I: the aiflowd this file belongs to comes first, as it does for the daemon.
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        _preload(mode)
        _args_area()
        # What this fork server runs, for the daemon to see when it is out of date.
        try:
            send_message(sock, {"modules": module_files()})
        except OSError:
            return 0
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
            _tell_compiles(_reap_zombies())
        if sock.fileno() not in ready:
            continue
        try:
            request, fds = receive_message(sock)
        except (EOFError, ConnectionError):
            _wind_down(owner)
            return 0
        kind = request.get("kind", "wrapper")
        try:
            if kind == "wrapper":
                reply = _start_wrapper(request, fds[0])
            elif not mode or request.get("module") not in WARM_MODULES:
                reply = {"errno": 22, "strerror": f"this spawner cannot run {kind} {request.get('module')!r}", "filename": None}
            elif kind == "compile":
                reply = _start_compile(request, fds, owner)
            else:
                reply = _start_warm_job(request, fds[0])
        except OSError as err:
            reply = {"errno": err.errno, "strerror": err.strerror, "filename": None}
        finally:
            for received in fds:
                os.close(received)
        pidfd = os.pidfd_open(reply["pid"]) if "pid" in reply else None
        try:
            send_message(sock, reply, [pidfd] if pidfd is not None else [])
        except OSError:
            _wind_down(owner)
            return 0
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _wind_down(owner: int) -> None:
    """The owner let go: kill every compile if it died, else let them finish; then reap them."""
    while _COMPILES:
        if os.getppid() != owner:
            for pid in list(_COMPILES):
                kill_tree(pid)
        signal.sigtimedwait([signal.SIGCHLD], _POLL)
        _tell_compiles(_reap_zombies())


def main(argv: list[str]) -> int:
    mode = argv[1]
    if mode == "spawner":
        return spawner(int(argv[2]), argv[3] if len(argv) > 3 and argv[3] in ("warm", "pyflink") else "")
    if mode == "reap":
        return reap(argv[2], int(argv[3]), float(argv[4]))
    if mode == "supervise":
        return supervise(argv[2], float(argv[3]), int(argv[4]), argv[5:])
    print(f"aiflowd reaper: unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
