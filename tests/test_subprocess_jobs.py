"""Bash jobs as real process groups: exit status, environment, stop, timeout and reattach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from aiflowd.controllers.supervisor import JobSupervisor
from aiflowd.model import JobConfig, Status
from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
from aiflowd.plugins.bash import BashJob
from aiflowd.plugins.bash.controller import BashJobController

from .conftest import pid_alive, wait_for


def bash_job(command: str, env: dict[str, str] | None = None, cwd: str | None = None, timeout: float | None = None) -> BashJob:
    return BashJob(JobConfig("job", "bash", timeout=timeout), command, "utf-8", env or {}, cwd)


def runtime_env(tmp_path: Path, attempt: int = 1, grace: float = 2.0, **settings: object) -> JobRuntimeEnv:
    info = JobExecutionInfo("wf", "job", "exec1", f"exec1.job.{attempt}", attempt)
    return JobRuntimeEnv(
        working_dir=str(tmp_path / "work" / str(attempt)),
        log_path=str(tmp_path / "logs" / f"job.{attempt}.log"),
        workflow_dir=str(tmp_path),
        job_execution_info=info,
        settings={"stop_grace_period": grace, **settings},
    )


async def run_job(job: BashJob, env: JobRuntimeEnv) -> tuple[Status, int | None, str]:
    controller = BashJobController()
    handle = await controller.submit_job(job, env)
    code = await controller.get_result(handle)
    status = await controller.get_job_status(handle)
    await controller.cleanup_job(handle, env)
    return status, code, Path(env.log_path).read_text()


async def test_exit_status_and_log(tmp_path: Path) -> None:
    status, code, log = await run_job(bash_job("echo out; echo err >&2; exit 7"), runtime_env(tmp_path))
    assert (status, code) == (Status.FAILED, 7)
    assert log == "out\nerr\n"
    status, code, _ = await run_job(bash_job("true"), runtime_env(tmp_path, attempt=2))
    assert (status, code) == (Status.FINISHED, 0)


async def test_environment_is_clean_merged_and_has_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAEMON_SECRET", "leak")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000")
    command = 'echo "secret=${DAEMON_SECRET-unset} notify=${NOTIFY_SOCKET-unset} watchdog=${WATCHDOG_USEC-unset}"; echo "greet=$GREETING base=$BASE job=$AIFLOWD_JOB exec=$AIFLOWD_JOB_EXECUTION_ID"; test -n "$PATH"'
    env = runtime_env(tmp_path, job_env={"BASE": "from-config", "NOTIFY_SOCKET": "sneaky"})
    status, _, log = await run_job(bash_job(command, env={"GREETING": "hi"}), env)
    assert status == Status.FINISHED
    assert log == "secret=unset notify=unset watchdog=unset\ngreet=hi base=from-config job=job exec=exec1.job.1\n"


async def test_each_execution_has_its_own_working_dir_and_cwd(tmp_path: Path) -> None:
    env = runtime_env(tmp_path)
    _, _, log = await run_job(bash_job("pwd", cwd="sub/dir"), env)
    assert log.strip() == os.path.join(env.working_dir, "sub/dir")


async def test_stop_kills_children_that_trap_sigterm(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = textwrap.dedent(
        f"""
        for i in 1 2; do bash -c 'trap "" TERM; while true; do sleep 0.05; done' & echo $! >> {pids}; done
        trap "" TERM
        wait
        """
    )
    env = runtime_env(tmp_path, grace=0.3)
    controller = BashJobController()
    handle = await controller.submit_job(bash_job(command), env)
    children = wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2 and [int(p) for p in pids.read_text().split()])
    await controller.stop_job(handle, env)
    assert await controller.get_job_status(handle) == Status.KILLED
    wait_for(lambda: not any(pid_alive(pid) for pid in [handle.pid, *children]), timeout=3)
    await controller.cleanup_job(handle, env)


async def test_supervisor_timeout_fails_and_stops_the_job(tmp_path: Path) -> None:
    env = runtime_env(tmp_path, grace=1.0)
    supervisor = JobSupervisor(BashJobController(), bash_job("echo started; sleep 30"), env, timeout=0.3)
    outcome = await supervisor.run()
    assert outcome.status == Status.FAILED
    assert outcome.message == "timed out after 0.3s"
    assert not pid_alive(outcome.handle_record["pid"])
    assert Path(env.log_path).read_text().startswith("started\naiflowd: timed out after 0.3s; stopping\n")


async def test_supervisor_stop_request_is_killed(tmp_path: Path) -> None:
    env = runtime_env(tmp_path)
    supervisor = JobSupervisor(BashJobController(), bash_job("sleep 30"), env)
    async with anyio.create_task_group() as tg:
        outcomes = []

        async def run() -> None:
            outcomes.append(await supervisor.run())

        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        supervisor.request_stop("stopped by test")
    assert outcomes[0].status == Status.KILLED and outcomes[0].message == "stopped by test"


SPAWNER = """
import asyncio, json, sys
from pathlib import Path
from aiflowd.plugins.bash.controller import BashJobController
from aiflowd.model import JobConfig
from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
from aiflowd.plugins.bash import BashJob

async def main():
    tmp = Path(sys.argv[1])
    env = JobRuntimeEnv(str(tmp / "work"), str(tmp / "job.log"), str(tmp), JobExecutionInfo("wf", "job", "e", "e.job.1"))
    handle = await BashJobController().submit_job(BashJob(JobConfig("job", "bash"), sys.argv[2], "utf-8", {}, None), env)
    print(json.dumps(handle.to_json()))

asyncio.run(main())
"""


def spawn_from_another_process(tmp_path: Path, command: str) -> dict[str, object]:
    """Start a job from a short-lived process that exits at once, as a daemon that crashed would."""
    out = subprocess.run([sys.executable, "-c", SPAWNER, str(tmp_path), command], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def test_reattach_reads_the_exit_status_of_a_job_that_ended_meanwhile(tmp_path: Path) -> None:
    record = spawn_from_another_process(tmp_path, "echo done; exit 7")
    wait_for(lambda: not pid_alive(int(record["pid"])))
    env = runtime_env(tmp_path)
    handle = await BashJobController().reattach(record, env)
    assert handle is not None
    assert await BashJobController().get_result(handle) == 7
    assert await BashJobController().get_job_status(handle) == Status.FAILED


async def test_reattach_waits_for_a_job_still_running(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    record = spawn_from_another_process(tmp_path, f"while [ ! -e {gate} ]; do sleep 0.01; done; exit 3")
    controller = BashJobController()
    handle = await controller.reattach(record, runtime_env(tmp_path))
    assert handle is not None
    assert await controller.get_job_status(handle) == Status.RUNNING
    gate.touch()
    assert await controller.get_result(handle) == 3


async def test_reattach_does_not_mistake_a_recycled_pid(tmp_path: Path) -> None:
    record = spawn_from_another_process(tmp_path, "sleep 30")
    controller = BashJobController()
    wrong = dict(record, start_time=int(record["start_time"]) + 1)
    handle = await controller.reattach(wrong, runtime_env(tmp_path))
    assert handle is not None
    assert await controller.get_job_status(handle) == Status.FAILED
    assert await controller.get_result(handle) is None  # nothing recorded: the status was lost
    real = await controller.reattach(record, runtime_env(tmp_path))
    await controller.stop_job(real, runtime_env(tmp_path, grace=0.5))
    assert not pid_alive(int(record["pid"]))
