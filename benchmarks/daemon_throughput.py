"""1,000 trivial bash jobs in one workflow, run by the daemon and persisted as FINISHED.

The rate is taken from the store: from the execution's start to its end, every job
execution recorded FINISHED. The reference is bare asyncio spawning ``bash -c true``
with the same concurrency (the daemon's max_concurrent_jobs), in the same run.
Target: at least 0.7 of the bare rate.

Usage: python -m benchmarks.daemon_throughput [--jobs 1000] [--concurrency 64] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from benchmarks.daemon_process import BenchDaemon
from benchmarks.spawn_rate import bare


def run(root: Path, jobs: int, concurrency: int) -> float:
    daemon = BenchDaemon(root, f"max_concurrent_jobs: {concurrency}\n")
    daemon.start()
    try:
        text = "".join(f"j{i}:\n  job_type: bash\n  bash_command: 'true'\n" for i in range(jobs))
        (daemon.workflows / "many.yaml").write_text(text)
        db = root / "state" / "aiflowd.db"
        while True:
            time.sleep(0.2)
            with sqlite3.connect(db) as conn:
                row = conn.execute("SELECT started_at, ended_at, status FROM executions WHERE workflow = 'many'").fetchone()
                if row and row[1]:
                    finished = conn.execute("SELECT COUNT(*) FROM job_executions WHERE status = 'FINISHED'").fetchone()[0]
                    assert finished == jobs, (finished, row)
                    return jobs / (row[1] - row[0])
    finally:
        daemon.stop()


def main(jobs: int, concurrency: int, where: str | None) -> None:
    reference = asyncio.run(bare(jobs, concurrency))
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        rate = run(Path(tmp), jobs, concurrency)
    reference_after = asyncio.run(bare(jobs, concurrency))
    reference = (reference + reference_after) / 2
    print(f"{jobs} trivial bash jobs in one workflow, concurrency {concurrency}")
    print(f"  bare asyncio spawn of bash -c true (reference, mean of before and after): {reference:6.0f} jobs/s")
    print(
        f"  aiflowd, start of the execution to all persisted FINISHED                : {rate:6.0f} jobs/s  ratio {rate / reference:.2f}  (target >= 0.70)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--dir", help="where the daemon's state, working folders and logs go")
    args = parser.parse_args()
    main(args.jobs, args.concurrency, args.dir)
