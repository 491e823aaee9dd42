"""``ai_flow.context.job_context``: ``job_config`` opens a job; ``current_job_name`` names it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ai_flow.context.workflow_config_loader import current_workflow_config

from aiflowd.model import JobConfig
from aiflowd.workflows import dsl
from aiflowd.workflows.errors import LoadError

__all__ = ["current_job_name", "job_config"]


@contextlib.contextmanager
def job_config(job_name: str) -> Iterator[JobConfig | None]:
    """Open job ``job_name`` (aiflowd's ``job_config``) and give its config from the YAML, as AIFlow does.

    The config is None when the workflow's YAML cannot be found or read: the daemon's
    loader reports a broken YAML file itself, at its line.
    """
    with dsl.job_config(job_name):
        try:
            config = current_workflow_config().job_configs.get(job_name)
        except (RuntimeError, LoadError):
            config = None
        yield config


def current_job_name() -> str | None:
    """The job this code runs in (from the job's environment), or the one a definition has open.

    None elsewhere, as in AIFlow.
    """
    return os.environ.get("AIFLOWD_JOB") or dsl.current_job()
