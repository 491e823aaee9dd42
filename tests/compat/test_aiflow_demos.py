"""AIFlow 0.3.1's demo workflows and integration workflows, in their shapes, run unchanged.

Each folder below is written for this test in the form of one of AIFlow's demos
(``examples/demo/workflows``) that needs no Flink, or of its integration workflows with
their test harness taken away: the same files, jobs, job types, rules and schedules, the
same commands and so the same output. They go, as they are, through ``aiflowctl
validate``, ``aiflowd run-once`` and a real daemon's watched folder.

Two differences from the demos, both of timing only: the 7-field crons fire once a year
and the intervals once an hour (AIFlow's fire every minute, which would now and then
start a second run in the middle of a test), and job_1 of the scheduling-on-status demo
waits for job_2 and job_3 to have started instead of sleeping 30 seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..conftest import REPO, cli_env, wait_for, write
from ..daemon_harness import Daemon
from .conftest import aiflow_workflow
from .test_aiflow_workflows import schedule_on_status

HEAD = "import ai_flow as af\nfrom ai_flow_plugins.job_plugins.bash import BashProcessor\n\naf.init_ai_flow_context()\n\n"
YEARLY = "0 0 3 1 1 * *"
HOURLY = "0,1,0,0"


def echo_jobs(*names: str) -> str:
    return "".join(f"with af.job_config('{n}'):\n    af.user_define_operation(processor=BashProcessor(\"echo {n}\"))\n" for n in names)


def bash_yaml(*names: str) -> str:
    return "".join(f"{n}:\n  job_type: bash\n" for n in names)


BASH = """
from ai_flow_plugins.job_plugins import bash
import ai_flow as af

# the project and workflow context first, as every AIFlow definition does
af.init_ai_flow_context()

with af.job_config('job_1'):
    af.user_define_operation(processor=bash.BashProcessor(bash_command='echo "Hello World!"'))
"""

PYTHON = """
from typing import List

from ai_flow_plugins.job_plugins import python
import ai_flow as af
from ai_flow_plugins.job_plugins.python.python_processor import ExecutionContext


class SayHello(python.PythonProcessor):

    def process(self, execution_context: ExecutionContext, input_list: List) -> List:
        print("Hello World!")
        return []


af.init_ai_flow_context()

with af.job_config('job_1'):
    af.user_define_operation(processor=SayHello())
"""

# Five jobs in the YAML, four in the definition (job_5 has no operation: AIFlow ignores
# it), and a rule naming upstream job '2', which is no job: AIFlow accepts it, and job_4
# never starts.
PERIODIC_JOB_YAML = f"""
job_1:
  job_type: bash
job_2:
  job_type: bash
  # seconds minutes hours days months weeks years
  periodic_config:
    cron: "{YEARLY}"
job_3:
  job_type: bash
  # days,hours,minutes,seconds
  periodic_config:
    interval: "{HOURLY}"
job_4:
  job_type: bash
job_5:
  job_type: bash
"""
PERIODIC_JOB = (
    HEAD
    + echo_jobs("job_1", "job_2", "job_3", "job_4")
    + """
af.action_on_job_status(job_name='job_3', upstream_job_name='job_1')
af.action_on_job_status(job_name='job_4', upstream_job_name='2')
"""
)

PERIODIC_JOB_CRON_YAML = f'job_1:\n  job_type: bash\n  periodic_config:\n    cron: "{YEARLY}"\njob_2:\n  job_type: bash\n'
TWO_JOBS_POSITIONAL = HEAD + echo_jobs("job_1", "job_2") + "\naf.action_on_job_status('job_2', 'job_1')\n"
TWO_JOBS = HEAD + echo_jobs("job_1", "job_2") + "\naf.action_on_job_status(job_name='job_2', upstream_job_name='job_1')\n"

# The integration workflows' shape (test_bash, test_python, test_action_on_event's first
# case), their unittest and Airflow harness taken away: a bash task, a task after it, and
# a python task writing the ids its execution context gives.
IT_WORKFLOW = """
from typing import List

import ai_flow as af
from ai_flow import init_ai_flow_context
from ai_flow.workflow.control_edge import JobAction
from ai_flow.workflow.status import Status
from ai_flow_plugins.job_plugins import bash
from ai_flow_plugins.job_plugins import python
from ai_flow_plugins.job_plugins.python.python_processor import ExecutionContext


class WriteIds(python.PythonProcessor):

    def process(self, execution_context: ExecutionContext, input_list: List) -> List:
        info = execution_context.job_execution_info
        print("workflow execution", info.workflow_execution.workflow_execution_id,
              "of", info.workflow_execution.workflow_info.workflow_name)
        print("job execution", info.job_execution_id)
        return []


init_ai_flow_context()

with af.job_config('task_1'):
    af.user_define_operation(processor=bash.BashProcessor(bash_command='echo "task one says hello"'))
with af.job_config('task_2'):
    af.user_define_operation(processor=bash.BashProcessor(bash_command='echo "task two says hello"'))
with af.job_config('task_3'):
    af.user_define_operation(processor=WriteIds())
af.action_on_job_status('task_2', 'task_1', Status.FINISHED, JobAction.START)
af.action_on_job_status('task_3', 'task_2', Status.FINISHED, JobAction.START)
"""
IT_WORKFLOW_YAML = "task_1:\n  job_type: bash\ntask_2:\n  job_type: bash\ntask_3:\n  job_type: python\n"

# test_action_on_event's second case, harness taken away: two python tasks send an event
# each from inside their job; a third starts once both have come. Events from jobs go to
# the daemon that runs them (``aiflowd run-once`` has no control socket): daemon only.
IT_EVENTS = """
from typing import List

from notification_service.base_notification import BaseEvent

import ai_flow as af
from ai_flow_plugins.job_plugins import python
from ai_flow_plugins.job_plugins.python.python_processor import ExecutionContext


class SendFirst(python.PythonProcessor):

    def process(self, execution_context: ExecutionContext, input_list: List) -> List:
        af.get_notification_client().send_event(BaseEvent(key='k_1', value='v_1'))
        return []


class SendSecond(python.PythonProcessor):

    def process(self, execution_context: ExecutionContext, input_list: List) -> List:
        af.get_notification_client().send_event(BaseEvent(key='k_2', value='v_2'))
        return []


class Greet(python.PythonProcessor):

    def process(self, execution_context: ExecutionContext, input_list: List) -> List:
        print('hello world!')
        return []


af.init_ai_flow_context()

with af.job_config('task_3'):
    af.user_define_operation(processor=SendFirst())
with af.job_config('task_4'):
    af.user_define_operation(processor=SendSecond())
with af.job_config('task_5'):
    af.user_define_operation(processor=Greet())
both = af.MeetAllEventCondition()
both.add_event(event_key='k_1', event_value='v_1', namespace='*', sender='*')
both.add_event(event_key='k_2', event_value='v_2', namespace='*', sender='*')
af.action_on_events(job_name='task_5', event_condition=both, action=af.JobAction.START)
"""
IT_EVENTS_YAML = "task_3:\n  job_type: python\ntask_4:\n  job_type: python\ntask_5:\n  job_type: python\n"

SCHEDULE_ON_STATUS_YAML = bash_yaml("job_1", "job_2", "job_3", "job_4")


def demos(flags: Path) -> dict[str, tuple[str, str]]:
    """Each workflow's YAML and definition, by name."""
    return {
        "bash": ("# one bash job\njob_1:\n  # a bash job\n  job_type: bash\n", BASH),
        "python": ("job_1:\n  job_type: python\n", PYTHON),
        "periodic_job": (PERIODIC_JOB_YAML, PERIODIC_JOB),
        "periodic_job_cron": (PERIODIC_JOB_CRON_YAML, TWO_JOBS_POSITIONAL),
        "periodic_workflow_cron": (bash_yaml("job_1", "job_2") + f'\nperiodic_config:\n  cron: "{YEARLY}"\n', TWO_JOBS),
        "periodic_workflow_interval": (bash_yaml("job_1", "job_2") + f'\nperiodic_config:\n  interval: "{HOURLY}"\n', TWO_JOBS),
        "schedule_on_status": (SCHEDULE_ON_STATUS_YAML, schedule_on_status(flags)),
        "it_workflow": (IT_WORKFLOW_YAML, IT_WORKFLOW),
    }


def expected_logs(execution_id: str) -> dict[str, dict[str, str]]:
    """What each job of each workflow prints, as AIFlow's demo job prints it."""
    echo = {f"job_{n}": f"job_{n}\n" for n in range(1, 5)}
    return {
        "bash": {"job_1": "Hello World!\n"},
        "python": {"job_1": "Hello World!\n"},
        "periodic_job": {job: echo[job] for job in ("job_1", "job_2", "job_3")},
        "periodic_job_cron": {job: echo[job] for job in ("job_1", "job_2")},
        "periodic_workflow_cron": {job: echo[job] for job in ("job_1", "job_2")},
        "periodic_workflow_interval": {job: echo[job] for job in ("job_1", "job_2")},
        "schedule_on_status": {"job_1": "", "job_2": "", "job_3": "job_3\n", "job_4": "job_4\n"},
        "it_events": {"task_3": "", "task_4": "", "task_5": "hello world!\n"},
        "it_workflow": {
            "task_1": "task one says hello\n",
            "task_2": "task two says hello\n",
            "task_3": f"workflow execution {execution_id} of it_workflow\njob execution {execution_id}.task_3.1\n",
        },
    }


#: How the jobs of the scheduling-on-status demo end (the others' all finish).
SCHEDULE_ON_STATUS_ENDS = {"job_1": ["FINISHED"], "job_2": ["KILLED"], "job_3": ["FINISHED", "FINISHED"], "job_4": ["FINISHED"]}


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    flags = tmp_path / "flags"
    flags.mkdir()
    return {name: aiflow_workflow(tmp_path / "workflows", name, yaml, py) for name, (yaml, py) in demos(flags).items()}


def cli(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = write(
        tmp_path / "aiflowd.yaml", f"state_dir: {tmp_path / 'state'}\nlog_dir: {tmp_path / 'logs'}\njob_env:\n  PYTHONPATH: {REPO}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", module, "--config", str(config), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )


def test_validate(folders: dict[str, Path], tmp_path: Path) -> None:
    result = cli(tmp_path, "aiflowd.cli.aiflowctl", "validate", *map(str, folders.values()))
    assert result.returncode == 0, result.stdout + result.stderr
    periodic = folders["periodic_job"]
    assert result.stdout.splitlines() == [
        f"{periodic}/periodic_job.yaml:15:1: job_5: warning: periodic_job.py gives job 'job_5' no operation: it is not run (as in AIFlow)",
        f"{periodic}/periodic_job.py:16:0: warning: upstream job '2' is not a job of this workflow "
        "(known: job_1, job_2, job_3, job_4): the rule never fires",
        f"{len(folders)} workflow(s) valid",
    ]


@pytest.mark.parametrize("name", list(demos(Path("/flags"))))
def test_run_once(folders: dict[str, Path], tmp_path: Path, name: str) -> None:
    result = cli(tmp_path, "aiflowd.cli.aiflowd", "run-once", str(folders[name]))
    assert result.returncode == 0, result.stdout + result.stderr
    for job, text in expected_logs("1")[name].items():
        if text:
            shown = "".join(f"    {line}\n" for line in text.splitlines())
            assert f"--- {job} (run 1" in result.stdout
            assert shown in result.stdout, (job, result.stdout)
    if name == "periodic_job":
        assert "job_4                not started (its rules did not fire)" in result.stdout
        assert "job_5" not in result.stdout
        assert "upstream job '2' is not a job of this workflow" in result.stderr


def test_dropped_into_a_running_daemons_watched_folder(folders: dict[str, Path], tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "d", config=f"job_env:\n  PYTHONPATH: {REPO}\n")
    try:
        daemon.start()
        folders = {**folders, "it_events": aiflow_workflow(tmp_path / "more", "it_events", IT_EVENTS_YAML, IT_EVENTS)}
        for name, folder in folders.items():
            folder.rename(daemon.workflows / name)  # appears whole, as a copy finished elsewhere would
        for name in folders:
            # A scheduled workflow waits for its timers (as in AIFlow); one execution is asked for here.
            if "periodic" in name:
                wait_for(lambda name=name: loaded(daemon, name), timeout=30)
                daemon.ctl("workflow", "start-execution", name)
        for name in folders:
            jobs = set(expected_logs("*")[name])
            try:
                rows = daemon.wait_jobs(name, lambda rows, name=name, jobs=jobs: ended(name, jobs, rows), timeout=60)
            except AssertionError as err:
                raise AssertionError(f"{name}: {job_statuses(daemon.jobs(name)) if daemon.known(name) else 'unknown'}") from err
            execution_id = str(max(row["execution_id"] for row in rows))  # `job logs` shows the latest execution's
            for job, text in expected_logs(execution_id)[name].items():
                if not text:
                    continue  # prints nothing of its own (a stopped job's shell may say "Terminated")
                shown = daemon.ctl("job", "logs", name, job).stdout
                assert shown == text, (name, job, shown)
        assert "upstream job '2' is not a job of this workflow" in daemon.log()
    finally:
        daemon.close()


def loaded(daemon: Daemon, name: str) -> bool:
    """Whether the daemon serves a valid version of the workflow (not only lists it as loading)."""
    return any(row["workflow"] == name and row["version"] for row in daemon.json("workflow", "list", "--all"))


def ended(name: str, jobs: set[str], rows: list[dict[str, Any]]) -> bool:
    """Whether every job ran and ended as the demo has it (a timer may have run a periodic one more)."""
    statuses = job_statuses(rows)
    if name == "schedule_on_status":
        return statuses == SCHEDULE_ON_STATUS_ENDS
    return set(statuses) == jobs and all(status == "FINISHED" for runs in statuses.values() for status in runs)


def job_statuses(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r["job_execution_id"]):
        result.setdefault(row["job"], []).append(row["status"])
    return result
