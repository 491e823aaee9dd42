"""The watched folder: filesystem events become "look at this workflow again".

The folder is watched as a whole (never single files, which editors replace on save),
recursively so that a folder workflow's assets count. An event only names an entry to
look at again; what is on disk decides. If the folder itself disappears, its parent is
watched until it is back, and then everything is looked at again.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
import watchfiles
from anyio.abc import TaskStatus

log = structlog.get_logger("aiflowd.watcher")

#: Milliseconds without further changes before a batch is handed on, and the longest a
#: batch may gather: small, because the time from a drop to a running job counts.
STEP_MS = 10
DEBOUNCE_MS = 100


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

    def close(self) -> None:
        """End watching promptly: the watch thread sees this at its next step, not at a time-out."""
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            if not os.path.isdir(self.folder):
                if not started:
                    task_status.started()
                    started = True
                await self._wait_for_folder()
                await self.on_rescan()
                continue
            if self._stop.is_set():
                return
            stop = self._stop
            changes = watchfiles.awatch(self.folder, step=STEP_MS, debounce=DEBOUNCE_MS, stop_event=stop, recursive=True)
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
                    if not started:
                        task_status.started()
                        started = True
                if not batches:
                    return
                if isinstance(batches[0], Exception):
                    raise batches[0]
                await self._handle(batches[0])
                async for batch in changes:
                    await self._handle(batch)
                    if not os.path.isdir(self.folder):
                        break
            except (FileNotFoundError, RuntimeError, StopAsyncIteration) as err:
                log.info("watched folder went away", folder=self.folder, error=str(err))
            finally:
                await changes.aclose()
            if self._stop.is_set():
                return
            await self.on_rescan()

    async def _handle(self, batch: set[tuple[watchfiles.Change, str]]) -> None:
        if not os.path.isdir(self.folder):
            return
        entries = {entry for _, path in batch if (entry := entry_of(self.folder, path)) is not None}
        if entries:
            await self.on_entries(entries)

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
