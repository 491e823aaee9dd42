"""``ai_flow.context.job_context``: ``job_config`` opens a job; ``current_job_name`` names it."""

from __future__ import annotations

import os

from aiflowd.workflows import dsl
from aiflowd.workflows.dsl import job_config

__all__ = ["current_job_name", "job_config"]


def current_job_name() -> str:
    """The job this code runs in (from the job's environment), or the one a definition has open."""
    name = os.environ.get("AIFLOWD_JOB") or dsl.current_job()
    if not name:
        raise RuntimeError("current_job_name() is known inside a job run by aiflowd, or inside 'with job_config(NAME):'")
    return name
