"""How python jobs run: their nodes in one local process, under the job's interpreter."""

from __future__ import annotations

import json
import os
import sys

from aiflowd.controllers.subprocess import Command, SubprocessController, aiflowd_import_path
from aiflowd.plugin_interface import Job, JobRuntimeEnv
from aiflowd.plugins.python.job import PythonJob


class PythonJobController(SubprocessController):
    """Runs a ``PythonJob``'s nodes in one process with ``aiflowd.runners.python_job``."""

    def command(self, job: Job, env: JobRuntimeEnv) -> Command:
        if not isinstance(job, PythonJob):
            raise TypeError(f"expected a PythonJob, got {type(job).__name__}")
        spec = {
            "workflow_dir": env.workflow_dir,
            "job_config": {"job_name": job.job_name, "job_type": job.job_type, "properties": job.job_config.properties},
            "job_execution_info": {
                "workflow_name": env.workflow_name,
                "job_name": env.job_name,
                "workflow_execution_id": env.job_execution_info.workflow_execution_id,
                "job_execution_id": env.job_execution_info.job_execution_id,
                "attempt": env.job_execution_info.attempt,
            },
            "nodes": job.nodes,
        }
        spec_path = os.path.join(env.working_dir, "job.json")
        with open(spec_path, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        python = job.python_executable or sys.executable
        extra = dict(job.env)
        extra.update(aiflowd_import_path(python, env.working_dir, extra.get("PYTHONPATH")))
        extra.setdefault("PYTHONUNBUFFERED", "1")
        # Bytecode caches would land in the watched workflow folder and look like changes.
        extra.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        # Warm (a fork of the fork server) unless turned off; another interpreter or an
        # import path of the job's own starts cold all the same (process_group.warm_module).
        warm = env.settings.get("warm_start", True)
        return Command([python, "-m", "aiflowd.runners.python_job", spec_path], extra, job.cwd, warm=warm)
