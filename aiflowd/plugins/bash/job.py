"""The ``bash`` job type: ``BashProcessor`` commands run by bash in the job's own process group.

A job runs its processors one after the other (in the order of their data edges, else
as defined) and stops at the first that fails, as AIFlow runs several ``BashProcessor``s
of one job. In YAML a bash job is ``bash_command`` (and ``output_encoding``).
Properties: ``env`` (merged over the clean job environment, values made strings), ``cwd``
(relative to the execution's working folder), ``timeout`` (seconds or a duration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiflowd.model import AINode, AISubGraph, JobConfig
from aiflowd.plugin_interface import (
    Job,
    JobController,
    JobGenerationError,
    JobGenerator,
    JobPluginFactory,
    YamlProblem,
    generation_inputs,
)
from aiflowd.plugins.common import check_common_properties

YAML_KEYS = {"bash_command", "output_encoding"}


class BashProcessor:
    """Runs ``bash_command`` with bash; ``output_encoding`` is how its log is decoded for display."""

    def __init__(self, bash_command: str, output_encoding: str = "utf-8") -> None:
        self.bash_command = bash_command
        self.output_encoding = output_encoding

    def __repr__(self) -> str:
        return f"BashProcessor({self.bash_command!r})"


class BashJob(Job):
    """A bash job ready to run: its commands in order, and the job's properties."""

    def __init__(
        self, job_config: JobConfig, bash_command: str | Sequence[str], output_encoding: str, env: dict[str, str], cwd: str | None
    ) -> None:
        super().__init__(job_config)
        self.bash_commands: list[str] = [bash_command] if isinstance(bash_command, str) else list(bash_command)
        self.output_encoding = output_encoding
        self.env = env
        self.cwd = cwd

    @property
    def bash_command(self) -> str:
        """The commands as one script, one per line (what a single-processor job runs)."""
        return "\n".join(self.bash_commands)


class BashJobGenerator(JobGenerator):
    def generate(self, sub_graph: AISubGraph, job_config: JobConfig | None = None, resource_dir: str | None = None) -> Job:
        config, _ = generation_inputs(sub_graph, job_config, resource_dir)
        env, cwd = check_common_properties(config.properties, allowed={"env", "cwd", "timeout"})
        if not sub_graph.nodes:
            raise JobGenerationError("a bash job needs a BashProcessor (bash_command, or user_define_operation)")
        try:
            order = sub_graph.topological_order()
        except ValueError as err:
            raise JobGenerationError(str(err)) from err
        commands = []
        for node_id in order:
            processor = sub_graph.nodes[node_id].processor
            if not isinstance(processor, BashProcessor):
                kind = getattr(processor, "class_name", type(processor).__name__)
                raise JobGenerationError(f"node '{node_id}' has a {kind}; job type bash needs a BashProcessor", node=node_id)
            if not isinstance(processor.bash_command, str) or not processor.bash_command.strip():
                raise JobGenerationError("bash_command must be a non-empty string", node=node_id, key="bash_command")
            commands.append(processor.bash_command)
        first = sub_graph.nodes[order[0]].processor
        return BashJob(config, commands, first.output_encoding, env, cwd)


class BashJobPluginFactory(JobPluginFactory):
    def job_type(self) -> str:
        return "bash"

    def get_job_generator(self) -> JobGenerator:
        return BashJobGenerator()

    def get_job_controller(self) -> JobController:
        from aiflowd.plugins.bash.controller import BashJobController  # the OS-facing part loads only in the daemon

        return BashJobController()

    def yaml_keys(self) -> set[str]:
        return set(YAML_KEYS)

    def nodes_from_yaml(self, job_name: str, job_yaml: dict[str, Any], workflow_dir: str, problem: YamlProblem) -> list[AINode] | None:
        if "bash_command" not in job_yaml:
            if "output_encoding" in job_yaml:
                problem("output_encoding", "goes with bash_command, which this job lacks")
            return None
        encoding = job_yaml.get("output_encoding", "utf-8")
        return [AINode(job_name, job_name, BashProcessor(str(job_yaml["bash_command"]), str(encoding)))]

    def processor_classes(self) -> tuple[type, ...]:
        return (BashProcessor,)
