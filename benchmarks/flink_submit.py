"""Flink submission latency: the same jar job through REST (jar cached) and through the CLI.

From ``submit_job`` to the cluster reporting the job RUNNING, measured in one run against
the project's cluster (scripts/flink-cluster.sh start). Target: REST at least 10 times
faster than the CLI. Also: a workflow file dropped into the watched folder -> its Flink
job RUNNING on the cluster, through a real daemon.

And the same for a SQL job (an unbounded datagen -> blackhole INSERT), three ways: REST with
the program run inside the JobManager (``flink.shared_files: true``, the default), REST
with the program compiled on the daemon's side and its job graph sent by Flink's REST
client (``shared_files: false``), and the CLI (``flink run -py``). ``--sql-only`` measures
only that.

Usage: python -m benchmarks.flink_submit [--rounds 5] [--sql-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pyflink

from aiflowd.model import JobConfig
from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
from aiflowd.plugins.flink import FlinkJavaJob, FlinkPythonJob, flink_options
from aiflowd.plugins.flink.controller import FlinkJobController
from benchmarks.daemon_process import BenchDaemon

REST = "http://127.0.0.1:" + os.environ.get("FLINK_REST_PORT", "8081")
SOURCE = Path(__file__).resolve().parent.parent / "tests" / "flink" / "WordCount.java"


def state(job_id: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{REST}/jobs/{job_id}", timeout=5) as answer:
            return json.load(answer)["state"]
    except Exception:  # noqa: BLE001 - not there (yet)
        return None


def build_jar(folder: Path) -> Path:
    lib = Path(pyflink.__file__).parent / "lib"
    subprocess.run(["javac", "-d", str(folder / "classes"), "-cp", f"{lib}/*", str(SOURCE)], check=True)
    subprocess.run(["jar", "cf", str(folder / "wordcount.jar"), "-C", str(folder / "classes"), "."], check=True)
    return folder / "wordcount.jar"


async def submit_to_running(controller: FlinkJobController, jar: Path, root: Path, via: str, i: int) -> float:
    options = flink_options({"run_mode": "cluster", "submit_via": via})
    job = FlinkJavaJob(
        JobConfig("bench", "flink"), str(jar), "org.example.WordCount", [str(root / f"{via}{i}"), "1000000000", "50"], options
    )
    info = JobExecutionInfo("bench", "bench", "1", f"{via}.{i}.{time.time_ns()}")
    env = JobRuntimeEnv(
        str(root / "work" / f"{via}{i}"), str(root / "logs" / f"{via}{i}.log"), str(root), info, {"flink": {"rest_url": REST}}
    )
    started = time.perf_counter()
    handle = await controller.submit_job(job, env)
    while state(handle.job_id) != "RUNNING":  # type: ignore[attr-defined]
        await asyncio.sleep(0.005)
    took = time.perf_counter() - started
    await controller.stop_job(handle, env)
    return took


SQL = """\
CREATE TABLE src (n BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '10');
CREATE TABLE snk (n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO snk SELECT n FROM src;
"""


async def sql_submit_to_running(controller: FlinkJobController, root: Path, via: str, i: int) -> float:
    """A streaming SQL job: ``submit_job`` -> RUNNING on the cluster."""
    options = flink_options({"run_mode": "cluster", "submit_via": "cli" if via == "cli" else "rest"})
    statements = [s.strip() for s in SQL.split(";") if s.strip()]
    node = {"node_id": "q", "name": "q", "output_num": 0, "inputs": [], "kind": "sql_statements"}
    node.update({"statements": statements, "class": "sql", "script": SQL})
    job = FlinkPythonJob(JobConfig("sql", "flink"), [node], options)
    info = JobExecutionInfo("bench", "sql", "1", f"sql.{via}.{i}.{time.time_ns()}")
    work = root / "sqlwork" / f"{via}{i}"
    (root / "sqlwf").mkdir(exist_ok=True)
    flink = {"rest_url": REST, "shared_files": via != "remote"}
    env = JobRuntimeEnv(str(work), str(root / "logs" / f"sql{via}{i}.log"), str(root / "sqlwf"), info, {"flink": flink})
    started = time.perf_counter()
    handle = await controller.submit_job(job, env)
    while state(handle.job_id) != "RUNNING":  # type: ignore[attr-defined]
        await asyncio.sleep(0.005)
    took = time.perf_counter() - started
    await controller.stop_job(handle, env)
    return took


def drop_to_running(jar: Path, root: Path, drops: int) -> list[float]:
    daemon = BenchDaemon(root / "daemon", f"flink: {{rest_url: '{REST}'}}\n")
    daemon.start()
    samples = []
    try:
        for i in range(drops):
            folder = root / "staging" / f"stream{i}"
            folder.mkdir(parents=True)
            shutil.copy(jar, folder / "wordcount.jar")
            (folder / f"stream{i}.yaml").write_text(
                f"count:\n  job_type: flink\n  main_jar_file: wordcount.jar\n  entry_class: org.example.WordCount\n"
                f"  args: ['{root}/drop{i}', '1000000000', '50']\n"
            )
            started = time.perf_counter()
            os.rename(folder, daemon.workflows / folder.name)  # the whole folder appears at once
            name = f"aiflowd-test-drop{i}"
            while True:
                with urllib.request.urlopen(f"{REST}/jobs/overview", timeout=5) as answer:
                    if any(j["name"] == name and j["state"] == "RUNNING" for j in json.load(answer)["jobs"]):
                        break
                time.sleep(0.005)
            samples.append(time.perf_counter() - started)
            os.rename(daemon.workflows / folder.name, root / "staging" / f"done{i}")  # removal stops the job
    finally:
        daemon.stop()
    return samples


async def sql_main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        controller = FlinkJobController()
        samples: dict[str, list[float]] = {"rest": [], "remote": [], "cli": []}
        for i in range(rounds):  # interleaved: a change in the machine's load weighs on all three alike
            for via, taken in samples.items():
                taken.append(await sql_submit_to_running(controller, root, via, i))
    print(f"a streaming SQL job, submit_job -> RUNNING on the cluster, median of {rounds}")
    names = {
        "rest": "REST, in the JobManager (shared_files: true)",
        "remote": "REST, compiled here (shared_files: false)",
        "cli": "CLI (flink run -d -py)",
    }
    for via, taken in samples.items():
        print(f"  {names[via]:<45}: {statistics.median(taken) * 1000:7.1f} ms  (all: {', '.join(f'{x * 1000:.0f}' for x in taken)})")


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jar = build_jar(root)
        controller = FlinkJobController()
        await submit_to_running(controller, jar, root, "rest", -1)  # uploads the jar once: later runs use the cache
        rest = [await submit_to_running(controller, jar, root, "rest", i) for i in range(rounds)]
        cli = [await submit_to_running(controller, jar, root, "cli", i) for i in range(rounds)]
        drops = drop_to_running(jar, root, rounds)
    r, c = statistics.median(rest) * 1000, statistics.median(cli) * 1000
    print(f"the same jar job, submit_job -> RUNNING on the cluster, median of {rounds}")
    print(f"  REST (jar upload cached): {r:7.1f} ms")
    print(f"  CLI (flink run -d)      : {c:7.1f} ms")
    print(f"  CLI / REST              : {c / r:7.1f} x  (target >= 10)")
    print(f"  file dropped -> Flink job RUNNING (daemon, REST): median {statistics.median(drops) * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sql-only", action="store_true", help="only the SQL job, both ways")
    arguments = parser.parse_args()
    if not arguments.sql_only:
        asyncio.run(main(arguments.rounds))
    asyncio.run(sql_main(arguments.rounds))
