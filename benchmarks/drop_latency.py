"""File dropped into the watched folder -> the job's command running: median and p99.

Measured next to the watcher's own latency (a bare watchfiles watch on another folder,
with the daemon's settings) and a bare ``bash -c`` start, in the same run.
Target: median at most 50 ms (Airflow 3 with its defaults ran a new DAG file after a
median 95 s on this kind of machine, up to 5 minutes).

Usage: python -m benchmarks.drop_latency [--drops 50]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import anyio
import watchfiles

from aiflowd.watcher import DEBOUNCE_MS, STEP_MS
from benchmarks.daemon_process import BenchDaemon
from benchmarks.measure import percentile


def wait_for_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.0005)


def daemon_latencies(root: Path, drops: int) -> list[float]:
    daemon = BenchDaemon(root)
    daemon.start()
    out = root / "out"
    out.mkdir()
    samples = []
    try:
        for i in range(drops):
            marker = out / f"{i}"
            text = f"job:\n  job_type: bash\n  bash_command: date +%s.%N > {marker}.tmp && mv {marker}.tmp {marker}\n"
            dropped = time.time()
            (daemon.workflows / f"drop{i}.yaml").write_text(text)
            wait_for_file(marker)
            samples.append(float(marker.read_text()) - dropped)
    finally:
        daemon.stop()
    return samples


def watcher_latencies(root: Path, drops: int) -> list[float]:
    folder = root / "bare"
    folder.mkdir()
    samples: list[float] = []
    seen = threading.Event()
    ready = threading.Event()

    async def watch() -> None:
        stop = anyio.Event()
        ready.set()
        async for _ in watchfiles.awatch(folder, step=STEP_MS, debounce=DEBOUNCE_MS, stop_event=stop):
            seen.set()
            if len(samples) >= drops:
                stop.set()

    thread = threading.Thread(target=anyio.run, args=(watch,), daemon=True)
    thread.start()
    ready.wait()
    time.sleep(0.2)  # let the watch settle before the first drop
    for i in range(drops):
        seen.clear()
        dropped = time.time()
        (folder / f"f{i}.yaml").write_text("x: 1\n")
        seen.wait(10)
        samples.append(time.time() - dropped)
    (folder / "last").write_text("")
    thread.join(10)
    return samples


def bash_start(drops: int) -> list[float]:
    samples = []
    for _ in range(drops):
        started = time.time()
        stamp = subprocess.run(["bash", "-c", "date +%s.%N"], capture_output=True, text=True).stdout
        samples.append(float(stamp) - started)
    return samples


def main(drops: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        watcher = watcher_latencies(root, drops)
        bash = bash_start(drops)
        daemon = daemon_latencies(root / "daemon", drops)
    ms = lambda xs, q: percentile(xs, q) * 1000  # noqa: E731
    print(f"{drops} drops, one new workflow each")
    print(f"  watchfiles event after a file write (reference): median {ms(watcher, 0.5):6.1f} ms  p99 {ms(watcher, 0.99):6.1f} ms")
    print(f"  bash -c start to its first command (reference) : median {ms(bash, 0.5):6.1f} ms  p99 {ms(bash, 0.99):6.1f} ms")
    print(
        f"  aiflowd: file dropped -> job command running    : median {ms(daemon, 0.5):6.1f} ms  p99 {ms(daemon, 0.99):6.1f} ms  (target: median <= 50 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--drops", type=int, default=50)
    main(parser.parse_args().drops)
