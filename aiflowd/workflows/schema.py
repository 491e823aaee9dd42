"""A JSON Schema of workflow YAML, made from the loader's own rules, for editors.

The keys come from the constants the loader checks against (``WORKFLOW_KEYS``,
``JOB_KEYS``, ``PROCESSOR_KEYS``, the rule, event and schedule keys) and from each job
type's ``yaml_keys()`` in the plugin registry, so the schema cannot offer a key the loader
refuses or miss one it accepts (tests/test_schema.py compares them). Editors with a YAML
language server complete and check keys with it; the loader stays the judge of
everything a schema cannot say (files, cron, the Python definition).

``aiflowd schema`` prints it for the plugins a config loads; the wheel ships one for
the built-in job types (``aiflowd/data/workflow.schema.json``, written at build time by
``python -m aiflowd.workflows.schema FILE``).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from aiflowd.alerts import COMMAND_KEYS, HOOK_EVENTS, WEBHOOK_KEYS
from aiflowd.model import ChangePolicy, JobAction, OverlapPolicy, RetryBackoff, Status
from aiflowd.plugin_interface import BUILTIN_PLUGIN_MODULES, PluginRegistry, recorded_factories
from aiflowd.workflows.loader import (
    EVENT_KEYS,
    EVENTS_KEYS,
    JOB_KEYS,
    NAME_RE,
    PERIODIC_KEYS,
    PROCESSOR_KEYS,
    STATUS_RULE_KEYS,
    WORKFLOW_KEYS,
)

SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"  # the dialect editors' YAML servers know best
SCHEMA_FILE = "workflow.schema.json"

_DURATION = {
    "type": ["number", "string"],
    "description": "seconds (90), or '90s', '5m', '1h30m', '2d', or AIFlow's 'days,hours,minutes,seconds'",
}


def _caseless(values: Iterable[str], description: str) -> dict[str, Any]:
    """Words the loader accepts in any case: offered as written, checked without case."""
    values = list(values)
    alternatives = "|".join("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _escape(c) for c in v) for v in values)
    return {"description": description, "anyOf": [{"enum": values}, {"type": "string", "pattern": f"^(?:{alternatives})$"}]}


def _escape(char: str) -> str:
    return "\\" + char if char in r"\^$.|?*+()[]{}" else char


_ACTION = _caseless([a.value for a in JobAction], "what the rule does to this job: START (default), RESTART, STOP or NONE")

#: What each key means, and the values the loader takes: every generic key has an entry
#: (a test checks it), so a key added to the loader without a description fails the tests.
GENERIC_KEYS: dict[str, dict[str, Any]] = {
    # the workflow's own keys
    "workflow.periodic_config": {"description": "start an execution of the workflow on a timer: 'cron' or 'interval'"},
    "workflow.properties": {
        "type": "object",
        "description": "free-form workflow properties; python_executable_path chooses the interpreter that compiles NAME.py",
    },
    "workflow.dependencies": {"type": "object", "description": "free-form, kept for AIFlow compatibility"},
    "workflow.on_change": {
        "enum": [p.value for p in ChangePolicy],
        "description": (
            "what a new version does to a running execution: restart (the default of a workflow started by"
            " file changes), wait (the default of one on a timer or events) or ignore"
        ),
    },
    "workflow.max_active_executions": {
        "type": "integer",
        "minimum": 1,
        "description": "the most executions active at once; a manual start beyond it is refused (default: no limit)",
    },
    "workflow.on_overlap": {
        "enum": [p.value for p in OverlapPolicy],
        "description": "what a periodic tick does while an execution runs: queue (default: once, when it ends), skip or allow",
    },
    "workflow.start_new_workflow_execution_on_events": {
        "description": "events that start an execution: event conditions, or {condition, events}"
    },
    "workflow.stop_workflow_execution_on_events": {
        "description": "events that stop the running execution: event conditions, or {condition, events}"
    },
    "workflow.on_failure": {"description": "hooks when a job of this workflow fails for good (its retries used up)"},
    "workflow.on_retry": {"description": "hooks when a job of this workflow fails and will be retried"},
    "workflow.on_success": {"description": "hooks when a job of this workflow finishes"},
    # a job's generic keys
    "job.job_type": {"type": "string", "description": "the plugin that runs the job"},
    "job.properties": {"type": ["object", "null"], "description": "the job type's properties (env, cwd, timeout, ...) and free-form ones"},
    "job.periodic_config": {"description": "start this job on a timer: 'cron' or 'interval'"},
    "job.job_label_report_interval": {**_DURATION, "description": "kept for AIFlow compatibility (a duration)"},
    "job.retries": {"type": "integer", "minimum": 0, "description": "start a FAILED execution again up to this many times"},
    "job.retry_delay": {**_DURATION, "description": "how long to wait before a retry (a duration)"},
    "job.retry_backoff": {
        "enum": [b.value for b in RetryBackoff],
        "description": "fixed (default): every retry waits retry_delay; exponential: retry N waits retry_delay * 2**(N-1)",
    },
    "job.retry_max_delay": {**_DURATION, "description": "the longest an exponential backoff waits (a duration)"},
    "job.timeout": {**_DURATION, "description": "fail and stop an execution that runs longer (a duration; 0: none)"},
    "job.action_on_job_status": {"description": "rules on upstream jobs: [{upstream_job, upstream_job_status, action}]"},
    "job.action_on_event": {"description": "rules on events: [{event_key, event_value, ..., action}]"},
    "job.action_on_events": {"description": "rules on several events: [{condition: all|any, events: [...], action}]"},
    "job.processor": {
        "type": "string",
        "pattern": r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$",
        "description": "a 'module:Class' processor from the workflow folder (instead of NAME.py)",
    },
    "job.args": {"type": ["object", "array", "null"], "description": "the processor's arguments: keyword arguments (a mapping) or a list"},
    # schedules
    "periodic.cron": {"type": "string", "description": "a 5-field cron expression, or AIFlow's 7 fields (seconds first, years '*')"},
    "periodic.interval": {**_DURATION, "description": "a duration between executions, like '5m'"},
    "periodic.start_date": {"type": "string", "description": "no execution before this ISO date, like '2024-01-31 08:00'"},
    "periodic.timezone": {"type": "string", "description": "the cron's time zone, like 'UTC' or 'Europe/Berlin'"},
    # rules and event conditions
    "status_rule.upstream_job": {"type": "string", "description": "the job whose status this rule waits for"},
    "status_rule.upstream_job_status": _caseless(
        [*Status.__members__, "*"], "the status it waits for: FINISHED (default), FAILED, KILLED, ... or '*' for any final one"
    ),
    "status_rule.action": _ACTION,
    "event.event_key": {"description": "the event's key ('*': any key)"},
    "event.event_value": {"description": "its value (default '*': any)"},
    "event.event_type": {"description": "its event type (default '*': any)"},
    "event.sender": {"description": "who sent it (default '*': anyone)"},
    "event.namespace": {"description": "its namespace (default 'default')"},
    "event.value_condition": _caseless(["EQUALS", "UPDATED"], "EQUALS (the value must match, default) or UPDATED (any new value)"),
    "event.life": _caseless(["ONCE", "REPEATED"], "ONCE (default) or REPEATED, within a several-event condition"),
    "event.action": _ACTION,
    "events.condition": _caseless(["all", "any"], "all (default): every event must have come; any: one is enough"),
    "events.events": {"description": "the event conditions: a list of {event_key, event_value, ...}"},
    "events.action": _ACTION,
    # hooks (a command string, or one of these mappings)
    "hook.command": {
        "type": ["string", "array"],
        "items": {"type": "string"},
        "description": "a command line (run by sh) or an argument list; it gets AIFLOWD_* variables",
    },
    "hook.webhook": {"type": "string", "pattern": "^https?://", "description": "a URL the facts are POSTed to as JSON"},
    "hook.timeout": {**_DURATION, "description": "how long one run or one POST may take (a duration)"},
    "hook.retries": {"type": "integer", "minimum": 0, "description": "how often a failed POST is tried again (default 3)"},
    "hook.backoff": {**_DURATION, "description": "the pause before the first retry, doubling after each (default 1s)"},
    "hook.headers": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}, "description": "HTTP headers"},
}

#: The built-in job types' own keys. A third-party type's keys get a generic description.
TYPE_KEYS: dict[tuple[str, str], dict[str, Any]] = {
    ("bash", "bash_command"): {"type": ["string", "number"], "description": "the command bash runs (quote it when it holds ': ' or '#')"},
    ("bash", "output_encoding"): {"type": "string", "description": "how the command's output is decoded for its log (default utf-8)"},
    ("flink", "main_jar_file"): {"type": "string", "description": "a Flink jar job: the jar, relative to the workflow folder"},
    ("flink", "entry_class"): {"type": "string", "description": "the jar's main class (default: its manifest's)"},
    ("flink", "args"): {
        "type": ["array", "object", "null"],
        "description": "the jar's arguments: a list (never one string); or a processor's, as for any job",
    },
    ("flink", "sql"): {"type": "string", "description": "a Flink SQL job: the statements, separated by ';'"},
    ("flink", "sql_file"): {"type": "string", "description": "a Flink SQL job: a SQL file in the workflow folder"},
}


#: The keys that give a built-in job type's logic (the others go with them): what the
#: loader names when a job has none ("missing bash_command"). Other types: all their keys.
LOGIC_KEYS: dict[str, tuple[str, ...]] = {"bash": ("bash_command",), "flink": ("main_jar_file", "sql", "sql_file"), "python": ()}


def _key(kind: str, name: str) -> dict[str, Any]:
    return dict(GENERIC_KEYS[f"{kind}.{name}"])


def _one_or_list(item: dict[str, Any]) -> dict[str, Any]:
    """The loader's ``sequence``: nothing, one mapping, or a list of them."""
    return {"anyOf": [{"type": "null"}, item, {"type": "array", "items": item}]}


def _closed(kind: str, keys: Iterable[str], **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {k: _key(kind, k) for k in sorted(keys)}, "additionalProperties": False, **more}


def _describe(schema: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` (a shape) under the description the key has already."""
    return {**extra, "description": schema["description"]}


#: Job types and their own YAML keys (``JobPluginFactory.yaml_keys``).
JobTypeKeys = Mapping[str, frozenset[str]]


def registry_keys(registry: PluginRegistry) -> dict[str, frozenset[str]]:
    """The job types of a plugin registry (the one a loader checks with) and their YAML keys."""
    return {info.job_type: info.yaml_keys for info in registry}


def builtin_keys() -> dict[str, frozenset[str]]:
    """The built-in job types and their YAML keys, read from the factories their modules record.

    What the registry would hold after ``load_builtin``, without making controllers: the
    build writes the wheel's schema with only the stdlib and PyYAML at hand.
    """
    keys: dict[str, frozenset[str]] = {}
    for module in BUILTIN_PLUGIN_MODULES:
        importlib.import_module(module)
        for factory in recorded_factories(module):
            keys[factory.job_type()] = frozenset(factory.yaml_keys())
    return keys


def workflow_schema(types: JobTypeKeys) -> dict[str, Any]:
    """The JSON Schema (draft-07) of a workflow YAML file, for job types with these YAML keys."""
    periodic = _closed(
        "periodic",
        PERIODIC_KEYS,
        oneOf=[{"required": ["cron"]}, {"required": ["interval"]}],
        description="give exactly one of cron and interval",
    )
    event = _closed("event", EVENT_KEYS, required=["event_key"])
    event_rule = _closed("event", EVENT_KEYS | {"action"}, required=["event_key"])
    events_group = _closed("events", EVENTS_KEYS, required=["events"])
    events_group["properties"]["events"] = _describe(events_group["properties"]["events"], _one_or_list({"$ref": "#/definitions/event"}))
    events_rule = _closed("events", EVENTS_KEYS | {"action"})
    events_rule["properties"]["events"] = _describe(events_rule["properties"]["events"], _one_or_list({"$ref": "#/definitions/event"}))
    trigger = {
        "if": {"type": "object", "required": ["events"]},
        "then": {"$ref": "#/definitions/events"},
        "else": {"$ref": "#/definitions/event"},
    }
    status_rule = _closed("status_rule", STATUS_RULE_KEYS, required=["upstream_job"])

    job_types = sorted(types)
    generic = JOB_KEYS | PROCESSOR_KEYS
    all_keys = generic.union(*types.values())

    def job_key(name: str, job_type: str | None) -> dict[str, Any]:
        if name in generic and not (job_type and (job_type, name) in TYPE_KEYS):
            schema = _key("job", name)
        elif job_type is not None:
            schema = dict(
                TYPE_KEYS.get((job_type, name)) or {"description": f"a key of job type {job_type} (see its plugin's documentation)"}
            )
        else:
            owners = [t for t in job_types if name in types[t]]
            described = [TYPE_KEYS[(t, name)] for t in owners if (t, name) in TYPE_KEYS]
            schema = {"description": described[0]["description"] if described else f"a key of job type {' or '.join(owners)}"}
        shapes = {
            "periodic_config": {"$ref": "#/definitions/periodic_config"},
            "action_on_job_status": _one_or_list({"$ref": "#/definitions/status_rule"}),
            "action_on_event": _one_or_list({"$ref": "#/definitions/event_rule"}),
            "action_on_events": _one_or_list({"$ref": "#/definitions/events_rule"}),
        }
        if name in shapes and name in generic:
            schema = _describe(schema, shapes[name])
        if name == "job_type":
            schema = {**schema, "enum": [job_type] if job_type else job_types}
        return schema

    job: dict[str, Any] = {
        "type": "object",
        "description": "a job: its job_type, and the keys of that type",
        "required": ["job_type"],
        "properties": {k: job_key(k, None) for k in sorted(all_keys)},
        "additionalProperties": False,
        "allOf": [
            {
                "if": {"properties": {"job_type": {"const": t}}, "required": ["job_type"]},
                "then": {
                    "properties": {k: job_key(k, t) for k in sorted(generic | types[t])},
                    "additionalProperties": False,
                },
            }
            for t in job_types
        ],
    }
    workflow_keys: dict[str, Any] = {k: _key("workflow", k) for k in sorted(WORKFLOW_KEYS)}
    hook = {
        "anyOf": [
            {"type": "string", "minLength": 1},
            _closed("hook", COMMAND_KEYS, required=["command"]),
            _closed("hook", WEBHOOK_KEYS, required=["webhook"]),
        ]
    }
    for key in HOOK_EVENTS:
        workflow_keys[key] = _describe(
            workflow_keys[key],
            {"anyOf": [{"type": "null"}, {"$ref": "#/definitions/hook"}, {"type": "array", "items": {"$ref": "#/definitions/hook"}}]},
        )
    workflow_keys["periodic_config"] = _describe(workflow_keys["periodic_config"], {"$ref": "#/definitions/periodic_config"})
    for key in ("start_new_workflow_execution_on_events", "stop_workflow_execution_on_events"):
        workflow_keys[key] = _describe(workflow_keys[key], _one_or_list(trigger))
    reserved = "|".join(sorted(WORKFLOW_KEYS))
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "aiflowd workflow",
        "description": f"An aiflowd workflow: jobs by name, and the workflow's own keys. Job types: {', '.join(job_types)}.",
        "type": "object",
        "properties": workflow_keys,
        # A job's name: the loader's NAME_RE, for every key that is not one of the workflow's own.
        "patternProperties": {f"^(?!(?:{reserved})$){NAME_RE.pattern.lstrip('^')}": {"$ref": "#/definitions/job"}},
        "additionalProperties": False,
        "definitions": {
            "job": job,
            "periodic_config": periodic,
            "status_rule": status_rule,
            "event": event,
            "event_rule": event_rule,
            "events": events_group,
            "events_rule": events_rule,
            "hook": hook,
        },
    }


def schema_text(types: JobTypeKeys) -> str:
    """The schema as the file holds it: stable (sorted) JSON, so that builds compare equal."""
    return json.dumps(workflow_schema(types), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m aiflowd.workflows.schema [FILE]``: the built-in types' schema (the build writes the wheel's copy)."""
    args = sys.argv[1:] if argv is None else argv
    text = schema_text(builtin_keys())
    if args:
        with open(args[0], "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
