"""Launch rate of trivial bash jobs through the SubprocessController, next to bare asyncio.

Both sides run ``bash -c true`` N times with the same concurrency in the same run: the
reference spawns it with ``asyncio.create_subprocess_exec`` and waits; aiflowd submits a
BashJob (own process group, status-writing wrapper, log file, working folder), waits
for its result and cleans up. Target: aiflowd at least 0.7 of the bare rate.

The wrapper is a child subreaper (so nothing a job starts outlives it), forked by the
small spawner process rather than by this one (see aiflowd/controllers/process_group.py):
a real fork instead of the reference's vfork, about 2 ms more CPU per job on two cores.

The wrapper's exit-status file goes to the daemon's run_dir: $RUNTIME_DIRECTORY (a tmpfs)
under systemd, the state folder otherwise; both are measured. The disk's cost of one new
folder and file is printed too: every job pays it for its working folder and log.

Usage: python -m benchmarks.spawn_rate [--jobs 1000] [--concurrency 32] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from aiflowd.controllers.supervisor import JobSupervisor
from aiflowd.model import JobConfig
from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
from aiflowd.plugins.bash import BashJob
from aiflowd.plugins.bash.controller import BashJobController


async def bare(jobs: int, concurrency: int) -> float:
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            process = await asyncio.create_subprocess_exec("bash", "-c", "true")
            await process.wait()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(jobs)))
    return jobs / (time.perf_counter() - started)


def environments(root: Path, jobs: int, run_dir: str) -> list[JobRuntimeEnv]:
    return [
        JobRuntimeEnv(
            working_dir=str(root / "work" / str(i)),
            log_path=str(root / "logs" / f"{i}.log"),
            workflow_dir=str(root),
            job_execution_info=JobExecutionInfo("bench", f"job{i}", "e1", f"e1.job{i}.1"),
            settings={"run_dir": run_dir},
        )
        for i in range(jobs)
    ]


async def controller(jobs: int, concurrency: int, root: Path, supervised: bool, run_dir: str) -> float:
    limit = asyncio.Semaphore(concurrency)
    ctl = BashJobController()
    job = BashJob(JobConfig("job", "bash"), "true", "utf-8", {}, None)
    envs = environments(root, jobs, run_dir)

    async def one(env: JobRuntimeEnv) -> None:
        async with limit:
            if supervised:
                outcome = await JobSupervisor(ctl, job, env).run()
                assert outcome.exit_code == 0
                return
            handle = await ctl.submit_job(job, env)
            assert await ctl.get_result(handle) == 0
            await ctl.cleanup_job(handle, env)

    started = time.perf_counter()
    await asyncio.gather(*(one(env) for env in envs))
    return jobs / (time.perf_counter() - started)


def disk_metadata_cost(root: Path, count: int = 200) -> float:
    """Milliseconds for one folder plus one new file on the disk under test: what each job pays."""
    started = time.perf_counter()
    for i in range(count):
        folder = root / f"probe{i}"
        folder.mkdir(parents=True)
        (folder / "log").touch()
    return (time.perf_counter() - started) / count * 1000


async def main(jobs: int, concurrency: int, rounds: int, root: str | None) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # measure work, not log printing
    tmpfs = "/dev/shm" if os.path.isdir("/dev/shm") else None
    results: dict[str, list[float]] = {"bare": [], "tmpfs": [], "disk": [], "supervised": []}
    metadata = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir=root) as tmp, tempfile.TemporaryDirectory(dir=tmpfs) as run:
            base = Path(tmp)
            metadata.append(disk_metadata_cost(base / "probe"))
            results["bare"].append(await bare(jobs, concurrency))
            results["tmpfs"].append(await controller(jobs, concurrency, base / "a", supervised=False, run_dir=run))
            results["disk"].append(await controller(jobs, concurrency, base / "b", supervised=False, run_dir=str(base / "run")))
            results["supervised"].append(await controller(jobs, concurrency, base / "c", supervised=True, run_dir=run))
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    print(f"{jobs} trivial bash jobs, concurrency {concurrency}, median of {rounds} rounds")
    print(f"  disk under test: {statistics.median(metadata):.2f} ms per new folder + file (every job makes its working folder and log)")
    print(f"  bare asyncio spawn of bash -c true       : {medians['bare']:7.0f} jobs/s  (reference)")
    labels = {
        "tmpfs": "SubprocessController, run_dir on tmpfs",
        "disk": "SubprocessController, run_dir on disk",
        "supervised": "JobSupervisor + controller (tmpfs)",
    }
    for name, label in labels.items():
        print(f"  {label:<41}: {medians[name]:7.0f} jobs/s  ratio {medians[name] / medians['bare']:.2f}  (target >= 0.70)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", help="where working folders and logs go (default: the system temp folder)")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.concurrency, args.rounds, args.dir))
