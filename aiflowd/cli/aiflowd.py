"""``aiflowd``: the daemon, and ``aiflowd run-once`` to try a workflow in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiflowd.config import DaemonConfig, load_config
from aiflowd.model import Status
from aiflowd.workflows.errors import LoadError

if TYPE_CHECKING:
    from aiflowd.engine import JobRun

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
    return serve(config)


def serve(config: DaemonConfig) -> int:
    """Run the daemon until SIGTERM/SIGINT; every start failure is one line on stderr, exit 1."""
    import anyio

    from aiflowd.daemon import Daemon
    from aiflowd.daemon.lifecycle import StartupError
    from aiflowd.logs import configure_logging
    from aiflowd.systemd import ServiceManager

    manager = ServiceManager.from_environment()  # first: nothing started later may see its variables
    configure_logging(logging.INFO)
    try:
        return anyio.run(Daemon(config, manager).run)
    except StartupError as err:  # another daemon on the state dir or socket, a corrupt database, a full disk
        print(f"aiflowd: cannot start: {err}", file=sys.stderr)
        return 1


def run_once(config: DaemonConfig, path: str, only_job: str | None, verbose: bool) -> int:
    import anyio

    from aiflowd.engine import Engine, EnginePaths
    from aiflowd.logs import configure_logging
    from aiflowd.store import Store
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
    runs: list[JobRun] = []

    def show(run: JobRun) -> None:
        if run not in runs:
            runs.append(run)
        line = f"  {run.job:<20} {run.status.value:<9}"
        if run.status.is_final:
            took = (run.ended_at or 0) - (run.started_at or run.created_at)
            line += f" exit {run.exit_code if run.exit_code is not None else '-'}  {took:.2f}s"
            if run.message:
                line += f"  ({run.message})"
        elif run.status == Status.RUNNING:
            line += f" ({_why(run)})"
        else:
            return
        print(line, flush=True)

    # The daemon's own engine, with a store in memory: the same loader, plugins and controllers.
    # Its execution ids restart at 1, so each run keeps its files in a folder of its own.
    run_name = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    settings = config.job_settings()
    settings["run_dir"] = os.path.join(settings["run_dir"], "run-once", run_name)
    settings["instance_id"] = os.urandom(8).hex()  # Flink job ids must not repeat across runs
    store = Store(":memory:")
    engine = Engine(
        loader.registry,
        store,
        EnginePaths(os.path.join(config.state_dir, "run-once", run_name), os.path.join(config.log_dir, "run-once", run_name)),
        settings=settings,
        max_concurrent_jobs=config.max_concurrent_jobs,
        keep_open_for_events=False,
        on_job_change=show,
    )

    async def main() -> tuple[Status, bool]:
        interrupted = False
        async with anyio.create_task_group() as tg:
            await tg.start(engine.serve)
            execution = await engine.request(lambda e: e.run_workflow(loaded, only_job))
            print(f"workflow {workflow.name} (version {workflow.version}), execution {execution.id}", flush=True)

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
                        await engine.stop_all("interrupted")

            tg.start_soon(watch_signals)
            await execution.ended.wait()
            tg.cancel_scope.cancel()
        return execution.status, interrupted

    status, interrupted = anyio.run(main)
    store.close()
    for run in runs:
        print(f"--- {run.job} ({_label(run, runs)}) log: {run.env.log_path}")
        for line in _tail(run.env.log_path, TAIL_LINES):
            print(f"    {line}")
    started = {run.job for run in runs}
    for job in workflow.jobs:
        if job not in started and (only_job is None or job == only_job):
            print(f"  {job:<20} not started (its rules did not fire)")
    by_design = status == Status.KILLED and all(_stopped_by_design(run) for run in runs if run.status == Status.KILLED)
    print(f"execution of {workflow.name}: {status.value}" + (" (jobs stopped by its rules, by design)" if by_design else ""))
    if interrupted:
        return 130
    return 0 if status == Status.FINISHED or by_design else 1


def _stopped_by_design(run: JobRun) -> bool:
    """Whether a KILLED job was stopped by the workflow's own rules (a STOP or a RESTART), not by a failure.

    AIFlow's scheduling-on-status demo stops a job with a rule: its execution ends KILLED,
    and that is the workflow working as written, so ``run-once`` succeeds.
    """
    return run.stopped_by in ("rule", "restart")


def _why(run: JobRun) -> str:
    """Why a job execution started, as a line of run-once shows it."""
    return run.reason if run.kind == "start" else f"{run.kind}: {run.reason}"


def _label(run: JobRun, runs: list[JobRun]) -> str:
    """``run 2, restart`` rather than ``attempt 2``: a restart by a rule is not a retry of a failure."""
    if run.attempt == 1 and not any(r.job == run.job and r is not run for r in runs):
        return "run 1"
    return f"run {run.attempt}, {run.kind}"


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
