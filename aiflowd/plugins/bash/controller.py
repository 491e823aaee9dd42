"""How bash jobs run: their commands under bash, as one local process group."""

from __future__ import annotations

from aiflowd.controllers.subprocess import Command, SubprocessController
from aiflowd.plugin_interface import Job, JobRuntimeEnv
from aiflowd.plugins.bash.job import BashJob

#: Runs each argument as a bash script in turn; the first that fails ends the job with its status.
_IN_ORDER = 'for command in "$@"; do bash -c "$command" || exit $?; done'


class BashJobController(SubprocessController):
    """Runs a ``BashJob``'s command with ``bash -c``; several commands one after the other."""

    def command(self, job: Job, env: JobRuntimeEnv) -> Command:
        if not isinstance(job, BashJob):
            raise TypeError(f"expected a BashJob, got {type(job).__name__}")
        if len(job.bash_commands) == 1:
            argv = ["bash", "-c", job.bash_commands[0]]
        else:
            argv = ["bash", "-c", _IN_ORDER, "aiflowd-bash", *job.bash_commands]
        extra = dict(job.env)
        # AIFlow's bash jobs read their execution's context here (aiflowd's: a JSON object of its ids).
        extra["WORKFLOW_EXECUTION_CONTEXT"] = env.job_execution_info.execution_context
        return Command(argv, extra, job.cwd)
