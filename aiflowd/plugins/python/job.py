"""The ``python`` job type: the ``PythonProcessor`` nodes of a job run in one job process.

Nodes run in topological order and pass values over DataEdges by output port, as in
AIFlow. Properties: ``env``, ``cwd``, ``timeout`` and ``python_executable_path`` (run the
job under another interpreter or virtualenv). This module is imported by job processes,
possibly under another interpreter: it needs only the stdlib.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from aiflowd.model import PARAM_PREFIX, AISubGraph, Event, JobConfig, ProcessorRef, event_from_variables
from aiflowd.plugin_interface import (
    Job,
    JobController,
    JobExecutionInfo,
    JobGenerationError,
    JobGenerator,
    JobPluginFactory,
    generation_inputs,
)
from aiflowd.plugins.common import check_common_properties


class ExecutionContext:
    """What a processor sees of its run, as in AIFlow.

    ``config`` is the node's config: the keyword arguments given to
    ``user_define_operation`` plus ``name`` and ``node_type``. ``job_config`` holds the
    job's ``job_name``, ``job_type`` and ``properties`` (free-form ones included).
    """

    def __init__(
        self,
        config: dict[str, Any],
        name: str,
        job_execution_info: JobExecutionInfo,
        job_config: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.job_execution_info = job_execution_info
        self.job_config = job_config or {}

    @property
    def params(self) -> dict[str, str]:
        """The execution's parameters (``aiflowctl workflow start-execution --param K=V``), by name."""
        return {name[len(PARAM_PREFIX) :]: value for name, value in os.environ.items() if name.startswith(PARAM_PREFIX)}

    @property
    def event(self) -> Event | None:
        """The event that started this job (its event rule's, or its execution's trigger), if one did."""
        return event_from_variables(os.environ)

    @property
    def node_type(self) -> str:
        """The node's operation type (``user_define_operation`` unless the definition said otherwise)."""
        return str(self.config.get("node_type", "user_define_operation"))


class PythonProcessor:
    """User logic of a python job node; subclass it and implement ``process``.

    ``process`` gets the outputs of the upstream nodes in ``input_list`` and returns one
    item per output port. ``open`` and ``close`` bracket the run of the whole job.
    """

    #: User code: the loader keeps it as a reference (pickled for the job process), never
    #: rebuilt in the daemon from its attributes.
    aiflowd_by_reference: ClassVar[bool] = True

    def open(self, execution_context: ExecutionContext) -> None:
        """Acquire what ``process`` needs."""

    def process(self, execution_context: ExecutionContext, input_list: list[Any]) -> list[Any] | None:
        raise NotImplementedError(f"{type(self).__name__} must implement process(execution_context, input_list)")

    def close(self, execution_context: ExecutionContext) -> None:
        """Release what ``open`` acquired."""


class PythonJob(Job):
    """A python job ready to run: pickled processors, their order and edges, properties."""

    def __init__(
        self,
        job_config: JobConfig,
        nodes: list[dict[str, Any]],
        python_executable: str | None,
        env: dict[str, str],
        cwd: str | None,
    ) -> None:
        super().__init__(job_config)
        self.nodes = nodes
        self.python_executable = python_executable
        self.env = env
        self.cwd = cwd


class PythonJobGenerator(JobGenerator):
    def generate(self, sub_graph: AISubGraph, job_config: JobConfig | None = None, resource_dir: str | None = None) -> Job:
        job_config, resource_dir = generation_inputs(sub_graph, job_config, resource_dir)
        env, cwd = check_common_properties(job_config.properties, allowed={"env", "cwd", "timeout", "python_executable_path"})
        executable = job_config.properties.get("python_executable_path")
        if executable is not None and (not isinstance(executable, str) or not executable):
            raise JobGenerationError(
                "python_executable_path must be the path of a Python interpreter", key="properties.python_executable_path"
            )
        if not sub_graph.nodes:
            raise JobGenerationError("a python job needs at least one PythonProcessor (user_define_operation or 'processor:')")
        try:
            order = sub_graph.topological_order()
        except ValueError as err:
            raise JobGenerationError(str(err)) from err
        nodes = []
        for node_id in order:
            node = sub_graph.nodes[node_id]
            processor = node.processor
            if not (isinstance(processor, ProcessorRef) and processor.is_a(PythonProcessor)):
                kind = getattr(processor, "class_name", type(processor).__name__)
                raise JobGenerationError(f"node '{node_id}' has a {kind}; job type python needs a PythonProcessor subclass", node=node_id)
            nodes.append(
                {
                    "node_id": node_id,
                    "name": node.name,
                    "class": processor.class_name,
                    "payload": processor.payload,
                    "output_num": node.output_num,
                    "config": node.config,
                    "inputs": [[e.source, e.port] for e in sub_graph.inputs_of(node_id)],
                }
            )
        return PythonJob(job_config, nodes, executable, env, cwd)


class PythonJobPluginFactory(JobPluginFactory):
    def job_type(self) -> str:
        return "python"

    def get_job_generator(self) -> JobGenerator:
        return PythonJobGenerator()

    def get_job_controller(self) -> JobController:
        from aiflowd.plugins.python.controller import PythonJobController  # the OS-facing part loads only in the daemon

        return PythonJobController()

    def processor_classes(self) -> tuple[type, ...]:
        return (PythonProcessor,)
