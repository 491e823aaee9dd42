"""AIFlow 0.3 workflow folders, in the shapes of its demos, load and run on aiflowd unchanged.

Each workflow here is written for this test in AIFlow's own form: ``NAME/NAME.yaml``
beside ``NAME/NAME.py``, importing ``ai_flow`` and ``ai_flow_plugins`` and calling
``init_ai_flow_context()`` first. Nothing in them knows of aiflowd.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aiflowd.model import JobAction, JobStatusCondition, Status
from aiflowd.workflows.loader import WorkflowLoader

from ..conftest import REPO, cli_env, write
from .conftest import aiflow_workflow, run_aiflow, statuses

pytestmark = pytest.mark.anyio

BASH_DEMO = """
from ai_flow_plugins.job_plugins import bash
import ai_flow as af

af.init_ai_flow_context()

with af.job_config('job_1'):
    af.user_define_operation(processor=bash.BashProcessor(bash_command='echo "Greetings from bash"'))
"""

PYTHON_DEMO = """
from typing import List

from ai_flow_plugins.job_plugins import python
import ai_flow as af
from ai_flow_plugins.job_plugins.python.python_processor import ExecutionContext


class Greeter(python.PythonProcessor):

    def process(self, execution_context: ExecutionContext, input_list: List) -> List:
        print("Greetings from python")
        return []


af.init_ai_flow_context()

with af.job_config('job_1'):
    af.user_define_operation(processor=Greeter())
"""


def bash_jobs(*names: str) -> str:
    """Definition lines for bash jobs that echo their own name, as AIFlow's periodic demos have."""
    lines = [f"with af.job_config('{name}'):\n    af.user_define_operation(processor=BashProcessor(\"echo {name}\"))\n" for name in names]
    return "".join(lines)


DEFINITION_HEAD = "import ai_flow as af\nfrom ai_flow_plugins.job_plugins.bash import BashProcessor\n\naf.init_ai_flow_context()\n\n"


async def test_bash_demo(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = aiflow_workflow(tmp_path, "bash", "# one bash job\njob_1:\n  job_type: bash\n", BASH_DEMO)
    loaded = loader.load(str(folder))
    assert loaded.workflow.jobs["job_1"].config.job_type == "bash"
    execution, _, logs = await run_aiflow(loader, folder, tmp_path)
    assert execution.status == Status.FINISHED
    assert logs == {"job_1": ["Greetings from bash\n"]}


async def test_python_demo(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = aiflow_workflow(tmp_path, "python", "job_1:\n  job_type: python\n", PYTHON_DEMO)
    loader.load(str(folder))
    execution, _, logs = await run_aiflow(loader, folder, tmp_path)
    assert execution.status == Status.FINISHED
    assert logs == {"job_1": ["Greetings from python\n"]}


async def test_python_job_reads_its_properties_node_config_and_name(loader: WorkflowLoader, tmp_path: Path) -> None:
    """The shape of AIFlow's python job-plugin test: free-form properties read through current_workflow_config()."""
    folder = aiflow_workflow(
        tmp_path,
        "reader",
        "task_1:\n  job_type: python\n  properties:\n    a: first\n    b: 2\n",
        """
        import ai_flow as af
        from reader_processor import ShowContext

        af.init_ai_flow_context()

        with af.job_config('task_1'):
            first = af.user_define_operation(processor=ShowContext(), name='show', threshold=0.5)
            af.transform(first, ShowContext(), output_num=0, name='again')
        """,
        **{
            "reader_processor.py": """
            from typing import List

            from ai_flow import current_job_name, current_workflow_config
            from ai_flow_plugins.job_plugins import python
            from ai_flow_plugins.job_plugins.python.python_processor import ExecutionContext


            class ShowContext(python.PythonProcessor):

                def process(self, execution_context: ExecutionContext, input_list: List) -> List:
                    config = current_workflow_config()
                    properties = config.job_configs['task_1'].properties
                    print(config.workflow_name, current_job_name(), properties['a'], properties['b'])
                    print(sorted(execution_context.config.items()), execution_context.node_type, input_list)
                    return ['out']
            """
        },
    )
    loaded = loader.load(str(folder))
    assert loaded.workflow.jobs["task_1"].config.properties == {"a": "first", "b": 2}
    execution, _, logs = await run_aiflow(loader, folder, tmp_path)
    assert execution.status == Status.FINISHED, logs
    assert logs["task_1"] == [
        "reader task_1 first 2\n"
        "[('name', 'show'), ('node_type', 'user_define_operation'), ('threshold', 0.5)] user_define_operation []\n"
        "reader task_1 first 2\n"
        "[('name', 'again'), ('node_type', 'transform')] transform ['out']\n"
    ]


PERIODIC_JOB_YAML = """
job_1:
  job_type: bash
job_2:
  job_type: bash
  # AIFlow's 7-field cron: seconds minutes hours days months weeks years
  periodic_config:
    cron: "0 */1 * * * * *"
job_3:
  job_type: bash
  # AIFlow's interval: days,hours,minutes,seconds
  periodic_config:
    interval: "0,0,1,0"
job_4:
  job_type: bash
job_5:
  job_type: bash
"""

PERIODIC_JOB = (
    DEFINITION_HEAD
    + bash_jobs("job_1", "job_2", "job_3", "job_4", "job_5")
    + """
# job_1 feeds job_2 and job_3, which run on their own timers too; each feeds one more job.
af.action_on_job_status(job_name='job_2', upstream_job_name='job_1')
af.action_on_job_status(job_name='job_3', upstream_job_name='job_1')
af.action_on_job_status(job_name='job_4', upstream_job_name='job_2')
af.action_on_job_status(job_name='job_5', upstream_job_name='job_3')
"""
)


def test_periodic_job_loads_with_two_job_level_periodic_configs(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = aiflow_workflow(tmp_path, "periodic_job", PERIODIC_JOB_YAML, PERIODIC_JOB)
    workflow = loader.load(str(folder)).workflow
    cron = workflow.jobs["job_2"].config.periodic_config
    interval = workflow.jobs["job_3"].config.periodic_config
    assert cron is not None and (cron.cron, cron.cron_seconds) == ("*/1 * * * *", "0")
    assert interval is not None and interval.interval_seconds == 60.0
    assert workflow.periodic_config is None
    assert {(r.job, r.condition) for r in workflow.rules} == {
        ("job_2", JobStatusCondition("job_1", "FINISHED")),
        ("job_3", JobStatusCondition("job_1", "FINISHED")),
        ("job_4", JobStatusCondition("job_2", "FINISHED")),
        ("job_5", JobStatusCondition("job_3", "FINISHED")),
    }


async def test_periodic_job_runs_one_execution(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = aiflow_workflow(tmp_path, "periodic_job", PERIODIC_JOB_YAML, PERIODIC_JOB)
    execution, _, logs = await run_aiflow(loader, folder, tmp_path)  # two job-level timers (issue 7, defect 1)
    assert execution.status == Status.FINISHED
    assert logs == {f"job_{n}": [f"job_{n}\n"] for n in range(1, 6)}


#: A 7-field cron that does not fire while a test runs (every minute would, now and then,
#: start a second run of the job in the middle of the execution under test).
YEARLY = "0 0 3 1 1 * *"
PERIODIC_JOB_CRON_YAML = f"""
job_1:
  job_type: bash
  periodic_config:
    cron: "{YEARLY}"
job_2:
  job_type: bash
"""
AFTER_JOB_1 = "\naf.action_on_job_status('job_2', 'job_1')\n"


async def test_periodic_job_cron(loader: WorkflowLoader, tmp_path: Path) -> None:
    definition = DEFINITION_HEAD + bash_jobs("job_1", "job_2") + AFTER_JOB_1
    folder = aiflow_workflow(tmp_path, "periodic_job_cron", PERIODIC_JOB_CRON_YAML, definition)
    workflow = loader.load(str(folder)).workflow
    assert workflow.jobs["job_1"].config.periodic_config is not None
    execution, runs, _ = await run_aiflow(loader, folder, tmp_path)
    assert execution.status == Status.FINISHED
    assert [(run.job, run.status) for run in runs] == [("job_1", Status.FINISHED), ("job_2", Status.FINISHED)]


@pytest.mark.parametrize(
    ("name", "periodic", "seconds"),
    [
        ("periodic_workflow_cron", f'periodic_config:\n  cron: "{YEARLY}"\n', None),
        ("periodic_workflow_interval", 'periodic_config:\n  interval: "0,0,1,0"\n', 60.0),
    ],
)
async def test_periodic_workflow(loader: WorkflowLoader, tmp_path: Path, name: str, periodic: str, seconds: float | None) -> None:
    yaml_text = f"job_1:\n  job_type: bash\njob_2:\n  job_type: bash\n\n# the whole workflow runs on a timer\n{periodic}"
    definition = DEFINITION_HEAD + bash_jobs("job_1", "job_2") + "\naf.action_on_job_status(job_name='job_2', upstream_job_name='job_1')\n"
    folder = aiflow_workflow(tmp_path, name, yaml_text, definition)
    workflow = loader.load(str(folder)).workflow
    assert workflow.periodic_config is not None
    assert workflow.periodic_config.interval_seconds == seconds
    execution, runs, _ = await run_aiflow(loader, folder, tmp_path)
    assert execution.status == Status.FINISHED
    ours = [run for run in runs if run.execution is execution]
    assert [(run.job, run.status) for run in ours] == [("job_1", Status.FINISHED), ("job_2", Status.FINISHED)]
    assert [Path(run.env.log_path).read_text() for run in ours] == ["job_1\n", "job_2\n"]
    assert len(ours) == len(runs), "one run of a periodic workflow starts no periodic execution beside it"


def schedule_on_status(flags: Path) -> str:
    """AIFlow's scheduling-on-status demo. job_1 runs until job_2 has started and job_3 has
    said its word (instead of a fixed sleep, so that no machine is too slow for the order
    the rules expect)."""
    wait = f"until [ -f {flags}/job_2 ] && [ -f {flags}/job_3 ]; do sleep 0.02; done"
    return f"""
import ai_flow as af
from ai_flow.workflow.control_edge import JobAction
from ai_flow.workflow.status import Status
from ai_flow_plugins.job_plugins.bash import BashProcessor

af.init_ai_flow_context()

with af.job_config('job_1'):
    af.user_define_operation(processor=BashProcessor("timeout 30 bash -c '{wait}'"))
with af.job_config('job_2'):
    af.user_define_operation(processor=BashProcessor("touch {flags}/job_2; sleep 60"))
with af.job_config('job_3'):
    af.user_define_operation(processor=BashProcessor("echo job_3; touch {flags}/job_3"))
with af.job_config('job_4'):
    af.user_define_operation(processor=BashProcessor("echo job_4"))

# job_2 and job_3 start once job_1 runs; job_4 once it has finished
af.action_on_job_status('job_2', 'job_1', upstream_job_status=Status.RUNNING, action=JobAction.START)
af.action_on_job_status('job_3', 'job_1', upstream_job_status=Status.RUNNING, action=JobAction.START)
af.action_on_job_status('job_4', 'job_1')
# job_1 finishing stops job_2; job_2 stopped restarts job_3
af.action_on_job_status('job_2', 'job_1', upstream_job_status=Status.FINISHED, action=JobAction.STOP)
af.action_on_job_status('job_3', 'job_2', upstream_job_status=Status.KILLED, action=JobAction.RESTART)
"""


async def test_schedule_on_status(loader: WorkflowLoader, tmp_path: Path) -> None:
    yaml_text = "job_1:\n  job_type: bash\njob_2:\n  job_type: bash\njob_3:\n  job_type: bash\njob_4:\n  job_type: bash"
    folder = aiflow_workflow(tmp_path, "schedule_on_status", yaml_text, schedule_on_status(tmp_path))
    workflow = loader.load(str(folder)).workflow
    assert [(r.job, r.action) for r in workflow.rules] == [
        ("job_2", JobAction.START),
        ("job_3", JobAction.START),
        ("job_4", JobAction.START),
        ("job_2", JobAction.STOP),
        ("job_3", JobAction.RESTART),
    ]
    execution, runs, logs = await run_aiflow(loader, folder, tmp_path)
    assert statuses(runs) == {
        "job_1": [Status.FINISHED],
        "job_2": [Status.KILLED],
        "job_3": [Status.FINISHED, Status.FINISHED],
        "job_4": [Status.FINISHED],
    }
    assert logs["job_3"] == ["job_3\n", "job_3\n"]
    assert execution.status == Status.KILLED  # a job was stopped, by design of the rules
    assert [(run.job, run.kind) for run in runs if run.job == "job_3"] == [("job_3", "start"), ("job_3", "restart")]
    assert [run.stopped_by for run in runs if run.job == "job_2"] == ["rule"]


def run_once(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = write(
        tmp_path / "aiflowd.yaml",
        f"state_dir: {tmp_path / 'state'}\nlog_dir: {tmp_path / 'logs'}\njob_env:\n  PYTHONPATH: {REPO}\n",
    )
    return subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(config), "run-once", str(folder)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "job_type", "definition", "printed"),
    [("bash", "bash", BASH_DEMO, "Greetings from bash"), ("python", "python", PYTHON_DEMO, "Greetings from python")],
)
def test_run_once(tmp_path: Path, name: str, job_type: str, definition: str, printed: str) -> None:
    folder = aiflow_workflow(tmp_path / "workflows", name, f"job_1:\n  job_type: {job_type}\n", definition)
    result = run_once(folder, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"    {printed}\n" in result.stdout
    assert not list(folder.rglob("__pycache__")), "running a workflow must not write into its folder"


def test_dropped_into_a_running_daemons_folder(tmp_path: Path) -> None:
    """The real daemon picks AIFlow folders up from its watched folder and runs them."""
    from ..daemon_harness import Daemon

    daemon = Daemon(tmp_path / "d", config=f"job_env:\n  PYTHONPATH: {REPO}\n")
    try:
        daemon.start()
        staging = tmp_path / "staging"
        for name, job_type, definition in (("bash", "bash", BASH_DEMO), ("python", "python", PYTHON_DEMO)):
            folder = aiflow_workflow(staging, name, f"job_1:\n  job_type: {job_type}\n", definition)
            folder.rename(daemon.workflows / name)  # appears whole, as a copy finished elsewhere would
        for name in ("bash", "python"):
            rows = daemon.wait_jobs(name, lambda rows: rows and all(r["ended_at"] for r in rows))
            assert [(r["job"], r["status"]) for r in rows] == [("job_1", "FINISHED")]
            assert daemon.ctl("job", "logs", name, "job_1").stdout == f"Greetings from {name}\n"
    finally:
        daemon.close()


def test_run_once_succeeds_when_its_rules_stop_a_job_by_design(tmp_path: Path) -> None:
    """AIFlow's scheduling-on-status demo ends KILLED by design: run-once exits 0 and shows the restart as one."""
    yaml_text = "job_1:\n  job_type: bash\njob_2:\n  job_type: bash\njob_3:\n  job_type: bash\njob_4:\n  job_type: bash"
    (tmp_path / "flags").mkdir()
    folder = aiflow_workflow(tmp_path / "workflows", "schedule_on_status", yaml_text, schedule_on_status(tmp_path / "flags"))
    result = run_once(folder, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "execution of schedule_on_status: KILLED (jobs stopped by its rules, by design)" in result.stdout
    assert "job_3                RUNNING   (restart: job_2 KILLED)" in result.stdout
    assert "--- job_3 (run 2, restart) log:" in result.stdout
    assert "attempt" not in result.stdout


def test_run_once_fails_when_a_job_fails(tmp_path: Path) -> None:
    definition = (
        "import ai_flow as af\nfrom ai_flow_plugins.job_plugins.bash import BashProcessor\naf.init_ai_flow_context()\n"
        "with af.job_config('job_1'):\n    af.user_define_operation(processor=BashProcessor('exit 3'))\n"
    )
    folder = aiflow_workflow(tmp_path / "workflows", "failing", "job_1:\n  job_type: bash\n", definition)
    result = run_once(folder, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "execution of failing: FAILED" in result.stdout
