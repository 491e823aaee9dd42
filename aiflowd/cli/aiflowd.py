"""``aiflowd``: the daemon, and ``aiflowd run-once`` to try a workflow in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from aiflowd.config import DaemonConfig, load_config
from aiflowd.model import Status
from aiflowd.workflows.errors import LoadError

TAIL_LINES = 20


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiflowd", description="Run AIFlow-style workflows from a watched folder.")
    parser.add_argument("--config", metavar="FILE", help="daemon config (see etc/aiflowd.yaml)")
    sub = parser.add_subparsers(dest="command")
    once = sub.add_parser("run-once", help="run one execution of one workflow in the foreground")
    once.add_argument("path", metavar="PATH", help="a NAME.yaml file or a NAME/ workflow folder")
    once.add_argument("--job", metavar="NAME", help="run only this job, ignoring its rules")
    once.add_argument("--config", dest="sub_config", metavar="FILE", help=argparse.SUPPRESS)
    once.add_argument("-v", "--verbose", action="store_true", help="log aiflowd's own events too")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config or getattr(args, "sub_config", None))
    except LoadError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command == "run-once":
        return run_once(config, args.path, args.job, args.verbose)
    print("aiflowd: the daemon is not available in this version; use 'aiflowd run-once PATH'", file=sys.stderr)
    return 2


def run_once(config: DaemonConfig, path: str, only_job: str | None, verbose: bool) -> int:
    import anyio

    from aiflowd.execution import ExecutionPaths, JobExecutionRecord, WorkflowExecutionRunner
    from aiflowd.logs import configure_logging
    from aiflowd.workflows.loader import loader_for

    configure_logging(logging.INFO if verbose else logging.WARNING, stream=sys.stderr)
    loader, plugin_errors = loader_for(config.plugin_modules, config.plugin_paths, config.compile_timeout)
    for error in plugin_errors:
        print(f"aiflowd: {error}", file=sys.stderr)
    try:
        loaded = loader.load(path)
    except LoadError as err:
        print(err, file=sys.stderr)
        return 1
    workflow = loaded.workflow
    if only_job is not None and only_job not in workflow.jobs:
        print(f"aiflowd: workflow {workflow.name} has no job '{only_job}' (jobs: {', '.join(workflow.jobs)})", file=sys.stderr)
        return 2
    execution_id = time.strftime("run-%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    print(f"workflow {workflow.name} (version {workflow.version}), execution {execution_id}")

    def show(record: JobExecutionRecord) -> None:
        line = f"  {record.job:<20} {record.status.value:<9}"
        if record.status.is_final:
            took = (record.ended_at or 0) - (record.started_at or 0)
            line += f" exit {record.exit_code if record.exit_code is not None else '-'}  {took:.2f}s"
            if record.message:
                line += f"  ({record.message})"
        elif record.reason:
            line += f" ({record.reason})"
        print(line, flush=True)

    runner = WorkflowExecutionRunner(
        loaded,
        loader.registry,
        execution_id=execution_id,
        paths=ExecutionPaths(config.state_dir, config.log_dir),
        settings=config.job_settings(),
        only_job=only_job,
        on_record=show,
    )

    async def main() -> tuple[object, bool]:
        interrupted = False
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                nonlocal interrupted
                # SIGINT: Ctrl-C in the terminal; SIGTERM: whoever runs us wants us gone.
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        if interrupted:
                            tg.cancel_scope.cancel()  # a second signal: stop waiting for a graceful end
                            return
                        interrupted = True
                        print("aiflowd: stopping every running job (again to hurry)", file=sys.stderr, flush=True)
                        runner.stop("interrupted")

            tg.start_soon(watch_signals)
            result = await runner.run()
            tg.cancel_scope.cancel()
        return result, interrupted

    result, interrupted = anyio.run(main)
    for record in result.records:  # type: ignore[attr-defined]
        print(f"--- {record.job} (attempt {record.attempt}) log: {record.log_path}")
        for line in _tail(record.log_path, TAIL_LINES):
            print(f"    {line}")
    for job in result.never_started:  # type: ignore[attr-defined]
        print(f"  {job:<20} not started (its rules did not fire)")
    status = result.status  # type: ignore[attr-defined]
    print(f"execution {execution_id}: {status.value}")
    if interrupted:
        return 130
    return 0 if status == Status.FINISHED else 1


def _tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


if __name__ == "__main__":
    sys.exit(main())
