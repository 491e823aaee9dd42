"""The ``flink`` job type: jar jobs, and PyFlink jobs made of Python and SQL nodes.

``run_mode: local`` runs the jar with ``flink run -t local`` (a MiniCluster inside the
client process, no cluster needed); ``run_mode: cluster`` submits it to the cluster of the
daemon's ``flink.rest_url`` through the REST API (``submit_via: rest``, the default) or
the ``flink`` CLI (``submit_via: cli``). Properties: ``run_mode``, ``submit_via``,
``parallelism``, ``flink_run_args`` (CLI and local), ``stop_mode`` (``cancel`` or
``stop`` with a savepoint), ``savepoint_dir``, ``flink_stop_args``, ``env``, ``target``
(passed to the CLI for YARN or Kubernetes application mode; untested here),
``python_executable_path`` (the interpreter with pyflink for Python and SQL jobs),
``execution_mode`` (``streaming`` or ``batch``, for Python and SQL jobs).
In YAML a Flink job is ``main_jar_file`` (with ``entry_class`` and ``args``), ``sql`` or
``sql_file``. This module needs only the stdlib: workflow definitions and PyFlink job
processes import its processors.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from aiflowd.model import AINode, AISubGraph, JobConfig
from aiflowd.plugin_interface import (
    Job,
    JobController,
    JobGenerationError,
    JobGenerator,
    JobPluginFactory,
    YamlProblem,
    generation_inputs,
)
from aiflowd.plugins.common import environment_property
from aiflowd.workflows.errors import suggest

#: The YAML keys of a Flink job; ``args`` is shared with the generic ``processor`` key.
YAML_KEYS = {"main_jar_file", "entry_class", "args", "sql", "sql_file"}

PROPERTIES = {
    "run_mode",
    "submit_via",
    "parallelism",
    "flink_run_args",
    "stop_mode",
    "savepoint_dir",
    "flink_stop_args",
    "env",
    "target",
    "timeout",
    "python_executable_path",
    "execution_mode",
}


class FlinkJavaProcessor:
    """A Flink program in a jar: ``entry_class`` (or the jar's manifest), ``main_jar_file``, ``args``."""

    def __init__(self, entry_class: str | None, main_jar_file: str, args: list[str] | None = None) -> None:
        self.entry_class = entry_class
        self.main_jar_file = main_jar_file
        self.args = list(args or [])

    def __repr__(self) -> str:
        return f"FlinkJavaProcessor({self.entry_class!r}, {self.main_jar_file!r})"


class FlinkPythonProcessor:
    """User logic of a PyFlink job node; subclass it and implement ``process``.

    ``execution_context`` carries ``table_env``, ``statement_set`` and
    ``stream_execution_env``, shared by all nodes of the job: add INSERTs to the
    statement set (aiflowd executes it once, after the last node), or build tables and
    return them for the next nodes (``input_list`` holds the upstream outputs).
    """

    #: User code: kept by reference, run only in the job process.
    aiflowd_by_reference: ClassVar[bool] = True

    def open(self, execution_context: Any) -> None:
        """Acquire what ``process`` needs."""

    def process(self, execution_context: Any, input_list: list[Any]) -> list[Any] | None:
        raise NotImplementedError(f"{type(self).__name__} must implement process(execution_context, input_list)")

    def close(self, execution_context: Any) -> None:
        """Release what ``open`` acquired."""


class FlinkSqlProcessor:
    """A node given as SQL: ``sql_statements`` (DDL, then INSERTs) and the UDFs they use.

    ``udf_list`` returns ``(name, function)`` pairs (or objects with ``name`` and
    ``udf``), registered before the statements run. INSERT statements of all nodes go
    into one statement set: one Flink job. ``open`` and ``close`` bracket the job's run,
    as for a FlinkPythonProcessor.
    """

    #: User code: kept by reference, run only in the job process.
    aiflowd_by_reference: ClassVar[bool] = True

    def open(self, execution_context: Any) -> None:
        """Acquire what the statements or UDFs need."""

    def close(self, execution_context: Any) -> None:
        """Release what ``open`` acquired."""

    def udf_list(self, execution_context: Any) -> list[Any]:
        return []

    def sql_statements(self, execution_context: Any) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must implement sql_statements(execution_context)")


class SqlStatementsProcessor(FlinkSqlProcessor):
    """The ``sql`` / ``sql_file`` YAML form: a SQL client script, checked at load time.

    With ``script`` the runner runs it as ``sql-client.sh -f`` would (``aiflowd.plugins.flink.sql.
    plan``: SET/RESET, statement sets, ADD JAR, one Flink job per INSERT or set); with
    only ``statements`` (built in Python), DDL runs at once and INSERTs join the job's
    statement set.
    """

    #: Plain data, rebuilt from its attributes.
    aiflowd_by_reference: ClassVar[bool] = False

    def __init__(self, statements: list[str], source: str = "sql", script: str | None = None) -> None:
        self.statements = list(statements)
        self.source = source
        self.script = script

    def sql_statements(self, execution_context: Any) -> list[str]:
        return list(self.statements)


def split_sql(text: str) -> list[str]:
    """SQL statements of a script: split at ``;`` outside quotes and comments.

    Raises ValueError for an unterminated quote or comment, or a script with no statement.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in ("'", '"', "`"):
            end = i + 1
            while True:
                end = text.find(char, end)
                if end < 0:
                    line = text.count("\n", 0, i) + 1
                    raise ValueError(f"unterminated {char} quote starting on line {line}")
                if end + 1 < n and text[end + 1] == char:  # a doubled quote stands for itself
                    end += 2
                    continue
                break
            current.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError(f"unterminated /* comment starting on line {text.count(chr(10), 0, i) + 1}")
            i = end + 2
        elif char == ";":
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    if not statements:
        raise ValueError("no SQL statement found")
    return statements


class FlinkJob(Job):
    """What every Flink job carries: how and where it runs, and how it stops."""

    def __init__(self, job_config: JobConfig, options: dict[str, Any]) -> None:
        super().__init__(job_config)
        self.run_mode: str = options["run_mode"]
        self.submit_via: str = options["submit_via"]
        self.parallelism: int | None = options.get("parallelism")
        self.flink_run_args: list[str] = options.get("flink_run_args", [])
        self.stop_mode: str = options["stop_mode"]
        self.savepoint_dir: str | None = options.get("savepoint_dir")
        self.flink_stop_args: list[str] = options.get("flink_stop_args", [])
        self.env: dict[str, str] = options.get("env", {})
        self.target: str | None = options.get("target")
        #: ``flink_run_args`` / ``flink_stop_args`` as the REST API (and the Python runner) takes them; see rest_run_options.
        self.run_settings: dict[str, Any] = options.get("run_settings", {})
        self.stop_settings: dict[str, Any] = options.get("stop_settings", {})


class FlinkJavaJob(FlinkJob):
    """A Flink jar job ready to run: absolute jar path, entry class, arguments."""

    def __init__(self, job_config: JobConfig, jar: str, entry_class: str | None, args: list[str], options: dict[str, Any]) -> None:
        super().__init__(job_config, options)
        self.jar = jar
        self.entry_class = entry_class
        self.args = args


class FlinkPythonJob(FlinkJob):
    """A PyFlink job (Python and SQL nodes) ready to run: its nodes in order."""

    def __init__(self, job_config: JobConfig, nodes: list[dict[str, Any]], options: dict[str, Any]) -> None:
        super().__init__(job_config, options)
        self.nodes = nodes
        self.python_executable: str | None = options.get("python_executable_path")
        self.execution_mode: str = options["execution_mode"]
        #: Whether the job's properties chose the mode (else set_flink_env or AIFlow's default may).
        self.execution_mode_given: bool = options.get("execution_mode_given", True)


class FlinkJobGenerator(JobGenerator):
    def generate(self, sub_graph: AISubGraph, job_config: JobConfig | None = None, resource_dir: str | None = None) -> Job:
        job_config, resource_dir = generation_inputs(sub_graph, job_config, resource_dir)
        options = flink_options(job_config.properties)
        nodes = list(sub_graph.nodes.values())
        python = bool(nodes) and not any(isinstance(node.processor, FlinkJavaProcessor) for node in nodes)
        over_rest = options["run_mode"] == "cluster" and options["submit_via"] == "rest" and "target" not in options
        if over_rest or (python and options["run_mode"] == "local"):
            how = "over REST" if over_rest else "for a local Python or SQL job"
            options["run_settings"] = run_settings(options.get("flink_run_args", []), how, python)
        if over_rest:
            options["stop_settings"] = stop_settings(options.get("flink_stop_args", []))
        if nodes and not any(isinstance(node.processor, FlinkJavaProcessor) for node in nodes):
            return _python_job(sub_graph, job_config, options)
        if len(nodes) != 1:
            raise JobGenerationError(f"a flink jar job runs exactly one FlinkJavaProcessor; this one has {len(nodes)} nodes")
        node = nodes[0]
        processor = node.processor
        if not isinstance(processor, FlinkJavaProcessor):
            kind = getattr(processor, "class_name", type(processor).__name__)
            raise JobGenerationError(f"node '{node.node_id}' has a {kind}; job type flink needs a FlinkJavaProcessor", node=node.node_id)
        jar = processor.main_jar_file
        if not isinstance(jar, str) or not jar:
            raise JobGenerationError("main_jar_file must name a jar", node=node.node_id, key="main_jar_file")
        path = jar if os.path.isabs(jar) else os.path.join(resource_dir or "", jar)
        if not os.path.isfile(path):
            raise JobGenerationError(f"jar file '{jar}' does not exist (looked for {path})", node=node.node_id, key="main_jar_file")
        if processor.entry_class is not None and not isinstance(processor.entry_class, str):
            raise JobGenerationError("entry_class must be a class name", node=node.node_id, key="entry_class")
        if not isinstance(processor.args, list) or not all(isinstance(a, (str, int, float)) for a in processor.args):
            raise JobGenerationError("args must be a list of arguments (never one string)", node=node.node_id, key="args")
        return FlinkJavaJob(job_config, os.path.abspath(path), processor.entry_class, [str(a) for a in processor.args], options)


def _python_job(sub_graph: AISubGraph, job_config: JobConfig, options: dict[str, Any]) -> Job:
    from aiflowd.model import ProcessorRef

    try:
        order = sub_graph.topological_order()
    except ValueError as err:
        raise JobGenerationError(str(err)) from err
    nodes = []
    for node_id in order:
        node = sub_graph.nodes[node_id]
        processor = node.processor
        entry: dict[str, Any] = {
            "node_id": node_id,
            "name": node.name,
            "output_num": node.output_num,
            "inputs": [[e.source, e.port] for e in sub_graph.inputs_of(node_id)],
        }
        if isinstance(processor, SqlStatementsProcessor):
            entry.update({"kind": "sql_statements", "statements": processor.statements, "class": "sql"})
            if processor.script is not None:
                entry["script"] = processor.script
        elif isinstance(processor, ProcessorRef) and (processor.is_a(FlinkPythonProcessor) or processor.is_a(FlinkSqlProcessor)):
            kind = "python" if processor.is_a(FlinkPythonProcessor) else "sql"
            entry.update({"kind": kind, "payload": processor.payload, "class": processor.class_name})
        else:
            kind = getattr(processor, "class_name", type(processor).__name__)
            raise JobGenerationError(
                f"node '{node_id}' has a {kind}; a flink job's nodes are FlinkPythonProcessor or FlinkSqlProcessor"
                " (or one FlinkJavaProcessor alone)",
                node=node_id,
            )
        nodes.append(entry)
    return FlinkPythonJob(job_config, nodes, options)


def flink_options(properties: dict[str, Any]) -> dict[str, Any]:
    """The job's Flink properties, checked, with their defaults."""
    for key in properties:
        if key not in PROPERTIES:
            raise JobGenerationError(f"unknown property '{key}' ({suggest(key, PROPERTIES)})", key=f"properties.{key}")
    options: dict[str, Any] = {
        "run_mode": properties.get("run_mode", "cluster"),
        "submit_via": properties.get("submit_via", "rest"),
        "stop_mode": properties.get("stop_mode", "cancel"),
        "env": environment_property(properties.get("env")),
    }
    options["execution_mode"] = properties.get("execution_mode", "streaming")
    options["execution_mode_given"] = "execution_mode" in properties
    checks = (
        ("run_mode", ("local", "cluster")),
        ("submit_via", ("rest", "cli")),
        ("stop_mode", ("cancel", "stop")),
        ("execution_mode", ("streaming", "batch")),
    )
    for key, allowed in checks:
        if options[key] not in allowed:
            raise JobGenerationError(f"must be one of {', '.join(allowed)}; got {options[key]!r}", key=f"properties.{key}")
    if "parallelism" in properties:
        value = properties["parallelism"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise JobGenerationError(f"must be a whole number >= 1, got {value!r}", key="properties.parallelism")
        options["parallelism"] = value
    for key in ("flink_run_args", "flink_stop_args"):
        if key in properties:
            value = properties[key]
            if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
                raise JobGenerationError("must be a list of arguments (never one string)", key=f"properties.{key}")
            options[key] = [str(v) for v in value]
    for key in ("savepoint_dir", "target", "python_executable_path"):
        if key in properties:
            if not isinstance(properties[key], str) or not properties[key]:
                raise JobGenerationError("must be a non-empty string", key=f"properties.{key}")
            options[key] = properties[key]
    return options


_CLI_ONLY = "use submit_via: cli for it"


def run_settings(args: list[str], how: str, python: bool) -> dict[str, Any]:
    """``flink run`` options as the REST API's run request takes them (``flink_run_args`` without the CLI).

    Translated: ``-p/--parallelism N``, ``-s/--fromSavepoint PATH``,
    ``-n/--allowNonRestoredState``, ``-c/--class NAME`` (jar jobs), ``-D key=value``,
    ``-pyfs/--pyFiles a,b`` (Python jobs). Any other option is refused with the reason, at
    load time: a job never runs with an option silently dropped.
    """
    settings: dict[str, Any] = {}
    key = "properties.flink_run_args"
    i = 0

    def value(option: str) -> str:
        if i + 1 >= len(args):
            raise JobGenerationError(f"{option} needs a value", key=key)
        return args[i + 1]

    while i < len(args):
        arg = args[i]
        if arg in ("-p", "--parallelism"):
            number = value(arg)
            if not number.isdigit() or int(number) < 1:
                raise JobGenerationError(f"{arg} needs a whole number >= 1, got {number!r}", key=key)
            settings["parallelism"] = int(number)
            i += 2
        elif arg in ("-s", "--fromSavepoint"):
            settings["savepoint_path"] = value(arg)
            i += 2
        elif arg in ("-n", "--allowNonRestoredState"):
            settings["allow_non_restored_state"] = True
            i += 1
        elif arg in ("-c", "--class") and not python:
            settings["entry_class"] = value(arg)
            i += 2
        elif arg.startswith("-D") and "=" in (arg[2:] or (args[i + 1] if i + 1 < len(args) else "")):
            pair = arg[2:] or value(arg)
            name, _, setting = pair.partition("=")
            settings.setdefault("flink_config", {})[name.strip()] = setting.strip()
            i += 1 if arg[2:] else 2
        elif arg in ("-pyfs", "--pyFiles") and python:
            settings.setdefault("python_files", []).extend(f for f in value(arg).split(",") if f)
            i += 2
        else:
            raise JobGenerationError(f"{arg!r} cannot be honoured {how} (it takes -p, -s, -n, -c, -D, -pyfs); {_CLI_ONLY}", key=key)
    return settings


def stop_settings(args: list[str]) -> dict[str, Any]:
    """``flink stop`` options as the REST API's stop request takes them: ``-p/--savepointPath DIR``, ``-d/--drain``, ``-t/--type``."""
    settings: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        needs_value = arg in ("-p", "--savepointPath", "-t", "--type", "-type")
        if needs_value and i + 1 >= len(args):
            raise JobGenerationError(f"{arg} needs a value", key="properties.flink_stop_args")
        if arg in ("-p", "--savepointPath"):
            settings["target_directory"] = args[i + 1]
        elif arg in ("-t", "--type", "-type"):
            settings["format_type"] = args[i + 1].upper()
        elif arg in ("-d", "--drain"):
            settings["drain"] = True
        else:
            raise JobGenerationError(
                f"{arg!r} cannot be honoured over REST (it takes -p, -d, --type); {_CLI_ONLY}", key="properties.flink_stop_args"
            )
        i += 2 if needs_value else 1
    return settings


class FlinkJobPluginFactory(JobPluginFactory):
    def job_type(self) -> str:
        return "flink"

    def get_job_generator(self) -> JobGenerator:
        return FlinkJobGenerator()

    def get_job_controller(self) -> JobController:
        from aiflowd.plugins.flink.controller import FlinkJobController  # the OS- and network-facing part loads only in the daemon

        return FlinkJobController()

    def yaml_keys(self) -> set[str]:
        return set(YAML_KEYS)

    def nodes_from_yaml(self, job_name: str, job_yaml: dict[str, Any], workflow_dir: str, problem: YamlProblem) -> list[AINode] | None:
        given = [k for k in ("main_jar_file", "sql", "sql_file") if k in job_yaml]
        if not given:
            return None
        if len(given) > 1:
            problem(given[1], f"give one of {' and '.join(given)}, not both")
            return []
        key = given[0]
        processor: Any
        if key == "main_jar_file":
            args = job_yaml.get("args", [])
            if not isinstance(args, list):
                problem("args", "must be a list of arguments (never one string)")
                args = []
            entry = job_yaml.get("entry_class")
            processor = FlinkJavaProcessor(None if entry is None else str(entry), str(job_yaml["main_jar_file"]), args)
        else:
            processor = sql_processor(job_yaml, key, workflow_dir, problem)
            if processor is None:
                return []
        return [AINode(job_name, job_name, processor)]

    def processor_classes(self) -> tuple[type, ...]:
        return (FlinkJavaProcessor, SqlStatementsProcessor, FlinkPythonProcessor, FlinkSqlProcessor)


def sql_processor(job_yaml: dict[str, Any], key: str, workflow_dir: str, problem: YamlProblem) -> SqlStatementsProcessor | None:
    """The ``sql`` or ``sql_file`` form, split into statements now so that a bad script fails the load."""
    from aiflowd.workflows.yamlfile import RefusedFile, open_regular  # the loader's file rules; only loads need them

    text = job_yaml[key]
    if not isinstance(text, str) or not text.strip():
        problem(key, "must be SQL text" if key == "sql" else "must name a SQL file in the workflow folder")
        return None
    if key == "sql_file":
        path = os.path.join(workflow_dir, text)
        try:
            with open_regular(path, workflow_dir) as fh:
                text = fh.read().decode("utf-8")
        except RefusedFile as err:  # missing, or refused (a link out of the folder, a FIFO)
            problem(key, f"cannot read '{job_yaml[key]}': {err.strerror}")
            return None
        except OSError as err:
            problem(key, f"cannot read '{job_yaml[key]}': {err.strerror or err}")
            return None
        except UnicodeDecodeError as err:
            problem(key, f"'{job_yaml[key]}' is not UTF-8 text (byte {err.start})")
            return None
    from aiflowd.plugins.flink import sql as flink_sql

    problems = flink_sql.validate(text) or runtime_mode_problems(text)
    for found in problems:
        problem(key, str(found))
    if problems:
        return None
    statements = [s.text for s in flink_sql.split_script(text)]
    return SqlStatementsProcessor(statements, source=str(job_yaml[key]) if key == "sql_file" else "sql", script=text)


def runtime_mode_problems(text: str) -> list[Any]:
    """``execution.runtime-mode`` set after a statement that uses the session: aiflowd cannot honour it.

    The job's table environment is made in one mode (a SET at the top of the script
    chooses it); Flink cannot switch a table environment between streaming and batch.
    """
    from aiflowd.plugins.flink import sql as flink_sql

    problems = []
    settled = False
    for statement in flink_sql.split_script(text):
        if statement.kind in (flink_sql.Kind.SET, flink_sql.Kind.RESET):
            if settled and statement.key == "execution.runtime-mode":
                problems.append(
                    flink_sql.SqlProblem(
                        statement.line,
                        "'execution.runtime-mode' can change only before the first statement that is not SET"
                        " (the job's table environment is made in one mode)",
                    )
                )
        else:
            settled = True
    return problems
