"""Runs a workflow's Python definition (and ``module:Class`` processors) in a subprocess.

The daemon never executes user code: it starts this module with a request file and a
time limit, and reads back only the graph (nodes, edges, rules) with every processor
pickled for the job process. Problems come back as located values, not tracebacks.

Usage: python -m aiflowd.runners.compile_workflow REQUEST.json RESULT.json
"""

from __future__ import annotations

import os
import sys

from aiflowd.runners import reaper

# First, before anything heavy or any user code: die with the process that wants the answer
# (its time limit and its cancel are useless if it is gone), and adopt whatever the
# definition starts that escapes (``setsid cmd &``), to end it before answering.
if __name__ == "__main__":
    reaper.die_with_parent(os.environ.get("AIFLOWD_HELPER_PARENT"))
    reaper.become_subreaper()

import base64  # imported after the parent-death signal, on purpose
import importlib
import importlib.util
import json
import pickle
import signal
import traceback
from typing import Any

from aiflowd import compat
from aiflowd.workflows import dsl

#: What processes the definition left running get between SIGTERM and SIGKILL.
REAP_GRACE = 1.0


def main(argv: list[str]) -> int:
    request_path, result_path = argv[1], argv[2]
    with open(request_path, encoding="utf-8") as fh:
        request = json.load(fh)
    compiler = _Compiler(request)
    result = compiler.run()
    # Nothing the definition started may outlive the compile; the answer comes after.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    reaper.reap_descendants(REAP_GRACE)
    tmp = result_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(tmp, result_path)
    return 0


class _Compiler:
    def __init__(self, request: dict[str, Any]) -> None:
        self.workflow_dir: str = request["workflow_dir"]
        self.definition: str | None = request.get("definition")
        self.module_name: str = request.get("module") or ""
        self.yaml_processors: dict[str, dict[str, Any]] = request.get("yaml_processors", {})
        self.problems: list[dict[str, Any]] = []

    def run(self) -> dict[str, Any]:
        sys.path.insert(0, self.workflow_dir)
        compat.enable()  # AIFlow definitions import ai_flow / ai_flow_plugins
        os.chdir(self.workflow_dir)
        builder = dsl.WorkflowBuilder()
        with dsl.building(builder):
            if self.definition:
                self._run_definition(builder)
            for job, spec in self.yaml_processors.items():
                self._build_yaml_processor(builder, job, spec)
        jobs = {job: [self._encode_node(job, node) for node in nodes] for job, nodes in builder.jobs.items()}
        rules = [
            {"job": r.job, "kind": r.kind, "condition": r.condition, "action": r.action, "file": r.file, "line": r.line}
            for r in builder.rules
        ]
        return {"jobs": jobs, "rules": rules, "problems": self.problems}

    def _run_definition(self, builder: dsl.WorkflowBuilder) -> None:
        assert self.definition is not None
        try:
            spec = importlib.util.spec_from_file_location(self.module_name, self.definition)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            # Registered under its file's name so that pickle refers to its classes by a
            # name the job process can import again from the workflow folder.
            sys.modules[self.module_name] = module
            spec.loader.exec_module(module)
            main = getattr(module, "main", None)
            if not builder.jobs and callable(main):
                main()  # AIFlow definitions declare their jobs in main(), run under __main__
        except SystemExit as err:
            self._problem_here(self.definition, 0, "", f"the definition called exit({err.code}) before it finished")
        except BaseException as err:  # noqa: BLE001 - user code may raise anything; report it with its line
            self._problem_from(err)

    def _build_yaml_processor(self, builder: dsl.WorkflowBuilder, job: str, spec: dict[str, Any]) -> None:
        where = (spec["file"], spec["line"], spec["column"], spec["key"])
        ref = spec["processor"]
        module_name, _, qualname = ref.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except ModuleNotFoundError as err:
            self._problem_at(*where, f"cannot import module '{err.name}' (looked in the workflow folder and sys.path)")
            return
        except AttributeError:
            self._problem_at(*where, f"module '{module_name}' has no '{qualname}'")
            return
        except BaseException as err:  # noqa: BLE001 - importing user code may raise anything
            self._problem_from(err, fallback=where)
            return
        args = spec.get("args")
        try:
            if isinstance(args, list):
                processor = target(*args)
            else:
                processor = target(**(args or {}))
        except TypeError as err:
            self._problem_at(spec["file"], spec["args_line"], spec["args_column"], spec["args_key"], f"{ref}: {err}")
            return
        except BaseException as err:  # noqa: BLE001 - user constructors may raise anything
            self._problem_from(err, fallback=where)
            return
        with dsl.job_config(job):
            dsl.user_define_operation(processor=processor, name=spec.get("node_name") or job)

    def _encode_node(self, job: str, node: dsl.NodeSpec) -> dict[str, Any]:
        processor = node.processor
        cls = type(processor)
        encoded: dict[str, Any] = {
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "mro": [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__],
            "payload": "",
            "state": None,
        }
        try:
            encoded["payload"] = base64.b64encode(pickle.dumps(processor, protocol=4)).decode("ascii")
        except Exception as err:  # noqa: BLE001 - pickling user objects may raise anything
            self._problem_here(
                self.definition or "",
                0,
                f"{job}.{node.node_id}",
                f"the processor {cls.__qualname__} cannot be sent to the job process ({type(err).__name__}: {err}); "
                "keep its attributes to plain data and classes importable from the workflow folder",
            )
        state = getattr(processor, "__dict__", None)
        if state is not None:
            try:
                json.dumps(state)
                encoded["state"] = state
            except (TypeError, ValueError):
                pass
        return {
            "node_id": node.node_id,
            "name": node.name,
            "output_num": node.output_num,
            "config": _plain(node.config),
            "inputs": [[c.job_name, c.node_id, c.port] for c in node.inputs],
            "processor": encoded,
        }

    def _problem_at(self, file: str, line: int, column: int, key: str, message: str) -> None:
        self.problems.append({"file": file, "line": line, "column": column, "key": key, "message": message})

    def _problem_here(self, file: str, line: int, key: str, message: str) -> None:
        self._problem_at(file, line, 0, key, message)

    def _problem_from(self, err: BaseException, fallback: tuple[str, int, int, str] | None = None) -> None:
        message = f"{type(err).__name__}: {err}"
        if isinstance(err, SyntaxError) and err.filename:
            self._problem_at(err.filename, err.lineno or 0, err.offset or 0, "", f"SyntaxError: {err.msg}")
            return
        frames = [f for f in traceback.extract_tb(err.__traceback__) if _inside(f.filename, self.workflow_dir)]
        if frames:
            frame = frames[-1]
            self._problem_at(frame.filename, frame.lineno or 0, (frame.colno or 0) + 1 if frame.colno is not None else 0, "", message)
        elif fallback is not None:
            self._problem_at(*fallback, message)
        else:
            self._problem_here(self.definition or "", 0, "", message)


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), folder]) == folder
    except ValueError:
        return False


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return {k: repr(v) for k, v in value.items()} if isinstance(value, dict) else repr(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
