"""The HTTP side of a real daemon: a /metrics scrape with 10,000 workflows, and the pages with 1,000 executions.

- ``/metrics`` of a daemon serving 10,000 workflows (each has its last-load gauge): the
  time of one scrape over a kept-alive connection, and the daemon's CPU per scrape
  (target: under 50 ms). ``/healthz`` is measured the same way as the reference: what
  an HTTP answer costs with nothing to compute.
- The status page (``/``) and a workflow's page with 1,000 executions (2,000 job
  executions) in its history; the history is written into the state database before the
  daemon starts, as a daemon that ran for a while leaves it.

Usage: python -m benchmarks.http_pages [--workflows 10000] [--executions 1000]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import httpx

from aiflowd.store import Store
from benchmarks.daemon_process import BenchDaemon

ROUNDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serving(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return base
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("the daemon's HTTP side never answered")


def measure(daemon: BenchDaemon, client: httpx.Client, path: str) -> tuple[float, float, float, int]:
    """Median and p90 wall time (ms), daemon CPU per request (ms), and the answer's size, over ``ROUNDS`` GETs."""
    size = len(client.get(path).content)  # warm
    times = []
    cpu_before = daemon.cpu_seconds()
    for _ in range(ROUNDS):
        began = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.text
    cpu = (daemon.cpu_seconds() - cpu_before) * 1000 / ROUNDS
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.9)], cpu, size


def row(what: str, figures: tuple[float, float, float, int]) -> str:
    median, p90, cpu, size = figures
    return f"| {what} | {median:.1f} ms | {p90:.1f} ms | {cpu:.1f} ms | {size / 1024:.0f} KiB |"


def many_workflows(root: Path, count: int) -> list[str]:
    port = free_port()
    daemon = BenchDaemon(root / "many", f"http:\n  listen: 127.0.0.1:{port}\n")
    for i in range(count):
        (daemon.workflows / f"wf{i:05d}.yaml").write_text(
            "start_new_workflow_execution_on_events:\n  - {event_key: go}\n"
            f"extract:\n  job_type: bash\n  bash_command: echo {i}\n"
            "load:\n  job_type: bash\n  bash_command: echo load\n  action_on_job_status: [{upstream_job: extract}]\n"
        )
    daemon.start()
    try:
        base = serving(port)
        with httpx.Client(base_url=base, timeout=60) as client:
            lines = client.get("/metrics").text.count("\n")
            return [
                row("`/healthz` (reference)", measure(daemon, client, "/healthz")),
                row(f"`/metrics`, {count:,} workflows ({lines:,} lines)", measure(daemon, client, "/metrics")),
                row(f"`/api/status`, {count:,} workflows", measure(daemon, client, "/api/status")),
                row(f"status page `/`, {count:,} workflows (the first 200 listed)", measure(daemon, client, "/")),
            ]
    finally:
        daemon.stop()


def long_history(root: Path, executions: int) -> list[str]:
    port = free_port()
    daemon = BenchDaemon(root / "history", f"http:\n  listen: 127.0.0.1:{port}\n")
    (daemon.workflows / "etl.yaml").write_text(
        "extract:\n  job_type: bash\n  bash_command: echo extract\n"
        "load:\n  job_type: bash\n  bash_command: echo load\n  action_on_job_status: [{upstream_job: extract}]\n"
    )
    store = Store(str(root / "history" / "state" / "aiflowd.db"))
    start = time.time() - executions * 60
    for i in range(executions):
        began = start + i * 60
        execution = store.create_execution("etl", "v1", "manual", None)
        for attempt_job, (job, status) in enumerate((("extract", "FINISHED"), ("load", "FAILED" if i % 10 == 0 else "FINISHED"))):
            job_id = store.create_job_execution(
                execution_id=execution,
                workflow="etl",
                job=job,
                job_type="bash",
                attempt=1,
                status=status,
                reason="benchmark history",
                created_at=began,
                log_path=str(root / "history" / "logs" / f"{execution}.{job}.log"),
                working_dir=str(root / "history" / "work"),
            )
            store.update_job_execution(job_id, started_at=began + attempt_job * 5, ended_at=began + attempt_job * 5 + 4, exit_code=0)
        store.end_execution(execution, "FINISHED")
    store.commit()
    store.close()
    daemon.start()
    try:
        base = serving(port)
        with httpx.Client(base_url=base, timeout=60) as client:
            return [
                row(f"status page `/`, {executions:,} executions in history", measure(daemon, client, "/")),
                row(f"workflow page `/workflows/etl` (picture, last 50 of {executions:,})", measure(daemon, client, "/workflows/etl")),
                row(
                    f"`/api/workflows/etl/jobs?limit=1000` ({2 * executions:,} job executions kept)",
                    measure(daemon, client, "/api/workflows/etl/jobs?limit=1000"),
                ),
            ]
    finally:
        daemon.stop()


def busy_scrape(count: int) -> str:
    """In this process: ``Metrics.scrape()`` once every workflow has started, finished, failed
    and had killed a job (4 counter lines each, beside the last-load gauge): what a daemon
    whose workflows all ran jobs adds to a scrape, without running 40,000 jobs for it."""
    from aiflowd.web.metrics import Metrics

    metrics = Metrics()
    for i in range(count):
        labels = (f"wf{i:05d}", "bash")
        for family in (metrics.jobs_started, metrics.jobs_finished, metrics.jobs_failed, metrics.jobs_killed):
            family.inc(labels)
        metrics.workflow_loaded(f"wf{i:05d}", 0.001)
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        text = metrics.scrape()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    lines = text.count(b"\n")
    return f"| `Metrics.scrape()` in process, {count:,} workflows that all ran jobs ({lines:,} lines) | {times[len(times) // 2]:.1f} ms | {times[int(len(times) * 0.9)]:.1f} ms | (the same) | {len(text) / 1024:.0f} KiB |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--executions", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [*many_workflows(Path(tmp), args.workflows), busy_scrape(args.workflows), *long_history(Path(tmp), args.executions)]
    print(f"median and p90 of {ROUNDS} requests over one kept-alive connection; daemon CPU per request from /proc schedstat")
    print("| what | median | p90 | daemon CPU per request | size |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
