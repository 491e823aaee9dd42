"""The engine's inbox: one small frozen dataclass per kind of message, and a call's reply.

Every part that tells the engine something (the folder, the job supervisors, the timers,
the control methods) puts one of these in its inbox; the loop dispatches them with
``match``. A malformed message is a type error where it is made, not a string typo
that the loop would only log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from aiflowd import scheduler
from aiflowd.model import Event
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import LoadedWorkflow

if TYPE_CHECKING:
    from aiflowd.controllers.supervisor import JobOutcome
    from aiflowd.engine import Engine, JobRun


class Reply:
    """Where the loop puts a call's answer (or error) and says it is done."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        #: Whether the call wrote to the store: then it is answered only once that is committed.
        self.wrote = False


@dataclass(frozen=True)
class Loaded:
    """The folder holds a (new) version of the workflow at ``path``, or a broken one."""

    path: str
    result: LoadedWorkflow | LoadError


@dataclass(frozen=True)
class Removed:
    """The workflow ``name`` is gone from the folder."""

    name: str


@dataclass(frozen=True)
class JobRunning:
    """A job execution runs; ``handle`` is what a restarted daemon needs to find it again."""

    run: JobRun
    handle: dict[str, Any]


@dataclass(frozen=True)
class JobCondition:
    """A running job's controller reports how it fares (``UNREACHABLE``), or that it is well again (None)."""

    run: JobRun
    condition: str | None
    since: float | None
    detail: str
    subject: str


@dataclass(frozen=True)
class JobEnded:
    """A job execution ended (or its supervision failed)."""

    run: JobRun
    outcome: JobOutcome


@dataclass(frozen=True)
class UserEvent:
    """An event sent by a user or a job."""

    event: Event


@dataclass(frozen=True)
class Due:
    """A delayed decision (a retry after its ``retry_delay``) is due."""

    execution_id: int
    decision: scheduler.Decision


@dataclass(frozen=True)
class Tick:
    """A schedule's slot came: ``job`` is '' for a workflow-level schedule."""

    workflow: str
    job: str
    slot: float


@dataclass(frozen=True)
class Call:
    """Run ``fn(engine)`` inside the loop and answer ``reply`` once the turn is committed."""

    fn: Callable[[Engine], Any]
    reply: Reply


@dataclass(frozen=True)
class CheckStore:
    """Look whether the database file is still there, and retry a commit that failed."""


Message = Loaded | Removed | JobRunning | JobCondition | JobEnded | UserEvent | Due | Tick | Call | CheckStore


def from_legacy(kind: str, payload: Any) -> Message:
    """The typed message for the old ``post("kind", payload)`` form."""
    match kind:
        case "loaded":
            return Loaded(*payload)
        case "removed":
            return Removed(payload)
        case "event":
            return UserEvent(payload)
        case "job_running":
            return JobRunning(*payload)
        case "job_ended":
            return JobEnded(*payload)
        case "due":
            return Due(*payload)
        case "tick":
            return Tick(*payload)
        case "call":
            return Call(*payload)
    raise TypeError(f"unknown engine message kind {kind!r}")
