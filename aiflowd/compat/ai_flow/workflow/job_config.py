"""``ai_flow.workflow.job_config``: a job's config is aiflowd's ``JobConfig``.

It has AIFlow's ``job_name``, ``job_type``, ``properties`` and
``job_label_report_interval`` attributes (and aiflowd's scheduling knobs); build it
with keyword arguments, as its positional order differs from AIFlow's.
"""

from aiflowd.model import JobConfig

__all__ = ["JobConfig"]
