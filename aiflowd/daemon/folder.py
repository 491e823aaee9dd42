"""The watched folder as the engine sees it: which workflows are there, loaded and handed on.

The watcher only says "look at this entry again"; this module decides what is on disk
(a workflow, a removal, a no-op save, an entry that cannot be read) and posts the outcome
to the engine. It never raises into the daemon: whatever goes wrong with one entry
becomes a problem of that entry.

Loads run in parallel, one task per workflow: YAML is read at once, Python definitions
compile on a bounded pool (``max_parallel_loads``), so one slow definition delays only
itself. A workflow never has two loads at once: a change during a load is looked at
when it ends, and the latest content wins. What a definition writes into its own folder
while it compiles belongs to the version that load produced, so it triggers no reload:
file stats are taken before and after each load, and files other than the YAML and the
definition that changed meanwhile are hashed into that version. (A user's edit of an
asset in that very window is therefore seen only at its next save.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from aiflowd.engine import RETIRED, Engine, WorkflowEntry, _workflow_name
from aiflowd.model import Status
from aiflowd.workflows.errors import LoadError, Problem
from aiflowd.workflows.loader import LoadedWorkflow, WorkflowLoader, discover, find_source, is_entry, workflow_stamp, workflow_version
from aiflowd.workflows.yamlfile import printable

log = structlog.get_logger("aiflowd")

Result = LoadedWorkflow | LoadError
#: A workflow's files by (inode, size, mtime), and the ones its loader reads itself.
_Stamp = tuple[dict[str, tuple[int, int, int]], set[str]]

#: Threads that may load at once. Loads waiting for a compile slot hold a thread but no
#: CPU; this only keeps a folder of thousands of workflows from starting thousands.
LOAD_THREADS = 64


@dataclass
class _Slot:
    """The one load task of one workflow."""

    path: str
    #: Looked at again while loading: look once more when this load ends.
    again: bool = False
    #: Load invalid versions again even when the files are the same (a reload may have
    #: brought the plugin they lacked).
    force: bool = False
    #: The load waits for or runs the compiler: the slow part, not awaited at start.
    compiling: bool = False


@dataclass
class _Seen:
    """What the engine was last given for a workflow: the hash of its files, and if it was valid."""

    version: str | None
    valid: bool


class WorkflowFolder:
    """Loads what the watched folder holds and tells the engine about each change."""

    def __init__(self, folder: str, loader: WorkflowLoader, engine: Engine) -> None:
        self.folder = folder
        self.loader = loader
        self.engine = engine
        #: Workflow name -> path of every load under way (``aiflowctl workflow list`` shows
        #: those the engine does not serve yet as "loading").
        self.loading: dict[str, str] = {}
        self._slots: dict[str, _Slot] = {}
        self._seen: dict[str, _Seen] = {}
        self._task_group: TaskGroup | None = None
        self._serving = False
        self._initial: dict[str, tuple[str, Result]] = {}
        self._progress = anyio.Event()
        self._threads = anyio.CapacityLimiter(LOAD_THREADS)

    # -- the initial scan ------------------------------------------------------------

    async def scan(self, task_group: TaskGroup, max_parallel_loads: int | None = None) -> tuple[list[tuple[str, Result]], set[str]]:
        """Start loading every workflow; return what the engine must have before it serves.

        Returns the loads that are done and the names of those still compiling: once
        every load is done but the compiling ones of workflows with no open execution
        (an open execution needs its version to be taken over), the engine can serve;
        the rest are handed to it as they finish. Load tasks run in ``task_group``.
        """
        self._task_group = task_group
        task_group.start_soon(self._stop_loads_on_exit)
        if max_parallel_loads:
            self.loader.limit_compiles(max_parallel_loads)
        try:
            rows = self.engine.store.executions(status=Status.RUNNING.value, limit=100_000)
            needed = {row["workflow"] for row in rows}
        except Exception:  # then no open execution is taken over early; the store says why elsewhere
            log.exception("open executions unknown at start")
            needed = set()
        for path in await anyio.to_thread.run_sync(discover, self.folder):
            self._request(path)
        while any(not slot.compiling or name in needed for name, slot in self._slots.items()):
            self._progress = anyio.Event()
            await self._progress.wait()
        self._serving = True
        initial = list(self._initial.values())
        self._initial.clear()
        return initial, set(self._slots)

    async def _stop_loads_on_exit(self) -> None:
        # Cancelled with the daemon's task group: loads still waiting for a compile slot
        # then end at once instead of each compiling before the daemon may exit.
        try:
            await anyio.sleep_forever()
        finally:
            self.loader.stopping.set()

    # -- looking again -------------------------------------------------------------

    async def entries_changed(self, entries: set[str]) -> None:
        """The watcher saw changes under these top-level entries."""
        for path in sorted(entries):
            self._request(path)

    async def rescan(self) -> None:
        """Look at everything again (the watcher restarted, the folder came back, a reload)."""
        try:
            present = await anyio.to_thread.run_sync(discover, self.folder) if os.path.isdir(self.folder) else []
            names = {_workflow_name(printable(path)) for path in present}
            for name, entry in list(self.engine.workflows.items()):
                if entry.status == RETIRED or name in names:
                    continue
                if name in self._slots:
                    self._slots[name].again = True  # its load finds it gone and says so
                else:
                    self._gone(name, entry.path)
            for path in present:
                self._request(path, force=True)
        except Exception:  # a failed rescan must not end the daemon; the next event looks again
            log.exception("rescan failed", folder=self.folder)

    def loading_rows(self, known: Mapping[str, WorkflowEntry]) -> list[dict[str, Any]]:
        """``workflow list`` rows for workflows still loading that the engine does not serve yet."""
        return [
            {"workflow": name, "status": "loading", "version": None, "paused": False, "problems": 0, "executions_running": 0, "path": path}
            for name, path in sorted(self.loading.items())
            if name not in known or known[name].status == RETIRED
        ]

    def _request(self, path: str, force: bool = False) -> None:
        if self._task_group is None:
            return  # before the initial scan: it sees the folder as it is then
        name = _workflow_name(printable(path))
        slot = self._slots.get(name)
        if slot is not None:
            slot.path, slot.again, slot.force = path, True, slot.force or force
            return
        slot = self._slots[name] = _Slot(path, force=force)
        self.loading[name] = printable(path)
        self._task_group.start_soon(self._serve_slot, name, slot)

    async def _serve_slot(self, name: str, slot: _Slot) -> None:
        try:
            while True:
                slot.again = False
                try:
                    await self._look_again(name, slot)
                except Exception as err:  # one entry's failure is that entry's problem
                    log.exception("looking at a workflow failed", path=printable(slot.path))
                    shown = printable(slot.path)
                    self._hand_on(name, shown, None, LoadError([Problem(shown, 0, 0, "", f"aiflowd could not look at it: {err!r}")]))
                if not slot.again:
                    return
        finally:
            del self._slots[name]
            self.loading.pop(name, None)
            self._progress.set()

    async def _look_again(self, name: str, slot: _Slot) -> None:
        path, shown = slot.path, printable(slot.path)
        if not await anyio.to_thread.run_sync(is_entry, path, self.folder, limiter=self._threads):
            self._gone(name, shown)
            return
        version = await anyio.to_thread.run_sync(_version, path, limiter=self._threads)
        seen = self._seen.get(name)
        if version is not None and seen is not None and seen.version == version and (seen.valid or not slot.force):
            return  # the same content: a no-op save, a touch, a definition's own writes
        slot.force = False

        def compiling() -> None:
            anyio.from_thread.run_sync(self._compiling, slot)

        before = await anyio.to_thread.run_sync(_stamp, path, limiter=self._threads)
        result = await anyio.to_thread.run_sync(self._load, path, version, compiling, limiter=self._threads)
        after = await anyio.to_thread.run_sync(_stamp, path, limiter=self._threads)
        if after != before:
            if before is None or after is None or _sources_changed(before, after):
                slot.again = True  # the user saved meanwhile: this result is stale, the latest content wins
                return
            # Other files were written while it loaded: by its own definition, as part of
            # this version (or it would reload for ever on its own writes).
            version = await anyio.to_thread.run_sync(_version, path, limiter=self._threads)
            if isinstance(result, LoadedWorkflow) and version is not None:
                result.workflow.version = version
        if slot.again:
            if await anyio.to_thread.run_sync(_version, path, limiter=self._threads) != version:
                return  # changed since: the latest content wins, this result is not handed on
            slot.again = False
        self._hand_on(name, shown, version, result)

    def _compiling(self, slot: _Slot) -> None:
        slot.compiling = True
        self._progress.set()

    def _hand_on(self, name: str, shown: str, version: str | None, result: Result) -> None:
        self._seen[name] = _Seen(version, isinstance(result, LoadedWorkflow))
        if self._serving:
            self.engine.post("loaded", (shown, result))
        else:
            self._initial[name] = (shown, result)

    def _gone(self, name: str, shown: str) -> None:
        self._seen.pop(name, None)
        if not self._serving:
            self._initial.pop(name, None)
            return
        entry = self.engine.workflows.get(name)
        if entry is not None and entry.status != RETIRED and entry.path == shown:
            self.engine.post("removed", name)

    def _load(self, path: str, version: str | None, on_compile: Any) -> Result:
        try:
            return self.loader.load(path, version, on_compile)
        except LoadError as err:
            return err
        except Exception as err:  # a loader bug is this workflow's problem, not the daemon's
            log.exception("loading failed", path=printable(path))
            shown = printable(path)
            return LoadError([Problem(shown, 0, 0, "", f"aiflowd could not load it: {type(err).__name__}: {err}")])


def _version(path: str) -> str | None:
    """The hash of a workflow's files; None when it is no workflow to read (its load says why)."""
    try:
        return workflow_version(find_source(path))
    except LoadError:
        return None


def _stamp(path: str) -> _Stamp | None:
    """The workflow's files by their metadata, and which of them the loader itself reads."""
    try:
        source = find_source(path)
    except LoadError:
        return None
    stamp = {file: (ino, size, mtime) for file, ino, size, mtime in workflow_stamp(source)}
    return stamp, {source.config_file, source.definition_file or ""}


def _sources_changed(before: _Stamp, after: _Stamp) -> bool:
    """Whether a file the loader reads (the YAML, the definition) changed, or the set of them."""
    (old, sources), (new, now) = before, after
    return sources != now or any(old.get(file) != new.get(file) for file in sources)
