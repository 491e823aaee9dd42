"""The processes of a job plugin that cannot reattach: noted when it starts a job, stopped after a restart.

An AIFlow-style plugin starts its job's processes itself (``subprocess.Popen`` in
``submit_job``, often in a session of their own) and keeps them only in its handle's
memory. When the daemon dies, nothing finds them again: without ``reattach`` they would
run on, orphaned. So, for a controller without ``reattach``, aiflowd notes the child
processes of the daemon that ``submit_job`` started (pid and kernel start time, so that
a reused pid is never mistaken for one), stores them with the handle, and a restarted
daemon stops those still running, with all their descendants, and records the job
execution KILLED saying so.

What is not seen: processes a plugin starts later than ``submit_job`` returns, or
through a process that is not the daemon's child (a double fork, a remote service).
Job wrappers of aiflowd's own job types are never noted: they are reattached instead.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import time
from collections.abc import Iterable
from typing import Any

import anyio

from aiflowd.controllers.process_group import _REAPER_ARG, kill_tree, process_start_time
from aiflowd.plugin_interface import Job, JobHandle, JobRuntimeEnv
from aiflowd.runners.reaper import live_descendants, process_table, stat_fields

#: The key of a handle record that lists the noted processes: ``[[pid, start_time], ...]``.
RECORD_KEY = "aiflowd_processes"
#: How often a stop looks whether the processes are gone.
_POLL = 0.02


def own_children() -> dict[int, int]:
    """The daemon's live child processes that are not job wrappers: pid -> start time."""
    me = os.getpid()
    found: dict[int, int] = {}
    for pid, (ppid, _, zombie) in process_table().items():
        if ppid != me or zombie or _is_wrapper(pid):
            continue
        start = process_start_time(pid)
        if start is not None:
            found[pid] = start
    return found


def _is_wrapper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return False
    return cmdline.startswith(b"/bin/sh\0-c\0") or _REAPER_ARG in cmdline


class TrackingController:
    """A controller without ``reattach``, whose ``submit_job`` notes the processes it starts.

    Every other attribute is the wrapped controller's. The noted processes are kept on
    the handle (``aiflowd_processes``) for ``handle_record``.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        submit = self._inner.submit_job
        if inspect.iscoroutinefunction(submit):
            before = own_children()
            handle = await submit(job, job_runtime_env)
            after = own_children()
        else:  # blocking, as AIFlow's: looked at in the worker thread it runs in, with no extra hop

            def observed() -> tuple[dict[int, int], Any, dict[int, int]]:
                return own_children(), submit(job, job_runtime_env), own_children()

            before, handle, after = await anyio.to_thread.run_sync(observed)
            if inspect.isawaitable(handle):
                handle = await handle
        started = [[pid, start] for pid, start in sorted(after.items()) if before.get(pid) != start]
        with contextlib.suppress(AttributeError, TypeError):
            handle.aiflowd_processes = started  # a handle with __slots__ keeps none: nothing to stop later
        return handle


def handle_record(handle: JobHandle) -> dict[str, Any]:
    """What the store keeps of a handle: its ``to_json``, with the noted processes."""
    record = dict(handle.to_json())
    noted = getattr(handle, RECORD_KEY, None)
    if noted:
        record[RECORD_KEY] = noted
    return record


def noted_processes(record: dict[str, Any] | None) -> list[tuple[int, int]]:
    """The processes a handle record lists (malformed entries are left out)."""
    found = []
    for entry in (record or {}).get(RECORD_KEY) or ():
        with contextlib.suppress(TypeError, ValueError):
            pid, start = entry
            found.append((int(pid), int(start)))
    return found


def stop_noted(noted: Iterable[tuple[int, int]], grace: float) -> list[int]:
    """Stop the noted processes still running (same pid and start time) and all below them.

    SIGTERM to each, its process group when it leads one, and its descendants; after
    ``grace`` seconds, SIGKILL to what is left. Returns the pids that were running.
    """
    targets = {pid: start for pid, start in noted if _running(pid, start)}
    alive = list(targets)
    if not alive:
        return []
    table = process_table()
    for pid in alive:
        for below in live_descendants(pid, table):
            start = process_start_time(below)
            if start is not None:
                targets.setdefault(below, start)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        if table.get(pid, (0, 0, False))[1] == pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + max(grace, 0.0)
    while time.monotonic() < deadline and any(_running(pid, start) for pid, start in targets.items()):
        time.sleep(_POLL)
    for pid, start in targets.items():
        if _running(pid, start):
            kill_tree(pid)
    return alive


def _running(pid: int, start: int) -> bool:
    """Whether ``pid`` is the process that started at ``start`` and has not exited (a zombie has)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X") and int(fields[19]) == start
