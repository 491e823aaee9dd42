"""The ``bash`` job type: one ``BashProcessor`` command run by ``bash -c`` in its own process group.

Properties: ``env`` (merged over the clean job environment, values made strings), ``cwd``
(relative to the execution's working folder), ``timeout`` (seconds or a duration).
"""

from __future__ import annotations

from aiflowd.model import AISubGraph, JobConfig
from aiflowd.plugin_interface import Job, JobController, JobGenerationError, JobGenerator, JobPluginFactory
from aiflowd.plugins.common import check_common_properties


class BashProcessor:
    """Runs ``bash_command`` with bash; ``output_encoding`` is how its log is decoded for display."""

    def __init__(self, bash_command: str, output_encoding: str = "utf-8") -> None:
        self.bash_command = bash_command
        self.output_encoding = output_encoding

    def __repr__(self) -> str:
        return f"BashProcessor({self.bash_command!r})"


class BashJob(Job):
    """A bash job ready to run: the command and the job's properties."""

    def __init__(self, job_config: JobConfig, bash_command: str, output_encoding: str, env: dict[str, str], cwd: str | None) -> None:
        super().__init__(job_config)
        self.bash_command = bash_command
        self.output_encoding = output_encoding
        self.env = env
        self.cwd = cwd


class BashJobGenerator(JobGenerator):
    def generate(self, sub_graph: AISubGraph, job_config: JobConfig, resource_dir: str | None = None) -> Job:
        env, cwd = check_common_properties(job_config.properties, allowed={"env", "cwd", "timeout"})
        nodes = list(sub_graph.nodes.values())
        if len(nodes) != 1:
            raise JobGenerationError(f"a bash job runs exactly one BashProcessor; this one has {len(nodes)} nodes")
        node = nodes[0]
        processor = node.processor
        if not isinstance(processor, BashProcessor):
            kind = getattr(processor, "class_name", type(processor).__name__)
            raise JobGenerationError(f"node '{node.node_id}' has a {kind}; job type bash needs a BashProcessor", node=node.node_id)
        if not isinstance(processor.bash_command, str) or not processor.bash_command.strip():
            raise JobGenerationError("bash_command must be a non-empty string", node=node.node_id, key="bash_command")
        return BashJob(job_config, processor.bash_command, processor.output_encoding, env, cwd)


class BashJobPluginFactory(JobPluginFactory):
    def job_type(self) -> str:
        return "bash"

    def get_job_generator(self) -> JobGenerator:
        return BashJobGenerator()

    def get_job_controller(self) -> JobController:
        from aiflowd.controllers.subprocess import BashJobController  # the OS-facing part loads only in the daemon

        return BashJobController()


def plugin_factory() -> JobPluginFactory:
    return BashJobPluginFactory()
