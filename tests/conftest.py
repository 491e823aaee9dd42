"""Shared fixtures: a fresh plugin registry and loader, and helpers to write workflows."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiflowd.plugin_interface import PluginRegistry
from aiflowd.workflows.loader import LoaderSettings, WorkflowLoader

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Any]:
    """A real aiflowd process on ``tmp_path``, started (READY) and closed after the test."""
    from .daemon_harness import Daemon  # the harness imports this module's helpers

    running = Daemon(tmp_path)
    try:
        yield running.start()
    finally:
        running.close()


@pytest.fixture
def registry() -> PluginRegistry:
    registry = PluginRegistry()
    assert registry.load_builtin() == []
    return registry


@pytest.fixture
def loader(registry: PluginRegistry) -> WorkflowLoader:
    return WorkflowLoader(registry, LoaderSettings(compile_timeout=10))


def write(path: Path, text: str) -> Path:
    """Write dedented text to a file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for running the real CLI: this venv's bin first on the PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Poll a condition until it holds (returns its value) or fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def run_execution(  # type: ignore[no-untyped-def]
    loader: WorkflowLoader,
    path: Path,
    tmp_path: Path,
    *,
    only_job: str | None = None,
    settings: dict | None = None,
    during=None,
):
    """Load a workflow and run one execution with the engine (store in memory), as run-once does.

    ``during(engine, runs)`` runs beside the execution (to send events); returns the
    ended execution and its job runs in start order.
    """
    import anyio

    from aiflowd.engine import Engine, EnginePaths
    from aiflowd.store import Store

    runs: list = []

    def changed(run) -> None:  # type: ignore[no-untyped-def]
        if run not in runs:
            runs.append(run)

    store = Store(":memory:")
    engine = Engine(
        loader.registry,
        store,
        EnginePaths(str(tmp_path / "state"), str(tmp_path / "logs")),
        # Job environments drop PYTHONPATH: give it back, so that jobs run this checkout's aiflowd.
        settings={"stop_grace_period": 2.0, "run_dir": str(tmp_path / "run"), "job_env": {"PYTHONPATH": str(REPO)}, **(settings or {})},
        keep_open_for_events=False,
        on_job_change=changed,
    )
    loaded = loader.load(str(path))
    async with anyio.create_task_group() as tg:
        await tg.start(engine.serve)
        execution = await engine.request(lambda e: e.run_workflow(loaded, only_job))
        if during is not None:
            tg.start_soon(during, engine, runs)
        await execution.ended.wait()
        tg.cancel_scope.cancel()
    store.close()
    return execution, runs
