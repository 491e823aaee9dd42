"""The watched folder: filesystem events become "look at this workflow again".

The folder is watched as a whole (never single files, which editors replace on save),
recursively so that a folder workflow's assets count. An event only names an entry to
look at again; what is on disk decides. If the folder itself disappears, its parent is
watched until it is back, and then everything is looked at again.

Watching never ends the daemon: when watchfiles fails (a name that is not UTF-8 makes
its Rust side raise, for one), the failure is logged and everything is looked at again,
since events may have been missed. A failed watch of the whole tree falls back at once to
the top level alone (a folder it cannot walk then costs only its own assets' events),
and the whole tree is tried again every ``RETRY_TREE`` seconds; a failed top-level watch
starts again after a growing pause.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
import watchfiles
from anyio.abc import TaskStatus

from aiflowd.workflows.yamlfile import printable

log = structlog.get_logger("aiflowd.watcher")

#: Milliseconds without further changes before a batch is handed on, and the longest a
#: batch may gather: small, because the time from a drop to a running job counts.
STEP_MS = 10
DEBOUNCE_MS = 100

#: The pause before watching again after a failure: doubled at each failure in a row,
#: up to the longest, and back to the first once a watch has run for ``HEALTHY`` seconds.
BACKOFF_FIRST, BACKOFF_LONGEST, HEALTHY = 0.1, 10.0, 60.0
#: While only the top level is watched, how often the whole tree is tried again.
RETRY_TREE = 10.0


def entry_of(root: str, path: str) -> str | None:
    """The top-level entry of the watched folder that ``path`` belongs to (None: not a workflow's)."""
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):
        return None
    top = relative.split(os.sep, 1)[0]
    if top in (".", "") or top.startswith((".", "_")) or top.endswith(("~", ".tmp", ".swp")):
        return None
    return os.path.join(root, top)


class FolderWatcher:
    """Calls ``on_entries`` with the entries that changed, ``on_rescan`` when all must be seen again."""

    def __init__(
        self,
        folder: str,
        on_entries: Callable[[set[str]], Awaitable[None]],
        on_rescan: Callable[[], Awaitable[None]],
    ) -> None:
        self.folder = os.path.abspath(folder)
        self.on_entries = on_entries
        self.on_rescan = on_rescan
        self._stop = anyio.Event()
        #: Failures of watchfiles so far (each one restarted the watch).
        self.failures = 0
        #: Whether the whole tree is watched (False: the top level only, after a failure;
        #: the whole tree is tried again every ``RETRY_TREE`` seconds, with a rescan).
        self.recursive = True
        self._started = False

    def close(self) -> None:
        """End watching promptly: the watch thread sees this at its next step, not at a time-out."""
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until closed; ready (``task_status``) once the first watch is in place."""
        backoff = BACKOFF_FIRST
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                await self._watch(task_status)
                return
            except Exception as err:  # noqa: BLE001 - watching must outlive any failure of watchfiles
                self.failures += 1
                if time.monotonic() - began > HEALTHY:
                    backoff = BACKOFF_FIRST
                if self.recursive:
                    # Perhaps a folder it cannot walk (a name that is not UTF-8): watch the
                    # top level alone at once, and try the whole tree again now and then.
                    self.recursive = False
                    log.error("watching failed: watching the top level only", folder=self.folder, error=_describe(err))
                else:
                    log.error("watching failed: watching again", folder=self.folder, error=_describe(err), pause=backoff)
                    with anyio.move_on_after(backoff):
                        await self._stop.wait()
                    backoff = min(backoff * 2, BACKOFF_LONGEST)
            self._ready(task_status)
            if not self._stop.is_set():
                await self.on_rescan()  # events may have been lost meanwhile

    def _ready(self, task_status: TaskStatus[None]) -> None:
        if not self._started:
            self._started = True
            task_status.started()

    async def _watch(self, task_status: TaskStatus[None]) -> None:
        """The watch loop proper: returns when closed, raises when watchfiles fails."""
        while True:
            if not os.path.isdir(self.folder):
                self._ready(task_status)
                await self._wait_for_folder()
                if self._stop.is_set():
                    return
                await self.on_rescan()
                continue
            if self._stop.is_set():
                return
            stop = self._stop
            recursive = self.recursive
            changes = watchfiles.awatch(
                self.folder,
                step=STEP_MS,
                debounce=DEBOUNCE_MS,
                stop_event=stop,
                recursive=recursive,
                rust_timeout=None if recursive else int(RETRY_TREE * 1000),
                yield_on_timeout=not recursive,
            )
            try:
                first = changes.__anext__()
                async with anyio.create_task_group() as tg:
                    batches: list[set[tuple[watchfiles.Change, str]]] = []

                    async def prime(first: Awaitable[set[tuple[watchfiles.Change, str]]], batches: list[Any]) -> None:
                        try:
                            batches.append(await first)
                        except StopAsyncIteration:  # stopped before any change
                            pass
                        except Exception as err:  # noqa: BLE001 - re-raised below, outside the task group
                            batches.append(err)

                    tg.start_soon(prime, first, batches)
                    # The watch is set up synchronously when the generator first runs, before
                    # its first wait: one turn of the loop later it is in place.
                    await anyio.sleep(0)
                    self._ready(task_status)
                if not batches:
                    return
                if isinstance(batches[0], Exception):
                    raise batches[0]
                if await self._handle(batches[0], recursive):
                    async for batch in changes:
                        if not await self._handle(batch, recursive):
                            break
            except (FileNotFoundError, StopAsyncIteration) as err:
                if os.path.isdir(self.folder):
                    raise  # not the folder going away: a failure, watched again after a pause
                log.info("watched folder went away", folder=self.folder, error=_describe(err))
            except RuntimeError as err:
                if os.path.isdir(self.folder):
                    raise
                log.info("watched folder went away", folder=self.folder, error=_describe(err))
            finally:
                await changes.aclose()
            if self._stop.is_set():
                return
            await self.on_rescan()

    async def _handle(self, batch: set[tuple[watchfiles.Change, str]], recursive: bool) -> bool:
        """Hand a batch on; False when this watch should end (the folder went, or it is
        time to try watching the whole tree again)."""
        if not batch and not recursive:
            self.recursive = True  # a time-out of the top-level watch: try the whole tree again
            return False
        if not os.path.isdir(self.folder):
            return False
        entries = {entry for _, path in batch if isinstance(path, str) and (entry := entry_of(self.folder, path)) is not None}
        if entries:
            await self.on_entries(entries)
        return os.path.isdir(self.folder)

    async def _wait_for_folder(self) -> None:
        parent = os.path.dirname(self.folder)
        while not os.path.isdir(self.folder) and not self._stop.is_set():
            if not os.path.isdir(parent):
                await anyio.sleep(1.0)  # not even the parent exists: nothing to watch but time
                continue
            stop = self._stop
            # yield_on_timeout: look again every second, so a folder made just before the
            # watch began is not missed.
            async for _ in watchfiles.awatch(
                parent, step=STEP_MS, debounce=DEBOUNCE_MS, stop_event=stop, recursive=False, rust_timeout=1000, yield_on_timeout=True
            ):
                if os.path.isdir(self.folder) or stop.is_set():
                    break


def _describe(err: BaseException) -> str:
    """One line for a failure, its sub-exceptions named (watchfiles raises them in a group)."""
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in err.exceptions)
    return printable(f"{type(err).__name__}: {err}")  # a path in it may hold bytes that are not UTF-8
