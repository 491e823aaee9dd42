"""Python jobs in real job processes: DataEdges, failures, properties, another interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from aiflowd.model import Event, Status
from aiflowd.workflows.loader import LoaderSettings, WorkflowLoader

from . import conftest
from .conftest import write


@pytest.fixture(params=[True, False], ids=["warm", "cold"])
def warm(request: pytest.FixtureRequest) -> bool:
    """Each test runs its definition and its Python jobs warm (forks of the fork server) and cold."""
    return bool(request.param)


@pytest.fixture
def loader(registry, warm: bool) -> WorkflowLoader:  # type: ignore[no-untyped-def]
    return WorkflowLoader(registry, LoaderSettings(compile_timeout=10, warm_start=warm))


async def run_execution(loader: WorkflowLoader, path: Path, tmp_path: Path, **kwargs: Any) -> Any:
    """``conftest.run_execution`` with the jobs started as the loader compiles: warm or cold."""
    kwargs["settings"] = {"warm_start": loader.settings.warm_start, **(kwargs.get("settings") or {})}
    return await conftest.run_execution(loader, path, tmp_path, **kwargs)


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


PARENT = """
import os, sys
from aiflowd import PythonProcessor, job_config, user_define_operation

class Parent(PythonProcessor):
    def process(self, ctx, inputs):
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as fh:
            print(fh.read().split(b"\\0")[0].decode(), sys.argv[0].rsplit("/", 1)[-1])
        return []

with job_config("job"):
    user_define_operation(processor=Parent())
"""


@pytest.mark.parametrize("env", [{}, {"PYTHONPATH": "/nonexistent"}, {"PYTHONHASHSEED": "1"}], ids=["plain", "pythonpath", "hashseed"])
async def test_a_warm_job_runs_under_a_forked_wrapper_unless_its_env_changes_imports(
    loader: WorkflowLoader, tmp_path: Path, warm: bool, env: dict[str, str]
) -> None:
    folder = tmp_path / "parent"
    env_yaml = ", ".join(f"{k}: {v!r}" for k, v in env.items())
    write(folder / "parent.yaml", f"job:\n  job_type: python\n  properties:\n    env: {{{env_yaml}}}\n")
    write(folder / "parent.py", PARENT)
    _, runs = await run_execution(loader, folder, tmp_path)
    log = Path(runs[0].env.log_path).read_text()
    wrapper = "aiflowd-job-wrapper" if warm and not env else "/bin/sh"
    assert log.split()[:2] == [wrapper, "python_job.py"], log


EXITS = [
    ("sys_exit", "import sys\nsys.exit(3)", Status.FAILED, "", 3),
    ("sys_exit_text", "import sys\nsys.exit('done badly')", Status.FAILED, "done badly\n", 1),
    ("hard_exit", "import os\nprint('x', flush=True)\nos._exit(0)", Status.FINISHED, "x\n", 0),
    ("killed", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", Status.FAILED, "Killed\n", 137),
    ("interrupted", "raise KeyboardInterrupt", Status.FAILED, None, 130),
    ("megabytes", "import sys\nsys.stdout.write('y' * 3_000_000)", Status.FINISHED, None, 0),
    ("leaves_a_process", "import subprocess\nsubprocess.Popen(['setsid', 'sleep', '30'])", Status.FINISHED, "", 0),
]


@pytest.mark.parametrize(("name", "body", "status", "output", "code"), EXITS, ids=[e[0] for e in EXITS])
async def test_a_job_ends_warm_as_it_does_cold(
    loader: WorkflowLoader, tmp_path: Path, name: str, body: str, status: Status, output: str | None, code: int
) -> None:
    folder = tmp_path / name
    write(folder / f"{name}.yaml", "job:\n  job_type: python\n  processor: steps:Step\n")
    indented = "\n".join("        " + line for line in body.splitlines())
    write(
        folder / "steps.py",
        f"from aiflowd import PythonProcessor\n\nclass Step(PythonProcessor):\n    def process(self, ctx, inputs):\n{indented}\n        return []\n",
    )
    _, runs = await run_execution(loader, folder, tmp_path)
    log = Path(runs[0].env.log_path).read_text()
    assert (runs[0].status, runs[0].exit_code) == (status, code), log
    if output is not None:
        assert log == output
    elif name == "megabytes":
        assert len(log) == 3_000_000
    else:
        assert log.endswith("KeyboardInterrupt\n"), log
