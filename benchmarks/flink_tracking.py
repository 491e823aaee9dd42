"""Tracking many running Flink jobs: the REST calls and the CPU a real daemon spends on them.

A real aiflowd serves one workflow of ``--jobs`` streaming jar jobs (each a slow
sequence source, one record a second, on a cluster with a slot for each). Once the
cluster runs all of them, the daemon is watched for ``--window`` seconds:

* REST calls per second, counted on the wire by a relay between the daemon and the
  cluster (each HTTP request line the daemon sends, by path);
* the daemon's CPU seconds per second, from ``/proc/PID/stat`` (utime + stime).

Next to it, the reference: one ``flink list`` run against the same cluster (through the
same relay), which is what the same information costs by the Flink CLI for one poll:
its wall time, its CPU time (the child's rusage) and its REST calls. Target: one
``/jobs/overview`` call per cluster per poll interval, not one call per job.

The cluster needs a free slot per job, e.g.
``AIFLOWD_FLINK_SETTINGS='{taskmanager.numberOfTaskSlots: 104, taskmanager.memory.process.size: 3072m,
jobmanager.memory.process.size: 1536m}' scripts/flink-cluster.sh start``.

Usage: python -m benchmarks.flink_tracking [--jobs 100] [--window 30] [--rest URL]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.daemon_process import BenchDaemon
from benchmarks.flink_submit import build_jar

REQUEST_LINE = re.compile(rb"(GET|POST|PATCH|PUT|DELETE) (/[^ ?]*)[^ ]* HTTP/1\.[01]\r\n")
JOB_PATH = re.compile(r"/jobs/[0-9a-f]{32}")


class CountingRelay:
    """A TCP relay to the cluster that counts the HTTP requests passing through it, by path."""

    def __init__(self, target: str) -> None:
        host, port = target.split("//", 1)[1].rstrip("/").rsplit(":", 1)
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def snapshot(self) -> collections.Counter[str]:
        with self.lock:
            return collections.Counter(self.counts)

    def close(self) -> None:
        self.running = False
        self.server.close()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            client.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if requests:
                    seen = tail + data
                    found = [m.group(2).decode() for m in REQUEST_LINE.finditer(seen)]
                    if found:
                        with self.lock:
                            self.counts.update(JOB_PATH.sub("/jobs/<id>", path) for path in found)
                        tail = seen[seen.rfind(b"\r\n") + 2 :][-200:]
                    else:
                        tail = seen[-200:]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def overview(rest: str) -> list[dict]:
    with urllib.request.urlopen(f"{rest}/jobs/overview", timeout=10) as answer:
        return list(json.load(answer)["jobs"])


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flink_list(relay: CountingRelay, rounds: int) -> tuple[float, float, float]:
    """Median wall seconds, CPU seconds and REST calls of one ``flink list`` against the cluster."""
    import pyflink

    from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
    from aiflowd.plugins.flink.controller import java_home

    env = JobRuntimeEnv("", "", "", JobExecutionInfo("b", "b", "1", "1"), {})
    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    host, port = relay.url.split("//", 1)[1].rsplit(":", 1)
    command = [str(flink), "list", "-r", "-t", "remote", f"-Drest.address={host}", f"-Drest.port={port}"]
    child_env = dict(os.environ, JAVA_HOME=java_home(env), FLINK_LOG_DIR=tempfile.gettempdir())
    walls, cpus, calls = [], [], []
    for _ in range(rounds):
        before_calls = sum(relay.snapshot().values())
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=child_env, timeout=120)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))
        calls.append(sum(relay.snapshot().values()) - before_calls)
        if result.returncode != 0:
            raise SystemExit(f"flink list failed: {result.stderr[-2000:]}")
        listed = sum(1 for line in result.stdout.splitlines() if "(RUNNING)" in line)
    print(f"flink list -r: {listed} running jobs listed")
    walls.sort(), cpus.sort(), calls.sort()
    return walls[len(walls) // 2], cpus[len(cpus) // 2], calls[len(calls) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--window", type=float, default=30.0, help="seconds the daemon is watched while it tracks them")
    parser.add_argument("--rounds", type=int, default=3, help="runs of the flink list reference")
    parser.add_argument("--rest", default=os.environ.get("AIFLOWD_FLINK_REST_URL") or "http://127.0.0.1:8081")
    args = parser.parse_args()
    rest = args.rest.rstrip("/")
    root = Path(tempfile.mkdtemp(prefix="aiflowd-flink-tracking-"))
    jar = build_jar(root)
    relay = CountingRelay(rest)
    daemon = BenchDaemon(root / "daemon", f"max_concurrent_jobs: {args.jobs + 10}\nflink: {{rest_url: '{relay.url}'}}\n")
    daemon.start()
    assert daemon.process is not None
    pid = daemon.process.pid
    folder = root / "staging" / "tracked"
    folder.mkdir(parents=True)
    (folder / "wordcount.jar").write_bytes(jar.read_bytes())
    tag = f"{os.getpid()}-{time.time_ns()}"
    jobs = [
        f"j{i}:\n  job_type: flink\n  main_jar_file: wordcount.jar\n  entry_class: org.example.WordCount\n"
        f'  args: ["{root / "out" / f"{tag}-{i}"}", "1000000000", "1000"]\n  properties: {{run_mode: cluster}}\n'
        for i in range(args.jobs)
    ]
    (root / "out").mkdir()
    (folder / "tracked.yaml").write_text("".join(jobs))
    names = {f"aiflowd-test-{tag}-{i}" for i in range(args.jobs)}
    try:
        started = time.perf_counter()
        os.rename(folder, daemon.workflows / "tracked")
        while True:
            running = sum(1 for j in overview(rest) if j["name"] in names and j["state"] == "RUNNING")
            if running == args.jobs:
                break
            if time.perf_counter() - started > 600:
                raise SystemExit(f"only {running} of {args.jobs} jobs run on the cluster after 600 s")
            time.sleep(0.5)
        print(f"{args.jobs} jobs submitted by the daemon and RUNNING on the cluster in {time.perf_counter() - started:.1f} s")
        time.sleep(2)  # the submissions' last answers settle
        calls_before, cpu_before, wall_before = relay.snapshot(), proc_cpu(pid), time.perf_counter()
        time.sleep(args.window)
        calls_after, cpu_after, wall = relay.snapshot(), proc_cpu(pid), time.perf_counter() - wall_before
        calls = calls_after - calls_before
        running = sum(1 for j in overview(rest) if j["name"] in names and j["state"] == "RUNNING")
        print(f"tracked for {wall:.1f} s; {running} of {args.jobs} still RUNNING; daemon RSS {daemon.rss_mb():.0f} MB")
        print(f"daemon REST calls: {sum(calls.values()) / wall:.2f}/s in all")
        for path, count in sorted(calls.items(), key=lambda item: -item[1]):
            print(f"  {path}: {count / wall:.2f}/s ({count} in {wall:.1f} s)")
        print(f"daemon CPU: {(cpu_after - cpu_before) / wall:.4f} s/s ({cpu_after - cpu_before:.2f} s in {wall:.1f} s)")
        list_wall, list_cpu, list_calls = flink_list(relay, args.rounds)
        print(
            f"reference, one `flink list -r` (median of {args.rounds}): {list_wall:.2f} s wall, {list_cpu:.2f} s CPU, {list_calls:.0f} REST calls"
        )
        polls = calls.get("/jobs/overview", 0) / wall
        print(f"per poll of all {args.jobs} jobs: {sum(calls.values()) / max(polls * wall, 1):.2f} REST calls; {polls:.1f} polls/s")
    finally:
        daemon_stop(daemon, rest, names)
        relay.close()
        shutil.rmtree(root, ignore_errors=True)


def daemon_stop(daemon: BenchDaemon, rest: str, names: set[str]) -> None:
    """Stop the workflow's execution (cancelling its jobs) and the daemon; cancel any job left."""
    if daemon.process is not None and daemon.process.poll() is None:
        subprocess.run(
            [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(daemon.socket), "workflow", "stop-execution", "tracked"],
            capture_output=True,
            timeout=120,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(j["name"] in names and j["state"] == "RUNNING" for j in overview(rest)):
            time.sleep(0.5)
    daemon.stop()
    for job in overview(rest):
        if job["name"] in names and job["state"] not in ("FINISHED", "FAILED", "CANCELED"):
            request = urllib.request.Request(f"{rest}/jobs/{job['jid']}?mode=cancel", method="PATCH")
            urllib.request.urlopen(request, timeout=10).close()


if __name__ == "__main__":
    main()
