"""Runs the Python and SQL nodes of one PyFlink job, in the Flink client's Python process.

The nodes share one ``table_env``, ``statement_set`` and ``stream_execution_env``; SQL
nodes register their UDFs, run their DDL at once and add their INSERTs to the statement
set, which is executed once after the last node, as one Flink job carrying the id aiflowd
chose. In local mode the job runs in a MiniCluster here and this process waits for its
end; on a cluster (``flink run -d -py`` or the REST API's Python driver) the job is
submitted and this process ends without waiting.

Usage: python -m aiflowd.runners.flink_job JOB.json   (or as the -py file of flink run)
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import sys
import traceback
from typing import Any

from aiflowd.plugins.python import ExecutionContext

RUNNER_ERROR = "runner-error.txt"


class FlinkExecutionContext(ExecutionContext):
    """What a Flink processor sees: AIFlow's ExecutionContext plus the shared Flink environments."""

    def __init__(
        self, config: dict[str, Any], name: str, job_execution_info: Any, table_env: Any, statement_set: Any, stream_env: Any
    ) -> None:
        super().__init__(config, name, job_execution_info)
        self.table_env = table_env
        self.statement_set = statement_set
        self.stream_execution_env = stream_env


class CollectingStatementSet:
    """The job's statement set, counting what nodes add, so that it executes only if anything was."""

    def __init__(self, statement_set: Any) -> None:
        self._statement_set = statement_set
        self.added = 0

    def add_insert_sql(self, statement: str) -> CollectingStatementSet:
        self._statement_set.add_insert_sql(statement)
        self.added += 1
        return self

    def add_insert(self, *args: Any, **kwargs: Any) -> CollectingStatementSet:
        self._statement_set.add_insert(*args, **kwargs)
        self.added += 1
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._statement_set, name)


def run(spec: dict[str, Any]) -> None:
    sys.path.insert(0, spec["workflow_dir"])
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from aiflowd.plugin_interface import JobExecutionInfo
    from aiflowd.plugins.flink import SqlStatementsProcessor

    settings = {
        "$internal.pipeline.job-id": spec["job_id"],
        "pipeline.name": spec["name"],
        "execution.runtime-mode": spec.get("execution_mode", "streaming"),
    }
    if spec["mode"] == "local":
        settings["python.executable"] = sys.executable  # UDF workers: this interpreter, which has pyflink
        settings["python.files"] = spec["workflow_dir"]  # ... and the workflow's modules (flink run's -pyfs)
        settings["rest.bind-port"] = "0"
    configuration = Configuration()
    for key, value in settings.items():
        configuration.set_string(key, value)
    stream_env = StreamExecutionEnvironment.get_execution_environment(configuration)
    if spec.get("parallelism"):
        stream_env.set_parallelism(int(spec["parallelism"]))
    table_env = StreamTableEnvironment.create(stream_env)
    for key, value in settings.items():
        table_env.get_config().set(key, value)
    statement_set = CollectingStatementSet(table_env.create_statement_set())
    info = JobExecutionInfo(**spec["job_execution_info"])
    outputs: dict[str, list[Any]] = {}
    opened: list[tuple[Any, Any]] = []
    try:
        for node in spec["nodes"]:
            context = FlinkExecutionContext(spec["job_config"], node["name"], info, table_env, statement_set, stream_env)
            if node["kind"] == "sql_statements":
                processor: Any = SqlStatementsProcessor(node["statements"])
            else:
                processor = pickle.loads(base64.b64decode(node["payload"]))
            inputs = [outputs[source][port] for source, port in node["inputs"]]
            if node["kind"] == "python":
                processor.open(context)
                opened.append((processor, context))
                result = processor.process(context, inputs)
                outputs[node["node_id"]] = list(result or [])
                continue
            for item in processor.udf_list(context):
                name, function = (item.name, item.udf) if hasattr(item, "udf") else item
                table_env.create_temporary_system_function(name, function)
            for statement in processor.sql_statements(context):
                if statement.lstrip().upper().startswith("INSERT"):
                    statement_set.add_insert_sql(statement)
                else:
                    table_env.execute_sql(statement)
            outputs[node["node_id"]] = []
        if statement_set.added:
            result = statement_set.execute()
            client = result.get_job_client()
            print(f"aiflowd: Flink job {client.get_job_id() if client else spec['job_id']} submitted", flush=True)
            if spec["mode"] == "local":
                result.wait()
    finally:
        for processor, context in reversed(opened):
            processor.close(context)


def main(argv: list[str]) -> int:
    with open(argv[-1], encoding="utf-8") as fh:
        spec = json.load(fh)
    os.chdir(spec["working_dir"])
    try:
        run(spec)
    except BaseException:
        # Under the REST API's Python driver this process's output lands in the JobManager's
        # log; the file lets aiflowd put the real cause in the job's own log.
        with open(RUNNER_ERROR, "w", encoding="utf-8") as fh:
            traceback.print_exc(file=fh)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
