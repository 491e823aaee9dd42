"""``ai_flow.workflow.workflow_config``: a workflow's YAML as AIFlow code reads it.

``current_workflow_config().job_configs['job_1'].properties['a']`` is how AIFlow jobs
read their free-form properties; this reads the same YAML the daemon loaded, safely
(no Python tags, bounded size), and keeps every key as written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from aiflowd.model import JobConfig

#: Top-level keys that configure the workflow rather than name a job.
WORKFLOW_PROPERTIES = "properties"
WORKFLOW_DEPENDENCIES = "dependencies"
PERIODIC_CONFIG = "periodic_config"
_WORKFLOW_KEYS = {WORKFLOW_PROPERTIES, WORKFLOW_DEPENDENCIES, PERIODIC_CONFIG, "on_change", "start_new_workflow_execution_on_events"}

__all__ = ["WorkflowConfig", "load_workflow_config"]


@dataclass
class WorkflowConfig:
    """A workflow's name, its jobs' configs and its own settings, as in AIFlow.

    Periodic configs are the YAML mappings as written (``{'cron': ...}`` or
    ``{'interval': ...}``).
    """

    workflow_name: str | None = None
    job_configs: dict[str, JobConfig] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    dependencies: dict[str, Any] | None = None
    periodic_config: dict[str, Any] | None = None
    job_periodic_config_dict: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_job_config(self, config_key: str, job_config: JobConfig) -> None:
        self.job_configs[config_key] = job_config


def load_workflow_config(config_path: str) -> WorkflowConfig:
    """Read a workflow YAML file; the workflow is named after the file (``NAME.yaml``).

    Raises ``aiflowd.workflows.errors.LoadError`` (a located message) on a file that is
    not valid YAML; the daemon's loader reports everything else.
    """
    from aiflowd.workflows.yamlfile import read_yaml  # needs PyYAML: imported only when asked

    data = read_yaml(config_path).data or {}
    name = os.path.splitext(os.path.basename(config_path))[0]
    if name == "workflow":  # the NAME/workflow.yaml form is named after its folder
        name = os.path.basename(os.path.dirname(os.path.abspath(config_path)))
    config = WorkflowConfig(workflow_name=name)
    if not isinstance(data, dict):
        return config
    config.properties = dict(data.get(WORKFLOW_PROPERTIES) or {})
    config.dependencies = data.get(WORKFLOW_DEPENDENCIES)
    config.periodic_config = data.get(PERIODIC_CONFIG)
    for job_name, job in data.items():
        if job_name in _WORKFLOW_KEYS or not isinstance(job, dict):
            continue
        interval = job.get("job_label_report_interval")
        config.add_job_config(
            str(job_name),
            JobConfig(
                job_name=str(job_name),
                job_type=str(job.get("job_type") or ""),
                properties=dict(job.get("properties") or {}),
                job_label_report_interval=5.0 if interval is None else interval,
            ),
        )
        if job.get(PERIODIC_CONFIG) is not None:
            config.job_periodic_config_dict[str(job_name)] = job[PERIODIC_CONFIG]
    return config
