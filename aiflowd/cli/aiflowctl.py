"""``aiflowctl``: drive a running aiflowd through its control socket, or validate workflows.

Human tables by default, ``--json`` for scripts (errors too: ``{"error": {"code",
"message"}}`` on stdout). Exit codes: 0 done, 1 refused or failed (by the daemon, or by
the socket's permissions), 2 usage, 3 daemon unreachable (no answer, or none within
``--timeout``). Every error is one line on stderr. The global options may come before or
after the command (``aiflowctl workflow show X --json``).

The socket is found through ``--socket``, then ``$AIFLOWD_SOCKET``, then ``--config``,
then ``./aiflowd.yaml`` when there is one (as ``aiflowd`` reads it), then the default
(``./.aiflowd/aiflowd.sock``); when no daemon answers, the error names the path, where it
came from, and how to point elsewhere. ``validate`` and ``plugins`` need no daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

DONE, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3
DEFAULT_TIMEOUT = 60.0
LOCAL_CONFIG = "aiflowd.yaml"  # read from the current folder without --config, as aiflowd does


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are also JSON on stdout when --json is on the command line."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            print(json.dumps({"error": {"code": "usage", "message": message}}), flush=True)
        super().error(message)


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes. On the commands themselves they have no defaults,
    so an option given before the command is not undone by its absence after it."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--socket", metavar="PATH", default=default(None), help="the daemon's control socket (or $AIFLOWD_SOCKET)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default(None),
        help=f"daemon config, for its socket and plugins (default: ./{LOCAL_CONFIG} if there is one)",
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="print answers and errors as JSON, for scripts")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=default(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help=f"how long to wait for an answer (default {DEFAULT_TIMEOUT:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    from aiflowd import __version__

    parser = _Parser(prog="aiflowctl", description="Control and inspect aiflowd.")
    parser.add_argument("--version", action="version", version=f"aiflowctl {__version__}")
    _global_options(parser, defaults=True)
    common = _Parser(add_help=False)
    _global_options(common, defaults=False)

    def command(subparsers: Any, name: str, text: str) -> argparse.ArgumentParser:
        """A command that runs (not one grouping others): it takes the global options too."""
        parser: argparse.ArgumentParser = subparsers.add_parser(name, help=text, description=text, parents=[common])
        return parser

    def group(subparsers: Any, name: str, text: str) -> Any:
        return subparsers.add_parser(name, help=text, description=text).add_subparsers(dest="action", required=True, metavar="ACTION")

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command(sub, "status", "the daemon's state")

    workflow = group(sub, "workflow", "workflows")
    command(workflow, "list", "list workflows").add_argument("--all", action="store_true", help="include retired ones")
    for name, text in (
        ("show", "one workflow, with its jobs and problems"),
        ("list-executions", "its executions"),
        ("start-execution", "start an execution now"),
        ("pause-scheduling", "stop starting executions (timers, events, file changes)"),
        ("resume-scheduling", "start executions again"),
    ):
        command(workflow, name, text).add_argument("workflow", metavar="WF", help="the workflow's name")
    stop = command(workflow, "stop-execution", "stop its running executions (or one)")
    stop.add_argument("workflow", metavar="WF", help="the workflow's name")
    stop.add_argument("execution", metavar="EXECUTION", nargs="?", type=int, help="only this execution (default: every running one)")

    job = group(sub, "job", "jobs")
    listing = command(job, "list-executions", "job executions of a workflow")
    listing.add_argument("workflow", metavar="WF", help="the workflow's name")
    listing.add_argument("job", metavar="JOB", nargs="?", help="only this job's")
    for name, text in (
        ("start-execution", "start the job (in the open execution, or a new one)"),
        ("stop-execution", "stop the running job"),
        ("restart-execution", "stop and start the job"),
    ):
        action = command(job, name, text)
        action.add_argument("workflow", metavar="WF", help="the workflow's name")
        action.add_argument("job", metavar="JOB", help="the job's name")
    logs = command(job, "logs", "a job execution's log")
    logs.add_argument("workflow", metavar="WF", help="the workflow's name")
    logs.add_argument("job", metavar="JOB", help="the job's name")
    logs.add_argument("--execution", type=int, metavar="ID", help="the workflow execution (default: the latest)")
    logs.add_argument("--bytes", type=int, metavar="N", help="the last N bytes (default 1 MiB, at most 64 MiB)")
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="print the log from its start and keep printing; on to each retry's log, until the job ends with no retry to come",
    )

    event = group(sub, "event", "events")
    send = command(event, "send", "send an event to the rules")
    send.add_argument("key", help="the event's key, as the rules name it")
    send.add_argument("value", help="its value")
    send.add_argument("--type", dest="event_type", default="*", help="its event type (default %(default)s)")
    send.add_argument("--sender", default="aiflowctl", help="who sends it (default %(default)s)")
    send.add_argument("--namespace", default="default", help="its namespace (default %(default)s)")
    events = command(event, "list", "recent events")
    events.add_argument("-f", "--follow", action="store_true", help="keep printing events as they come")

    command(sub, "plugins", "job types and where their plugins come from (with no daemon: the ones installed here)")
    validate = command(sub, "validate", "check workflows with the daemon's loader, without a daemon")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="workflow files or folders, or folders of workflows")
    command(sub, "reload", "read the config again (as SIGHUP)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in args_list
    try:
        code = _main(args_list)
        sys.stdout.flush()  # here, where a reader that left can still be handled
        return code
    except BrokenPipeError:  # our reader left (aiflowctl ... | head): not an error
        # Python flushes stdout again at exit; point it at /dev/null so that finds no pipe to complain about.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return DONE
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        return cmd_validate(args)
    from aiflowd.control.client import ControlClient, Refused, Unreachable
    from aiflowd.control.protocol import ControlError

    try:
        path, source = socket_path(args)
    except Exception as err:  # noqa: BLE001 - a bad config file; its message says what
        return fail(args, "usage", str(err), USAGE)
    try:
        client = ControlClient(path, timeout=None if getattr(args, "follow", False) else args.timeout)
    except Unreachable as err:
        if args.command == "plugins":
            return local_plugins(args, path)
        return fail(args, "unreachable", f"{err}; the path came from {source}; {ELSEWHERE}", UNREACHABLE)
    except Refused as err:
        return fail(args, "refused", str(err), FAILED)
    try:
        with client:
            return run_command(client, args)
    except Unreachable as err:
        return fail(args, "unreachable", str(err), UNREACHABLE)
    except Refused as err:
        return fail(args, "refused", str(err), FAILED)
    except ControlError as err:
        return fail(args, err.code, err.message, FAILED)


ELSEWHERE = "point aiflowctl elsewhere with --socket PATH, $AIFLOWD_SOCKET or --config FILE"


def fail(args: argparse.Namespace, code: str, message: str, exit_code: int) -> int:
    """One error: a line on stderr, and with --json the same as JSON on stdout."""
    if args.json:
        print(json.dumps({"error": {"code": code, "message": message}}))
    print(f"aiflowctl: {message}", file=sys.stderr)
    return exit_code


def socket_path(args: argparse.Namespace) -> tuple[str, str]:
    """The control socket's path, and where it came from (in words, for the error that names it)."""
    if args.socket:
        return str(args.socket), "--socket"
    if os.environ.get("AIFLOWD_SOCKET"):
        return os.environ["AIFLOWD_SOCKET"], "$AIFLOWD_SOCKET"
    from aiflowd.config import load_config

    config_file = args.config or (LOCAL_CONFIG if os.path.isfile(LOCAL_CONFIG) else None)
    path = load_config(config_file).control_socket
    if args.config:
        return path, f"--config {args.config}"
    if config_file:
        return path, f"./{LOCAL_CONFIG}"
    return path, "the default (no --socket, $AIFLOWD_SOCKET, --config or ./aiflowd.yaml given)"


def local_plugins(args: argparse.Namespace, socket: str) -> int:
    """``aiflowctl plugins`` with no daemon: the job types this installation (and config) provides."""
    from aiflowd.config import load_config
    from aiflowd.workflows.errors import LoadError
    from aiflowd.workflows.loader import loader_for

    try:
        config = load_config(args.config or (LOCAL_CONFIG if os.path.isfile(LOCAL_CONFIG) else None))
    except LoadError as err:
        return fail(args, "usage", str(err), USAGE)
    loader, plugin_errors = loader_for(config.plugin_modules, config.plugin_paths, config.compile_timeout, config.warm_start)
    for error in plugin_errors:
        print(f"aiflowctl: {error}", file=sys.stderr)
    print(f"aiflowctl: no daemon answers at {socket}: these are the plugins installed here, as a daemon would load them", file=sys.stderr)
    result = [info.describe() for info in loader.registry]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_human("plugins", result)
    return DONE


def run_command(client: Any, args: argparse.Namespace) -> int:
    command = args.command if args.command in ("status", "plugins", "reload") else f"{args.command}.{args.action}"
    if command == "job.logs":
        return job_logs(client, args)
    if command == "event.list" and args.follow:
        for event in client.stream("event.list", follow=True):
            human = f"{event['id']}  {event['key']}={event['value']}  type={event['event_type']} namespace={event['namespace']}"
            print(json.dumps(event) if args.json else f"{human} sender={event['sender']}", flush=True)
        return DONE
    method = {
        "workflow.list": "workflow.list",
        "workflow.show": "workflow.show",
        "workflow.list-executions": "workflow.list_executions",
        "workflow.start-execution": "workflow.start_execution",
        "workflow.stop-execution": "workflow.stop_execution",
        "workflow.pause-scheduling": "workflow.pause_scheduling",
        "workflow.resume-scheduling": "workflow.resume_scheduling",
        "job.list-executions": "job.list_executions",
        "job.start-execution": "job.start_execution",
        "job.stop-execution": "job.stop_execution",
        "job.restart-execution": "job.restart_execution",
        "event.send": "event.send",
        "event.list": "event.list",
    }.get(command, command)
    params = {
        k: v for k, v in vars(args).items() if k not in ("command", "action", "socket", "config", "json", "timeout") and v is not None
    }
    result = client.call(method, **params)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_human(command, result)
    return DONE


def job_logs(client: Any, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"workflow": args.workflow, "job": args.job, "follow": args.follow}
    if args.execution is not None:
        params["execution"] = args.execution
    if args.bytes is not None:
        params["bytes"] = args.bytes
    for chunk in client.stream("job.logs", **params):
        if args.json:
            print(json.dumps(chunk), flush=True)
        else:
            sys.stdout.write(chunk["text"])
            sys.stdout.flush()
    return DONE


def print_human(command: str, result: Any) -> None:
    if command == "status":
        counts = ", ".join(f"{n} {s}" for s, n in sorted(result["workflows"].items())) or "none"
        print(f"aiflowd {result['version']} (pid {result['pid']}), up {result['uptime']:.0f}s")
        print(f"workflows: {counts} in {result['workflows_dir']}")
        print(f"running: {result['executions_running']} executions, {result['jobs_running']} jobs")
        if result.get("store_problem"):
            print(f"store: degraded: {result['store_problem']}")
        if result.get("restarts"):
            print("restarts: " + ", ".join(f"{part} {n}" for part, n in result["restarts"].items()))
        if result.get("errors_contained"):
            print(f"errors contained: {result['errors_contained']} (see the daemon's log)")
    elif command == "workflow.list":
        table(result, ["workflow", "status", "version", "paused", "problems", "executions_running"])
    elif command == "workflow.show":
        for key in ("workflow", "status", "path", "version", "paused"):
            print(f"{key + ':':<9} {result[key]}")
        if result["problems"]:
            print("problems:")
            for problem in result["problems"]:
                print(f"  {problem}")
        if result["jobs"]:
            print("jobs:")
            table(result["jobs"], ["job", "job_type", "rules"], indent="  ")
        if result["executions"]:
            print("recent executions:")
            table([_times(e) for e in result["executions"]], ["id", "status", "trigger", "started_at", "ended_at"], indent="  ")
    elif command == "workflow.list-executions":
        table([_times(e) for e in result], ["id", "status", "trigger", "version", "started_at", "ended_at"])
    elif command == "job.list-executions":
        table([_times(e) for e in result], ["execution_id", "job", "attempt", "status", "exit_code", "started_at", "ended_at", "message"])
    elif command == "plugins":
        table(result, ["job_type", "class", "module", "distribution", "version"])
    elif command == "event.list":
        table([_times(e, ("time",)) for e in result], ["id", "key", "value", "event_type", "namespace", "sender", "time"])
    elif isinstance(result, dict):
        print(" ".join(f"{k}={v}" for k, v in result.items()))
    elif result is not None:
        print(result)


def _times(row: dict[str, Any], keys: tuple[str, ...] = ("started_at", "ended_at")) -> dict[str, Any]:
    row = dict(row)
    for key in keys:
        if row.get(key):
            row[key] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row[key]))
    return row


def table(rows: list[dict[str, Any]], columns: list[str], indent: str = "") -> None:
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print(indent + "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print(indent + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def cmd_validate(args: argparse.Namespace) -> int:
    from aiflowd.config import load_config
    from aiflowd.workflows.errors import LoadError, Problem
    from aiflowd.workflows.loader import discover, is_workflow_folder, loader_for

    try:
        config = load_config(args.config)
    except LoadError as err:
        print(err, file=sys.stderr)
        return USAGE
    loader, plugin_errors = loader_for(config.plugin_modules, config.plugin_paths, config.compile_timeout, config.warm_start)
    for error in plugin_errors:
        print(f"aiflowctl: {error}", file=sys.stderr)
    targets: list[str] = []
    for path in args.paths:
        if os.path.isdir(path) and not is_workflow_folder(path):
            found = discover(path)
            targets.extend(found or [path])  # an empty folder is reported as "no workflow here"
        else:
            targets.append(path)
    if config.max_parallel_loads:
        loader.limit_compiles(config.max_parallel_loads)

    def check(target: str) -> list[Problem]:
        if not os.path.exists(target):
            return [Problem(target, 0, 0, "", "no such file or folder")]
        try:
            loader.load(target)
        except LoadError as err:
            return err.problems
        return []

    # As the daemon loads: in parallel, definitions compiling at most as many at once as it
    # allows (warm: forks of the fork server); reported in the order given.
    from concurrent.futures import ThreadPoolExecutor

    report = []
    with ThreadPoolExecutor(max_workers=max(1, min(len(targets), 4 * (config.max_parallel_loads or os.cpu_count() or 1)))) as pool:
        for target, problems in zip(targets, pool.map(check, targets), strict=True):
            report.append({"workflow": target, "valid": not problems, "problems": [p.to_json() for p in problems]})
            if not args.json:
                for problem in problems:
                    print(problem)
    valid = all(entry["valid"] for entry in report)
    if args.json:
        print(json.dumps(report, indent=2))
    elif valid:
        print(f"{len(report)} workflow(s) valid")
    return DONE if valid else FAILED


if __name__ == "__main__":
    sys.exit(main())
