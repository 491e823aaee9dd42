"""Turns a workflow on disk into a validated ``Workflow`` and its generated ``Job`` objects.

``WorkflowLoader.load`` reads the YAML strictly, runs the Python definition (and any
``module:Class`` processors) in a time-limited subprocess, checks rules and schedules,
and asks each job's plugin to generate its job. Every problem comes back in one
``LoadError`` as ``FILE:LINE:COL: key.path: message`` lines; nothing is half-loaded.
The daemon, ``run-once`` and ``aiflowctl validate`` all use this one loader.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiflowd.alerts import HOOK_EVENTS, parse_hooks
from aiflowd.model import (
    ANY,
    DEFAULT_NAMESPACE,
    AINode,
    AISubGraph,
    AllEventsCondition,
    ChangePolicy,
    Condition,
    DataEdge,
    EventCondition,
    JobAction,
    JobConfig,
    JobStatusCondition,
    OverlapPolicy,
    PeriodicConfig,
    ProcessorRef,
    RetryBackoff,
    Rule,
    Status,
    TriggerCondition,
    Workflow,
    parse_duration,
)
from aiflowd.plugin_interface import (
    Job,
    JobGenerationError,
    PluginError,
    PluginRegistry,
    claims_processors,
    generate_job,
    job_nodes_from_yaml,
)
from aiflowd.workflows.errors import LoadError, Problem, suggest
from aiflowd.workflows.yamlfile import Path, RefusedFile, YamlDocument, format_path, open_regular, printable, read_yaml, refusal

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
WORKFLOW_KEYS = {
    "periodic_config",
    "properties",
    "dependencies",
    "on_change",
    "max_active_executions",
    "on_overlap",
    "start_new_workflow_execution_on_events",
    "stop_workflow_execution_on_events",
    *HOOK_EVENTS,
}
JOB_KEYS = {
    "job_type",
    "properties",
    "periodic_config",
    "job_label_report_interval",
    "retries",
    "retry_delay",
    "retry_backoff",
    "retry_max_delay",
    "timeout",
    "action_on_job_status",
    "action_on_event",
    "action_on_events",
}
#: The job-type-neutral way to give a job's logic in YAML: a ``module:Class`` processor and
#: its arguments. Each job type adds its own keys (``JobPluginFactory.yaml_keys``).
PROCESSOR_KEYS = {"processor", "args"}
STATUS_RULE_KEYS = {"upstream_job", "upstream_job_status", "action"}
EVENT_KEYS = {"event_key", "event_value", "event_type", "sender", "namespace", "value_condition", "life"}
EVENT_RULE_KEYS = EVENT_KEYS | {"action"}
#: A several-event condition (AIFlow's MeetAll/MeetAnyEventCondition): in a job's
#: ``action_on_events`` (with an action) and in a workflow's start/stop triggers.
EVENTS_KEYS = {"condition", "events"}
PERIODIC_KEYS = {"cron", "interval", "start_date", "timezone"}
CONFIG_NAMES = ("workflow.yaml",)
MAX_HASHED_FILES = 10_000


#: A rule and how to report a problem at the place it was written.
LocatedRule = tuple[Rule, Callable[[str], Problem]]


@dataclass
class WorkflowSource:
    """Where a workflow's files are: its YAML, its optional Python definition, its folder."""

    name: str
    path: str
    config_file: str
    definition_file: str | None
    workflow_dir: str


@dataclass
class LoadedWorkflow:
    """A valid workflow version and the job each plugin generated for it."""

    workflow: Workflow
    jobs: dict[str, Job] = field(default_factory=dict)
    #: What loads, but is likely not what was meant (each message begins with "warning: ").
    warnings: list[Problem] = field(default_factory=list)


@dataclass
class LoaderSettings:
    compile_timeout: float = 30.0
    python: str = sys.executable
    #: Folders the definition may import plugin modules from (the daemon's ``plugin_paths``).
    plugin_paths: list[str] = field(default_factory=list)
    #: Compile in a fork of the fork server (True, or "pyflink" to preload PyFlink there), or cold (False).
    warm_start: bool | str = True


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, as a container or systemd sets it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def find_source(path: str, inside: str | None = None) -> WorkflowSource:
    """The workflow at ``path``: a ``NAME.yaml`` file, or a ``NAME/`` folder holding its YAML.

    ``inside`` is the folder the entry must stay in (default: the folder holding it, as
    the watched folder holds its entries). An entry that is no workflow to read (a name
    that is not UTF-8, a link loop, a link to nothing or out of the folder, a FIFO) is one
    problem line, shown with a printable name.
    """
    path = os.path.abspath(path)
    shown = printable(path)
    if shown != path:
        raise LoadError([Problem(shown, 0, 0, "", "the name is not valid UTF-8 or holds control characters: rename it")])
    inside = inside or os.path.dirname(path)
    reason = refusal(path, inside)
    if reason is not None and not reason.startswith("a folder"):
        if not os.path.lexists(path):
            raise LoadError([Problem(path, 0, 0, "", "no such file or folder")])
        if path.endswith((".yaml", ".yml")) or os.path.islink(path):
            raise LoadError([Problem(path, 0, 0, "", f"not read: {reason}")])
    if os.path.isdir(path):
        name = os.path.basename(path)
        for candidate in (f"{name}.yaml", f"{name}.yml", *CONFIG_NAMES):
            config = os.path.join(path, candidate)
            if os.path.lexists(config):
                break
        else:
            raise LoadError([Problem(path, 0, 0, "", f"no workflow here: expected {name}/{name}.yaml or {name}/workflow.yaml")])
        definition = os.path.join(path, f"{name}.py")
        if not os.path.lexists(definition):
            return WorkflowSource(name, path, config, None, path)
        reason = refusal(definition, path)
        if reason is not None:
            raise LoadError([Problem(definition, 0, 0, "", f"not read: {reason}")])
        return WorkflowSource(name, path, config, definition, path)
    name, ext = os.path.splitext(os.path.basename(path))
    if ext not in (".yaml", ".yml"):
        raise LoadError([Problem(path, 0, 0, "", "a workflow is a NAME.yaml file or a NAME/ folder")])
    return WorkflowSource(name, path, path, None, os.path.dirname(path))


def is_workflow_folder(path: str) -> bool:
    name = os.path.basename(os.path.abspath(path))
    return any(os.path.lexists(os.path.join(path, c)) for c in (f"{name}.yaml", f"{name}.yml", *CONFIG_NAMES))


def _skipped(name: str) -> bool:
    """Hidden files, private ones and editor temporaries: never workflows."""
    return name.startswith((".", "_")) or name.endswith(("~", ".tmp", ".swp"))


def is_entry(path: str, folder: str) -> bool:
    """Whether an entry of the watched folder is reported on: a workflow, or what looks
    like one but cannot be read (a FIFO named ``*.yaml``, a link loop or a link to nothing,
    a link leaving the folder, a folder whose name is not UTF-8).

    Never raises: an entry that cannot even be looked at is reported (its load says why).
    """
    name = os.path.basename(path)
    if _skipped(name):
        return False
    try:
        if name.endswith((".yaml", ".yml")) and not os.path.isdir(path):
            return os.path.lexists(path)
        if os.path.islink(path):
            reason = refusal(path, folder)
            if reason is not None and "symbolic link" in reason:
                return True  # a loop or a link to nothing: said so, never followed
            if reason is not None and " out of " in reason:
                return os.path.isdir(path)  # a folder elsewhere: refused; a file elsewhere is no workflow
        if not os.path.isdir(path):
            return False
        return printable(name) != name or is_workflow_folder(path)
    except Exception:  # noqa: BLE001 - looked at again by its load, which reports what is wrong
        return True


def discover(folder: str) -> list[str]:
    """The entries of a watched folder to report on (see ``is_entry``); never raises.

    Names are as on disk (``os.fsdecode``: surrogate escapes for bytes that are not
    UTF-8); show them with ``printable``.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [path for name in names if is_entry(path := os.path.join(folder, name), folder)]


def _hashed_files(source: WorkflowSource) -> list[str]:
    if source.path == source.config_file:
        return [source.config_file]
    files: list[str] = []
    for root, dirs, names in os.walk(source.workflow_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith(".") and not n.endswith((".pyc", "~")))
        if len(files) > MAX_HASHED_FILES:
            break
    return files


def workflow_version(source: WorkflowSource) -> str:
    """A hash of everything the workflow is made of: any change of any file gives a new version.

    Only regular files in the workflow's folder are read; anything else (a FIFO, a link
    out of the folder) counts by what it is, never by what it would yield.
    """
    digest = hashlib.sha256()
    inside = os.path.dirname(source.path) if source.path == source.config_file else source.workflow_dir
    for file in _hashed_files(source):
        digest.update(os.fsencode(os.path.relpath(file, source.workflow_dir)) + b"\0")
        try:
            with open_regular(file, inside) as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except RefusedFile as err:
            digest.update(f"<refused: {err.strerror}>".encode("utf-8", "backslashreplace"))
        except OSError:
            digest.update(b"<unreadable>")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def workflow_stamp(source: WorkflowSource) -> list[tuple[str, int, int, int]]:
    """The files ``workflow_version`` hashes, by their metadata only: cheap to compare
    before and after a load, to learn whether anything was written meanwhile."""
    stamp = []
    for file in _hashed_files(source):
        try:
            st = os.lstat(file)
        except OSError:
            continue
        stamp.append((file, st.st_ino, st.st_size, st.st_mtime_ns))
    return stamp


#: Warm compiles in flight per CPU by default. A warm compile's CPU is spent in three
#: processes in turn (this one, the fork server, its child), each waiting on the other
#: two: with one per CPU the cores sat idle between the hand-overs (3,000 definitions
#: next to 3,000 YAML files, on a busy 2-core machine: served in 45-47 s with 2 at once,
#: 26-29 s with 6).
WARM_COMPILES_PER_CPU = 3


def default_compile_slots(warm_start: bool | str) -> int:
    """Definitions compiled at once unless ``max_parallel_loads`` says: per CPU, one cold, ``WARM_COMPILES_PER_CPU`` warm."""
    return cpu_count() * (WARM_COMPILES_PER_CPU if warm_start else 1)


class WorkflowLoader:
    """Loads workflows with the job types of one plugin registry."""

    def __init__(self, registry: PluginRegistry, settings: LoaderSettings | None = None) -> None:
        self.registry = registry
        self.settings = settings or LoaderSettings()
        self.compile_slots = threading.BoundedSemaphore(default_compile_slots(self.settings.warm_start))
        #: Set when the daemon stops: loads still waiting for a compile slot give up.
        self.stopping = threading.Event()

    def limit_compiles(self, count: int) -> None:
        """Let at most ``count`` definitions compile at once (loads run in parallel threads;
        one that needs no compiler never waits for one that does)."""
        self.compile_slots = threading.BoundedSemaphore(max(1, count))

    def load(self, path: str, version: str | None = None, on_compile: Callable[[], None] | None = None) -> LoadedWorkflow:
        """Load the workflow at ``path``; ``version``, when the caller hashed its files already.

        ``on_compile`` is called (in the loading thread) before a definition is compiled,
        the slow part: the daemon serves what needs no compiler without waiting for it.
        """
        return self.load_source(find_source(path), version, on_compile)

    def load_source(
        self, source: WorkflowSource, version: str | None = None, on_compile: Callable[[], None] | None = None
    ) -> LoadedWorkflow:
        """``load`` of a workflow whose files the caller found already (``find_source``)."""
        load = _Load(self, source)
        load.on_compile = on_compile
        return load.run(version)


class _Load:
    """One load of one workflow: collects problems instead of stopping at the first."""

    def __init__(self, loader: WorkflowLoader, source: WorkflowSource) -> None:
        self.loader = loader
        self.source = source
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        #: Rules an AIFlow definition made (``ai_flow.action_on_job_status``), by id.
        self.aiflow_rules: set[int] = set()
        self.doc: YamlDocument
        self.job_type_misspelt: set[str] = set()
        #: The definition (or a YAML processor) did not compile: which jobs have which nodes
        #: is unknown, so a job without nodes gets no follow-on problem (its cause is reported).
        self.compile_failed = False
        self.on_compile: Callable[[], None] | None = None
        self._yaml_nodes: dict[str, list[AINode] | None] = {}

    def problem(self, path: Path, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def run(self, version: str | None = None) -> LoadedWorkflow:
        source = self.source
        if not NAME_RE.match(source.name):
            raise LoadError(
                [Problem(source.path, 0, 0, "", f"'{source.name}' is not a valid workflow name (letters, digits, '_', '-', '.')")]
            )
        version = version or workflow_version(source)
        self.doc = read_yaml(source.config_file, inside=source.workflow_dir)
        data = self.doc.data
        if not isinstance(data, dict):
            raise LoadError([self.doc.problem((), "a workflow file must be a mapping of job names to job configs")])
        workflow = Workflow(name=source.name, path=source.path, workflow_dir=source.workflow_dir, version=version)
        yaml_jobs: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            if key in WORKFLOW_KEYS:
                self.workflow_key(workflow, key, value)
            elif isinstance(value, dict) and not ("job_type" not in value and suggest(key, WORKFLOW_KEYS).startswith("did")):
                yaml_jobs[key] = value
            else:
                close = suggest(key, WORKFLOW_KEYS)
                hint = f"unknown workflow key ({close})" if close.startswith("did") else "a job must be a mapping with a job_type"
                self.problem((key,), hint)
        configs = {name: self.job_config(name, job) for name, job in yaml_jobs.items() if self.valid_job_name(name)}
        compiled = self.compile(yaml_jobs)
        graphs = self.build_graphs(workflow, yaml_jobs, configs, compiled)
        self.drop_jobs_without_operations(graphs, yaml_jobs)
        workflow.jobs = graphs
        rules = self.yaml_rules(yaml_jobs) + self.dsl_rules(compiled, workflow)
        workflow.rules = [rule for rule, _ in rules]
        self.check_rules(workflow, rules)
        jobs = self.generate(workflow, yaml_jobs)
        if not graphs and not self.problems:
            example = "job_1: {job_type: bash, bash_command: echo hello}"
            self.problems.append(Problem(source.config_file, 1, 1, "", f"no jobs: a workflow needs at least one, like '{example}'"))
        if self.problems:
            raise LoadError(self.problems)
        return LoadedWorkflow(workflow, jobs, self.warnings)

    # -- the YAML ------------------------------------------------------------------

    def valid_job_name(self, name: str) -> bool:
        if NAME_RE.match(name):
            return True
        self.problem((name,), "not a valid job name: use letters, digits, '_', '-' and '.', not starting with '.' or '-'")
        return False

    def workflow_key(self, workflow: Workflow, key: str, value: Any) -> None:
        if key == "periodic_config":
            workflow.periodic_config = self.periodic_config((key,), value)
        elif key in ("properties", "dependencies"):
            if not isinstance(value, dict):
                self.problem((key,), "must be a mapping")
            elif key == "properties":
                workflow.properties = value
            else:
                workflow.dependencies = value
        elif key == "on_change":
            if (change := self.choice((key,), value, ChangePolicy)) is not None:
                workflow.on_change = change
        elif key == "max_active_executions":
            if (limit := self.whole_number((key,), value, 1)) is not None:
                workflow.max_active_executions = limit
        elif key == "on_overlap":
            if (policy := self.choice((key,), value, OverlapPolicy)) is not None:
                workflow.on_overlap = policy
        elif key in ("start_new_workflow_execution_on_events", "stop_workflow_execution_on_events"):
            conditions: list[TriggerCondition] = []
            for i, item in enumerate(self.sequence((key,), value)):
                if isinstance(item, dict) and "events" in item:
                    conditions += self.events_conditions((key, i), item, EVENTS_KEYS)
                elif (condition := self.event_condition((key, i), item, EVENT_KEYS)) is not None:
                    conditions.append(condition)
            if key.startswith("start"):
                workflow.start_on_events = conditions
            else:
                workflow.stop_on_events = conditions
        elif key in HOOK_EVENTS:
            workflow.hooks[key] = parse_hooks(value, (key,), self.problem, cwd=workflow.workflow_dir)

    def choice(self, path: Path, value: Any, choices: type[enum.Enum]) -> Any:
        """One of an enum's values, or None with one problem listing them (and the closest one)."""
        known = [str(member.value) for member in choices]
        if isinstance(value, str) and value in known:
            return choices(value)
        message = f"must be one of {', '.join(known)}; got {value!r}"
        close = suggest(value, known) if isinstance(value, str) else ""
        self.problem(path, f"{message} ({close})" if close.startswith("did") else message)
        return None

    def whole_number(self, path: Path, value: Any, minimum: int) -> int | None:
        """A whole number (not a bool) of at least ``minimum``, or None with one problem."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problem(path, f"must be a whole number >= {minimum}, got {value!r}")
            return None
        return value

    def job_config(self, name: str, job: dict[str, Any]) -> JobConfig:
        known = JOB_KEYS | PROCESSOR_KEYS | self.type_keys(job)
        for key in job:
            if key not in known:
                owners = [info.job_type for info in self.loader.registry if key in info.yaml_keys]
                hint = f"a key of job type {' or '.join(owners)}, not {job['job_type']}" if owners else suggest(key, known)
                self.problem((name, key), f"unknown key ({hint})")
                if hint == "did you mean 'job_type'?":
                    self.job_type_misspelt.add(name)
        job_type = job.get("job_type", "")
        if "job_type" in job and (not isinstance(job_type, str) or not job_type):
            self.problem((name, "job_type"), "must be a job type name")
            job_type = ""
        config = JobConfig(job_name=name, job_type=job_type)
        properties = job.get("properties", {})
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            self.problem((name, "properties"), "must be a mapping")
        else:
            config.properties = properties
        if "periodic_config" in job:
            config.periodic_config = self.periodic_config((name, "periodic_config"), job["periodic_config"])
        if "retries" in job and (retries := self.whole_number((name, "retries"), job["retries"], 0)) is not None:
            config.retries = retries
        if "retry_backoff" in job and (backoff := self.choice((name, "retry_backoff"), job["retry_backoff"], RetryBackoff)) is not None:
            config.retry_backoff = backoff
        for key in ("retry_delay", "retry_max_delay", "timeout", "job_label_report_interval"):
            if key in job:
                try:
                    seconds = parse_duration(job[key])
                except ValueError as err:
                    self.problem((name, key), str(err))
                    continue
                if key == "retry_delay":
                    config.retry_delay = seconds
                elif key == "retry_max_delay":
                    config.retry_max_delay = seconds
                    if config.retry_backoff != RetryBackoff.EXPONENTIAL:
                        message = "warning: retry_max_delay caps only 'retry_backoff: exponential'; a fixed delay ignores it"
                        self.warnings.append(self.doc.problem((name, key), message))
                elif key == "timeout":
                    config.timeout = seconds or None
                else:
                    config.job_label_report_interval = seconds
        timeout = config.properties.get("timeout") if isinstance(config.properties, dict) else None
        if config.timeout is None and timeout is not None:
            try:
                config.timeout = parse_duration(timeout) or None
            except ValueError as err:
                self.problem((name, "properties", "timeout"), str(err))
        return config

    def periodic_config(self, path: Path, value: Any) -> PeriodicConfig | None:
        if not isinstance(value, dict):
            self.problem(path, "must be a mapping with 'cron' or 'interval'")
            return None
        for key in value:
            if key not in PERIODIC_KEYS:
                self.problem((*path, key), f"unknown key ({suggest(key, PERIODIC_KEYS)})")
        has_cron, has_interval = "cron" in value, "interval" in value
        if has_cron == has_interval:
            self.problem(path, "give exactly one of 'cron' and 'interval'")
            return None
        config = PeriodicConfig(start_date=None, timezone=None)
        if "timezone" in value:
            tz = value["timezone"]
            try:
                import zoneinfo

                zoneinfo.ZoneInfo(str(tz))
                config = PeriodicConfig(timezone=str(tz))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                self.problem((*path, "timezone"), f"unknown time zone {tz!r} (like 'UTC' or 'Europe/Berlin')")
        if "start_date" in value:
            import datetime

            try:
                datetime.datetime.fromisoformat(str(value["start_date"]))
                config = PeriodicConfig(timezone=config.timezone, start_date=str(value["start_date"]))
            except ValueError:
                self.problem((*path, "start_date"), f"expected an ISO date like '2024-01-31 08:00', got {value['start_date']!r}")
        if has_interval:
            try:
                seconds = parse_duration(value["interval"])
            except ValueError as err:
                self.problem((*path, "interval"), str(err))
                return None
            if seconds <= 0:
                self.problem((*path, "interval"), "must be longer than 0 seconds")
                return None
            return PeriodicConfig(interval_seconds=seconds, start_date=config.start_date, timezone=config.timezone)
        cron, cron_seconds, error = parse_cron(value["cron"])
        if error:
            self.problem((*path, "cron"), error)
            return None
        return PeriodicConfig(cron=cron, cron_seconds=cron_seconds, start_date=config.start_date, timezone=config.timezone)

    def sequence(self, path: Path, value: Any) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, dict):
            return [value]
        if not isinstance(value, list):
            self.problem(path, "must be a list of mappings")
            return []
        return value

    def event_condition(self, path: Path, item: Any, allowed: set[str]) -> EventCondition | None:
        if not isinstance(item, dict):
            self.problem(path, "must be a mapping with at least 'event_key'")
            return None
        for key in item:
            if key not in allowed:
                self.problem((*path, key), f"unknown key ({suggest(key, allowed)})")
        if "event_key" not in item:
            self.problem(path, "needs 'event_key' ('*' matches any key)")
            return None
        value_condition = str(item.get("value_condition", "EQUALS")).upper()
        if value_condition not in ("EQUALS", "UPDATED", "UPDATE"):
            self.problem((*path, "value_condition"), f"must be EQUALS or UPDATED (any new value), got {item['value_condition']!r}")
        if str(item.get("life", "ONCE")).upper() not in ("ONCE", "REPEATED"):
            self.problem((*path, "life"), f"must be ONCE or REPEATED, got {item['life']!r}")
        return EventCondition(
            key=str(item["event_key"]),
            value=ANY if value_condition.startswith("UPDATE") else str(item.get("event_value", ANY)),
            event_type=str(item.get("event_type", ANY)),
            sender=str(item.get("sender", ANY)),
            namespace=str(item.get("namespace", DEFAULT_NAMESPACE)),
        )

    def events_conditions(self, path: Path, item: dict[str, Any], allowed: set[str]) -> list[TriggerCondition]:
        """``{condition: all|any, events: [...]}``: one AllEventsCondition, or one condition per event for ``any``."""
        for key in item:
            if key not in allowed:
                self.problem((*path, key), f"unknown key ({suggest(key, allowed)})")
        kind = str(item.get("condition", "all")).lower()
        if kind not in ("all", "any", "meet_all", "meet_any"):
            self.problem((*path, "condition"), f"must be 'all' or 'any', got {item.get('condition')!r}")
            return []
        events: list[EventCondition] = []
        repeated: list[bool] = []
        for i, wanted in enumerate(self.sequence((*path, "events"), item.get("events"))):
            if (condition := self.event_condition((*path, "events", i), wanted, EVENT_KEYS)) is not None:
                events.append(condition)
                repeated.append(str(wanted.get("life", "ONCE")).upper() == "REPEATED")
        if not events:
            if item.get("events") is None:
                self.problem(path, "needs 'events': a list of event mappings")
            return []
        if kind.endswith("any") or len(events) == 1:
            return list(events)
        return [AllEventsCondition(tuple(events), tuple(repeated))]

    def action(self, path: Path, value: Any) -> JobAction | None:
        try:
            return JobAction(str(value).upper())
        except ValueError:
            self.problem(path, f"unknown action {value!r} (known: {', '.join(a.value for a in JobAction)})")
            return None

    def yaml_rules(self, yaml_jobs: dict[str, dict[str, Any]]) -> list[LocatedRule]:
        rules: list[LocatedRule] = []
        for name, job in yaml_jobs.items():
            for i, item in enumerate(self.sequence((name, "action_on_job_status"), job.get("action_on_job_status"))):
                path = (name, "action_on_job_status", i)
                if not isinstance(item, dict) or "upstream_job" not in item:
                    self.problem(path, "must be a mapping with 'upstream_job' (and optional upstream_job_status, action)")
                    continue
                for key in item:
                    if key not in STATUS_RULE_KEYS:
                        self.problem((*path, key), f"unknown key ({suggest(key, STATUS_RULE_KEYS)})")
                status = str(item.get("upstream_job_status", Status.FINISHED.value)).upper()
                if status != ANY and status not in Status.__members__:
                    self.problem((*path, "upstream_job_status"), f"unknown status {status!r} (known: {', '.join(Status.__members__)}, *)")
                    continue
                action = self.action((*path, "action"), item.get("action", "START"))
                if action is not None:
                    rule = Rule(name, JobStatusCondition(str(item["upstream_job"]), status), action)
                    rules.append((rule, self.doc.problem_at((*path, "upstream_job"))))
            for i, item in enumerate(self.sequence((name, "action_on_event"), job.get("action_on_event"))):
                path = (name, "action_on_event", i)
                condition = self.event_condition(path, item, EVENT_RULE_KEYS)
                action = self.action((*path, "action"), item.get("action", "START")) if condition else None
                if condition is not None and action is not None:
                    rules.append((Rule(name, condition, action), self.doc.problem_at(path)))
            for i, item in enumerate(self.sequence((name, "action_on_events"), job.get("action_on_events"))):
                path = (name, "action_on_events", i)
                if not isinstance(item, dict):
                    self.problem(path, "must be a mapping with 'condition' (all or any), 'events' and 'action'")
                    continue
                conditions = self.events_conditions(path, item, EVENTS_KEYS | {"action"})
                action = self.action((*path, "action"), item.get("action", "START"))
                if action is not None:
                    rules += [(Rule(name, condition, action), self.doc.problem_at(path)) for condition in conditions]
        return rules

    # -- the Python side -----------------------------------------------------------

    def compile(self, yaml_jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Run the definition and YAML ``processor:`` references in a subprocess; its graph."""
        processors = {}
        for name, job in yaml_jobs.items():
            if "processor" not in job or self.yaml_nodes(name, job) is not None:
                continue
            ref = job["processor"]
            if not isinstance(ref, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", ref):
                self.problem((name, "processor"), f"expected 'module:Class' (a module in the workflow folder), got {ref!r}")
                continue
            args = job.get("args")
            if args is not None and not isinstance(args, (dict, list)):
                self.problem((name, "args"), "must be a mapping of keyword arguments or a list of arguments")
                continue
            line, column = self.doc.position((name, "processor"))
            args_line, args_column = self.doc.position((name, "args"))
            processors[name] = {
                "processor": ref,
                "args": args,
                "file": self.source.config_file,
                "line": line,
                "column": column,
                "key": f"{name}.processor",
                "args_line": args_line,
                "args_column": args_column,
                "args_key": f"{name}.args" if "args" in job else f"{name}.processor",
            }
        if not self.source.definition_file and not processors:
            return {"jobs": {}, "rules": []}
        request = {
            "workflow_dir": self.source.workflow_dir,
            "definition": self.source.definition_file,
            "module": self.source.name,
            "yaml_processors": processors,
        }
        if self.on_compile is not None:
            self.on_compile()
        slots = self.loader.compile_slots
        while not slots.acquire(timeout=0.5):  # woken by a free slot; the time-out only looks at stopping
            if self.loader.stopping.is_set():
                shown = self.source.definition_file or self.source.config_file
                self.problems.append(Problem(shown, 0, 0, "", "not compiled: aiflowd is stopping"))
                return {"jobs": {}, "rules": []}
        reported = len(self.problems)
        try:
            return self.run_compiler(request, yaml_jobs)
        finally:
            slots.release()
            self.compile_failed = len(self.problems) > reported

    def run_compiler(self, request: dict[str, Any], yaml_jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from aiflowd.controllers.process_group import helper_environment, run_helper
        from aiflowd.controllers.subprocess import aiflowd_import_path

        python = self.compile_python(yaml_jobs)
        shown = self.source.definition_file or self.source.config_file
        # On a tmpfs where there is one: a folder and two files made and removed per compile
        # cost a disk's inode allocation (a fifth of a warm compile's CPU on ext4).
        scratch = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
        with tempfile.TemporaryDirectory(prefix="aiflowd-compile-", dir=scratch) as tmp:
            request_path, result_path = os.path.join(tmp, "request.json"), os.path.join(tmp, "result.json")
            with open(request_path, "w", encoding="utf-8") as fh:
                json.dump(request, fh)
            env = helper_environment()
            pythonpath = os.pathsep.join([*self.loader.settings.plugin_paths, *filter(None, [env.get("PYTHONPATH")])])
            env.update(aiflowd_import_path(python, tmp, pythonpath or None))
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            timeout = self.loader.settings.compile_timeout
            try:
                result = run_helper(
                    [python, "-m", "aiflowd.runners.compile_workflow", request_path, result_path],
                    env=env,
                    cwd=self.source.workflow_dir,
                    timeout=timeout,
                    warm=self.loader.settings.warm_start,
                )
            except OSError as err:
                self.problems.append(Problem(shown, 0, 0, "", f"cannot start {python}: {err.strerror or err}"))
                return {"jobs": {}, "rules": []}
            if result.timed_out:
                self.problems.append(
                    Problem(
                        shown,
                        0,
                        0,
                        "",
                        f"the definition did not finish within {timeout:g}s (compile_timeout); "
                        "is there an endless loop or a blocking call at import?",
                    )
                )
                return {"jobs": {}, "rules": []}
            if not os.path.exists(result_path):
                tail = result.output.decode("utf-8", "replace").strip().splitlines()[-3:]
                said = f"; it printed: {' | '.join(tail)}" if tail else ""
                self.problems.append(
                    Problem(
                        shown, 0, 0, "", f"the definition ended (exit status {result.returncode}) before the compiler could report{said}"
                    )
                )
                return {"jobs": {}, "rules": []}
            with open(result_path, encoding="utf-8") as fh:
                compiled = json.load(fh)
        for p in compiled.get("problems", []):
            self.problems.append(Problem(p["file"], p["line"], p["column"], p["key"], p["message"]))
        return compiled

    def compile_python(self, yaml_jobs: dict[str, dict[str, Any]]) -> str:
        """The interpreter for the definition: the workflow's or its jobs' ``python_executable_path``."""

        def chosen(properties: Any) -> str | None:
            return (
                str(properties["python_executable_path"])
                if isinstance(properties, dict) and properties.get("python_executable_path")
                else None
            )

        workflow_choice = chosen(self.doc.data.get("properties"))
        if workflow_choice:
            return workflow_choice
        paths = {path for job in yaml_jobs.values() if (path := chosen(job.get("properties")))}
        return paths.pop() if len(paths) == 1 else self.loader.settings.python

    def dsl_rules(self, compiled: dict[str, Any], workflow: Workflow | None = None) -> list[LocatedRule]:
        """The definition's rules; its workflow triggers (rules without a job) go to ``workflow``."""
        rules: list[LocatedRule] = []
        for item in compiled.get("rules", []):
            condition: Condition
            if item["kind"] == "scheduling":
                if workflow is not None:
                    self.dsl_scheduling(workflow, item)
                continue
            if item["kind"] in ("start_workflow", "stop_workflow"):
                if workflow is not None:
                    triggers = [_trigger_condition(c) for c in item["condition"]["conditions"]]
                    if item["kind"] == "start_workflow":
                        workflow.start_on_events = triggers
                    else:
                        workflow.stop_on_events = triggers
                continue
            if item["kind"] == "status":
                condition = JobStatusCondition(item["condition"]["upstream_job"], item["condition"]["status"])
            elif item["kind"] == "all_events":
                condition = _trigger_condition(item["condition"])
            else:
                condition = EventCondition(**item["condition"])
            file, line = item.get("file") or self.source.definition_file or "", item.get("line", 0)
            rule = Rule(item["job"], condition, JobAction(item["action"]))
            if item["condition"].get("aiflow"):
                self.aiflow_rules.add(id(rule))
            rules.append((rule, functools.partial(Problem, file, line, 0, "")))
        return rules

    def dsl_scheduling(self, workflow: Workflow, item: dict[str, Any]) -> None:
        """``workflow_scheduling(...)`` of the definition: its keys, unless the YAML gives them too."""
        for key, value in item["condition"].items():
            if key in self.doc.data:
                where = f"{item.get('file') or self.source.definition_file}:{item.get('line', 0)}"
                self.problem((key,), f"also given by workflow_scheduling() at {where}: give it in one place")
            elif key == "max_active_executions":
                workflow.max_active_executions = int(value)
            elif key == "on_overlap":
                workflow.on_overlap = OverlapPolicy(value)

    def build_graphs(
        self,
        workflow: Workflow,
        yaml_jobs: dict[str, dict[str, Any]],
        configs: dict[str, JobConfig],
        compiled: dict[str, Any],
    ) -> dict[str, AISubGraph]:
        graphs: dict[str, AISubGraph] = {}
        compiled_jobs: dict[str, list[dict[str, Any]]] = compiled.get("jobs", {})
        definition = self.source.definition_file or ""
        for name, config in configs.items():
            job = yaml_jobs[name]
            graph = AISubGraph(config)
            from_yaml = self.yaml_nodes(name, job)
            if from_yaml is not None and "processor" in job:
                self.problem((name, "processor"), f"give one of {self.own_logic_key(job)} and processor, not both")
            elif from_yaml is not None:
                for node in from_yaml:
                    graph.add_node(node)
            if name in compiled_jobs and "processor" not in job:
                if from_yaml is not None:
                    key = self.own_logic_key(job)
                    self.problem(
                        (name, key),
                        f"job '{name}' is also defined in {os.path.basename(definition)}: give its logic in one place",
                    )
                    continue
                self.add_compiled_nodes(graph, compiled_jobs[name])
            elif "processor" in job:
                self.add_compiled_nodes(graph, compiled_jobs.get(name, []))
            if not graph.config.job_type and "job_type" not in job and name not in self.job_type_misspelt:
                self.problem(
                    (name,),
                    "needs a job_type" + (f" ({hint})" if (hint := suggest(name, WORKFLOW_KEYS)).startswith("did") else ""),
                )
            graphs[name] = graph
        for name, nodes in compiled_jobs.items():
            if name in yaml_jobs:
                continue
            if not NAME_RE.match(name):
                self.problems.append(Problem(definition, 0, 0, name, "not a valid job name: use letters, digits, '_', '-' and '.'"))
                continue
            graph = AISubGraph(JobConfig(job_name=name, job_type=""))
            self.add_compiled_nodes(graph, nodes)
            job_type = self.infer_job_type(graph)
            if job_type is None:
                self.problems.append(
                    Problem(
                        definition,
                        0,
                        0,
                        name,
                        f"job '{name}' has no entry in {os.path.basename(self.source.config_file)}; add '{name}: {{job_type: ...}}'",
                    )
                )
                continue
            graph.config.job_type = job_type
            graphs[name] = graph
        return graphs

    def type_keys(self, job: dict[str, Any]) -> set[str]:
        """The YAML keys of the job's type; of every known type while the type is unknown."""
        registry = self.loader.registry
        job_type = job.get("job_type")
        if isinstance(job_type, str) and job_type in registry:
            return set(registry.get(job_type).yaml_keys)
        return registry.yaml_keys()

    def yaml_nodes(self, name: str, job: dict[str, Any]) -> list[AINode] | None:
        """The nodes the job's type makes of its YAML keys; None when it gives none of them.

        Asked once per job: the answer decides whether a ``processor`` key is compiled, and
        its problems are reported once.
        """
        if name in self._yaml_nodes:
            return self._yaml_nodes[name]
        nodes: list[AINode] | None = None
        job_type = job.get("job_type")
        registry = self.loader.registry
        if isinstance(job_type, str) and job_type in registry and self.own_logic_key(job):
            info = registry.get(job_type)

            def problem(key: str, message: str) -> None:
                self.problem((name, *(int(part) if part.isdigit() else part for part in str(key).split("."))), message)

            try:
                nodes = job_nodes_from_yaml(info, name, job, self.source.workflow_dir, problem)
            except Exception as err:  # noqa: BLE001 - a plugin's hook may raise anything
                self.problem((name, self.own_logic_key(job) or "job_type"), f"plugin {info.module} failed: {type(err).__name__}: {err}")
                nodes = []
        self._yaml_nodes[name] = nodes
        return nodes

    def own_logic_key(self, job: dict[str, Any]) -> str:
        """The first of the job's keys that belongs to its job type alone ('' if none)."""
        own = self.type_keys(job) - PROCESSOR_KEYS
        return next((key for key in job if key in own), "")

    def infer_job_type(self, graph: AISubGraph) -> str | None:
        """The job type of a job defined only in Python: the one whose processor classes it uses."""
        processors = [node.processor for node in graph.nodes.values()]
        if not processors:
            return None
        claiming = [info.job_type for info in self.loader.registry if claims_processors(info, processors)]
        return claiming[0] if len(claiming) == 1 else None

    def add_compiled_nodes(self, graph: AISubGraph, nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            processor = _rebuild_processor(node["processor"], self.loader.registry.modules)
            graph.add_node(AINode(node["node_id"], node["name"], processor, node["output_num"], node.get("config") or {}))
            for _source_job, source_node, port in node["inputs"]:
                graph.edges.append(DataEdge(source_node, node["node_id"], port))

    # -- whole-workflow checks -----------------------------------------------------

    def check_rules(self, workflow: Workflow, rules: list[LocatedRule]) -> None:
        if self.compile_failed:
            return  # which jobs the definition has is unknown: its failure is the one problem
        for rule, problem in rules:
            if rule.job not in workflow.jobs:
                self.problems.append(problem(f"rule for unknown job '{rule.job}' ({suggest(rule.job, workflow.jobs)})"))
            if isinstance(rule.condition, JobStatusCondition) and rule.condition.upstream_job not in workflow.jobs:
                up = rule.condition.upstream_job
                message = f"upstream job '{up}' is not a job of this workflow ({suggest(up, workflow.jobs)})"
                if id(rule) in self.aiflow_rules:  # AIFlow accepts it, and the rule never fires
                    self.warnings.append(problem(f"warning: {message}: the rule never fires"))
                else:
                    self.problems.append(problem(message))

    def drop_jobs_without_operations(self, graphs: dict[str, AISubGraph], yaml_jobs: dict[str, dict[str, Any]]) -> None:
        """Leave out, with a warning, a YAML job an AIFlow definition gives no operation: AIFlow ignores it."""
        if not self.source.definition_file or not self.aiflow_definition:
            return
        for name, graph in list(graphs.items()):
            job = yaml_jobs.get(name)
            if job is not None and not graph.nodes and not self.own_logic_key(job) and "processor" not in job:
                del graphs[name]
                where = self.doc.position((name,))
                message = f"warning: {self.source.name}.py gives job '{name}' no operation: it is not run (as in AIFlow)"
                self.warnings.append(Problem(self.doc.file, *where, name, message))

    @property
    def aiflow_definition(self) -> bool:
        """Whether the definition is written against AIFlow's names (it imports ``ai_flow``)."""
        try:
            with open(self.source.definition_file or "", encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            return False
        return bool(re.search(r"^\s*(import ai_flow\b|from ai_flow[\w.]* import )", text, re.MULTILINE))

    def generate(self, workflow: Workflow, yaml_jobs: dict[str, dict[str, Any]]) -> dict[str, Job]:
        jobs: dict[str, Job] = {}
        for name, graph in workflow.jobs.items():
            job_type = graph.config.job_type
            if not job_type or any(p.key == name or p.key.startswith(f"{name}.") for p in self.problems):
                continue  # a job already reported gets no follow-on problems
            if not graph.nodes and self.compile_failed:
                continue  # its nodes may be in the definition that failed, which is reported
            if job_type not in self.registry_types:
                where = (name, "job_type") if name in yaml_jobs else (name,)
                message = f"unknown job type '{job_type}' ({suggest(job_type, self.registry_types)})"
                if name in yaml_jobs:
                    self.problem(where, message)
                else:
                    self.problems.append(Problem(self.source.definition_file or "", 0, 0, name, message))
                continue
            plugin = self.loader.registry.get(job_type)
            try:
                jobs[name] = generate_job(plugin.generator, graph, workflow.workflow_dir)
            except JobGenerationError as err:
                if not graph.nodes and name in yaml_jobs and "processor" not in yaml_jobs[name]:
                    self.problem((name,), self.missing_logic(job_type))
                    continue
                self.generation_problem(name, err, yaml_jobs)
            except Exception as err:  # noqa: BLE001 - a plugin's generator may raise anything
                self.generation_problem(name, JobGenerationError(f"plugin {plugin.module} failed: {type(err).__name__}: {err}"), yaml_jobs)
        return jobs

    def missing_logic(self, job_type: str) -> str:
        """What a job that gives no logic at all lacks, named by its keys (not "0 nodes")."""
        from aiflowd.workflows.schema import LOGIC_KEYS

        keys = LOGIC_KEYS.get(job_type) or tuple(sorted(self.loader.registry.get(job_type).yaml_keys - PROCESSOR_KEYS))
        named = (", ".join(keys[:-1]) + " or " + keys[-1]) if len(keys) > 1 else "".join(keys)
        ways = ["it" if len(keys) == 1 else "one of them"] if keys else []
        ways.append("a 'processor: module:Class'")
        if self.source.config_file != self.source.path:  # a workflow folder: its definition may hold the job
            ways.append(f"its nodes in {os.path.basename(self.source.definition_file or self.source.name + '.py')}")
        return f"missing {named or 'processor'}: a {job_type} job needs {', or '.join(ways)}"

    def generation_problem(self, name: str, err: JobGenerationError, yaml_jobs: dict[str, dict[str, Any]]) -> None:
        if name not in yaml_jobs:
            self.problems.append(Problem(self.source.definition_file or "", 0, 0, f"{name}.{err.key}" if err.key else name, str(err)))
            return
        job = yaml_jobs[name]
        if err.key:
            path: Path = (name, *err.key.split("."))
        else:
            logic = self.own_logic_key(job) or ("processor" if "processor" in job else "job_type")
            path = (name, logic)
        self.problems.append(Problem(self.doc.file, *self.doc.position(path), format_path(path), str(err)))

    @property
    def registry_types(self) -> list[str]:
        return self.loader.registry.job_types()


def _rebuild_processor(encoded: dict[str, Any], plugin_modules: set[str]) -> Any:
    """A processor as the daemon may hold it: plain-data ones rebuilt, user code as a reference.

    Only classes of aiflowd or of loaded plugin modules are rebuilt, from their JSON
    state: nothing is unpickled and no module is imported here.
    """
    name = encoded["module"]
    trusted = name == "aiflowd" or name.startswith("aiflowd.") or any(name == m or name.startswith(m + ".") for m in plugin_modules)
    cls: Any = sys.modules.get(name) if trusted else None
    for part in encoded["qualname"].split("."):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and not getattr(cls, "aiflowd_by_reference", False) and encoded.get("state") is not None:
        obj = cast(Any, cls).__new__(cls)  # without __init__: the state is set whole below
        obj.__dict__.update(encoded["state"])
        return obj
    return ProcessorRef(name, encoded["qualname"], tuple(encoded["mro"]), encoded["payload"])


def parse_cron(expression: Any) -> tuple[str, str, str | None]:
    """A cron expression as (5-field form, seconds field, error): 5 fields, or AIFlow's 7.

    AIFlow's form is ``seconds minutes hours days months weeks years``; its years field
    must be ``*`` (cron has none) and ``?`` means ``*``.
    """
    if not isinstance(expression, str):
        return "", "0", f"expected a cron string like '*/5 * * * *', got {expression!r}"
    fields = expression.replace("?", "*").split()
    seconds = "0"
    if len(fields) == 7:
        if fields[6] != "*":
            return "", "0", "the years field of a 7-field cron must be '*'"
        seconds, fields = fields[0], fields[1:6]
    elif len(fields) != 5:
        return "", "0", f"expected 5 fields (minute hour day month weekday) or AIFlow's 7, got {len(fields)}"
    cron = " ".join(fields)
    from croniter import CroniterBadDateError, croniter

    if not croniter.is_valid(cron) or not croniter.is_valid(f"{cron} {seconds}"):
        return "", "0", f"invalid cron expression {expression!r}"
    try:
        croniter(f"{cron} {seconds}", 0.0).get_next(float)
    except CroniterBadDateError:
        return "", "0", f"cron expression {expression!r} never fires (no such day, like 30 February)"
    return cron, seconds, None


def loader_for(
    plugin_modules: list[str], plugin_paths: list[str], compile_timeout: float = 30.0, warm_start: bool | str = True
) -> tuple[WorkflowLoader, list[PluginError]]:
    """A loader with the built-in plugins, the configured ones and the installed ones.

    Plugin problems are returned, not raised: a broken third-party plugin never stops the
    others (its workflows then fail to load with 'unknown job type', naming the known ones).
    """
    registry = PluginRegistry()
    errors = registry.discover(plugin_modules, plugin_paths)
    settings = LoaderSettings(
        compile_timeout=compile_timeout, plugin_paths=[os.path.abspath(p) for p in plugin_paths], warm_start=warm_start
    )
    return WorkflowLoader(registry, settings), errors


def _trigger_condition(data: dict[str, Any]) -> TriggerCondition:
    """A condition the DSL recorded: ``{"all": [events], "repeated": [flags]}`` or one event's fields."""
    if "all" in data:
        return AllEventsCondition(tuple(EventCondition(**e) for e in data["all"]), tuple(bool(r) for r in data["repeated"]))
    return EventCondition(**data)
