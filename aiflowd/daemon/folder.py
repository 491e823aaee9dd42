"""The watched folder as the engine sees it: which workflows are there, loaded and handed on.

The watcher only says "look at this entry again"; this module decides what is on disk
(a workflow, a removal, a no-op save) and posts the outcome to the engine.
"""

from __future__ import annotations

import os

import anyio
import structlog

from aiflowd.engine import ACTIVE, RETIRED, Engine, _workflow_name
from aiflowd.workflows.errors import LoadError, Problem
from aiflowd.workflows.loader import LoadedWorkflow, WorkflowLoader, discover, find_source, is_workflow_folder, workflow_version

log = structlog.get_logger("aiflowd")


class WorkflowFolder:
    """Loads what the watched folder holds and tells the engine about each change."""

    def __init__(self, folder: str, loader: WorkflowLoader, engine: Engine) -> None:
        self.folder = folder
        self.loader = loader
        self.engine = engine

    def load_all(self) -> list[tuple[str, LoadedWorkflow | LoadError]]:
        """Every workflow in the folder, loaded (for the initial scan, before the engine serves)."""
        return [(path, self._load(path)) for path in discover(self.folder)]

    def _load(self, path: str, version: str | None = None) -> LoadedWorkflow | LoadError:
        try:
            return self.loader.load(path, version)
        except LoadError as err:
            return err
        except Exception as err:
            log.exception("loading failed", path=path)
            return LoadError([Problem(path, 0, 0, "", f"aiflowd could not load it: {type(err).__name__}: {err}")])

    async def entries_changed(self, entries: set[str]) -> None:
        for path in sorted(entries):
            await self._look_again(path)

    async def _look_again(self, path: str) -> None:
        name = _workflow_name(path)
        is_workflow = (os.path.isdir(path) and is_workflow_folder(path)) or (os.path.isfile(path) and path.endswith((".yaml", ".yml")))
        entry = self.engine.workflows.get(name)
        if not is_workflow:
            if entry is not None and entry.status != RETIRED and entry.path == path:
                self.engine.removed(name)
            return
        version = None
        if entry is not None and entry.status == ACTIVE and entry.loaded is not None and not entry.problems:
            try:
                version = await anyio.to_thread.run_sync(workflow_version, find_source(path))
            except LoadError:
                version = None
            if version == entry.loaded.workflow.version:
                return  # the same content: a no-op save, a touch, a bytecode cache
        result = await anyio.to_thread.run_sync(self._load, path, version)  # hashed once, not again
        self.engine.loaded(path, result)

    async def rescan(self) -> None:
        present = discover(self.folder) if os.path.isdir(self.folder) else []
        names = {_workflow_name(path) for path in present}
        for name, entry in list(self.engine.workflows.items()):
            if entry.status != RETIRED and name not in names:
                self.engine.removed(name)
        for path in present:
            await self._look_again(path)
