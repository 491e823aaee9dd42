# PYTHON_ARGCOMPLETE_OK (argcomplete's global completion looks for this line)
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
``aiflowctl completion bash|zsh|fish`` prints shell completion for both tools, which
completes workflow and job names by asking the daemon.
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
        return subparsers.add_parser(name, help=text, description=text).add_subparsers(
            dest="action", required=True, metavar="ACTION", help=f"what to do with {text}"
        )

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND --help says more)")
    command(sub, "status", "the daemon's state")

    workflow = group(sub, "workflow", "workflows")
    command(workflow, "list", "list workflows").add_argument("--all", action="store_true", help="include retired ones")
    for name, text in (
        ("show", "one workflow, with its jobs and problems"),
        ("start-execution", "start an execution now (refused beyond its max_active_executions)"),
        (
            "pause-scheduling",
            "hold its timers and event rules alike: no tick, event or file change starts an execution or a job"
            " (running jobs go on; a manual start still works)",
        ),
        ("resume-scheduling", "start executions again"),
    ):
        action = command(workflow, name, text)
        action.add_argument("workflow", metavar="WF", help="the workflow's name")
        if name == "start-execution":
            action.add_argument(
                "--param",
                dest="params",
                metavar="K=V",
                action="append",
                type=_param_pair,
                help="give every job of the execution AIFLOWD_PARAM_K=V (repeatable; K an identifier)",
            )
    executions = command(workflow, "list-executions", "its executions, the latest first")
    executions.add_argument("workflow", metavar="WF", help="the workflow's name")
    _history_options(executions)
    graph = command(workflow, "graph", "its picture: jobs, and rules and data edges as labelled arrows, coloured by last status")
    graph.add_argument("workflow", metavar="WF", help="the workflow's name")
    graph.add_argument(
        "--format",
        choices=("text", "dot", "mermaid", "svg"),
        default="text",
        help="text for a terminal (default), dot for Graphviz, mermaid for Markdown, svg for a file or a page",
    )
    stop = command(workflow, "stop-execution", "stop its running executions (or one)")
    stop.add_argument("workflow", metavar="WF", help="the workflow's name")
    stop.add_argument("execution", metavar="EXECUTION", nargs="?", type=int, help="only this execution (default: every running one)")

    job = group(sub, "job", "jobs")
    listing = command(job, "list-executions", "job executions of a workflow, the latest first")
    listing.add_argument("workflow", metavar="WF", help="the workflow's name")
    listing.add_argument("job", metavar="JOB", nargs="?", help="only this job's")
    _history_options(listing)
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
    logs.add_argument("--attempt", type=int, metavar="N", help="this attempt's log (retries and restarts count up; default: the latest)")
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
    _add_completion_command(
        command(sub, "completion", "print shell code that completes aiflowctl and aiflowd commands, workflows and jobs")
    )
    attach_completers(parser)
    return parser


def _param_pair(text: str) -> tuple[str, str]:
    """``K=V`` of ``--param``: K an identifier (the job sees ``AIFLOWD_PARAM_K``)."""
    from aiflowd.model import check_params

    name, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    try:
        check_params({name: value})
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name, value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _history_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_positive, metavar="N", help="at most N rows (default 100)")
    parser.add_argument("--since", metavar="WHEN", help="only those started since: a duration ago (1h, 30m, 2d) or an ISO time")
    parser.add_argument(
        "--status", type=str.upper, choices=("INIT", "RUNNING", "FINISHED", "FAILED", "KILLED"), help="only those with this status"
    )


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
    parser = build_parser()
    autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command == "validate":
        return cmd_validate(args)
    if args.command == "completion":
        return cmd_completion(args)
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
    if command == "workflow.graph":
        return workflow_graph(client, args)
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
    if "params" in params:  # --param K=V, repeated: the last of a name wins
        params["params"] = dict(params["params"])
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
    if args.attempt is not None:
        params["attempt"] = args.attempt
    if args.bytes is not None:
        params["bytes"] = args.bytes
    for chunk in client.stream("job.logs", **params):
        if args.json:
            print(json.dumps(chunk), flush=True)
        else:
            sys.stdout.write(chunk["text"])
            sys.stdout.flush()
    return DONE


def workflow_graph(client: Any, args: argparse.Namespace) -> int:
    """The picture the daemon sends as data, drawn here (``--json``: the data itself)."""
    from aiflowd.graph import Graph, render

    data = client.call("workflow.graph", workflow=args.workflow)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(render(Graph.from_json(data), args.format))
    return DONE


def print_human(command: str, result: Any) -> None:
    if command == "status":
        counts = ", ".join(f"{n} {s}" for s, n in sorted(result["workflows"].items())) or "none"
        print(f"aiflowd {result['version']} (pid {result['pid']}), up {result['uptime']:.0f}s")
        print(f"workflows: {counts} in {result['workflows_dir']}")
        print(f"running: {result['executions_running']} executions, {result['jobs_running']} jobs")
        if "jobs_queued" in result:
            print(
                f"jobs: {result['jobs_active']} running, {result['jobs_queued']} queued, "
                f"{result['jobs_failed_last_hour']} failed in the last hour"
            )
        if result.get("jobs_unreachable"):
            print(f"unreachable: {result['jobs_unreachable']} running jobs whose cluster does not answer (shown UNREACHABLE)")
        if result.get("store_problem"):
            print(f"store: degraded: {result['store_problem']}")
        if result.get("restarts"):
            print("restarts: " + ", ".join(f"{part} {n}" for part, n in result["restarts"].items()))
        if result.get("errors_contained"):
            print(f"errors contained: {result['errors_contained']} (see the daemon's log)")
        if (hooks := result.get("hooks")) and any(hooks.values()):
            failed = f", {hooks['failed']} failed (see the daemon's log)" if hooks["failed"] else ""
            dropped = f", {hooks['dropped']} dropped (too many waiting)" if hooks["dropped"] else ""
            print(f"hooks: {hooks['sent']} sent{failed}{dropped}, {hooks['pending']} pending")
        if (retention := result.get("retention")) and retention.get("last_pass"):
            last = retention["last_pass"]
            print(
                f"retention: last pass removed {last['executions']} executions, "
                f"{last.get('job_executions', 0)} job executions of open ones, {last['events']} events, "
                f"{last['log_files']} log files, {last['work_dirs']} working folders"
                + (f"; incomplete: {last['errors'][0]}" if last.get("errors") else "")
            )
    elif command == "workflow.list":
        rows = [{**row, "next_run": _next(row.get("next_run"), paused=False)} for row in result]  # PAUSED has its column
        columns = ["workflow", "status", "version", "paused", "problems", "executions_running"]
        table(rows, columns + (["next_run"] if any(row["next_run"] for row in rows) else []))
    elif command == "workflow.show":
        for key in ("workflow", "status", "path", "version", "paused"):
            print(f"{key + ':':<9} {result[key]}")
        for schedule in result.get("schedules") or []:
            whose = f"job {schedule['job']}: " if schedule["job"] else ""
            print(f"{'timer:':<9} {whose}{schedule['schedule']}; next {_next(schedule['next_run'], paused=result['paused'])}")
        if result.get("on_overlap"):
            limit = result.get("max_active_executions")
            overlap = f"{result['on_overlap']}, at most {limit} active" if limit else result["on_overlap"]
            if result.get("queued_slot"):
                overlap += f"; a slot waits: {_when(result['queued_slot'])}"
            if result.get("skipped_starts"):
                overlap += f"; {result['skipped_starts']} starts skipped"
            print(f"{'overlap:':<9} {overlap}")
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
        rows = [{**_times(e), "params": " ".join(f"{k}={v}" for k, v in (e.get("params") or {}).items())} for e in result]
        columns = ["id", "status", "trigger", "version", "started_at", "ended_at", "duration"]
        table(rows, columns + (["params"] if any(row["params"] for row in rows) else []))
    elif command == "job.list-executions":
        rows = [{**_times(e), "attempt": f"{e['attempt']} ({e.get('kind', 'start')})"} for e in result]
        table(rows, ["execution_id", "job", "attempt", "status", "exit_code", "started_at", "ended_at", "duration", "message"])
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
    if row.get("status_since"):  # running with a condition: "UNREACHABLE since 2026-01-02 03:04:05"
        row["status"] = f"{row['status']} since {_when(row['status_since'])}"
    for key in keys:
        if row.get(key):
            row[key] = _when(row[key])
    if row.get("duration") is not None:
        row["duration"] = _duration(row["duration"])
    return row


def _next(stamp: float | None, paused: bool | None) -> str:
    """When a timer fires next, as ``systemctl list-timers`` shows it: the time and how long until then."""
    if stamp is None:
        return ""
    left = stamp - time.time()
    text = f"{_when(stamp)} ({'due now' if left <= 0 else 'in ' + _duration(left)})"
    return text + (", paused: its slots are recorded, not run" if paused else "")


def _when(stamp: float) -> str:
    """``2026-01-02 03:04:05``, local time: as the status page writes it."""
    from aiflowd.web.pages import when

    return when(stamp)


def _duration(seconds: float) -> str:
    """``4.2s``, ``3m05s``, ``2h01m``, ``1d03h``: as the status page writes them."""
    from aiflowd.web.pages import duration

    return duration(seconds)


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

    def check(target: str) -> tuple[list[Problem], list[Problem], set[str]]:
        """(problems, warnings, job types) of one workflow."""
        if not os.path.lexists(target):
            return [Problem(target, 0, 0, "", "no such file or folder")], [], set()
        try:
            loaded = loader.load(target)
        except LoadError as err:
            return err.problems, [], yaml_job_types(target)
        return [], loaded.warnings, {graph.config.job_type for graph in loaded.workflow.jobs.values()}

    # As the daemon loads: in parallel, definitions compiling at most as many at once as it
    # allows (warm: forks of the fork server); reported in the order given.
    from concurrent.futures import ThreadPoolExecutor

    report = []
    flink_missing = flink_extra_missing(config.flink)
    noted = False
    with ThreadPoolExecutor(max_workers=max(1, min(len(targets), 4 * (config.max_parallel_loads or os.cpu_count() or 1)))) as pool:
        for target, (problems, warnings, job_types) in zip(targets, pool.map(check, targets), strict=True):
            entry: dict[str, Any] = {"workflow": target, "valid": not problems, "problems": [p.to_json() for p in problems]}
            entry["warnings"] = [w.to_json() for w in warnings]
            if flink_missing and "flink" in job_types:
                entry["notes"] = [FLINK_NOTE]
                if not noted:
                    print(f"note: {FLINK_NOTE}", file=sys.stderr)
                    noted = True
            report.append(entry)
            if not args.json:
                for problem in problems or warnings:
                    print(problem)
    valid = all(entry["valid"] for entry in report)
    if args.json:
        print(json.dumps(report, indent=2))
    elif valid:
        print(f"{len(report)} workflow(s) valid")
    return DONE if valid else FAILED


# -- shell completion ------------------------------------------------------------------

#: How long a completion waits for the daemon: a shell waiting on Tab must not hang.
COMPLETION_TIMEOUT = 1.0
COMPLETION_SHELLS = ("bash", "zsh", "fish")


def _add_completion_command(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=COMPLETION_SHELLS, help="the shell to complete in")
    parser.epilog = 'Add to ~/.bashrc (or ~/.zshrc): eval "$(aiflowctl completion bash)"  (zsh: ... completion zsh)'


def cmd_completion(args: argparse.Namespace) -> int:
    """The shell code (from argcomplete) that completes both tools in ``args.shell``."""
    try:
        import argcomplete
    except ImportError:
        return fail(args, "usage", "shell completion needs argcomplete: pip install argcomplete", USAGE)
    sys.stdout.write(argcomplete.shellcode(["aiflowctl", "aiflowd"], shell=args.shell))
    return DONE


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit, when this run is one (argcomplete's variables)."""
    if "_ARGCOMPLETE" not in os.environ:
        return  # an ordinary run: argcomplete is not even imported
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser, always_complete_options=False)  # options after a "-", names first


def ask_daemon(parsed_args: argparse.Namespace, method: str, **params: Any) -> Any:
    """The daemon's answer for a completion, or None: no daemon, no answer within
    ``COMPLETION_TIMEOUT``, or a refusal all complete nothing, silently."""
    try:
        from aiflowd.control.client import ControlClient

        path, _ = socket_path(parsed_args)
        with ControlClient(path, timeout=COMPLETION_TIMEOUT, connect_retry=0) as client:
            return client.call(method, **params)
    except Exception:  # noqa: BLE001 - a completion must never print an error into the command line
        return None


def complete_workflows(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """The names of the daemon's workflows that start with ``prefix``."""
    rows = ask_daemon(parsed_args, "workflow.list", all=True)
    names = [str(row["workflow"]) for row in rows or [] if isinstance(row, dict) and "workflow" in row]
    return [name for name in names if name.startswith(prefix)]


def complete_jobs(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """The names of the jobs of the workflow given before, as the daemon knows them."""
    workflow = getattr(parsed_args, "workflow", None)
    if not workflow:
        return []
    shown = ask_daemon(parsed_args, "workflow.show", workflow=workflow)
    jobs = shown.get("jobs") if isinstance(shown, dict) else None
    names = [str(row["job"]) for row in jobs or [] if isinstance(row, dict) and "job" in row]
    return [name for name in names if name.startswith(prefix)]


#: Which completer an argument gets, by its ``dest``: every command naming a workflow or a
#: job (those added later too) completes the same way.
COMPLETERS = {"workflow": complete_workflows, "job": complete_jobs}


def attach_completers(parser: argparse.ArgumentParser) -> None:
    """Give each workflow and job argument of every command its completer."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                attach_completers(sub)
        elif action.dest in COMPLETERS and not action.option_strings:
            action.completer = COMPLETERS[action.dest]  # type: ignore[attr-defined]


FLINK_NOTE = "the flink extra is not installed (pip install 'aiflowd[flink]'): Flink jobs were checked but cannot run here"


def flink_extra_missing(flink_settings: dict[str, Any]) -> bool:
    """Whether Flink jobs could not run here: no apache-flink (pyflink) and no ``flink.flink_home``.

    The flink job type finds its distribution the same way when a job starts
    (``aiflowd.plugins.flink.controller.flink_home``); validate only says so, once.
    """
    import importlib.util

    return not flink_settings.get("flink_home") and importlib.util.find_spec("pyflink") is None


def yaml_job_types(target: str) -> set[str]:
    """The job types an invalid workflow's YAML names (best effort: none when it cannot be read)."""
    from aiflowd.workflows.errors import LoadError
    from aiflowd.workflows.loader import WORKFLOW_KEYS, find_source
    from aiflowd.workflows.yamlfile import read_yaml

    try:
        source = find_source(target)
        data = read_yaml(source.config_file, inside=source.workflow_dir).data
    except LoadError:
        return set()
    if not isinstance(data, dict):
        return set()
    return {str(job.get("job_type")) for key, job in data.items() if key not in WORKFLOW_KEYS and isinstance(job, dict)}


if __name__ == "__main__":
    sys.exit(main())
