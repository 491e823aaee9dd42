"""The ``ai_flow`` / ``ai_flow_plugins`` import layer: how its names map, and what it refuses.

Definitions here are in AIFlow 0.3's form; each test checks one mapping a porting user
relies on (rule arguments, node config, free-form properties, the workflow config).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aiflowd.compat import COMPAT_PATH, enable
from aiflowd.model import ANY, AllEventsCondition, Event, EventCondition, JobAction, Status
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import WorkflowLoader

from ..conftest import REPO, write
from .conftest import aiflow_workflow, run_aiflow, statuses

HEAD = "import ai_flow as af\nfrom ai_flow_plugins.job_plugins.bash import BashProcessor\n\naf.init_ai_flow_context()\n\n"


def test_enable_appends_the_layer_and_never_shadows_an_installed_aiflow(tmp_path: Path) -> None:
    write(tmp_path / "site" / "ai_flow" / "__init__.py", "INSTALLED = True\n")
    script = (
        "import sys, aiflowd.compat as c\n"
        "c.enable(); c.enable()\n"
        "import ai_flow, ai_flow_plugins\n"
        "print(getattr(ai_flow, 'INSTALLED', False), ai_flow_plugins.__file__.startswith(c.COMPAT_PATH),"
        " sys.path.count(c.COMPAT_PATH), sys.path[-1] == c.COMPAT_PATH)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=30, check=True)
    assert result.stdout.split() == ["True", "True", "1", "True"]


def test_names_not_offered_yet_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    enable()
    assert sys.path[-1] == COMPAT_PATH
    import ai_flow as af
    from ai_flow_plugins.job_plugins import flink

    with pytest.raises(NotImplementedError, match=r"ai_flow.current_graph is not available in aiflowd yet"):
        af.current_graph  # noqa: B018 - the access is what is tested
    with pytest.raises(NotImplementedError, match=r"INCLUDE_DATASET_VERSIONS is not available in aiflowd yet \(see docs/aiflow.md\)"):
        from ai_flow_plugins.job_plugins.flink import INCLUDE_DATASET_VERSIONS  # noqa: F401
    with pytest.raises(AttributeError):
        af.no_such_name  # noqa: B018
    assert flink.FlinkSqlProcessor.__mro__[1].__module__ == "aiflowd.plugins.flink"


def test_event_rules_take_aiflows_arguments(loader: WorkflowLoader, tmp_path: Path) -> None:
    definition = (
        HEAD
        + "with af.job_config('job_1'):\n    af.user_define_operation(processor=BashProcessor('echo 1'))\n"
        + "with af.job_config('job_2'):\n    af.user_define_operation(processor=BashProcessor('echo 2'))\n"
        # AIFlow's positional order: job, key, value, type, sender, namespace, value_condition, action
        + "af.action_on_event('job_2', 'model', 'v2', 'DEPLOYED', 'trainer', 'models', af.ValueCondition.EQUALS, af.JobAction.RESTART)\n"
        + "af.action_on_event('job_2', event_key='data', event_value='ignored', value_condition=af.ValueCondition.UPDATED)\n"
        + "either = af.MeetAnyEventCondition().add_event('a', 'x').add_event('b', 'y', sender='s')\n"
        + "af.action_on_events('job_1', either, af.JobAction.STOP)\n"
    )
    folder = aiflow_workflow(tmp_path, "events", "job_1:\n  job_type: bash\njob_2:\n  job_type: bash\n", definition)
    rules = [(rule.job, rule.condition, rule.action) for rule in loader.load(str(folder)).workflow.rules]
    assert rules == [
        ("job_2", EventCondition("model", "v2", "DEPLOYED", "trainer", "models"), JobAction.RESTART),
        ("job_2", EventCondition("data", ANY, ANY, ANY, "default"), JobAction.START),
        ("job_1", EventCondition("a", "x", ANY, ANY, "default"), JobAction.STOP),
        ("job_1", EventCondition("b", "y", ANY, "s", "default"), JobAction.STOP),
    ]


def test_meet_all_of_several_events_is_one_rule_waiting_for_all(loader: WorkflowLoader, tmp_path: Path) -> None:
    definition = (
        HEAD
        + "with af.job_config('job_1'):\n    af.user_define_operation(processor=BashProcessor('echo 1'))\n"
        + "both = af.MeetAllEventCondition().add_event('a', 'x').add_event('b', 'y', life=af.EventLife.REPEATED)\n"
        + "af.action_on_events('job_1', both, af.JobAction.START)\n"
    )
    folder = aiflow_workflow(tmp_path, "all", "job_1:\n  job_type: bash\n", definition)
    [rule] = loader.load(str(folder)).workflow.rules
    assert rule.condition == AllEventsCondition(
        (EventCondition("a", "x", sender="*", namespace="default"), EventCondition("b", "y", sender="*", namespace="default")),
        (False, True),
    )


def test_a_bad_rule_is_reported_at_the_definitions_line(loader: WorkflowLoader, tmp_path: Path) -> None:
    definition = HEAD + "with af.job_config('job_1'):\n    af.user_define_operation(processor=BashProcessor('echo 1'))\n"
    definition += "af.action_on_event('job_9', 'go', 'now')\n"
    folder = aiflow_workflow(tmp_path, "located", "job_1:\n  job_type: bash\n", definition)
    with pytest.raises(LoadError) as caught:
        loader.load(str(folder))
    assert [str(p) for p in caught.value.problems] == [f"{folder / 'located.py'}:8:0: rule for unknown job 'job_9' (did you mean 'job_1'?)"]


async def test_an_event_with_aiflows_default_type_starts_its_job(loader: WorkflowLoader, tmp_path: Path) -> None:
    definition = (
        HEAD
        + f"with af.job_config('job_1'):\n    af.user_define_operation(processor=BashProcessor('touch {tmp_path}/up; "
        + f'timeout 30 bash -c "until [ -f {tmp_path}/done ]; do sleep 0.02; done"\'))\n'
        + f"with af.job_config('job_2'):\n    af.user_define_operation(processor=BashProcessor('touch {tmp_path}/done'))\n"
        + "af.action_on_event('job_2', 'go', 'yes')\n"
    )
    folder = aiflow_workflow(tmp_path, "on_event", "job_1:\n  job_type: bash\njob_2:\n  job_type: bash\n", definition)

    async def send(engine, runs) -> None:  # type: ignore[no-untyped-def]
        with anyio.fail_after(10):
            while not (tmp_path / "up").exists():
                await anyio.sleep(0.01)
        engine.send_event(Event("go", "no"))  # another value: no match
        engine.send_event(Event("go", "yes", event_type="UNDEFINED"))  # as AIFlow's clients send it

    execution, runs, _ = await run_aiflow(loader, folder, tmp_path, during=send)
    assert execution.status == Status.FINISHED
    assert statuses(runs) == {"job_1": [Status.FINISHED], "job_2": [Status.FINISHED]}


def test_definition_reads_its_workflow_config_and_job_name(loader: WorkflowLoader, tmp_path: Path) -> None:
    definition = (
        HEAD
        + "assert af.current_job_name() is None\n"
        + "with af.job_config('job_1'):\n"
        + "    command = af.current_workflow_config().job_configs[af.current_job_name()].properties['command']\n"
        + "    af.user_define_operation(processor=BashProcessor(command))\n"
        + "with af.job_config('job_2') as config:\n"
        + "    af.user_define_operation(processor=BashProcessor(config.properties['command'] + ' again'))\n"
    )
    yaml_text = (
        "job_1:\n  job_type: bash\n  properties: {command: echo configured}\njob_2:\n  job_type: bash\n  properties: {command: echo}\n"
    )
    folder = aiflow_workflow(tmp_path, "self_aware", yaml_text, definition)
    jobs = loader.load(str(folder)).workflow.jobs
    assert [node.processor.bash_command for job in ("job_1", "job_2") for node in jobs[job].nodes.values()] == [
        "echo configured",
        "echo again",
    ]


@pytest.mark.parametrize("job_type", ["bash", "python"])
def test_unknown_properties_pass_through_but_near_misses_are_errors(loader: WorkflowLoader, tmp_path: Path, job_type: str) -> None:
    write(
        tmp_path / "ok" / "quiet.py", "from ai_flow_plugins.job_plugins import python\n\nclass Quiet(python.PythonProcessor):\n    pass\n"
    )
    processor = "BashProcessor('true')" if job_type == "bash" else "Quiet()"
    definition = HEAD + "from quiet import Quiet\n" + f"with af.job_config('job_1'):\n    af.user_define_operation(processor={processor})\n"
    properties = "  properties:\n    a: a\n    model_dir: /models\n    commands: [x, y]\n"
    folder = aiflow_workflow(tmp_path, "ok", f"job_1:\n  job_type: {job_type}\n{properties}", definition)
    config = loader.load(str(folder)).workflow.jobs["job_1"].config
    assert config.properties == {"a": "a", "model_dir": "/models", "commands": ["x", "y"]}
    for slip, meant in (("evn", "env"), ("tiemout", "timeout"), ("ENV", "env")):
        write(folder / "ok.yaml", f"job_1:\n  job_type: {job_type}\n  properties:\n    {slip}: x\n")
        with pytest.raises(LoadError) as caught:
            loader.load(str(folder))
        assert [str(p) for p in caught.value.problems] == [
            f"{folder / 'ok.yaml'}:4:5: job_1.properties.{slip}: unknown property '{slip}' (did you mean '{meant}'?)"
        ]


AIFLOW_PLUGIN = """
from ai_flow.plugin_interface import register_job_plugin_factory
from ai_flow.plugin_interface.job_plugin_interface import JobController, JobHandle, JobPluginFactory
from ai_flow.plugin_interface.scheduler_interface import JobExecutionInfo
from ai_flow.runtime.job_runtime_env import JobRuntimeEnv
from ai_flow.translator.translator import JobGenerator
from ai_flow.workflow.job import Job
from ai_flow.workflow.status import Status


class EchoJobGenerator(JobGenerator):
    def generate(self, sub_graph, resource_dir=None) -> Job:
        return Job(sub_graph.config)


class EchoJobController(JobController):
    def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        return JobHandle(job, job_runtime_env.job_execution_info)

    def stop_job(self, job_handle, job_runtime_env):
        pass

    def cleanup_job(self, job_handle, job_runtime_env):
        pass

    def get_result(self, job_handle, blocking=True):
        return None

    def get_job_status(self, job_handle) -> Status:
        return Status.FINISHED


class EchoJobPluginFactory(JobPluginFactory):
    def job_type(self):
        return "aiflow_echo"

    def get_job_generator(self):
        return EchoJobGenerator()

    def get_job_controller(self):
        return EchoJobController()


register_job_plugin_factory(EchoJobPluginFactory())
"""


def test_a_plugin_module_importing_aiflows_interface_names_registers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiflowd.plugin_interface import PluginRegistry

    monkeypatch.setattr(sys, "path", list(sys.path))
    enable()
    write(tmp_path / "aiflow_echo_plugin.py", AIFLOW_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = PluginRegistry()
    assert registry.load_module("aiflow_echo_plugin") == []
    assert registry.get("aiflow_echo").class_name == "aiflow_echo_plugin.EchoJobPluginFactory"
