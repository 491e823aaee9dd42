"""The watched folder as the engine sees it: which workflows are there, loaded and handed on.

The watcher only says "look at this entry again"; this module decides what is on disk
(a workflow, a removal, a no-op save, an entry that cannot be read) and posts the outcome
to the engine. It never raises into the daemon: whatever goes wrong with one entry
becomes a problem of that entry.

Loads run in parallel: a few workers look at queued workflows, and a load that reaches
the compiler keeps its worker while another takes over the queue; definitions compile on
a bounded pool (``max_parallel_loads``), so one slow definition delays only itself and
YAML-only workflows never wait for one. A workflow is looked at by one worker at a time:
a change during its load is looked at when the load ends, and the latest content wins. What a definition writes into its own folder
while it compiles belongs to the version that load produced, so it triggers no reload:
file stats are taken before and after each load, and files other than the YAML and the
definition that changed meanwhile are hashed into that version. (A user's edit of an
asset in that very window is therefore seen only at its next save.)
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from aiflowd.engine import RETIRED, Engine, WorkflowEntry, _workflow_name
from aiflowd.model import Status
from aiflowd.workflows.errors import LoadError, Problem
from aiflowd.workflows.loader import (
    LoadedWorkflow,
    WorkflowLoader,
    WorkflowSource,
    discover,
    find_source,
    is_entry,
    workflow_stamp,
    workflow_version,
)
from aiflowd.workflows.yamlfile import printable

log = structlog.get_logger("aiflowd")

Result = LoadedWorkflow | LoadError
#: A workflow's files by (inode, size, mtime), and the ones its loader reads itself.
_Stamp = tuple[dict[str, tuple[int, int, int]], set[str]]

#: Workers that look at workflows and load them, not counting those whose load waits for
#: or runs the compiler: each of those is replaced by a new worker, so that YAML-only
#: workflows never queue behind definitions. Reading YAML is short and holds the GIL, so
#: a few workers are as fast as many, and a folder of thousands of workflows costs a few
#: tasks, not thousands.
WORKERS = 2
#: Workflows a worker looks at per thread hop (a hop costs about as much as reading a
#: small YAML file).
BATCH = 64
#: Threads for those workers, compiling ones included (each waits for a compile slot or a
#: compiler process, without CPU); beyond this many, loads wait their turn.
LOAD_THREADS = 256


@dataclass
class _Slot:
    """A workflow to look at (queued, or with one worker): never two looks at once."""

    path: str
    #: Looked at again while loading: look once more when this load ends.
    again: bool = False
    #: Load invalid versions again even when the files are the same (a reload may have
    #: brought the plugin they lacked).
    force: bool = False
    #: The load waits for or runs the compiler: the slow part, not awaited at start.
    compiling: bool = False
    #: A folder with a Python definition: it will compile, so the start does not wait for
    #: it even while it still waits for a thread to be looked at.
    defined: bool = False


@dataclass
class _Batch:
    """Workflows one worker looks at in one thread hop, and what it found."""

    names: deque[str]
    done: list[tuple[str, tuple[str, str | None, Result | None]]] = field(default_factory=list)
    #: One of them compiles: the worker is held, the rest went back to the queue.
    slow: bool = False


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
        self._queue: deque[str] = deque()  # names of slots no worker has taken yet
        self._fast_workers = 0  # workers not held by a compiling load
        self._loader_seen: tuple[Any, ...] = ()  # what loaded the invalid versions (see rescan)

    # -- the initial scan ------------------------------------------------------------

    async def scan(self, task_group: TaskGroup, max_parallel_loads: int | None = None) -> tuple[list[tuple[str, Result]], set[str]]:
        """Start loading every workflow; return what the engine must have before it serves.

        Returns the loads that are done and the names of those still compiling: once
        every load is done but the compiling ones of workflows with no open execution
        (an open execution needs its version to be taken over), the engine can serve;
        the rest are handed to it as they finish. Load tasks run in ``task_group``.
        """
        self._task_group = task_group
        self._loader_seen = self._loader_stamp()
        task_group.start_soon(self._stop_loads_on_exit)
        if max_parallel_loads:
            self.loader.limit_compiles(max_parallel_loads)
        try:
            rows = self.engine.store.executions(status=Status.RUNNING.value, limit=100_000)
            needed = {row["workflow"] for row in rows}
        except Exception:  # then no open execution is taken over early; the store says why elsewhere
            log.exception("open executions unknown at start")
            needed = set()
        # Workflows without a definition first: they are quick, and must not queue for a
        # load thread behind definitions that hold threads while they wait to compile.
        found = sorted(await anyio.to_thread.run_sync(_discover_with_definitions, self.folder), key=lambda entry: entry[1])
        for path, defined in found:
            self._request(path)
            slot = self._slots.get(_workflow_name(printable(path)))
            if slot is not None:
                slot.defined = defined
        while any(not (slot.compiling or slot.defined) or name in needed for name, slot in self._slots.items()):
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
        """Look at everything again (the watcher restarted, the folder came back, a reload).

        Unchanged files are not loaded again, except invalid ones when the loader changed
        (a reload brought a plugin, a longer compile_timeout): a watcher that restarts
        often never recompiles a looping definition each time.
        """
        try:
            stamp = self._loader_stamp()
            force, self._loader_seen = stamp != self._loader_seen, stamp
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
                self._request(path, force=force)
        except Exception:  # a failed rescan must not end the daemon; the next event looks again
            log.exception("rescan failed", folder=self.folder)

    def _loader_stamp(self) -> tuple[Any, ...]:
        settings = self.loader.settings
        return (tuple(self.loader.registry.job_types()), settings.compile_timeout, tuple(settings.plugin_paths), settings.python)

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
        self._slots[name] = _Slot(path, force=force)
        self.loading[name] = printable(path)
        self._queue.append(name)
        self._add_workers()

    def _add_workers(self) -> None:
        assert self._task_group is not None
        while self._fast_workers < min(WORKERS, len(self._queue)):
            self._fast_workers += 1
            self._task_group.start_soon(self._worker)

    async def _worker(self) -> None:
        """Looks at queued workflows, a batch per thread hop, until none is left (or, back
        from a compile, it is one worker too many)."""
        try:
            while self._queue and self._fast_workers <= WORKERS:
                batch = _Batch(deque(self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))))
                try:
                    await anyio.to_thread.run_sync(self._look_batch, batch, limiter=self._threads)
                finally:
                    if batch.slow:
                        self._fast_workers += 1  # free again
                await self._apply_all(batch.done)
        finally:
            self._fast_workers -= 1

    def _look_batch(self, batch: _Batch) -> None:
        """In a worker thread: look at each workflow of the batch, until one of them
        compiles (the rest then go back to the queue, for other workers)."""
        while batch.names:
            name = batch.names.popleft()
            slot = self._slots[name]
            seen, force = self._seen.get(name), slot.force
            slot.force = False

            def compiling(slot: _Slot = slot) -> None:
                anyio.from_thread.run_sync(self._compiling, batch, slot)

            try:
                outcome = self._look(slot.path, seen, force, compiling)
            except Exception as err:  # one entry's failure is that entry's problem
                log.exception("looking at a workflow failed", path=printable(slot.path))
                shown = printable(slot.path)
                outcome = ("loaded", None, LoadError([Problem(shown, 0, 0, "", f"aiflowd could not look at it: {err!r}")]))
            batch.done.append((name, outcome))

    async def _apply(self, name: str, slot: _Slot, outcome: tuple[str, str | None, Result | None]) -> None:
        """Hand a look's outcome on; look again if the workflow changed meanwhile, else end its slot."""
        kind, version, result = outcome
        shown = printable(slot.path)
        try:
            if kind == "gone":
                self._gone(name, shown)
            elif kind == "stale":
                slot.again = True  # the user saved meanwhile: the latest content wins
            elif kind == "loaded" and result is not None:
                if slot.again and await anyio.to_thread.run_sync(_version, slot.path, limiter=self._threads) != version:
                    pass  # changed since: not handed on, the next look loads the latest
                else:
                    slot.again = False
                    self._hand_on(name, shown, version, result)
        except Exception:  # never into the daemon: the next change looks again
            log.exception("handing on a workflow failed", path=shown)
        if slot.again:
            slot.again, slot.compiling = False, False
            self._queue.append(name)
            self._add_workers()
            return
        del self._slots[name]
        self.loading.pop(name, None)
        self._progress.set()

    def _look(self, path: str, seen: _Seen | None, force: bool, on_compile: Callable[[], None]) -> tuple[str, str | None, Result | None]:
        """In a worker thread, all a look needs: "gone", "same", "stale" or "loaded", the version, the result."""
        if not is_entry(path, self.folder):
            return "gone", None, None
        try:
            source = find_source(path)
        except LoadError as err:
            return "loaded", None, err  # an entry that is not read: its one problem line
        version = workflow_version(source)
        if seen is not None and seen.version == version and (seen.valid or not force):
            return "same", version, None  # a no-op save, a touch, a definition's own writes
        before = _stamp_of(source)
        result = self._load(source, version, on_compile)
        after = _stamp(path) if source.path != source.config_file else _stamp_of(source)  # a file has no definition to appear
        if after != before:
            if after is None or _sources_changed(before, after):
                return "stale", None, None
            # Other files were written while it loaded: by its own definition, as part of
            # this version (or it would reload for ever on its own writes).
            version = workflow_version(source)
            if isinstance(result, LoadedWorkflow):
                result.workflow.version = version
        return "loaded", version, result

    def _compiling(self, batch: _Batch, slot: _Slot) -> None:
        slot.compiling = True
        if not batch.slow:
            batch.slow = True
            self._fast_workers -= 1  # its worker waits for the compiler: the others take over
            self._queue.extendleft(reversed(batch.names))
            batch.names.clear()
            self._add_workers()
            done, batch.done = batch.done, []  # looked at before it: handed on now, not after the compile
            assert self._task_group is not None
            self._task_group.start_soon(self._apply_all, done)
        self._progress.set()

    async def _apply_all(self, done: list[tuple[str, tuple[str, str | None, Result | None]]]) -> None:
        for name, outcome in done:
            await self._apply(name, self._slots[name], outcome)

    def _hand_on(self, name: str, shown: str, version: str | None, result: Result) -> None:
        self._seen[name] = _Seen(version, isinstance(result, LoadedWorkflow))
        if self._serving:
            self.engine.loaded(shown, result)
        else:
            self._initial[name] = (shown, result)

    def _gone(self, name: str, shown: str) -> None:
        self._seen.pop(name, None)
        if not self._serving:
            self._initial.pop(name, None)
            return
        entry = self.engine.workflows.get(name)
        if entry is not None and entry.status != RETIRED and entry.path == shown:
            self.engine.removed(name)

    def _load(self, source: WorkflowSource, version: str | None, on_compile: Callable[[], None]) -> Result:
        try:
            return self.loader.load_source(source, version, on_compile)
        except LoadError as err:
            return err
        except Exception as err:  # a loader bug is this workflow's problem, not the daemon's
            log.exception("loading failed", path=printable(source.path))
            return LoadError([Problem(source.path, 0, 0, "", f"aiflowd could not load it: {type(err).__name__}: {err}")])


def _discover_with_definitions(folder: str) -> list[tuple[str, bool]]:
    """The folder's entries, each with whether it is a folder holding a Python definition."""
    found = []
    for path in discover(folder):
        name = os.path.basename(path)
        found.append((path, os.path.isfile(os.path.join(path, f"{name}.py"))))
    return found


def _version(path: str) -> str | None:
    """The hash of a workflow's files; None when it is no workflow to read (its load says why)."""
    try:
        return workflow_version(find_source(path))
    except LoadError:
        return None


def _stamp(path: str) -> _Stamp | None:
    try:
        return _stamp_of(find_source(path))
    except LoadError:
        return None


def _stamp_of(source: WorkflowSource) -> _Stamp:
    """The workflow's files by their metadata, and which of them the loader itself reads."""
    stamp = {file: (ino, size, mtime) for file, ino, size, mtime in workflow_stamp(source)}
    return stamp, {source.config_file, source.definition_file or ""}


def _sources_changed(before: _Stamp, after: _Stamp) -> bool:
    """Whether a file the loader reads (the YAML, the definition) changed, or the set of them."""
    (old, sources), (new, now) = before, after
    return sources != now or any(old.get(file) != new.get(file) for file in sources)
