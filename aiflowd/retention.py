"""Retention: old executions, job logs and working folders go, so a daemon left for months never fills its disk.

Every ``interval`` (and once a minute after start), one pass deletes:

- finished executions that ended longer than ``executions`` ago, with their job
  executions (and the exit-status files those recorded), and events as old;
- job log files not written for ``logs``;
- job working folders untouched for ``work_dirs``: a finished execution's as a whole.

What the daemon still needs is never touched: an unfinished job execution's row, log
and working folder, however old; an execution not finished (running, or open for
events: such an execution may live for months) keeps its row and, per job, the latest start that
was not a retry with what followed it, which is what a restarted daemon rebuilds the
job's state from; each workflow keeps its latest execution (``aiflowctl workflow show``
lists it as the last run); schedule ticks (what catch-up after a downtime reads) are not
retention's. A duration of 0 keeps that kind of data for ever.

Rows go in batches of ``batch_size``, each its own short transaction with a turn of the
event loop between two: the engine, the control socket and the jobs never wait more than
one batch, whatever the backlog (a first pass may find a year of history). Files are
listed and removed in worker threads. Times come from a ``Clock``, so tests move them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from aiflowd.clock import Clock, SystemClock
from aiflowd.config import DEFAULT_RETENTION
from aiflowd.store import Store, StoreUnavailable

log = structlog.get_logger("aiflowd.retention")

#: Rows deleted per transaction: a few milliseconds of the event loop each.
BATCH_SIZE = 500
#: How long after the daemon starts the first pass runs (unless ``interval`` is shorter).
FIRST_PASS_DELAY = 60.0


@dataclass
class RetentionReport:
    """What one pass removed."""

    executions: int = 0
    #: Job executions deleted from executions still open (those of deleted executions are not counted).
    job_executions: int = 0
    events: int = 0
    status_files: int = 0
    log_files: int = 0
    work_dirs: int = 0
    batches: int = 0
    #: The longest a single batch held the event loop, in seconds.
    longest_batch: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "errors" or v}


class Retention:
    """Deletes what is older than the configured durations; ``run`` is the daemon's supervised part."""

    def __init__(
        self,
        store: Store,
        state_dir: str,
        log_dir: str,
        settings: dict[str, float] | None = None,
        *,
        clock: Clock | None = None,
        batch_size: int = BATCH_SIZE,
        first_pass_delay: float = FIRST_PASS_DELAY,
    ) -> None:
        self.store = store
        self.work_root = os.path.join(state_dir, "work")
        self.log_dir = log_dir
        #: ``executions``, ``logs``, ``work_dirs`` (seconds, 0: kept) and ``interval``; a reload replaces it.
        self.settings = dict(DEFAULT_RETENTION, **(settings or {}))
        self.clock: Clock = clock or SystemClock()
        self.batch_size = batch_size
        self.first_pass_delay = first_pass_delay
        #: The last pass's report (None before the first), when it ended, and how many passes ran.
        self.last: RetentionReport | None = None
        self.last_at: float | None = None
        self.passes = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pass after pass for ever: the first shortly after start, then every ``interval``."""
        task_status.started()
        due = self.clock.now() + min(self.first_pass_delay, self.settings["interval"])
        while True:
            await self.clock.sleep_until(due)
            await self.sweep()
            due = self.clock.now() + self.settings["interval"]

    async def sweep(self) -> RetentionReport:
        """One pass over rows and files; a failure of one part is logged and the others go on."""
        report = RetentionReport()
        now = self.clock.now()
        # What may not be touched, read before anything is deleted: an execution begun after
        # this (an id above ``newest``) is left alone as well as the ones open now.
        # The logs and working folders of unfinished job executions are never touched either.
        busy = Busy(self.store.open_execution_ids(), self.store.max_execution_id(), {os.path.normpath(p) for p in self.store.busy_paths()})
        keep = self.settings
        if keep["executions"] > 0:
            try:
                await self._delete_rows(now - keep["executions"], report)
            except StoreUnavailable as err:
                report.errors.append(str(err))
        if keep["logs"] > 0:
            report.log_files = await self._delete_files(self.log_dir, now - keep["logs"], busy, report, whole=False)
        if keep["work_dirs"] > 0:
            report.work_dirs = await self._delete_files(self.work_root, now - keep["work_dirs"], busy, report, whole=True)
        self.last, self.last_at = report, self.clock.now()
        self.passes += 1
        if report.errors:
            log.warning("retention pass incomplete; the rest waits for the next pass", **report.as_dict())
        elif any((report.executions, report.job_executions, report.events, report.log_files, report.work_dirs)):
            log.info("retention pass", **report.as_dict())
        return report

    def status(self) -> dict[str, Any]:
        """What ``aiflowctl status`` shows: the durations kept, and what the last pass removed."""
        return {
            "keep": dict(self.settings),
            "passes": self.passes,
            "last_pass_at": self.last_at,
            "last_pass": self.last.as_dict() if self.last is not None else None,
        }

    async def _delete_rows(self, before: float, report: RetentionReport) -> None:
        """Finished executions (with their job executions) and events older than ``before``, batch by batch."""
        report.executions = await self._in_batches(self.store.delete_expired_executions, before, report)
        # the job executions of executions open for months (one per event, say)
        report.job_executions = await self._in_batches(self.store.delete_expired_job_executions, before, report)
        report.events = await self._in_batches(lambda cutoff, limit: (self.store.delete_events(cutoff, limit), []), before, report)

    async def _in_batches(self, delete: Callable[[float, int], tuple[int, list[str]]], before: float, report: RetentionReport) -> int:
        """Call ``delete`` (how many rows went, and the exit-status files they had) until a batch is not full; how many in all."""
        deleted = 0
        while True:
            began = anyio.current_time()
            count, status_files = delete(before, self.batch_size)
            report.batches += 1
            report.longest_batch = max(report.longest_batch, anyio.current_time() - began)
            deleted += count
            if status_files:
                report.status_files += await anyio.to_thread.run_sync(_remove_files, status_files)
            await anyio.lowlevel.checkpoint()  # the rest of the daemon runs between two batches
            if count < self.batch_size:
                return deleted

    async def _delete_files(self, root: str, before: float, busy: Busy, report: RetentionReport, *, whole: bool) -> int:
        """Under ``root``/WORKFLOW/EXECUTION: folders (``whole``) or single files older than ``before``.

        A finished execution's folder goes as a whole; in an open one, each job execution's
        log or working folder that is old and not in use goes on its own.
        """
        try:
            folders = await anyio.to_thread.run_sync(_execution_folders, root, busy)
        except OSError as err:
            report.errors.append(f"{root}: {err}")
            return 0
        removed = 0
        for folder, is_open in folders:  # one worker-thread call each: a stop never waits for more than one folder
            try:
                if whole:
                    removed += await anyio.to_thread.run_sync(_expire_attempts if is_open else _expire_folder, folder, before, busy.paths)
                else:
                    removed += await anyio.to_thread.run_sync(_expire_files, folder, before, busy.paths, not is_open)
            except OSError as err:
                report.errors.append(f"{folder}: {err}")
        return removed


@dataclass(frozen=True)
class Busy:
    """What a pass leaves alone, read from the store before it deletes anything."""

    #: Executions not finished (running, or open for events).
    open_ids: set[int]
    #: The newest execution then: one begun during the pass (a higher id) is left alone too.
    newest: int
    #: The log files and working folders of job executions not finished.
    paths: set[str]


def _execution_folders(root: str, busy: Busy) -> list[tuple[str, bool]]:
    """ROOT/WORKFLOW/EXECUTION folders, each with whether its execution is open (or holds a busy path).

    Executions begun after the store was read are left out.
    """
    found = []
    try:
        workflows = os.scandir(root)
    except FileNotFoundError:
        return []
    parents = {os.path.dirname(path) for path in busy.paths}
    with workflows:
        for workflow in workflows:
            if not workflow.is_dir(follow_symlinks=False):
                continue
            with os.scandir(workflow.path) as executions:
                for execution in executions:
                    name = execution.name
                    if not name.isdigit() or not execution.is_dir(follow_symlinks=False) or int(name) > busy.newest:
                        continue
                    path = os.path.normpath(execution.path)
                    found.append((path, int(name) in busy.open_ids or path in parents))
    return found


def _expire_files(folder: str, before: float, busy: set[str], remove_folder: bool) -> int:
    """Remove the files in ``folder`` (a tree) last written before ``before`` and not busy, then the folders left empty.

    ``folder`` itself goes when empty only if its execution is finished: an open one may
    start another job execution there at any moment.
    """
    removed = 0
    for parent, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(parent, name)
            if path in busy:
                continue
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_mtime < before:
                    os.unlink(path)
                    removed += 1
        for name in dirs:
            with contextlib.suppress(OSError):  # not empty: something recent is in it
                os.rmdir(os.path.join(parent, name))
    if remove_folder:
        with contextlib.suppress(OSError):
            os.rmdir(folder)
    return removed


def _expire_folder(folder: str, before: float, busy: set[str]) -> int:
    """Remove the execution folder ``folder`` when nothing in it changed since ``before``; 1 if it did."""
    if _newer_inside(folder, before):
        return 0
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)  # symbolic links (a job's resources/) are removed, never followed
    return 1


def _expire_attempts(folder: str, before: float, busy: set[str]) -> int:
    """In an open execution's folder: remove each job execution's working folder that is old and not busy."""
    removed = 0
    with os.scandir(folder) as entries:
        attempts = [os.path.join(folder, e.name) for e in entries if e.is_dir(follow_symlinks=False)]
    for attempt in attempts:
        if attempt not in busy:
            removed += _expire_folder(attempt, before, busy)
    return removed


def _newer_inside(folder: str, before: float) -> bool:
    """Whether anything in the tree (the folders themselves included, links not) changed at or after ``before``."""
    for parent, _dirs, files in os.walk(folder):  # never descends through a link
        if os.lstat(parent).st_mtime >= before:
            return True
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                status = os.lstat(os.path.join(parent, name))
                if status.st_mtime >= before and not stat.S_ISLNK(status.st_mode):
                    return True
    return False


def _remove_files(paths: list[str]) -> int:
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            os.unlink(path)
            removed += 1
    return removed
