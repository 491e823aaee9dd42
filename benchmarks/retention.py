"""Retention deleting 100,000 old executions: total time and the worst pause of the event loop.

A database of ``--executions`` finished executions that ended 100 days ago (each with
``--jobs`` job executions) and 1,000 recent ones is built once and copied for each way:

- retention's pass (``aiflowd.retention``), 500 executions to a transaction with a turn
  of the loop between two, while a ticker task measures the loop's latency (how late it
  wakes from each 1 ms sleep);
- the reference: one bulk DELETE of the same rows in one transaction, timed the same way
  (the loop is blocked for all of it).

Usage: python -m benchmarks.retention [--executions 100000] [--jobs 2] [--batch 500] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from aiflowd.clock import ManualClock
from aiflowd.retention import Retention
from aiflowd.store import Store
from benchmarks.measure import percentile

DAY = 86400.0
TICK = 0.001


def build(path: Path, executions: int, jobs: int, now: float) -> None:
    """The database: ``executions`` old finished executions of 10 workflows, then 1,000 recent ones."""
    store = Store(str(path))
    db = store.db
    old, recent = now - 100 * DAY, now - DAY
    rows, job_rows = [], []
    total = executions + 1000
    for n in range(1, total + 1):
        ended = old if n <= executions else recent
        rows.append((n, f"wf{n % 10}", "v1", "FINISHED", "periodic", None, ended - 5, ended))
        for j in range(jobs):
            job_rows.append((n * jobs + j, n, f"wf{n % 10}", f"job{j}", "bash", 1, "FINISHED", ended - 5, ended - 5, ended, 0, "", ""))
    db.executemany(
        "INSERT INTO executions (id, workflow, version, status, trigger, only_job, started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.executemany(
        "INSERT INTO job_executions (id, execution_id, workflow, job, job_type, attempt, status, created_at, started_at, "
        "ended_at, exit_code, log_path, working_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        job_rows,
    )
    db.commit()
    store.close()


async def ticker(pauses: list[float], done: anyio.Event) -> None:
    """How late the loop wakes from each ``TICK`` sleep: the longest it was kept from running anything."""
    while not done.is_set():
        began = time.perf_counter()
        await anyio.sleep(TICK)
        pauses.append(time.perf_counter() - began - TICK)


async def measure(work: Callable[[], Awaitable[object] | None]) -> tuple[float, list[float]]:
    """How long ``work`` took (awaited if it is a coroutine function), and the loop's pauses meanwhile."""
    pauses: list[float] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker, pauses, done)
        await anyio.sleep(0.05)  # the ticker runs
        began = time.perf_counter()
        result = work()
        if result is not None:
            await result
        else:
            await anyio.sleep(0)
        total = time.perf_counter() - began
        done.set()
    return total, pauses


def remaining(path: Path) -> int:
    store = Store(str(path))
    (count,) = store.db.execute("SELECT COUNT(*) FROM executions").fetchone()
    store.close()
    return int(count)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2, help="job executions per execution")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dir", default=None, help="where the databases go (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aiflowd-retention-", dir=args.dir))
    now = time.time()
    try:
        template = root / "template.db"
        began = time.perf_counter()
        build(template, args.executions, args.jobs, now)
        print(
            f"built {args.executions:,} old + 1,000 recent executions, {args.jobs} job executions each, in {time.perf_counter() - began:.1f} s"
        )

        batched = root / "batched.db"
        shutil.copy(template, batched)
        store = Store(str(batched))
        part = Retention(
            store, str(root / "state"), str(root / "logs"), {"logs": 0, "work_dirs": 0}, clock=ManualClock(now), batch_size=args.batch
        )
        total, pauses = await measure(part.sweep)
        report = part.last
        store.close()
        assert report is not None and report.executions == args.executions, report
        print(
            f"retention, {args.batch} per transaction: {total:.2f} s, {report.batches} batches; loop pause: "
            f"worst {max(pauses) * 1000:.1f} ms, p99 {percentile(pauses, 0.99) * 1000:.1f} ms, "
            f"median {percentile(pauses, 0.5) * 1000:.1f} ms, "
            f"longest batch {report.longest_batch * 1000:.1f} ms; {remaining(batched):,} executions left"
        )

        bulk = root / "bulk.db"
        shutil.copy(template, bulk)
        store = Store(str(bulk))
        cutoff = now - 90 * DAY

        def delete_all() -> None:
            chosen = "SELECT id FROM executions WHERE ended_at < ? AND status != 'RUNNING'"
            store.db.execute(f"DELETE FROM job_executions WHERE execution_id IN ({chosen})", (cutoff,))
            store.db.execute(f"DELETE FROM executions WHERE id IN ({chosen})", (cutoff,))
            store.db.commit()

        total, pauses = await measure(delete_all)
        store.close()
        print(
            f"reference, one bulk DELETE: {total:.2f} s; loop pause: worst {max(pauses) * 1000:.1f} ms; {remaining(bulk):,} executions left"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    anyio.run(main)
