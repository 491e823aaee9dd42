# PYTHON_ARGCOMPLETE_OK (argcomplete's global completion looks for this line)
"""``aiflowd``: the daemon; ``run-once`` to try a workflow in the foreground; ``init`` and
``systemd-units`` to get started (a starter folder, units for the chosen paths).

Without ``--config``, ``./aiflowd.yaml`` is read when there is one (``aiflowd init``
writes it), else the defaults apply (``./workflows``, state in ``./.aiflowd``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiflowd import __version__
from aiflowd.config import DaemonConfig, load_config
from aiflowd.model import Status
from aiflowd.workflows.errors import LoadError

if TYPE_CHECKING:
    from aiflowd.engine import JobRun

TAIL_LINES = 20
#: The config ``aiflowd`` and ``aiflowctl`` read from the current folder without --config.
LOCAL_CONFIG = "aiflowd.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiflowd",
        description="Run AIFlow-style workflows from a watched folder. With no command: serve, until SIGTERM or Ctrl-C.",
        epilog=f"Without --config, ./{LOCAL_CONFIG} is read if there is one; else aiflowd serves ./workflows with its state in ./.aiflowd.",
    )
    parser.add_argument("--version", action="version", version=f"aiflowd {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help=f"daemon config (default: ./{LOCAL_CONFIG} if there is one; `aiflowd init` writes one)"
    )
    sub = parser.add_subparsers(dest="command", metavar="[COMMAND]", help="what to do instead of serving (COMMAND --help says more)")
    once = sub.add_parser("run-once", help="run one execution of one workflow in the foreground")
    once.add_argument("path", metavar="PATH", help="a NAME.yaml file or a NAME/ workflow folder")
    once.add_argument("--job", metavar="NAME", help="run only this job, ignoring its rules")
    once.add_argument("--config", dest="sub_config", metavar="FILE", help=argparse.SUPPRESS)
    once.add_argument("-v", "--verbose", action="store_true", help="log aiflowd's own events too")
    init = sub.add_parser("init", help="write a starter folder: a config and a hello workflow")
    init.add_argument("dir", metavar="DIR", nargs="?", default=".", help="the folder to write into (created if absent; default: here)")
    init.add_argument("--examples", action="store_true", help="copy the bundled examples that need no Flink into DIR/workflows too")
    units = sub.add_parser("systemd-units", help="print aiflowd.service and aiflowd.socket for the chosen paths")
    units.add_argument("--user", default="aiflowd", metavar="NAME", help="the user and group the daemon runs as (default aiflowd)")
    units.add_argument(
        "--config",
        dest="unit_config",
        default="/etc/aiflowd/aiflowd.yaml",
        metavar="PATH",
        help="the config the service reads (default %(default)s)",
    )
    units.add_argument(
        "--prefix", default=sys.prefix, metavar="DIR", help="the environment holding bin/aiflowd (default: this one, %(default)s)"
    )
    units.add_argument(
        "--socket", default="/run/aiflowd.sock", metavar="PATH", help="the control socket systemd creates (default %(default)s)"
    )
    units.add_argument("--output", metavar="DIR", help="write the two unit files into DIR instead of printing them")
    _add_schema_command(sub)
    _attach_completers(sub)
    return parser


def _attach_completers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``run-once PATH --job <Tab>``: the jobs the workflow's YAML names (read here, no daemon needed)."""
    for action in sub.choices["run-once"]._actions:
        if action.dest == "job":
            action.completer = _complete_yaml_jobs  # type: ignore[attr-defined]


def _complete_yaml_jobs(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
    from aiflowd.workflows.loader import WORKFLOW_KEYS, find_source
    from aiflowd.workflows.yamlfile import read_yaml

    try:
        source = find_source(parsed_args.path)
        data = read_yaml(source.config_file, inside=source.workflow_dir).data
    except Exception:  # noqa: BLE001 - a completion must never print an error into the command line
        return []
    if not isinstance(data, dict):
        return []
    return [str(key) for key, value in data.items() if key not in WORKFLOW_KEYS and isinstance(value, dict) and str(key).startswith(prefix)]


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit, when this run is one (``aiflowctl completion``)."""
    from aiflowd.cli.aiflowctl import autocomplete

    autocomplete(parser)


def _add_schema_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of workflow YAML, for editors (completion and checks of keys)",
        description="The JSON Schema of workflow YAML, from the loader's rules and the job types the config loads "
        "(built-in ones, plugin_modules, installed plugins). Point an editor's YAML extension at it: see docs/workflows.md.",
    )
    schema.add_argument("--output", metavar="FILE", help="write the schema into FILE instead of printing it")
    schema.add_argument("--builtin", action="store_true", help="only the built-in job types (the copy the wheel ships), no plugins")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    _autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command == "init":
        return _printing(lambda: init(Path(args.dir), args.examples))
    if args.command == "systemd-units":
        return _printing(lambda: systemd_units(args.user, args.unit_config, args.prefix, args.socket, args.output))
    if args.command == "schema":
        return _printing(lambda: schema(args.config, args.builtin, args.output))
    try:
        config = load_config(config_path(args.config or getattr(args, "sub_config", None)))
    except LoadError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command == "run-once":
        return run_once(config, args.path, args.job, args.verbose)
    return serve(config)


def _printing(command: Callable[[], int]) -> int:
    """Run a command that prints; a reader that leaves early (``| head``) is not an error."""
    try:
        code = command()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that finds no pipe to complain about.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def config_path(given: str | None) -> str | None:
    """The config to read: the one given, else ./aiflowd.yaml when it exists, else none (the defaults)."""
    if given:
        return given
    return LOCAL_CONFIG if os.path.isfile(LOCAL_CONFIG) else None


STARTER_CONFIG = """\
# aiflowd's config for this folder. `aiflowd` run here reads it (elsewhere:
# aiflowd --config {config}). Relative paths are relative to this file.
# Every key, with its default: {sample}
workflows_dir: workflows   # the watched folder: drop NAME.yaml files or NAME/ folders in it
state_dir: .aiflowd        # the SQLite state, job logs and the control socket
"""

HELLO_WORKFLOW = """\
# A workflow: each top-level key is a job. Save a change and aiflowd runs the new version.
# Every key: `aiflowctl validate` checks this file; docs/workflows.md in aiflowd's sources.
hello:
  job_type: bash
  bash_command: echo "Hello from aiflowd"
world:
  job_type: bash
  bash_command: echo "hello finished, so world runs"
  action_on_job_status:
    - {upstream_job: hello, upstream_job_status: FINISHED, action: START}
"""


def init(folder: Path, with_examples: bool) -> int:
    """Write a starter folder; never overwrite a file that is there (one line, exit 1)."""
    from aiflowd import data

    config, hello = folder / LOCAL_CONFIG, folder / "workflows" / "hello.yaml"
    examples = sorted(p for p in data.examples().iterdir() if not p.name.startswith(("flink", ".", "_"))) if with_examples else []
    targets = [config, hello, *(folder / "workflows" / p.name for p in examples)]
    for target in targets:
        if target.exists():
            print(f"aiflowd: {target} exists; init writes only new files (remove it, or init another folder)", file=sys.stderr)
            return 1
    try:
        hello.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(STARTER_CONFIG.format(config=config.resolve(), sample=data.sample_config()))
        hello.write_text(HELLO_WORKFLOW)
        for example in examples:
            if example.is_dir():
                shutil.copytree(example, folder / "workflows" / example.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(example, folder / "workflows" / example.name)
    except OSError as err:
        print(f"aiflowd: cannot write the starter folder {folder}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {config} and {hello}" + (f", and {len(examples)} examples in {hello.parent}" if examples else ""))
    there = "" if folder.resolve() == Path.cwd() else f"cd {folder} && "
    print(f"next: {there}aiflowd            (serves {hello.parent}; Ctrl-C stops it)")
    print("then, from another terminal in that folder: aiflowctl status; aiflowctl job logs hello hello")
    return 0


_USER_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_-]{0,31}")


def systemd_units(user: str, config: str, prefix: str, socket: str, output: str | None) -> int:
    """The shipped units with the chosen user and paths filled in; printed, or written to a folder."""
    from aiflowd import data

    if not _USER_NAME.fullmatch(user):
        print(f"aiflowd: --user {user!r} is not a user name systemd accepts", file=sys.stderr)
        return 2
    executable = os.path.join(os.path.abspath(prefix), "bin", "aiflowd")
    config, socket = os.path.abspath(config), os.path.abspath(socket)
    header = [
        f"# Written by `aiflowd systemd-units` (aiflowd {__version__}) for {executable}, running as {user},",
        f"# reading {config}; aiflowctl finds the daemon with --socket {socket} or a",
        f"# control_socket: {socket} line in that config.",
    ]
    replace = {
        "ExecStart": f"{_quote(executable)} --config {_quote(config)}",
        "User": user,
        "Group": user,
        "SocketUser": user,
        "SocketGroup": user,
        "ListenStream": socket,
    }
    units = {}
    for name in ("aiflowd.service", "aiflowd.socket"):
        lines = data.unit_template(name).read_text().splitlines()
        while lines and lines[0].startswith("#"):  # the template's own install notes, for its fixed paths
            lines.pop(0)
        body = []
        for line in lines:
            key = line.split("=", 1)[0]
            if key == "Documentation":
                continue  # the template points at a checkout's README, which an install does not have
            body.append(f"{key}={replace[key]}" if "=" in line and key in replace else line)
        units[name] = "\n".join([*header, *body]) + "\n"
    if output is None:
        for name, text in units.items():
            print(f"# ---- {name}")
            sys.stdout.write(text)
        return 0
    try:
        os.makedirs(output, exist_ok=True)
        for name, text in units.items():
            Path(output, name).write_text(text)
    except OSError as err:
        print(f"aiflowd: cannot write the units into {output}: {err.strerror or err}", file=sys.stderr)
        return 1
    written = ", ".join(os.path.join(output, n) for n in units)
    print(f"wrote {written}; then: systemctl daemon-reload && systemctl enable --now aiflowd.socket aiflowd.service")
    return 0


def schema(config_file: str | None, builtin: bool, output: str | None) -> int:
    """The workflow schema for the job types this installation (and its config) loads."""
    from aiflowd.workflows.schema import builtin_keys, registry_keys, schema_text

    if builtin:
        text = schema_text(builtin_keys())
    else:
        from aiflowd.workflows.loader import loader_for

        try:
            config = load_config(config_path(config_file))
        except LoadError as err:
            print(err, file=sys.stderr)
            return 2
        loader, plugin_errors = loader_for(config.plugin_modules, config.plugin_paths, config.compile_timeout)
        for error in plugin_errors:
            print(f"aiflowd: {error}", file=sys.stderr)
        text = schema_text(registry_keys(loader.registry))
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as err:
        print(f"aiflowd: cannot write {output}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {output}")
    return 0


def _quote(path: str) -> str:
    """A path as one word of a systemd command line."""
    return f'"{path}"' if any(c.isspace() or c in "\"'\\" for c in path) else path


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
    loader, plugin_errors = loader_for(config.plugin_modules, config.plugin_paths, config.compile_timeout, config.warm_start)
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
    settings["jobs_die_with_owner"] = True  # its jobs end with it, even when it is killed with SIGKILL
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
