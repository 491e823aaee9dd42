"""Runs the PythonProcessor nodes of one python job execution, inside the job process.

Nodes are opened in order, processed in topological order with each node's input list
made of its upstream outputs (by port, in declaration order), and closed in reverse.
A processor that raises fails the job with its traceback in this process's output, which
is the job's log.

Usage: python -m aiflowd.runners.python_job JOB.json
"""

from __future__ import annotations

import base64
import json
import pickle
import sys
import traceback
from typing import Any

from aiflowd import compat
from aiflowd.plugin_interface import JobExecutionInfo
from aiflowd.plugins.python import ExecutionContext


class JobFailed(Exception):
    """A node broke the contract (bad outputs); reported without a traceback of the runner."""


def run(spec: dict[str, Any]) -> None:
    sys.path.insert(0, spec["workflow_dir"])
    compat.enable()  # processors of AIFlow workflows import ai_flow / ai_flow_plugins
    info = JobExecutionInfo(**spec["job_execution_info"])
    config = dict(spec["job_config"])
    nodes = spec["nodes"]
    processors = {}
    for node in nodes:
        try:
            processors[node["node_id"]] = pickle.loads(base64.b64decode(node["payload"]))
        except Exception as err:
            raise JobFailed(f"cannot rebuild processor {node['class']} of node '{node['node_id']}': {type(err).__name__}: {err}") from err
    contexts = {n["node_id"]: ExecutionContext(n.get("config") or {"name": n["name"]}, n["name"], info, config) for n in nodes}
    outputs: dict[str, list[Any]] = {}
    opened: list[str] = []
    try:
        for node in nodes:
            processors[node["node_id"]].open(contexts[node["node_id"]])
            opened.append(node["node_id"])
        for node in nodes:
            node_id = node["node_id"]
            inputs = []
            for source, port in node["inputs"]:
                produced = outputs[source]
                if port >= len(produced):
                    raise JobFailed(f"node '{node_id}' reads output {port} of node '{source}', which returned {len(produced)} output(s)")
                inputs.append(produced[port])
            result = processors[node_id].process(contexts[node_id], inputs)
            if result is None:
                result = []
            if not isinstance(result, (list, tuple)):
                raise JobFailed(f"node '{node_id}': process() must return a list (one item per output), got {type(result).__name__}")
            outputs[node_id] = list(result)
    finally:
        for node_id in reversed(opened):
            processors[node_id].close(contexts[node_id])


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    try:
        run(spec)
    except JobFailed as err:
        print(f"aiflowd: job failed: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - any error of user code fails the job, with its traceback
        # Show the user's frames, not the runner's: the first frame is this module's own call.
        tb = err.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        traceback.print_exception(type(err), err, tb or err.__traceback__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
