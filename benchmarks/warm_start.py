"""Warm starts: definitions and Python jobs in forks of the fork server, next to cold starts.

Three measurements, each with its references taken in the same run:

``compile``
    One definition compile, warm and cold (median of N loads), with the warm one broken
    down: the fork server's round trip for a definition that does nothing (fork, request,
    output and status back), the import of the definition and the graph out (both timed
    in this process with the compiler's own code).
``launch``
    Python jobs (one trivial node) through the PythonJobController and JobSupervisor,
    warm and cold, next to ``python -c pass`` spawned bare from asyncio. Target: warm at
    least 3x the bare cold rate.
``many``
    A real daemon given N Python-defined workflows (one bash job each) and N YAML-only
    ones: time until all are served, the daemon's and the fork servers' memory.
    Target: at most 60 s on 2 cores, RSS at most 300 MB in all.

Usage: python -m benchmarks.warm_start compile [--rounds 20]
       python -m benchmarks.warm_start launch [--jobs 300] [--concurrency 8] [--rounds 3]
       python -m benchmarks.warm_start many [--workflows 10000] [--config 'max_parallel_loads: 4\\n...']
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiflowd.plugin_interface import PluginRegistry
from aiflowd.workflows.loader import LoaderSettings, WorkflowLoader
from benchmarks.compile_cost import DEFINITION  # the same definition, warm and cold
from benchmarks.measure import median_ms


def _registry() -> PluginRegistry:
    registry = PluginRegistry()
    registry.load_builtin()
    return registry


def _interleaved_ms(fns: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median milliseconds of each function, run in turns so that a busy moment hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def compile_cost(rounds: int) -> None:
    from aiflowd.controllers.process_group import run_helper
    from aiflowd.runners import compile_workflow
    from aiflowd.workflows import dsl

    registry = _registry()
    warm, cold = (WorkflowLoader(registry, LoaderSettings(warm_start=w)) for w in (True, False))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "flow"
        folder.mkdir()
        (folder / "flow.yaml").write_text("".join(f"job_{i}:\n  job_type: python\n" for i in range(5)))
        (folder / "flow.py").write_text(DEFINITION)
        (Path(tmp) / "empty.py").write_text("\n")
        empty_request = Path(tmp) / "empty.json"
        empty_request.write_text(
            json.dumps({"workflow_dir": tmp, "definition": f"{tmp}/empty.py", "module": "empty", "yaml_processors": {}})
        )
        helper = [sys.executable, "-m", "aiflowd.runners.compile_workflow", str(empty_request), f"{tmp}/empty.out"]
        warm.load(str(folder))  # the fork servers start once, as in a daemon
        warm.load(str(folder))
        timed = _interleaved_ms(
            {
                "bare": lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
                "bare_import": lambda: subprocess.run(
                    [sys.executable, "-c", "import aiflowd.workflows.dsl, aiflowd.plugins.python"], check=True
                ),
                "warm": lambda: warm.load(str(folder)),
                "cold": lambda: cold.load(str(folder)),
                "round_trip": lambda: run_helper(helper, env={}, cwd=tmp, timeout=30, warm=True),
            },
            rounds,
        )
        request = {"workflow_dir": str(folder), "definition": str(folder / "flow.py"), "module": "flow", "yaml_processors": {}}
        cwd, path = os.getcwd(), list(sys.path)

        def define() -> Any:
            compiler = compile_workflow._Compiler(request)
            builder = dsl.WorkflowBuilder()
            sys.modules.pop("flow", None)
            with dsl.building(builder):
                compiler._run_definition(builder)
            return compiler, builder

        try:
            sys.path.insert(0, str(folder))
            definition_ms = median_ms(define, rounds)
            compiler, builder = define()
            graph_ms = median_ms(
                lambda: json.dumps({job: [compiler._encode_node(job, n) for n in nodes] for job, nodes in builder.jobs.items()}), rounds
            )
        finally:
            os.chdir(cwd)
            sys.path[:] = path
    rest = timed["warm"] - timed["round_trip"] - definition_ms - graph_ms
    print(f"one definition compile (5 python jobs, 10 nodes, 4 rules), median of {rounds}, measured in turns")
    print(f"  python -c pass (reference)                       : {timed['bare']:6.1f} ms")
    print(f"  python importing aiflowd's DSL (reference)       : {timed['bare_import']:6.1f} ms")
    print(f"  load, cold (a new interpreter)                   : {timed['cold']:6.1f} ms")
    print(f"  load, warm (a fork of the fork server)           : {timed['warm']:6.1f} ms  ({timed['cold'] / timed['warm']:.1f}x faster)")
    print("  warm, broken down:")
    print(f"    fork, request, output and status back, exit    : {timed['round_trip']:6.2f} ms  (run_helper of an empty definition)")
    print(f"    import of the definition (timed in-process)    : {definition_ms:6.2f} ms")
    print(f"    graph out (nodes pickled, JSON; in-process)    : {graph_ms:6.2f} ms")
    print(f"    the loader around it (YAML, request, result)   : {rest:6.2f} ms  (the rest)")


async def _bare(jobs: int, concurrency: int) -> float:
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
            await process.wait()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(jobs)))
    return jobs / (time.perf_counter() - started)


async def _python_jobs(jobs: int, concurrency: int, root: Path, warm: bool, run_dir: str) -> float:
    from aiflowd.controllers.supervisor import JobSupervisor
    from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
    from aiflowd.plugins.python.controller import PythonJobController

    folder = root / "noop"
    folder.mkdir(parents=True)
    (folder / "noop.yaml").write_text("job:\n  job_type: python\n  processor: steps:Noop\n")
    (folder / "steps.py").write_text(
        "from aiflowd import PythonProcessor\n\nclass Noop(PythonProcessor):\n    def process(self, ctx, inputs):\n        return []\n"
    )
    job = WorkflowLoader(_registry(), LoaderSettings(warm_start=warm)).load(str(folder)).jobs["job"]
    limit = asyncio.Semaphore(concurrency)
    controller = PythonJobController()
    envs = [
        JobRuntimeEnv(
            working_dir=str(root / "work" / str(i)),
            log_path=str(root / "logs" / f"{i}.log"),
            workflow_dir=str(folder),
            job_execution_info=JobExecutionInfo("bench", "job", "e1", f"e1.job{i}.1"),
            settings={"run_dir": run_dir, "warm_start": warm},
        )
        for i in range(jobs)
    ]

    async def one(env: JobRuntimeEnv) -> None:
        async with limit:
            outcome = await JobSupervisor(controller, job, env).run()
            assert outcome.exit_code == 0, Path(env.log_path).read_text()

    from aiflowd.controllers import process_group

    for _ in range(len(process_group._SPAWNER._all)):  # every fork server starts once, as in a daemon
        await one(envs.pop())
    started = time.perf_counter()
    await asyncio.gather(*(one(env) for env in envs))
    return len(envs) / (time.perf_counter() - started)


async def launch_rate(jobs: int, concurrency: int, rounds: int) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # measure work, not log printing
    tmpfs = "/dev/shm" if os.path.isdir("/dev/shm") else None
    results: dict[str, list[float]] = {"bare": [], "warm": [], "cold": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir=tmpfs) as tmp:
            base = Path(tmp)
            results["bare"].append(await _bare(jobs, concurrency))
            results["warm"].append(await _python_jobs(jobs, concurrency, base / "warm", True, str(base / "run")))
            results["cold"].append(await _python_jobs(jobs, concurrency, base / "cold", False, str(base / "run")))
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    print(f"{jobs} trivial Python jobs (one node), concurrency {concurrency}, folders on tmpfs, median of {rounds} rounds")
    print(f"  bare asyncio spawn of python -c pass (reference) : {medians['bare']:6.0f} /s")
    print(
        f"  Python jobs through aiflowd, cold                : {medians['cold']:6.0f} /s  ({medians['cold'] / medians['bare']:.2f}x bare)"
    )
    print(
        f"  Python jobs through aiflowd, warm                : {medians['warm']:6.0f} /s  ({medians['warm'] / medians['bare']:.2f}x bare; target >= 3x)"
    )


def _rss_kb(pid: int, key: str = "VmRSS:") -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(key))
    except (OSError, StopIteration):
        return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of ``pid`` (and of its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11:15] if children) if children else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _fork_servers(daemon_pid: int) -> list[int]:
    from aiflowd.controllers.process_group import REAPER

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                parts = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == daemon_pid and REAPER.encode() in parts and b"spawner" in parts:
            found.append(int(entry))
    return found


def many(count: int, extra_config: str = "") -> None:
    from benchmarks.daemon_process import BenchDaemon

    with tempfile.TemporaryDirectory() as tmp:
        daemon = BenchDaemon(Path(tmp) / "many", extra_config)
        trigger = "start_new_workflow_execution_on_events:\n  - {event_key: go}\n"
        for i in range(count):
            # Event-triggered: served (compiled, validated, recorded) without starting executions.
            (daemon.workflows / f"y{i:05d}.yaml").write_text(trigger + f"extract:\n  job_type: bash\n  bash_command: echo {i}\n")
            folder = daemon.workflows / f"p{i:05d}"
            folder.mkdir()
            (folder / f"p{i:05d}.yaml").write_text(trigger)
            (folder / f"p{i:05d}.py").write_text(
                "from aiflowd import BashProcessor, job_config, user_define_operation\n\n"
                f"with job_config('extract'):\n    user_define_operation(processor=BashProcessor('echo {i}'))\n"
            )
        started = time.perf_counter()
        ready = daemon.start()
        assert daemon.process is not None
        ctl = [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(daemon.socket), "--json", "status"]
        status_ms = []
        peak = {"daemon": 0, "servers": 0, "pss": 0}
        while True:
            asked = time.perf_counter()
            status = json.loads(subprocess.run(ctl, check=True, capture_output=True, text=True).stdout)
            status_ms.append((time.perf_counter() - asked) * 1000)
            servers = _fork_servers(daemon.process.pid)
            peak["daemon"] = max(peak["daemon"], _rss_kb(daemon.process.pid))
            peak["servers"] = max(peak["servers"], sum(_rss_kb(p) for p in servers))
            peak["pss"] = max(peak["pss"], _pss_kb(daemon.process.pid) + sum(_pss_kb(p) for p in servers))
            served = sum(n for state, n in status["workflows"].items() if state != "loading")
            if served >= 2 * count:
                break
            time.sleep(0.5)
        all_served = time.perf_counter() - started
        states = status["workflows"]
        daemon_cpu = _cpu_seconds(daemon.process.pid)
        servers_cpu = sum(_cpu_seconds(p, children=True) for p in _fork_servers(daemon.process.pid))
        daemon_rss = _rss_kb(daemon.process.pid) / 1024
        server_rss = [_rss_kb(p) / 1024 for p in _fork_servers(daemon.process.pid)]
        daemon.stop()
    print(f"{count} Python-defined workflows (one bash job each) and {count} YAML-only ones, in one folder")
    print(f"  start to READY=1                      : {ready:6.1f} s")
    print(f"  start to all {2 * count} served          : {all_served:6.1f} s  (target <= 60 s); states: {states}")
    print(
        f"  CPU: daemon {daemon_cpu:.1f} s, fork servers and their children {servers_cpu:.1f} s (2 cores: {2 * all_served:.0f} s available)"
    )
    print(f"  aiflowctl status while loading        : median {statistics.median(status_ms):.0f} ms, max {max(status_ms):.0f} ms")
    print(f"  daemon RSS, all served (peak)         : {daemon_rss:6.1f} MB ({peak['daemon'] / 1024:.1f} MB)")
    print(
        f"  fork servers RSS, all served (peak)   : {sum(server_rss):6.1f} MB ({peak['servers'] / 1024:.1f} MB), {len(server_rss)} of them"
    )
    print(
        f"  in all (RSS, shared pages counted twice): {daemon_rss + sum(server_rss):6.1f} MB (peak PSS {peak['pss'] / 1024:.1f} MB; target <= 300 MB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("compile").add_argument("--rounds", type=int, default=20)
    launch = sub.add_parser("launch")
    launch.add_argument("--jobs", type=int, default=300)
    launch.add_argument("--concurrency", type=int, default=8)
    launch.add_argument("--rounds", type=int, default=3)
    many_parser = sub.add_parser("many")
    many_parser.add_argument("--workflows", type=int, default=10_000)
    many_parser.add_argument("--config", default="", help="extra lines for the daemon's config, \\n between them")
    args = parser.parse_args()
    if args.what == "compile":
        compile_cost(args.rounds)
    elif args.what == "launch":
        asyncio.run(launch_rate(args.jobs, args.concurrency, args.rounds))
    else:
        many(args.workflows, args.config.replace("\\n", "\n"))
