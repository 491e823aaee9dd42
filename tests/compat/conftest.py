"""Helpers of the AIFlow compatibility suite: write an AIFlow workflow folder, run it like run-once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiflowd.model import Status
from aiflowd.workflows.loader import WorkflowLoader

from ..conftest import REPO, run_execution, write


def aiflow_workflow(root: Path, name: str, yaml_text: str, definition: str | None = None, **extra_files: str) -> Path:
    """An AIFlow 0.3 workflow folder: ``NAME/NAME.yaml``, ``NAME/NAME.py`` and any other files."""
    folder = root / name
    write(folder / f"{name}.yaml", yaml_text)
    if definition is not None:
        write(folder / f"{name}.py", definition)
    for file_name, text in extra_files.items():
        write(folder / file_name, text)
    return folder


async def run_aiflow(loader: WorkflowLoader, folder: Path, tmp_path: Path, **kwargs: Any) -> tuple[Any, list[Any], dict[str, list[str]]]:
    """One execution of a workflow; returns it, its job runs, and each job's logs (one per run).

    Jobs import this checkout's aiflowd (job environments do not inherit PYTHONPATH).
    """
    settings = {"job_env": {"PYTHONPATH": str(REPO)}, **kwargs.pop("settings", {})}
    execution, runs = await run_execution(loader, folder, tmp_path, settings=settings, **kwargs)
    logs: dict[str, list[str]] = {}
    for run in runs:
        logs.setdefault(run.job, []).append(Path(run.env.log_path).read_text())
    return execution, runs, logs


def statuses(runs: list[Any]) -> dict[str, list[Status]]:
    """Each job's statuses, one per run, in start order."""
    result: dict[str, list[Status]] = {}
    for run in runs:
        result.setdefault(run.job, []).append(run.status)
    return result
