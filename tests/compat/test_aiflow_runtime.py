"""What an AIFlow job finds around it when it runs: its execution, its context variable, its resources.

AIFlow gives a job ``job_execution_info.workflow_execution`` (the execution's id and
workflow), bash jobs ``WORKFLOW_EXECUTION_CONTEXT``, and a ``resources/`` folder in the
job's working folder, linked to the project's resources (here: the workflow folder's
``resources/``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiflowd.model import Status
from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv, WorkflowExecutionInfo, make_working_dir
from aiflowd.workflows.loader import WorkflowLoader

from ..conftest import write
from .conftest import aiflow_workflow, run_aiflow

pytestmark = pytest.mark.anyio

DEFINITION = """
from typing import List

import ai_flow as af
from ai_flow.plugin_interface.scheduler_interface import WorkflowExecutionInfo
from ai_flow_plugins.job_plugins import bash, python
from ai_flow_plugins.job_plugins.python.python_processor import ExecutionContext


class ShowExecution(python.PythonProcessor):

    def process(self, execution_context: ExecutionContext, input_list: List) -> List:
        execution = execution_context.job_execution_info.workflow_execution
        assert isinstance(execution, WorkflowExecutionInfo)
        print(execution.workflow_execution_id, execution.workflow_info.workflow_name, execution.status)
        with open('resources/greeting.txt') as fh:
            print(fh.read().strip())
        return []


af.init_ai_flow_context()

with af.job_config('shell'):
    af.user_define_operation(processor=bash.BashProcessor('cat resources/greeting.txt; echo "$WORKFLOW_EXECUTION_CONTEXT"'))
with af.job_config('py'):
    af.user_define_operation(processor=ShowExecution())
af.action_on_job_status('py', 'shell')
"""


async def test_execution_context_and_resources(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = aiflow_workflow(
        tmp_path, "runtime", "shell:\n  job_type: bash\npy:\n  job_type: python\n", DEFINITION, **{"resources/greeting.txt": "hi there\n"}
    )
    execution, runs, logs = await run_aiflow(loader, folder, tmp_path)
    assert execution.status == Status.FINISHED, logs
    context = {"workflow_name": "runtime", "workflow_execution_id": "1", "job_name": "shell", "job_execution_id": "1.shell.1"}
    assert logs["shell"] == [f"hi there\n{json.dumps(context, sort_keys=True)}\n"]
    assert logs["py"] == ["1 runtime RUNNING\nhi there\n"]
    resources = Path(runs[0].env.resource_dir)
    assert resources == Path(runs[0].env.working_dir) / "resources"
    assert resources.is_symlink() and resources.resolve() == (folder / "resources").resolve()


def test_working_dir_without_resources_has_no_link(tmp_path: Path) -> None:
    """As in AIFlow, the link is made only when there is something to link to."""
    info = JobExecutionInfo("wf", "job", "7", "7.job.1")
    env = JobRuntimeEnv(str(tmp_path / "work"), str(tmp_path / "job.log"), str(tmp_path / "wf"), info)
    make_working_dir(env)
    assert (tmp_path / "work").is_dir() and not (tmp_path / "work" / "resources").exists()
    write(tmp_path / "wf" / "resources" / "a.txt", "a\n")
    make_working_dir(env)  # again: the link is made once, and a second call leaves it
    make_working_dir(env)
    assert (tmp_path / "work" / "resources" / "a.txt").read_text() == "a\n"
    execution = info.workflow_execution
    assert isinstance(execution, WorkflowExecutionInfo)
    assert (execution.workflow_execution_id, execution.workflow_info and execution.workflow_info.workflow_name) == ("7", "wf")
    assert json.loads(execution.context or "") == {
        "workflow_name": "wf",
        "workflow_execution_id": "7",
        "job_name": "job",
        "job_execution_id": "7.job.1",
    }
