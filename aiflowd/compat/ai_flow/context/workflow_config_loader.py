"""``ai_flow.context.workflow_config_loader``: ``current_workflow_config()``.

Inside a job the workflow comes from the job's environment (``AIFLOWD_WORKFLOW`` and
``AIFLOWD_WORKFLOW_DIR``, which aiflowd sets for every job); in a definition, from the
file that called ``init_ai_flow_context()``.
"""

from __future__ import annotations

import os

from ai_flow.api.ai_flow_context import workflow_entry_file
from ai_flow.workflow.workflow_config import WorkflowConfig, load_workflow_config

__all__ = ["current_workflow_config"]


def current_workflow_config() -> WorkflowConfig:
    """The config of the workflow this code runs for, read from its YAML file."""
    path = _workflow_yaml()
    if path is None:
        raise RuntimeError(
            "current_workflow_config() needs to know the workflow: call it inside a job run by aiflowd, "
            "or in a definition after init_ai_flow_context()"
        )
    return load_workflow_config(path)


def _workflow_yaml() -> str | None:
    name, folder = os.environ.get("AIFLOWD_WORKFLOW"), os.environ.get("AIFLOWD_WORKFLOW_DIR")
    if not (name and folder):
        entry = workflow_entry_file()
        if entry is None:
            return None
        name, folder = os.path.splitext(os.path.basename(entry))[0], os.path.dirname(entry)
    for candidate in (f"{name}.yaml", f"{name}.yml", "workflow.yaml"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None
