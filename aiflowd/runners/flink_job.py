"""Runs the Python and SQL nodes of one PyFlink job, in the Flink client's Python process.

The nodes share one ``table_env``, ``statement_set`` and ``stream_execution_env``. A SQL
script (the ``sql`` / ``sql_file`` YAML form) runs as ``sql-client.sh -f`` runs it, step
by step (``aiflowd.plugins.flink.sql.plan``): SET/RESET change the table config, ``ADD JAR``
adds a jar, each INSERT or statement set starts a job. SQL processors written in Python
register their UDFs, run their DDL at once and add their INSERTs to the shared statement
set, which is executed once after the last node.

Every Flink job the nodes start, through whatever API (``execute_sql``, a statement set,
``Table.execute_insert``, DataStream ``execute``/``execute_async``), is captured here: the
first gets the id aiflowd chose, each next one an id derived from it. In local mode
(a MiniCluster in this process) the runner waits for every job and fails when one fails;
on a cluster (``flink run -d -py``, Flink's Python driver in the JobManager, or
submitting over REST itself in mode ``remote``) it
writes the jobs' ids to ``flink-jobs.json`` in the working folder, for aiflowd to track,
and ends. Nodes that
start no job at all are an error, never a finished job with no output.

Usage: python -m aiflowd.runners.flink_job JOB.json   (or as the -py file of flink run)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from typing import Any

if __name__ == "__main__":  # a file for Flink's Python driver: the aiflowd it belongs to, not any other installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from aiflowd.plugins.python import ExecutionContext  # after the path above

RUNNER_ERROR = "runner-error.txt"
#: The ids of the Flink jobs the nodes started, in order, written in cluster mode.
JOBS_FILE = "flink-jobs.json"
JOB_ID_KEY = "$internal.pipeline.job-id"
NO_JOB = "the job's nodes started no Flink job (no INSERT, statement set or execute() ran)"


class FlinkExecutionContext(ExecutionContext):
    """What a Flink processor sees: AIFlow's ExecutionContext plus the shared Flink environments.

    ``execution_env`` is AIFlow's name for the stream environment.
    """

    def __init__(
        self, config: dict[str, Any], name: str, job_execution_info: Any, table_env: Any, statement_set: Any, stream_env: Any
    ) -> None:
        super().__init__(config, name, job_execution_info)
        self.table_env = table_env
        self.statement_set = statement_set
        self.stream_execution_env = stream_env
        self.execution_env = stream_env


class CollectingStatementSet:
    """The job's shared statement set, counting what nodes add, so that it executes only if anything was."""

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

    def execute(self) -> Any:
        """Run what was added (Flink empties the set); a node may do it itself, before the runner would."""
        self.added = 0
        return self._statement_set.execute()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._statement_set, name)


def derived_job_id(base: str, index: int) -> str:
    """The id of the job started ``index``-th (from 0) by one run: the chosen one first, then derived."""
    return base if index == 0 else hashlib.md5(f"{base}/{index}".encode()).hexdigest()


class SkippedJob:
    """Stands for a job this run does not submit (another run in the JobManager submits it): nothing to wait for."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def get_job_client(self) -> None:
        return None

    def get_job_id(self) -> str:
        return self.job_id

    def wait(self, timeout_ms: int | None = None) -> None:
        return None

    def print(self) -> None:
        return None


class JobCapture:
    """Every Flink job the run starts: its id, what started it, and how to wait for it.

    Installed by patching the PyFlink classes in this process (the runner's own process),
    so that a processor's own table or stream environment is captured too. ``savepoints``
    gives the job started ``i``-th the savepoint at index ``i`` to start from (None, or
    past its end: none), set just before the job is submitted; None leaves the client's
    own setting (``flink run -s``) to every job.

    Under Flink's Python driver in the JobManager, the run request runs one job per
    program run: there ``only`` names the one job (by its index) this run submits, the
    others are counted (their calls return a :class:`SkippedJob`), and aiflowd runs the
    program again for each of them.
    """

    def __init__(
        self, base_id: str, mode: str, working_dir: str, savepoints: list[str | None] | None = None, only: int | None = None
    ) -> None:
        self.base_id = base_id
        self.mode = mode
        self.working_dir = working_dir
        self.only = only
        #: None: the client's own setting stands for every job (``flink run -s``); a list: per job.
        self.savepoints = None if savepoints is None else list(savepoints)
        self.jobs: list[tuple[str, str, Callable[[], Any]]] = []

    def next_id(self) -> str:
        return derived_job_id(self.base_id, len(self.jobs))

    def skips_next(self) -> bool:
        return self.only is not None and len(self.jobs) != self.only

    def skip(self, what: str) -> SkippedJob:
        job_id = self.next_id()
        self.jobs.append((job_id, what, lambda: None))
        if self.mode != "local":
            self.write()
        return SkippedJob(job_id)

    def next_savepoint(self) -> str | None:
        index = len(self.jobs)
        return self.savepoints[index] if self.savepoints is not None and index < len(self.savepoints) else None

    def place_savepoint(self, *j_configurations: Any) -> None:
        """The next job's savepoint, in each Java configuration it may be read from (removed where it has none)."""
        if self.savepoints is None:
            return
        from pyflink.java_gateway import get_gateway

        option = get_gateway().jvm.org.apache.flink.configuration.StateRecoveryOptions.SAVEPOINT_PATH
        savepoint = self.next_savepoint()
        for j_configuration in j_configurations:
            if savepoint is None:
                j_configuration.removeConfig(option)
            else:
                j_configuration.setString(option.key(), savepoint)
        if savepoint is not None:
            print(f"aiflowd: Flink job {self.next_id()} starts from savepoint {savepoint}", flush=True)

    def started(self, job_id: str, what: str, wait: Callable[[], Any]) -> None:
        self.jobs.append((job_id, what, wait))
        print(f"aiflowd: Flink job {job_id} started by {what}", flush=True)
        if self.mode != "local":
            self.write()

    def write(self) -> None:
        path = os.path.join(self.working_dir, JOBS_FILE if self.only is None else f"flink-jobs-{self.only}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump([job_id for job_id, _, _ in self.jobs], fh)
        os.replace(path + ".tmp", path)

    def install(self) -> None:
        """Patch every PyFlink call that starts a job: set the next id before it, record the job after it."""
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.table import StatementSet, Table, TableEnvironment

        capture = self

        def table_call(cls: type, name: str, t_env_of: Callable[[Any], Any], what: Callable[[Any, tuple[Any, ...]], str | None]) -> None:
            original = getattr(cls, name)

            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                described = what(self, args)
                if described is not None and capture.skips_next():
                    return capture.skip(described)
                t_env = t_env_of(self)
                config = t_env.get_config()
                config.set(JOB_ID_KEY, capture.next_id())
                if described is not None:
                    capture.place_savepoint(config.get_configuration()._j_configuration, *_env_configurations(t_env))
                result = original(self, *args, **kwargs)
                client = result.get_job_client()
                if client is not None:
                    capture.started(str(client.get_job_id()), described or "execute_sql", result.wait)
                return result

            setattr(cls, name, wrapper)

        table_call(TableEnvironment, "execute_sql", lambda t: t, lambda t, a: _job_statement(a[0] if a else ""))
        table_call(StatementSet, "execute", lambda s: s._t_env, lambda s, a: "a statement set")
        table_call(Table, "execute_insert", lambda t: t._t_env, lambda t, a: f"execute_insert({a[0] if a else ''!r})")

        for name in ("execute", "execute_async"):
            original = getattr(StreamExecutionEnvironment, name)

            def stream_wrapper(self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                from pyflink.common import Configuration

                if capture.skips_next():
                    return capture.skip(f"{_name}()")
                conf = Configuration()
                conf.set_string(JOB_ID_KEY, capture.next_id())
                self.configure(conf)
                capture.place_savepoint(*_stream_configurations(self._j_stream_execution_environment))
                result = _original(self, *args, **kwargs)
                job_id = str(result.get_job_id())
                if _name == "execute":  # blocks until the end in local mode; returns at once when detached
                    capture.started(job_id, "execute()", lambda: None)
                else:
                    capture.started(job_id, "execute_async()", lambda: result.get_job_execution_result().result())
                return result

            setattr(StreamExecutionEnvironment, name, stream_wrapper)

    def finish(self) -> None:
        """No job is an error; in local mode, wait for each job (a failed one raises)."""
        if not self.jobs:
            raise RuntimeError(NO_JOB)
        if self.mode == "local":
            for job_id, what, wait in self.jobs:
                wait()
                print(f"aiflowd: Flink job {job_id} ({what}) ended", flush=True)


def _stream_configurations(j_stream_env: Any) -> list[Any]:
    """The stream environment's own configuration (a job's savepoint is read from it), when it is one."""
    j_configuration = j_stream_env.getConfiguration()
    return [j_configuration] if j_configuration.getClass().getSimpleName() == "Configuration" else []


def _env_configurations(t_env: Any) -> list[Any]:
    """Under a table environment: its stream environment's configuration (the table config falls back to it)."""
    try:
        return _stream_configurations(t_env._j_tenv.execEnv())
    except Exception:  # noqa: BLE001 - a plain TableEnvironment has no stream environment to look at
        return []


def _job_statement(statement: Any) -> str | None:
    """How to name a statement given to ``execute_sql`` that starts a job; None for one that does not."""
    from aiflowd.plugins.flink import sql as flink_sql

    try:
        kinds = [s for s in flink_sql.split_script(str(statement)) if s.starts_job]
    except flink_sql.SqlSyntaxError:
        return None
    return f"execute_sql({_short(statement)})" if kinds else None


def _short(statement: Any) -> str:
    text = " ".join(str(statement).split())
    return repr(text if len(text) <= 60 else text[:57] + "...")


def aiflow_style(processors: list[Any]) -> bool:
    """Whether a processor is one of AIFlow's (``ai_flow_plugins``'s) Flink processors."""
    return any(c.__module__.startswith("ai_flow_plugins.") for p in processors for c in type(p).__mro__)


def chosen_env(processors: list[Any]) -> Any:
    """What ``set_flink_env`` chose in this process (importing the processors ran the call), else None."""
    module = sys.modules.get("ai_flow_plugins.job_plugins.flink")
    return module.get_flink_env() if module is not None and processors else None


def initial_mode(spec: dict[str, Any], processors: list[Any]) -> str:
    """The runtime mode to make the environments in.

    The job's ``execution_mode`` when given; else ``set_flink_env``'s choice; else AIFlow's
    default (batch) for AIFlow's processors, aiflowd's (streaming) for others. A SET at the
    top of the first SQL script has the last word, as in the SQL client.
    """
    from aiflowd.plugins.flink import sql as flink_sql

    mode = str(spec.get("execution_mode", "streaming"))
    if not spec.get("execution_mode_given", True):
        env = chosen_env(processors)
        if env is not None and env.mode:
            mode = env.mode
        elif aiflow_style(processors):
            mode = "batch"
    first = spec["nodes"][0] if spec["nodes"] else {}
    if first.get("script") is None:
        return mode
    for step in flink_sql.plan(first["script"]):
        if step.action != "set":
            break
        if step.key == "execution.runtime-mode" and step.value:
            mode = step.value.lower()
    return mode


def run_script(script: str, table_env: Any, workflow_dir: str, initial: dict[str, str]) -> None:
    """A SQL client script's steps, in order, as ``sql-client.sh -f`` runs them."""
    from aiflowd.plugins.flink import sql as flink_sql

    config = table_env.get_config()
    for step in flink_sql.plan(script):
        if step.action == "set":
            assert step.key is not None and step.value is not None
            config.set(step.key, step.value)
        elif step.action == "reset":
            keys = [step.key] if step.key else list(config.get_configuration().to_dict())
            for key in keys:
                if key in initial:
                    config.set(key, initial[key])
                elif key != JOB_ID_KEY:
                    config.get_configuration().remove_config(key)
        elif step.action == "add_jar":
            path = step.value or ""
            if "://" not in path and not os.path.isabs(path):
                path = os.path.join(workflow_dir, path)
            table_env.execute_sql("ADD JAR '" + path.replace("'", "''") + "'")
        elif step.action == "execute":
            table_env.execute_sql(step.statements[0])
        elif step.direct or len(step.statements) == 1:
            table_env.execute_sql(step.statements[0])
        else:
            statement_set = table_env.create_statement_set()
            for statement in step.statements:
                statement_set.add_insert_sql(statement)
            statement_set.execute()


def remote_settings(spec: dict[str, Any], settings: dict[str, str]) -> dict[str, str]:
    """Submitting from this process to the cluster at ``spec["rest_url"]``, as ``flink run -d`` does.

    Flink's REST client uploads the job graph, its jars and its artifacts (``python.files``)
    itself, so the cluster never reads a file of the daemon's. The ``flink-python`` jar
    goes with the job (as ``flink run -py`` sends it): a session cluster's TaskManagers
    need it for Python UDFs and do not have it in ``lib/``.
    """
    from urllib.parse import urlsplit

    from pyflink.find_flink_home import _find_flink_home

    url = urlsplit(spec["rest_url"])
    remote = {
        "execution.target": "remote",
        "rest.address": url.hostname or "127.0.0.1",
        "rest.port": str(url.port or 8081),
        "execution.attached": "false",  # DataStream execute() returns once the job is submitted
    }
    opt = os.path.join(_find_flink_home(), "opt")
    jars = [f"file://{os.path.join(opt, f)}" for f in sorted(os.listdir(opt)) if f.startswith("flink-python") and f.endswith(".jar")]
    given = [j for j in str(settings.get("pipeline.jars", "")).split(";") if j]
    remote["pipeline.jars"] = ";".join(given + jars[-1:])
    # UDF workers on the TaskManagers: the job's interpreter, as flink run -pyexec names it
    # (a cluster on another host needs -D python.executable=... in flink_run_args).
    remote["python.executable"] = str(settings.get("python.executable") or sys.executable)
    if spec.get("allow_non_restored_state"):
        remote["execution.savepoint.ignore-unclaimed-state"] = "true"
    return remote


def run(spec: dict[str, Any]) -> None:
    sys.path.insert(0, spec["workflow_dir"])
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from aiflowd import compat
    from aiflowd.plugin_interface import JobExecutionInfo
    from aiflowd.plugins.flink import SqlStatementsProcessor

    compat.enable()  # processors of AIFlow workflows import ai_flow / ai_flow_plugins
    processors: dict[str, Any] = {}
    for node in spec["nodes"]:
        if node["kind"] == "sql_statements":
            processors[node["node_id"]] = SqlStatementsProcessor(node["statements"], script=node.get("script"))
        else:
            processors[node["node_id"]] = pickle.loads(base64.b64decode(node["payload"]))
    capture = JobCapture(spec["job_id"], spec["mode"], spec["working_dir"], spec.get("savepoints"), spec.get("only_job"))
    capture.install()
    settings = {"pipeline.name": spec["name"], "execution.runtime-mode": initial_mode(spec, list(processors.values()))}
    if spec.get("parallelism"):  # as flink run -p: the session's default, which a script's RESET returns to
        settings["parallelism.default"] = str(spec["parallelism"])
    settings.update(spec.get("flink_config") or {})
    python_files = spec.get("python_files") or spec["workflow_dir"]
    if aiflow_style(list(processors.values())):
        python_files += "," + compat.COMPAT_PATH  # the UDF workers import the processors' modules, which import ai_flow_plugins
    if spec["mode"] == "local":
        settings["python.executable"] = sys.executable  # UDF workers: this interpreter, which has pyflink
        settings["rest.bind-port"] = "0"
    elif spec["mode"] == "remote":
        settings.update(remote_settings(spec, settings))
    settings["python.files"] = python_files  # modules for the UDF workers (flink run's -pyfs)
    custom = chosen_env(list(processors.values()))
    if custom is not None and custom.mode is None:  # a FlinkEnv of the user's own
        if spec["mode"] == "remote":
            raise RuntimeError(
                f"{type(custom).__name__}.create_env() makes its own environments, which cannot be sent to the cluster"
                " from the daemon's side (flink.shared_files: false); use FlinkBatchEnv or FlinkStreamEnv, or submit_via: cli"
            )
        stream_env, table_env, shared = custom.create_env()
    else:
        configuration = Configuration()
        for key, value in settings.items():
            configuration.set_string(key, value)
        if spec["mode"] == "remote":
            # get_execution_environment would make a local environment (no client context here),
            # which forces execution.target to local: the environment is made for the remote target.
            from pyflink.java_gateway import get_gateway

            j_class = get_gateway().jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment
            stream_env = StreamExecutionEnvironment(j_class(configuration._j_configuration))
        else:
            stream_env = StreamExecutionEnvironment.get_execution_environment(configuration)
        if spec.get("parallelism"):
            stream_env.set_parallelism(int(spec["parallelism"]))
        table_env = StreamTableEnvironment.create(stream_env)
        shared = table_env.create_statement_set()
    for key, value in settings.items():
        table_env.get_config().set(key, value)
    initial = dict(settings)
    statement_set = CollectingStatementSet(shared)
    info = JobExecutionInfo(**spec["job_execution_info"])
    outputs: dict[str, list[Any]] = {}
    opened: list[tuple[Any, Any]] = []
    try:
        for node in spec["nodes"]:
            context = FlinkExecutionContext(spec["job_config"], node["name"], info, table_env, statement_set, stream_env)
            processor = processors[node["node_id"]]
            if node["kind"] == "sql_statements" and node.get("script") is not None:
                run_script(node["script"], table_env, spec["workflow_dir"], initial)
                outputs[node["node_id"]] = []
                continue
            inputs = [outputs[source][port] for source, port in node["inputs"]]
            if hasattr(processor, "open"):
                processor.open(context)
                opened.append((processor, context))
            if node["kind"] == "python":
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
            statement_set.execute()
        capture.finish()
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
