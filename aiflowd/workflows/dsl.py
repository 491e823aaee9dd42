"""The Python workflow definition language, with AIFlow's names.

``with job_config("job_1"): user_define_operation(processor=...)`` adds nodes to a job;
passing an operation's output channel as another's ``input`` adds a DataEdge;
``action_on_job_status`` / ``action_on_event`` / ``action_on_all_events`` add rules;
``start_workflow_execution_on_events`` / ``stop_workflow_execution_on_events`` set the
workflow's triggers and ``workflow_scheduling`` its overlap rules (both recorded as rules
without a job). Calls record into the active
``WorkflowBuilder``: the compiler activates one while it runs a definition; elsewhere
(inside a job process that re-imports the definition to rebuild its processors) a
throwaway builder takes the calls, so importing a definition is always harmless.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiflowd.model import ANY, DEFAULT_NAMESPACE, JobAction, OverlapPolicy, Status


class WorkflowDefinitionError(Exception):
    """The definition uses the DSL wrongly (the compiler reports it at the caller's line)."""


@dataclass(frozen=True)
class Channel:
    """Output ``port`` of node ``node_id`` in job ``job_name``; pass it as another node's input."""

    job_name: str
    node_id: str
    port: int = 0


@dataclass
class NodeSpec:
    node_id: str
    name: str
    processor: Any
    output_num: int
    inputs: list[Channel]
    config: dict[str, Any]


@dataclass
class RuleSpec:
    job: str  # "" for a workflow trigger
    kind: str  # "status", "event", "all_events", "start_workflow", "stop_workflow" or "scheduling"
    condition: dict[str, Any]
    action: str
    file: str = ""
    line: int = 0


@dataclass
class WorkflowBuilder:
    """What a definition declared: nodes per job (in order) and rules."""

    jobs: dict[str, list[NodeSpec]] = field(default_factory=dict)
    rules: list[RuleSpec] = field(default_factory=list)
    current_job: str | None = None


_active: list[WorkflowBuilder] = [WorkflowBuilder()]


@contextlib.contextmanager
def building(builder: WorkflowBuilder) -> Iterator[WorkflowBuilder]:
    """Make ``builder`` receive the DSL calls made inside the block."""
    _active.append(builder)
    try:
        yield builder
    finally:
        _active.pop()


def _builder() -> WorkflowBuilder:
    return _active[-1]


def defining() -> bool:
    """Whether a definition is being compiled now (a builder other than the throwaway one is active)."""
    return len(_active) > 1


@contextlib.contextmanager
def job_config(job_name: str) -> Iterator[str]:
    """Open job ``job_name``: operations defined inside belong to it (its config is in the YAML)."""
    if not isinstance(job_name, str) or not job_name:
        raise WorkflowDefinitionError(f"job_config() needs a job name, got {job_name!r}")
    builder = _builder()
    if builder.current_job is not None:
        raise WorkflowDefinitionError(f"job_config('{job_name}') inside job_config('{builder.current_job}'): jobs do not nest")
    builder.current_job = job_name
    builder.jobs.setdefault(job_name, [])
    try:
        yield job_name
    finally:
        builder.current_job = None


def current_job() -> str | None:
    """The job a ``with job_config(NAME):`` block has open right now, if any."""
    return _builder().current_job


def user_define_operation(
    input: Channel | list[Channel] | tuple[Channel, ...] | None = None,  # noqa: A002 - AIFlow's parameter name
    processor: Any = None,
    output_num: int = 1,
    name: str | None = None,
    operation_type: str = "user_define_operation",
    **kwargs: Any,
) -> Channel | tuple[Channel, ...] | None:
    """Add a node holding ``processor`` to the open job; return its output channel(s).

    AIFlow's signature and order. ``kwargs`` are the node's config: with ``name`` and
    ``node_type`` (the ``operation_type``) added, the job process hands them to the
    processor as ``execution_context.config``. One output gives a channel, several a
    tuple of them, none gives None.
    """
    builder = _builder()
    job = builder.current_job
    if job is None:
        raise WorkflowDefinitionError("user_define_operation() must be called inside 'with job_config(NAME):'")
    if processor is None:
        raise WorkflowDefinitionError("user_define_operation() needs a processor")
    if not isinstance(output_num, int) or output_num < 0:
        raise WorkflowDefinitionError(f"output_num must be a whole number >= 0, got {output_num!r}")
    inputs = [] if input is None else list(input) if isinstance(input, (list, tuple)) else [input]
    for channel in inputs:
        if not isinstance(channel, Channel):
            raise WorkflowDefinitionError(f"input must be the output of user_define_operation(), got {type(channel).__name__}")
        if channel.job_name != job:
            raise WorkflowDefinitionError(
                f"input comes from job '{channel.job_name}', not '{job}': data edges join nodes of one job; "
                "use action_on_job_status() between jobs"
            )
    nodes = builder.jobs[job]
    node_id = name or f"node_{len(nodes)}"
    if any(node.node_id == node_id for node in nodes):
        raise WorkflowDefinitionError(f"job '{job}' already has a node named '{node_id}'")
    config = {**kwargs, "name": node_id, "node_type": str(operation_type)}
    nodes.append(NodeSpec(node_id, node_id, processor, output_num, inputs, config))
    if output_num == 0:
        return None
    channels = tuple(Channel(job, node_id, port) for port in range(output_num))
    return channels[0] if output_num == 1 else channels


def action_on_job_status(
    job_name: str,
    upstream_job_name: str,
    upstream_job_status: Status | str = Status.FINISHED,
    action: JobAction | str = JobAction.START,
) -> None:
    """When ``upstream_job_name`` reaches ``upstream_job_status``, do ``action`` to ``job_name``."""
    status = _enum_value(Status, upstream_job_status, "upstream_job_status", allow_any=True)
    condition = {"upstream_job": str(upstream_job_name), "status": status}
    _builder().rules.append(RuleSpec(job_name, "status", condition, _enum_value(JobAction, action, "action"), *_caller()))


def last_rule() -> RuleSpec:
    """The rule recorded last (the AIFlow layer marks the rules it made)."""
    return _builder().rules[-1]


def action_on_event(
    job_name: str,
    event_key: str,
    event_value: str = ANY,
    event_type: str = ANY,
    sender: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    value_condition: str = "EQUALS",
    action: JobAction | str = JobAction.START,
) -> None:
    """When an event matching all given fields (``*`` for any) arrives, do ``action`` to ``job_name``.

    AIFlow's parameters in AIFlow's order; ``value_condition`` ``UPDATED`` matches any value.
    """
    condition = event_fields(event_key, event_value, event_type, sender, namespace, value_condition)
    _builder().rules.append(RuleSpec(job_name, "event", condition, _enum_value(JobAction, action, "action"), *_caller()))


def event_fields(
    event_key: str,
    event_value: str = ANY,
    event_type: str = ANY,
    sender: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    value_condition: str = "EQUALS",
) -> dict[str, str]:
    """One event a rule or trigger waits for, as the compiler sends it back (``*`` for any)."""
    kind = str(getattr(value_condition, "value", value_condition)).upper()
    if kind not in ("EQUALS", "UPDATE", "UPDATED"):
        raise WorkflowDefinitionError(f"value_condition must be EQUALS or UPDATED, got {value_condition!r}")
    return {
        "key": str(event_key),
        "value": ANY if kind.startswith("UPDATE") else str(event_value),
        "event_type": str(event_type),
        "sender": ANY if sender is None else str(sender),
        "namespace": str(namespace),
    }


def action_on_all_events(
    job_name: str, events: list[dict[str, str]], action: JobAction | str = JobAction.START, repeated: list[bool] | None = None
) -> None:
    """Once every one of ``events`` (each made with ``event_fields``) has been seen, do ``action`` to ``job_name``.

    Seen counts from the execution's start and again after each firing, except the events
    whose ``repeated`` flag is set (AIFlow's ``EventLife.REPEATED``): they stay counted.
    """
    if not events:
        raise WorkflowDefinitionError("action_on_all_events() needs at least one event")
    flags = [bool(flag) for flag in (repeated if repeated is not None else [False] * len(events))]
    if len(flags) != len(events):
        raise WorkflowDefinitionError("action_on_all_events(): one 'repeated' flag per event")
    condition = {"all": list(events), "repeated": flags}
    _builder().rules.append(RuleSpec(job_name, "all_events", condition, _enum_value(JobAction, action, "action"), *_caller()))


def start_workflow_execution_on_events(conditions: list[dict[str, Any]]) -> None:
    """Start a new execution of this workflow whenever one of ``conditions`` holds.

    Each condition is one event (``event_fields``) or ``{"all": [events], "repeated": [flags]}``.
    A later call replaces the list; an empty list turns the triggers off.
    """
    _builder().rules.append(RuleSpec("", "start_workflow", {"conditions": list(conditions)}, "START", *_caller()))


def stop_workflow_execution_on_events(conditions: list[dict[str, Any]]) -> None:
    """Stop the running executions of this workflow whenever one of ``conditions`` holds (as above)."""
    _builder().rules.append(RuleSpec("", "stop_workflow", {"conditions": list(conditions)}, "STOP", *_caller()))


def workflow_scheduling(*, max_active_executions: int | None = None, on_overlap: Any = None) -> None:
    """The workflow's overlap rules, as its YAML's ``max_active_executions`` and ``on_overlap`` keys.

    ``on_overlap`` is ``"queue"`` (the default), ``"skip"`` or ``"allow"`` (or an
    ``OverlapPolicy``). A key given here must not be given in the YAML too.
    """
    options: dict[str, Any] = {}
    if max_active_executions is not None:
        if isinstance(max_active_executions, bool) or not isinstance(max_active_executions, int) or max_active_executions < 1:
            raise WorkflowDefinitionError(f"max_active_executions must be a whole number >= 1, got {max_active_executions!r}")
        options["max_active_executions"] = max_active_executions
    if on_overlap is not None:
        value = getattr(on_overlap, "value", on_overlap)
        known = [p.value for p in OverlapPolicy]
        if value not in known:
            raise WorkflowDefinitionError(f"on_overlap must be one of {', '.join(known)}; got {on_overlap!r}")
        options["on_overlap"] = value
    _builder().rules.append(RuleSpec("", "scheduling", options, "NONE", *_caller()))


#: Frames of these folders are skipped when locating a rule: this module and the
#: AIFlow compatibility layer only forward the definition's call.
_HERE = os.path.dirname(os.path.abspath(__file__))
_FORWARDING_DIRS = (_HERE + os.sep, os.path.join(os.path.dirname(_HERE), "compat") + os.sep)


def _caller() -> tuple[str, int]:
    """File and line of the definition's call, so a bad rule is reported where it is written."""
    frame = sys._getframe(1)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_FORWARDING_DIRS):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno


def _enum_value(enum_type: type[enum.Enum], value: Any, what: str, allow_any: bool = False) -> str:
    if allow_any and value == ANY:
        return ANY
    raw = getattr(value, "value", value)
    if isinstance(raw, str) and raw.upper() in enum_type.__members__:
        return raw.upper()
    known = ", ".join(enum_type.__members__)
    raise WorkflowDefinitionError(f"{what} must be one of {known}; got {value!r}")
