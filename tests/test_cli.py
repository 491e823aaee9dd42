"""The real command-line tools as a user runs them: run-once, validate, the examples."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aiflowd.scheduler import next_slot
from aiflowd.workflows.loader import WorkflowLoader

from .conftest import REPO, cli_env, pid_alive, wait_for, write
from .daemon_harness import Daemon

EXAMPLES = REPO / "examples" / "workflows"


def aiflowd(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowd", *args], cwd=cwd, capture_output=True, text=True, env=cli_env(), timeout=60, **kwargs
    )


def aiflowctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowctl", *args], cwd=cwd, capture_output=True, text=True, env=cli_env(), timeout=60
    )


#: Lines of the job logs run-once prints for each example; a pattern matches a whole line.
EXPECTED_LOGS: dict[str, list[str | re.Pattern[str]]] = {
    "bash_demo": ["hello", "world"],
    "bash_demo_yaml.yaml": ["hello", "world"],
    "python_demo": ["Hello World!"],
    "python_demo_yaml": ["Hello World! from job_1", "Goodbye! from job_2"],
    "dataedge_demo": ["train=8 test=2 mean_train=3.5", "evaluating the model"],
    "periodic_demo.yaml": [re.compile(r"tick at \d\d:\d\d:\d\d"), "tock, after tick"],
    # run-once has no control socket, so the event 'train' would send reaches no daemon:
    # 'train' says so and 'deploy' does not start. The daemon test below runs the real thing.
    "event_demo": ["trained model-1", "no daemon to send model_trained=model-1 to: 'deploy' starts only when a daemon runs this workflow"],
}
#: Jobs of an example that run-once does not start (every other job must start).
NOT_STARTED_BY_RUN_ONCE = {"event_demo": ["deploy"]}


def example_names() -> list[str]:
    """The examples that need no Flink cluster (tests/test_flink.py runs the others)."""
    return sorted(p.name for p in EXAMPLES.iterdir() if not p.name.startswith(("flink", "README", ".", "_")))


def test_every_example_has_a_test() -> None:
    assert example_names() == sorted(EXPECTED_LOGS)


@pytest.mark.parametrize("name", sorted(EXPECTED_LOGS))
def test_example_runs_once(name: str, tmp_path: Path) -> None:
    result = aiflowd("run-once", str(EXAMPLES / name), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in EXPECTED_LOGS[name]:
        pattern = line.pattern if isinstance(line, re.Pattern) else re.escape(line)
        assert re.search(rf"^    {pattern}$", result.stdout, re.MULTILINE), f"{line!r} not in\n{result.stdout}"
    not_started = NOT_STARTED_BY_RUN_ONCE.get(name, [])
    assert re.findall(r"^  (\S+) +not started \(its rules did not fire\)$", result.stdout, re.MULTILINE) == not_started
    assert "FINISHED" in result.stdout.splitlines()[-1]
    assert not list(EXAMPLES.rglob("__pycache__")), "running an example must not write into the workflow folder"


def serve_example(daemon: Daemon, name: str) -> None:
    """Copy an example into the daemon's watched folder in one step (a rename), as a user would drop it there.

    A copy: an example must not depend on where the checkout is (``aiflowd init --examples`` copies them too).
    """
    staged = daemon.root / "staged" / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    if (EXAMPLES / name).is_dir():
        shutil.copytree(EXAMPLES / name, staged, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copyfile(EXAMPLES / name, staged)
    staged.rename(daemon.workflows / name)


def test_event_demo_in_a_daemon_starts_deploy_on_the_event_train_sends(daemon: Daemon) -> None:
    serve_example(daemon, "event_demo")

    def finished(job: str, rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [row for row in rows if row["job"] == job and row["status"] == "FINISHED"]

    rows = daemon.wait_jobs("event_demo", lambda rows: finished("train", rows) and finished("deploy", rows))
    [train], [deploy] = finished("train", rows), finished("deploy", rows)
    assert (train["reason"], deploy["reason"]) == ("execution started", "event model_trained=model-1")
    assert deploy["execution_id"] == train["execution_id"]
    assert daemon.ctl("job", "logs", "event_demo", "train").stdout == "trained model-1\nsent model_trained=model-1\n"
    assert daemon.ctl("job", "logs", "event_demo", "deploy").stdout == "deploying model-1 (model_trained from train)\n"

    # What its YAML offers to try. The execution stays open for the rule: an event sent by hand starts deploy again.
    daemon.ctl("event", "send", "model_trained", "model-2")
    rows = daemon.wait_jobs("event_demo", lambda rows: len(finished("deploy", rows)) == 2)
    assert {row["execution_id"] for row in rows} == {train["execution_id"]}
    assert finished("deploy", rows)[0]["reason"] == "event model_trained=model-2"
    assert daemon.ctl("job", "logs", "event_demo", "deploy").stdout == "deploying model-2 (model_trained from aiflowctl)\n"
    # A new execution ends the open one, and runs both jobs again.
    again = int(daemon.ctl("workflow", "start-execution", "event_demo").stdout.strip().removeprefix("execution_id="))
    rows = daemon.wait_jobs("event_demo", lambda rows: len([row for row in finished("deploy", rows) if row["execution_id"] == again]) == 1)
    assert [row["reason"] for row in rows if row["execution_id"] == again] == ["event model_trained=model-1", "execution started"]
    executions = [(e["id"], e["status"]) for e in daemon.json("workflow", "list-executions", "event_demo")]
    assert executions == [(again, "RUNNING"), (train["execution_id"], "FINISHED")]  # the new one open for its rule


def test_periodic_demo_in_a_daemon_runs_on_its_timer(daemon: Daemon) -> None:
    serve_example(daemon, "periodic_demo.yaml")
    daemon.wait_jobs("periodic_demo", lambda rows: len(rows) == 2 and all(row["status"] == "FINISHED" for row in rows))
    [execution] = daemon.json("workflow", "list-executions", "periodic_demo")
    assert execution["trigger"].startswith("periodic "), execution  # the timer's first slot, not the file's arrival
    assert re.fullmatch(r"tick at \d\d:\d\d:\d\d\n", daemon.ctl("job", "logs", "periodic_demo", "tick").stdout)
    assert daemon.ctl("job", "logs", "periodic_demo", "tock").stdout == "tock, after tick\n"

    # The next slot is a minute away (see the test below); a request runs the workflow meanwhile.
    daemon.ctl("workflow", "start-execution", "periodic_demo")
    daemon.wait_jobs("periodic_demo", lambda rows: len(rows) == 4 and all(row["status"] == "FINISHED" for row in rows))
    assert [e["trigger"] for e in daemon.json("workflow", "list-executions", "periodic_demo")] == ["manual", execution["trigger"]]


def test_periodic_demo_ticks_when_found_then_every_minute(loader: WorkflowLoader) -> None:
    """What its comment promises, without waiting a minute: a slot at once, then one per minute."""
    config = loader.load(str(EXAMPLES / "periodic_demo.yaml")).workflow.periodic_config
    assert config is not None
    found = 1_700_000_000.0  # when the daemon found the workflow: the schedule's anchor
    assert next_slot(config, None, found, found) == found
    assert next_slot(config, found, found + 1, found) == found + 60
    assert next_slot(config, found + 60, found + 61, found) == found + 120


def test_run_once_fails_when_a_job_fails_and_prints_its_log(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "job:\n  job_type: bash\n  bash_command: echo about to fail; exit 4\n")
    result = aiflowd("run-once", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "  job                  FAILED    exit 4" in result.stdout
    assert "    about to fail\n" in result.stdout
    assert result.stdout.splitlines()[-1].endswith(": FAILED")


def test_run_once_single_job_and_unknown_job(tmp_path: Path) -> None:
    path = write(
        tmp_path / "two.yaml",
        "a:\n  job_type: bash\n  bash_command: echo A\nb:\n  job_type: bash\n  bash_command: echo B\n  action_on_job_status: [{upstream_job: a}]\n",
    )
    result = aiflowd("run-once", str(path), "--job", "b", cwd=tmp_path)
    assert result.returncode == 0 and "    B\n" in result.stdout and "    A\n" not in result.stdout
    result = aiflowd("run-once", str(path), "--job", "c", cwd=tmp_path)
    assert result.returncode == 2 and "has no job 'c' (jobs: a, b)" in result.stderr


def test_run_once_reports_an_invalid_workflow(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.yaml", "a:\n  job_tpye: bash\n")
    result = aiflowd("run-once", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"{path}:2:3: a.job_tpye: unknown key (did you mean 'job_type'?)\n"


def test_ctrl_c_stops_every_job_and_its_whole_tree(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    path = write(
        tmp_path / "long.yaml",
        f"""
        a:
          job_type: bash
          bash_command: "sleep 300 & echo $! >> {pids}; trap '' TERM; sleep 300 & echo $! >> {pids}; wait"
        b:
          job_type: bash
          bash_command: "echo $$ >> {pids}; sleep 300"
        """,
    )
    config = write(tmp_path / "aiflowd.yaml", "stop_grace_period: 0.5\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(config), "run-once", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        started = wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3 and [int(p) for p in pids.read_text().split()])
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert "stopping every running job" in err
    assert out.count(" KILLED ") == 2 and out.splitlines()[-1].endswith(": KILLED")
    wait_for(lambda: not any(pid_alive(pid) for pid in started), timeout=3)


def test_validate_exit_codes_and_lines(tmp_path: Path) -> None:
    good = write(tmp_path / "flows" / "good.yaml", "a: {job_type: bash, bash_command: 'true'}\n")
    write(tmp_path / "flows" / "bad.yaml", "a:\n  job_type: bsh\n")
    result = aiflowctl("validate", str(good), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "1 workflow(s) valid\n")
    result = aiflowctl("validate", str(tmp_path / "flows"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == f"{tmp_path}/flows/bad.yaml:2:3: a.job_type: unknown job type 'bsh' (did you mean 'bash'?)\n"
    result = aiflowctl("--json", "validate", str(tmp_path / "flows"), str(tmp_path / "missing.yaml"), cwd=tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert [(r["workflow"].rsplit("/", 1)[1], r["valid"]) for r in report] == [
        ("bad.yaml", False),
        ("good.yaml", True),
        ("missing.yaml", False),
    ]
    assert report[0]["problems"][0] == {
        "file": f"{tmp_path}/flows/bad.yaml",
        "line": 2,
        "column": 3,
        "key": "a.job_type",
        "message": "unknown job type 'bsh' (did you mean 'bash'?)",
    }
    assert aiflowctl("validate", cwd=tmp_path).returncode == 2


def test_validate_the_examples(tmp_path: Path) -> None:
    result = aiflowctl("validate", str(EXAMPLES), cwd=tmp_path)
    assert result.returncode == 0, result.stdout


def test_third_party_plugin_from_a_module_path_runs_a_job(tmp_path: Path) -> None:
    """A plugin written as the AIFlow docs show, found through plugin_paths + plugin_modules."""
    plugins = Path(__file__).parent / "plugins"
    config = write(tmp_path / "aiflowd.yaml", f"plugin_paths: [{plugins}]\nplugin_modules: [touch_plugin]\n")
    folder = tmp_path / "touchy"
    write(
        folder / "touchy.yaml",
        "mark:\n  job_type: touch\nafter:\n  job_type: bash\n  bash_command: cat $AIFLOWD_WORKFLOW_DIR/marked\n  action_on_job_status: [{upstream_job: mark}]\n",
    )
    write(
        folder / "touchy.py",
        """
        from aiflowd import job_config, user_define_operation
        from touch_plugin import TouchProcessor

        with job_config("mark"):
            user_define_operation(processor=TouchProcessor("marked"))
        """,
    )
    result = aiflowd("--config", str(config), "run-once", str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (folder / "marked").read_text().endswith(".mark.1")
    assert ".mark.1\n" in result.stdout


def test_aiflowctl_timeout_must_be_positive(tmp_path: Path) -> None:
    result = aiflowctl("--timeout", "0", "status", cwd=tmp_path)
    assert result.returncode == 2 and "must be more than 0 seconds" in result.stderr
