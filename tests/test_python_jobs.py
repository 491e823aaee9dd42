"""Python jobs in real job processes: DataEdges, failures, properties, another interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aiflowd.model import Event, Status
from aiflowd.workflows.loader import WorkflowLoader

from .conftest import run_execution, write


async def run_workflow(loader: WorkflowLoader, path: Path, tmp_path: Path) -> tuple[Status, dict[str, str], dict[str, Status]]:
    execution, runs = await run_execution(loader, path, tmp_path)
    logs = {run.job: Path(run.env.log_path).read_text() for run in runs}
    return execution.status, logs, {run.job: run.status for run in runs}


async def test_nodes_pass_values_over_data_edges_by_port(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "edges"
    write(folder / "edges.yaml", "job:\n  job_type: python\n")
    write(
        folder / "edges.py",
        """
        from aiflowd import PythonProcessor, job_config, user_define_operation

        class Numbers(PythonProcessor):
            def process(self, ctx, inputs):
                return [[1, 2, 3], "label"]

        class Scale(PythonProcessor):
            def __init__(self, factor):
                self.factor = factor
            def process(self, ctx, inputs):
                assert ctx.job_config["job_name"] == "job" and ctx.config["name"] == "scale"
                return [[x * self.factor for x in inputs[0]]]

        class Join(PythonProcessor):
            def open(self, ctx):
                print("open", ctx.name)
            def process(self, ctx, inputs):
                print(inputs, ctx.job_execution_info.job_execution_id)
                return []
            def close(self, ctx):
                print("close", ctx.name)

        with job_config("job"):
            numbers, label = user_define_operation(processor=Numbers(), output_num=2, name="numbers")
            scaled = user_define_operation(processor=Scale(10), input=numbers, name="scale")
            user_define_operation(processor=Join(), input=[label, scaled], name="join", output_num=0)
        """,
    )
    status, logs, _ = await run_workflow(loader, folder, tmp_path)
    assert status == Status.FINISHED
    assert logs["job"] == "open join\n['label', [10, 20, 30]] 1.job.1\nclose join\n"


async def test_processor_that_raises_fails_the_job_with_its_traceback(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "boom"
    write(
        folder / "boom.yaml",
        "job:\n  job_type: python\nafter:\n  job_type: bash\n  bash_command: echo never\n  action_on_job_status: [{upstream_job: job}]\n",
    )
    write(
        folder / "boom.py",
        """
        from aiflowd import PythonProcessor, job_config, user_define_operation

        class Boom(PythonProcessor):
            def process(self, ctx, inputs):
                raise ValueError("bad input data")

        with job_config("job"):
            user_define_operation(processor=Boom())
        """,
    )
    status, logs, statuses = await run_workflow(loader, folder, tmp_path)
    assert status == Status.FAILED
    assert statuses == {"job": Status.FAILED}
    assert logs["job"].startswith("Traceback (most recent call last):\n")
    assert f'File "{folder}/boom.py", line 5, in process' in logs["job"]
    assert logs["job"].endswith("ValueError: bad input data\n")
    assert "python_job.py" not in logs["job"]


async def test_python_job_under_another_interpreter(loader: WorkflowLoader, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    folder = tmp_path / "other"
    write(
        folder / "other.yaml",
        f"""
        job:
          job_type: python
          processor: steps:WhereAmI
          properties:
            python_executable_path: {venv}/bin/python
            env: {{MODE: test}}
        """,
    )
    write(
        folder / "steps.py",
        """
        import os, sys
        from aiflowd import PythonProcessor

        class WhereAmI(PythonProcessor):
            def process(self, ctx, inputs):
                print(sys.prefix, os.environ["MODE"])
                try:
                    import yaml  # installed for aiflowd, not in the job's venv
                    print("leaked")
                except ImportError:
                    print("isolated")
                return []
        """,
    )
    status, logs, _ = await run_workflow(loader, folder, tmp_path)
    assert status == Status.FINISHED, logs
    assert logs["job"] == f"{venv} test\nisolated\n"


async def test_retries_run_the_job_again(loader: WorkflowLoader, tmp_path: Path) -> None:
    marker = tmp_path / "attempts"
    path = write(
        tmp_path / "flaky.yaml",
        f"""
        job:
          job_type: bash
          bash_command: echo x >> {marker}; test $(wc -l < {marker}) -ge 3
          retries: 3
          retry_delay: 0.01
        """,
    )
    result, runs = await run_execution(loader, path, tmp_path)
    assert result.status == Status.FINISHED
    assert [(r.attempt, r.status, r.reason) for r in runs] == [
        (1, Status.FAILED, "execution started"),
        (2, Status.FAILED, "retry 1 of 3"),
        (3, Status.FINISHED, "retry 2 of 3"),
    ]


@pytest.mark.parametrize("action", ["STOP", "RESTART"])
async def test_event_rules_stop_and_restart_a_running_job(loader: WorkflowLoader, tmp_path: Path, action: str) -> None:
    marker = tmp_path / "runs"
    path = write(
        tmp_path / "rules.yaml",
        f"""
        long:
          job_type: bash
          bash_command: echo run >> {marker}; if [ $(wc -l < {marker}) -ge 2 ]; then exit 0; fi; sleep 30
          action_on_event: [{{event_key: go, action: {action}}}]
        """,
    )

    async def send_go(engine, runs) -> None:  # type: ignore[no-untyped-def]
        with anyio.fail_after(10):
            while not marker.exists():  # the command itself runs, not only its wrapper
                await anyio.sleep(0.01)
        engine.send_event(Event("go", "now"))

    result, runs = await run_execution(loader, path, tmp_path, only_job="long", settings={"stop_grace_period": 1.0}, during=send_go)
    summary = [(r.attempt, r.status, r.reason) for r in runs]
    if action == "STOP":
        assert summary == [(1, Status.KILLED, "started alone")]
        assert result.status == Status.KILLED
    else:
        assert summary == [(1, Status.KILLED, "started alone"), (2, Status.FINISHED, "event go=now")]
