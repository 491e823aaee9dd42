"""The built-in job types as plugins: AIFlow's call forms, typed controllers, and the
contract details AIFlow's plugins rely on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aiflowd.model import AINode, AISubGraph, JobConfig, Status
from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
from aiflowd.plugins.bash import BashJob, BashJobGenerator, BashProcessor
from aiflowd.plugins.bash.controller import BashJobController
from aiflowd.plugins.flink import FlinkJavaJob, FlinkJavaProcessor, FlinkJobGenerator
from aiflowd.plugins.python import PythonJob
from aiflowd.plugins.python.controller import PythonJobController
from aiflowd.workflows.loader import WorkflowLoader

from .conftest import run_execution, write


def graph(job_type: str, *processors: object) -> AISubGraph:
    sub_graph = AISubGraph(JobConfig(job_name="j", job_type=job_type))
    for i, processor in enumerate(processors):
        sub_graph.add_node(AINode(f"n{i}", f"n{i}", processor))
    return sub_graph


def runtime_env(tmp_path: Path) -> JobRuntimeEnv:
    info = JobExecutionInfo("wf", "j", "1", "1")
    return JobRuntimeEnv(str(tmp_path / "work"), str(tmp_path / "j.log"), str(tmp_path / "wf"), info)


def test_builtin_generators_take_aiflows_two_argument_call(tmp_path: Path) -> None:
    """``generate(sub_graph, resource_dir)``, as AIFlow's translator calls it; the config is the graph's."""
    bash = BashJobGenerator().generate(graph("bash", BashProcessor("echo hi")), str(tmp_path))
    assert isinstance(bash, BashJob) and bash.job_name == "j" and bash.bash_command == "echo hi"
    (tmp_path / "job.jar").write_bytes(b"")
    flink = FlinkJobGenerator().generate(graph("flink", FlinkJavaProcessor("a.Main", "job.jar")), str(tmp_path))
    assert isinstance(flink, FlinkJavaJob) and flink.jar == str(tmp_path / "job.jar")
    # aiflowd's keyword form still works.
    config = JobConfig(job_name="other", job_type="bash")
    assert BashJobGenerator().generate(graph("bash", BashProcessor("true")), job_config=config).job_name == "other"


def test_controllers_refuse_a_job_of_another_type(tmp_path: Path) -> None:
    bash = BashJob(JobConfig(job_name="j", job_type="bash"), "true", "utf-8", {}, None)
    python = PythonJob(JobConfig(job_name="j", job_type="python"), [], None, {}, None)
    with pytest.raises(TypeError, match="expected a BashJob, got PythonJob"):
        BashJobController().command(python, runtime_env(tmp_path))
    with pytest.raises(TypeError, match="expected a PythonJob, got BashJob"):
        PythonJobController().command(bash, runtime_env(tmp_path))


def test_contract_details_aiflow_plugins_use(tmp_path: Path) -> None:
    controller = BashJobController()
    assert isinstance(controller.log, logging.Logger)
    assert controller.log.name == "aiflowd.plugins.bash.controller.BashJobController"
    processor = BashProcessor("true")
    assert AINode("n", "n", processor).get_processor() is processor
    env = runtime_env(tmp_path)
    assert env.resource_dir == str(tmp_path / "work" / "resources")  # AIFlow's: a link to the workflow's resources/
    assert env.generated_dir == str(tmp_path / "work" / "generated")
    assert env.dependencies_dir == str(tmp_path / "wf" / "dependencies")
    assert env.python_dep_dir == str(tmp_path / "wf" / "dependencies" / "python")
    assert env.jar_dep_dir == str(tmp_path / "wf" / "dependencies" / "jar")


def steps_workflow(folder: Path, *commands: str) -> Path:
    write(folder / f"{folder.name}.yaml", "steps: {job_type: bash}\n")
    calls = "".join(f"    user_define_operation(processor=BashProcessor({c!r}))\n" for c in commands)
    (folder / f"{folder.name}.py").write_text(
        f"from aiflowd import BashProcessor, job_config, user_define_operation\nwith job_config('steps'):\n{calls}"
    )
    return folder


@pytest.mark.anyio
async def test_several_bash_processors_of_one_job_run_in_order(loader: WorkflowLoader, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    folder = steps_workflow(tmp_path / "steps", f"echo one >> {out}", f"echo 'two words' >> {out}", f"echo three >> {out}")
    loaded = loader.load(str(folder))
    assert loaded.jobs["steps"].bash_commands == [f"echo one >> {out}", f"echo 'two words' >> {out}", f"echo three >> {out}"]  # type: ignore[attr-defined]
    _, [run] = await run_execution(loader, folder, tmp_path)
    assert run.status == Status.FINISHED
    assert out.read_text() == "one\ntwo words\nthree\n"


@pytest.mark.anyio
async def test_the_first_failing_bash_processor_ends_the_job(loader: WorkflowLoader, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    folder = steps_workflow(tmp_path / "failing", f"echo one >> {out}", "exit 3", f"echo never >> {out}")
    _, [run] = await run_execution(loader, folder, tmp_path)
    assert (run.status, run.exit_code) == (Status.FAILED, 3)
    assert out.read_text() == "one\n"
