"""``aiflowctl``: validate workflows and list plugins (more commands talk to the daemon).

Exit codes: 0 done, 1 refused or failed (an invalid workflow), 2 usage, 3 daemon unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from aiflowd.workflows.errors import LoadError, Problem


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiflowctl", description="Control and inspect aiflowd.")
    parser.add_argument("--config", metavar="FILE", help="daemon config, for its plugins and socket")
    parser.add_argument("--json", action="store_true", help="print answers as JSON for scripts")
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check workflows with the daemon's loader, without a daemon")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="workflow files or folders, or folders of workflows")
    sub.add_parser("plugins", help="list job types and where their plugins come from")
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            return cmd_validate(args)
        return cmd_plugins(args)
    except LoadError as err:  # a bad --config file
        print(err, file=sys.stderr)
        return 2


def _loader(args: argparse.Namespace) -> Any:
    from aiflowd.config import load_config
    from aiflowd.workflows.loader import loader_for

    config = load_config(args.config)
    loader, plugin_errors = loader_for(config.plugin_modules, config.plugin_paths, config.compile_timeout)
    for error in plugin_errors:
        print(f"aiflowctl: {error}", file=sys.stderr)
    return loader


def cmd_validate(args: argparse.Namespace) -> int:
    from aiflowd.workflows.loader import discover, is_workflow_folder

    loader = _loader(args)
    targets: list[str] = []
    for path in args.paths:
        if os.path.isdir(path) and not is_workflow_folder(path):
            found = discover(path)
            targets.extend(found)
            if not found:
                targets.append(path)  # reported as "no workflow here"
        else:
            targets.append(path)
    report = []
    for target in targets:
        problems: list[Problem] = []
        if not os.path.exists(target):
            problems = [Problem(target, 0, 0, "", "no such file or folder")]
        else:
            try:
                loader.load(target)
            except LoadError as err:
                problems = err.problems
        report.append({"workflow": target, "valid": not problems, "problems": [p.to_json() for p in problems]})
        if not args.json:
            for problem in problems:
                print(problem)
    if args.json:
        print(json.dumps(report, indent=2))
    elif all(entry["valid"] for entry in report):
        print(f"{len(report)} workflow(s) valid")
    return 0 if all(entry["valid"] for entry in report) else 1


def cmd_plugins(args: argparse.Namespace) -> int:
    loader = _loader(args)
    rows = [info.describe() for info in loader.registry]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'JOB TYPE':<12} {'CLASS':<50} {'DISTRIBUTION':<20} VERSION")
    for row in rows:
        dist = row["distribution"] or f"(module {row['module']})"
        print(f"{row['job_type']:<12} {row['class']:<50} {dist:<20} {row['version'] or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
