"""The engine: every workflow, execution and job execution aiflowd serves, driven by one loop.

Everything that changes state arrives as a message in one inbox (a workflow loaded or
removed, a job running or ended, an event, a timer tick, a control request). One turn of
the loop handles all waiting messages, asks the pure scheduler what follows, writes it
all to the store in one transaction, and only then acts: starts and stops jobs, answers
requests. So a crash between deciding and acting is repaired on restart from the store,
and persistence costs one commit per turn, not one per job.

Messages are small frozen dataclasses, one per kind, dispatched with ``match``: a
malformed message is a type error, not a string typo. Failures are contained: a message
whose handling raises is logged and counted and the loop goes on; a store that cannot
write keeps every decision waiting (jobs already running go on) until a commit succeeds.

Time comes from a ``Clock`` (``aiflowd.clock``): schedules and retry delays never read
the wall clock themselves, so tests drive them with a clock they move.

Each job execution is its own task under a JobSupervisor; one failing never cancels the
others. ``run-once`` drives the same engine with an in-memory store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import structlog
from anyio.abc import TaskGroup, TaskStatus

from aiflowd import scheduler
from aiflowd.alerts import Alerts
from aiflowd.clock import Clock, SystemClock
from aiflowd.controllers import plugin_processes
from aiflowd.controllers.supervisor import JobOutcome, JobSupervisor, call
from aiflowd.inbox import (
    Call,
    CheckStore,
    Due,
    JobCondition,
    JobEnded,
    JobRunning,
    Loaded,
    Message,
    Removed,
    Reply,
    Tick,
    UserEvent,
    from_legacy,
)
from aiflowd.model import (
    JOB_STATUS_CHANGED,
    PARAM_PREFIX,
    AllEventsCondition,
    ChangePolicy,
    Event,
    EventCondition,
    JobAction,
    JobConfig,
    OverlapPolicy,
    PeriodicConfig,
    Status,
    check_params,
    event_variables,
)
from aiflowd.plugin_interface import Job, JobController, JobExecutionInfo, JobHandle, JobRuntimeEnv, PluginRegistry
from aiflowd.store import Store, StoreUnavailable
from aiflowd.workflows.errors import LoadError, Problem
from aiflowd.workflows.loader import LoadedWorkflow

log = structlog.get_logger("aiflowd.engine")

ACTIVE, INVALID, RETIRED = "active", "invalid", "retired"
CHANGED = "workflow changed"
#: The reason of what a user asked for through the control socket.
BY_REQUEST = "by request"
#: How the message of a job execution lost in a restart begins: such a one is never retried.
LOST = "lost in a restart: "
#: How often the engine looks whether its database file is still there (and retries a failed commit).
STORE_CHECK_INTERVAL = 5.0
#: The longest pause between two attempts to commit to a store that refuses writes.
STORE_RETRY_MAX = 5.0
#: The longest pause before a failed timer starts again.
TIMER_RESTART_MAX = 60.0


@dataclass
class EnginePaths:
    """Where job executions keep their working folders and logs."""

    state_dir: str
    log_dir: str

    def working_dir(self, workflow: str, execution_id: int, job: str, attempt: int) -> str:
        return os.path.join(self.state_dir, "work", workflow, str(execution_id), f"{job}.{attempt}")

    def log_path(self, workflow: str, execution_id: int, job: str, attempt: int) -> str:
        name = f"{job}.log" if attempt == 1 else f"{job}.{attempt}.log"
        return os.path.join(self.log_dir, workflow, str(execution_id), name)


@dataclass
class WorkflowEntry:
    """A workflow as the engine serves it: its valid version, and the problems of a newer one."""

    name: str
    path: str
    loaded: LoadedWorkflow | None = None
    problems: list[Problem] = field(default_factory=list)
    status: str = ACTIVE
    paused: bool = False
    anchor: float = field(default_factory=time.time)
    start_when_idle: bool = False
    timers: anyio.CancelScope | None = None
    #: Job-level ticks that came while their job still ran: slot per job, started when it ends.
    deferred_ticks: dict[str, float] = field(default_factory=dict)
    #: A workflow-level tick waiting (``on_overlap: queue``) for the active execution to end:
    #: unrecorded until it starts, so a restart meanwhile fires it again as the catch-up.
    queued_tick: float | None = None
    #: Starts not made because an execution was active: ticks skipped, event triggers refused.
    skipped_starts: int = 0
    #: The last valid version known (loaded, or recorded by a previous daemon).
    version: str | None = None
    #: Executions a previous daemon left, taken over once a valid version is loaded (the
    #: file is invalid now, or still loading): their jobs run on untouched meanwhile.
    unrecovered: list[dict[str, Any]] = field(default_factory=list)
    #: Savepoints the jobs of a stopped older version left, for the new version to start from.
    restore: dict[str, str] = field(default_factory=dict)
    #: For a job that ran several Flink jobs: each one's savepoint, in the order they started.
    restore_each: dict[str, list[str | None]] = field(default_factory=dict)
    #: What the version's several-event triggers (start/stop on events) have seen so far.
    trigger_memory: scheduler.EventMemory = field(default_factory=scheduler.EventMemory)
    #: The slot each of its timers sleeps until, by job ('' for the workflow's own): ``next_runs``.
    next_slots: dict[str, float] = field(default_factory=dict)

    @property
    def change_triggered(self) -> bool:
        workflow = self.loaded.workflow if self.loaded else None
        if workflow is None:
            return False
        scheduled = workflow.periodic_config is not None or any(g.config.periodic_config for g in workflow.jobs.values())
        return not scheduled and not workflow.start_on_events  # stop triggers alone stop what a file change started

    @property
    def policy(self) -> ChangePolicy:
        assert self.loaded is not None
        if self.loaded.workflow.on_change is not None:
            return self.loaded.workflow.on_change
        return ChangePolicy.RESTART if self.change_triggered else ChangePolicy.WAIT


@dataclass(eq=False)
class JobRun:
    """One job execution the engine carries."""

    id: int
    execution: ExecutionRun
    job: str
    job_type: str
    attempt: int
    env: JobRuntimeEnv
    reason: str
    status: Status = Status.INIT
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    message: str | None = None
    supervisor: JobSupervisor | None = None
    stop_reason: str | None = None
    recovered_handle: dict[str, Any] | None = None
    recovered: bool = False
    #: Taken over after a restart but not found again: it may still run, so it is never retried.
    lost: bool = False
    #: Why it started: ``start``, ``retry`` (of a failure) or ``restart`` (it ran before in this execution).
    kind: str = scheduler.START
    #: Who stopped it, when something did: ``rule`` (by design of the workflow), ``restart``
    #: (a rule or a request restarting it), ``request`` (a user), or None (anything else).
    stopped_by: str | None = None
    #: What its controller reported while it runs (``UNREACHABLE``), since when, about what
    #: (a cluster's URL): shown instead of RUNNING; rules still see it running.
    condition: str | None = None
    condition_since: float | None = None
    condition_subject: str = ""

    @property
    def shown_status(self) -> str:
        """The status as shown: its condition while it runs with one, else its status."""
        return self.condition if self.condition and self.status == Status.RUNNING else self.status.value


@dataclass(eq=False)
class ExecutionRun:
    """One workflow execution the engine carries: its jobs' states and live runs."""

    id: int
    workflow: str
    loaded: LoadedWorkflow
    trigger: str
    only_job: str | None = None
    states: dict[str, scheduler.JobState] = field(default_factory=dict)
    running: dict[str, JobRun] = field(default_factory=dict)
    pending: dict[str, scheduler.Decision] = field(default_factory=dict)
    restart_after_stop: dict[str, str] = field(default_factory=dict)
    #: What its several-event rules have seen so far (AIFlow's MEET_ALL conditions).
    memory: scheduler.EventMemory = field(default_factory=scheduler.EventMemory)
    #: Jobs whose rules are held in this execution (AIFlow's stop_scheduling_job): they see no event.
    held: set[str] = field(default_factory=set)
    stop_reason: str | None = None
    status: Status = Status.RUNNING
    ended: anyio.Event = field(default_factory=anyio.Event)
    #: What the execution was started with (``--param K=V``): every job gets ``AIFLOWD_PARAM_K``.
    params: dict[str, str] = field(default_factory=dict)
    #: The event that started the execution (a start trigger), given to every job.
    event: Event | None = None
    #: The user event whose rule started a job, by job: given to that job (and its retries).
    job_events: dict[str, Event] = field(default_factory=dict)
    #: Set when it has no job left running while kept open for its events (see ``Engine.stop_all``).
    quiet: anyio.Event = field(default_factory=anyio.Event)

    @property
    def listens_for_events(self) -> bool:
        return any(isinstance(rule.condition, (EventCondition, AllEventsCondition)) for rule in self.loaded.workflow.rules)

    @property
    def idle(self) -> bool:
        return not self.running and not self.pending


class EngineError(Exception):
    """A request the engine refuses (unknown workflow, job not running, ...)."""


class Engine:
    """Serves workflows: loads versions, starts executions, runs jobs, records everything."""

    def __init__(
        self,
        registry: PluginRegistry,
        store: Store,
        paths: EnginePaths,
        *,
        settings: dict[str, Any] | None = None,
        max_concurrent_jobs: int = 64,
        keep_open_for_events: bool = True,
        on_job_change: Callable[[JobRun], None] | None = None,
        clock: Clock | None = None,
        store_check_interval: float = STORE_CHECK_INTERVAL,
        control_socket: str | None = None,
        alerts: Alerts | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.paths = paths
        self.settings = settings or {}
        #: The daemon's control socket: given to every job as ``AIFLOWD_SOCKET`` (unless ``job_env`` names another).
        self.control_socket = control_socket
        #: Where the hooks of ended job executions go (None: no hooks, as in ``run-once``).
        self.alerts = alerts
        self.keep_open_for_events = keep_open_for_events
        self.on_job_change = on_job_change or (lambda run: None)
        self.clock: Clock = clock or SystemClock()
        self.store_check_interval = store_check_interval
        self.workflows: dict[str, WorkflowEntry] = {}
        self.executions: dict[int, ExecutionRun] = {}
        self.limiter = anyio.CapacityLimiter(max_concurrent_jobs)
        #: Exceptions the engine contained (a message, a timer, an action): logged, counted, survived.
        self.contained_errors = 0
        #: Execution starts not made because executions were active (see ``WorkflowEntry.skipped_starts``).
        self.skipped_starts = 0
        self._send, self._receive = anyio.create_memory_object_stream[Message](math.inf)
        self._to_launch: list[JobRun] = []
        self._to_stop: list[tuple[JobRun, str]] = []
        self._replies: list[Reply] = []
        self._task_group: TaskGroup | None = None
        self._stored: dict[str, dict[str, Any]] | None = None
        self._ticks: dict[tuple[str, str], float | None] = {}
        self._store_failures = 0
        #: Exit-status files of job executions whose end this turn records: removed once committed.
        self._settled_status_files: list[str] = []
        #: Set once the daemon stops: nothing new starts (no tick, no waiting version).
        self._stopping = False
        #: Set while executions a previous daemon left are taken over: their ends start no new version yet.
        self._recovering = False

    @property
    def store_problem(self) -> str | None:
        """Why the engine runs degraded (its store cannot write), or None: for ``aiflowctl status``."""
        return self.store.problem

    # -- running -------------------------------------------------------------------

    async def serve(
        self,
        initial: list[tuple[str, LoadedWorkflow | LoadError]] = (),  # type: ignore[assignment]
        loading: Collection[str] = (),
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the loop until cancelled; job tasks are stopped (shielded, bounded) on the way out.

        ``initial`` is the first scan of the folder: its versions are recorded, then what
        a previous daemon left is taken over, then new versions take effect, so that a
        restart neither repeats nor forgets anything. ``loading`` names workflows still
        loading: they are not retired, and arrive later as "loaded".
        """
        with self._send, self._receive:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                self._take_over(initial, loading)
                self._flush()
                if self.store_check_interval > 0:
                    self._start_task(self._check_store_now_and_then, what="store check")
                task_status.started()
                while True:
                    batch = [await self._next_message()]
                    while True:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except anyio.WouldBlock:
                            break
                    for message in batch:
                        try:
                            self._handle(message)
                        except Exception:
                            self.contained_errors += 1
                            log.exception("engine message failed; the engine goes on", message=type(message).__name__)
                            with self._containing("settling after a failed message"):
                                self._settle_after_failure(message)
                    self._flush()

    def _take_over(self, initial: list[tuple[str, LoadedWorkflow | LoadError]], loading: Collection[str] = ()) -> None:
        """Record the first scan, retire what left while down, recover, then let new versions act.

        Each step is contained to the workflow it concerns: one bad record or version must
        not keep the daemon (and every other workflow) from starting.
        """
        changes = []
        for path, result in initial:
            with self._containing("loading a workflow", path=path):
                if change := self._set_version(path, result):
                    changes.append(change)
        loaded = {_workflow_name(path) for path, _ in initial}
        for name, row in self._stored_workflows().items():
            if row["status"] != RETIRED and name not in loaded and name not in loading:
                with self._containing("retiring a workflow", workflow=name):
                    self.workflows[name] = WorkflowEntry(name, row["path"])
                    self._removed(name)  # gone while the daemon was down
        self._recover()
        for entry, replaced in changes:
            with self._containing("starting a new version", workflow=entry.name):
                self._on_new_version(entry, replaced)
        for entry in list(self.workflows.values()):  # held back for an execution the recovery ended
            with self._containing("starting a new version", workflow=entry.name):
                self._start_waiting_version(entry)

    def _settle_after_failure(self, message: Message) -> None:
        """Leave the execution a failed message concerns able to end, rather than open for ever."""
        if isinstance(message, JobEnded):
            run, execution = message.run, message.run.execution
            if execution.running.get(run.job) is run:
                del execution.running[run.job]
            if not run.status.is_final:
                run.status = execution.states[run.job].status = message.outcome.status
            self._maybe_end(execution)

    @contextlib.contextmanager
    def _containing(self, what: str, **context: Any) -> Iterator[None]:
        """Log and count an exception of the block, and go on: it concerns only ``context``."""
        try:
            yield
        except Exception:
            self.contained_errors += 1
            log.exception(f"{what} failed; the engine goes on", **context)

    async def _next_message(self) -> Message:
        """The next message; while the store refuses writes, a retry after a growing pause."""
        if self.store.problem is None and not self.store.pending_writes:
            return await self._receive.receive()
        delay = min(STORE_RETRY_MAX, 0.1 * 2 ** min(self._store_failures, 10))
        with anyio.move_on_after(delay):
            return await self._receive.receive()
        return CheckStore()

    async def _check_store_now_and_then(self) -> None:
        while True:
            await anyio.sleep(self.store_check_interval)
            self.post(CheckStore())

    def post(self, message: Message | str, payload: Any = None) -> None:
        """Put a message in the inbox (from any task of the event loop's thread).

        Deprecated: the two-argument form ``post("kind", payload)`` of older callers is
        still accepted and turned into its typed message.
        """
        if isinstance(message, str):
            message = from_legacy(message, payload)
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._send.send_nowait(message)

    def loaded(self, path: str, result: LoadedWorkflow | LoadError) -> None:
        """The folder loaded ``path``: a new version, or its problems."""
        self.post(Loaded(path, result))

    def removed(self, name: str) -> None:
        """The workflow ``name`` left the folder."""
        self.post(Removed(name))

    async def request(self, fn: Callable[[Engine], Any]) -> Any:
        """Run ``fn(engine)`` inside the loop; its answer once what it decided is committed.

        A call that wrote nothing is answered at the end of its turn even while the store
        refuses writes, so reading (``aiflowctl status``) works when the daemon is degraded.
        """
        reply = Reply()
        self.post(Call(fn, reply))
        await reply.done.wait()
        if reply.error is not None:
            raise reply.error
        return reply.value

    async def stop_all(self, reason: str) -> None:
        """Stop every job execution (for shutdown) and wait until all have ended.

        A daemon leaves alone an execution whose running jobs all run elsewhere and say so
        (a handle with ``keep_on_daemon_stop``: Flink cluster jobs under
        ``flink.on_daemon_stop: keep``): they keep running, the execution stays open in the
        store, and the next start re-adopts them as after kill -9. An execution open for its
        events loses its running jobs but stays open too: the next start carries it on, so a
        restart of the daemon does not leave a workflow's event rules deaf.
        """
        kept: set[int] = set()  # left running elsewhere: not waited for
        kept_open: set[int] = set()  # waited for until their jobs are stopped
        await self.request(lambda engine: engine._stop_everything(reason, kept, kept_open))
        while waiting := [e for e in self.executions.values() if e.id not in kept and not (e.id in kept_open and e.quiet.is_set())]:
            execution = waiting[0]
            await (execution.quiet.wait() if execution.id in kept_open else execution.ended.wait())

    def kill_all(self, reason: str = "killed: aiflowd stopped without waiting (second stop signal)") -> int:
        """SIGKILL every local job's process group now and record them KILLED (a second stop signal).

        Called from outside the loop, when the daemon is about to end without waiting: the
        records are written and committed here, before returning, so the next start does
        not find them RUNNING with their exit status lost. Jobs elsewhere (on a Flink
        cluster) are left to the stop already under way and to the next start.
        """
        self._stopping = True
        killed = 0
        now = self.clock.now()
        for execution in list(self.executions.values()):
            for run in list(execution.running.values()):
                handle = run.supervisor.handle if run.supervisor is not None else None
                group = getattr(handle, "group", None) if handle is not None else None  # local process groups only
                if handle is None and run.supervisor is None and not run.recovered:
                    outcome = JobOutcome(Status.KILLED, message=f"{reason}; never started", ended_at=now)
                elif group is not None:
                    group.signal_group(signal.SIGKILL)
                    killed += 1
                    outcome = JobOutcome(Status.KILLED, exit_code=137, message=reason, ended_at=now)
                else:
                    continue
                try:
                    self._record_end(run, outcome)
                except Exception:
                    self.contained_errors += 1
                    log.exception("recording a killed job failed", workflow=run.execution.workflow, job=run.job)
            open_for_events = execution.stop_reason is None and self._kept_open(execution)  # the next start carries it on
            if not execution.running and execution.id in self.executions and not open_for_events:
                execution.stop_reason = execution.stop_reason or reason
                self._end(execution)
        try:
            self.store.commit()
        except StoreUnavailable as err:
            log.error("the killed jobs could not be recorded", error=str(err))
        return killed

    def _flush(self) -> None:
        """Commit what this turn decided, then act on it; nothing is acted upon uncommitted."""
        try:
            self.store.commit()
        except StoreUnavailable as err:
            self._store_failures += 1
            if self._store_failures == 1:
                log.error("state store refuses writes: running jobs go on, new actions wait", error=str(err))
            self._answer(reply for reply in self._replies if not reply.wrote)
            self._replies = [reply for reply in self._replies if reply.wrote]
            return
        except Exception:  # a bug, not the disk: the decisions stay queued and the next turn retries
            self.contained_errors += 1
            self._store_failures += 1
            log.exception("commit failed")
            return
        if self._store_failures:
            log.warning("state store writes again: acting on what waited", waited=len(self._to_launch) + len(self._to_stop))
            self._store_failures = 0
        settled, self._settled_status_files = self._settled_status_files, []
        for path in settled:  # the ends they recorded are in the store now: a restart reads them there
            with contextlib.suppress(OSError):
                os.unlink(path)
        to_stop, self._to_stop = self._to_stop, []
        for run, reason in to_stop:
            self._contained(self._request_stop, run, reason)
        to_launch, self._to_launch = self._to_launch, []
        assert self._task_group is not None
        for run in to_launch:
            self._contained(self._task_group.start_soon, self._supervise, run)
        replies, self._replies = self._replies, []
        self._answer(replies)

    def _contained(self, action: Callable[..., Any], *args: Any) -> None:
        """Do one action; a failure is that action's alone (logged, counted), never the loop's."""
        try:
            action(*args)
        except Exception:
            self.contained_errors += 1
            log.exception("engine action failed", action=getattr(action, "__name__", repr(action)))

    @staticmethod
    def _request_stop(run: JobRun, reason: str) -> None:
        if run.supervisor is not None:
            run.supervisor.request_stop(reason)
        else:
            run.stop_reason = reason

    @staticmethod
    def _answer(replies: Any) -> None:
        for reply in replies:
            reply.done.set()

    def _start_task(self, fn: Callable[..., Awaitable[None]], *args: Any, what: str) -> None:
        """Run a task beside the loop; an exception in it is logged and counted, never the engine's end."""

        async def contained() -> None:
            try:
                await fn(*args)
            except Exception:
                self.contained_errors += 1
                log.exception("engine task failed", task=what)

        assert self._task_group is not None
        self._task_group.start_soon(contained, name=what)

    def _handle(self, message: Message) -> None:
        match message:
            case Call(fn, reply):
                before = self.store.pending_writes
                try:
                    reply.value = fn(self)
                except Exception as err:  # noqa: BLE001 - handed back to the requester
                    reply.error = err
                reply.wrote = self.store.pending_writes != before
                self._replies.append(reply)
            case JobRunning(run, handle):
                self._job_running(run, handle)
            case JobCondition(run, condition, since, detail, subject):
                self._job_condition(run, condition, since, detail, subject)
            case JobEnded(run, outcome):
                self._job_ended(run, outcome)
            case UserEvent(event):
                self._user_event(event)
            case Due(execution_id, decision):
                execution = self.executions.get(execution_id)
                if execution is not None and execution.pending.pop(decision.job, None) is not None:
                    self._apply(execution, [decision])
                    self._maybe_end(execution)
            case Tick(workflow, job, slot):
                self._tick(workflow, job, slot)
            case Loaded(path, result) if not self._stopping:  # the next start's scan finds the change
                self._loaded(path, result)
            case Removed(name) if not self._stopping:
                self._removed(name)
            case Loaded() | Removed():
                pass
            case CheckStore():
                self.store.check()  # logs what it found and did; a failed commit is retried by the flush
            case _:
                raise TypeError(f"not an engine message: {message!r}")

    # -- workflows -----------------------------------------------------------------

    def _loaded(self, path: str, result: LoadedWorkflow | LoadError) -> None:
        changed = self._set_version(path, result)
        if changed is not None:
            self._on_new_version(*changed)

    def _set_version(self, path: str, result: LoadedWorkflow | LoadError, *, timers: bool = True) -> tuple[WorkflowEntry, bool] | None:
        """Record what was loaded; (entry, whether it replaced a running version) when the version is new.

        ``timers``: whether the version's schedules tick (not for ``run-once``, which runs one execution).
        """
        name = _workflow_name(path)
        entry = self.workflows.get(name)
        if entry is None:
            stored = self._stored_workflows().get(name)
            entry = WorkflowEntry(name, path, paused=bool(stored and stored["paused"]), anchor=self.clock.now())
            entry.version = stored["version"] if stored and stored["status"] != RETIRED else None
            self.workflows[name] = entry
        elif entry.status == RETIRED:
            entry = WorkflowEntry(name, path, paused=entry.paused, anchor=self.clock.now())
            self.workflows[name] = entry
        previous_version = entry.version
        entry.path = path
        if isinstance(result, LoadError):
            entry.problems = result.problems
            entry.status = ACTIVE if entry.loaded else INVALID
            self.store.save_workflow(name, path, None, entry.status, [p.to_json() for p in result.problems])
            log.warning("workflow invalid", workflow=name, problems=[str(p) for p in result.problems])
            return None
        entry.problems = []
        old = entry.loaded
        entry.loaded = result
        entry.status = ACTIVE
        version = entry.version = result.workflow.version
        self.store.save_workflow(name, path, version, ACTIVE, [])
        unrecovered, entry.unrecovered = entry.unrecovered, []
        self._recover_rows(unrecovered)
        if unrecovered:
            self._start_waiting_version(entry)  # held back for an execution the recovery ended
        if previous_version == version and old is not None:
            return None  # the same content again: nothing to do
        # What this version's triggers had seen in a previous daemon (stored with the version
        # it counts for: a daemon stopped while a new version waited stored the old one as
        # served, not the memory); a new version's triggers count afresh.
        triggers = (*result.workflow.start_on_events, *result.workflow.stop_on_events)
        changed = previous_version is not None and previous_version != version  # a new workflow has nothing stored
        if changed or any(isinstance(c, AllEventsCondition) for c in triggers):
            entry.trigger_memory = scheduler.EventMemory.from_json(self.store.event_memory(_memory_scope(name), version))
        if previous_version != version:
            log.info("workflow loaded", workflow=name, version=version)
            if result.warnings:
                log.warning("workflow loaded with warnings", workflow=name, warnings=[str(w) for w in result.warnings])
        if timers:
            self._arm_timers(entry)
        return (entry, old is not None or previous_version is not None) if previous_version != version else None

    def _stored_workflows(self) -> dict[str, dict[str, Any]]:
        if self._stored is None:
            self._stored = {row["name"]: row for row in self.store.workflows()}
        return self._stored

    def _on_new_version(self, entry: WorkflowEntry, replaced: bool) -> None:
        if replaced:
            self._apply_change_policy(entry)
        if entry.start_when_idle:
            self._start_waiting_version(entry)  # now, or when the old version's work is done (``_end``)
        elif entry.change_triggered and not entry.paused and not self._stopping:
            self._start_execution(entry, "file changed" if replaced else "file added")

    def _apply_change_policy(self, entry: WorkflowEntry) -> None:
        entry.start_when_idle = False  # what an older version's policy asked for: this version's decides
        running = [e for e in self.executions.values() if e.workflow == entry.name]
        if not running:
            return
        policy = entry.policy
        if policy == ChangePolicy.RESTART:
            for execution in running:
                self._stop_execution(execution, CHANGED)
            # The new version starts once the old one has stopped: no overlap, and a
            # streaming job can start from the savepoint its stop produced.
            entry.start_when_idle = entry.change_triggered
        elif policy == ChangePolicy.WAIT and entry.change_triggered:
            entry.start_when_idle = True

    def _removed(self, name: str) -> None:
        entry = self.workflows.get(name)
        if entry is None or entry.status == RETIRED:
            return
        entry.start_when_idle = False  # no version of it starts any more
        for execution in [e for e in self.executions.values() if e.workflow == name]:
            self._stop_execution(execution, "workflow removed")
        unrecovered, entry.unrecovered = entry.unrecovered, []
        for row in unrecovered:
            self.store.end_execution(row["id"], Status.KILLED.value)
            self.store.forget_event_memory(_memory_scope(row["id"]))
            self._reattach_orphans(row)
        self.store.forget_event_memory(_memory_scope(name))
        if entry.timers is not None:
            entry.timers.cancel()
        entry.status = RETIRED
        entry.loaded = None
        entry.problems = []
        self.store.save_workflow(name, entry.path, None, RETIRED, [])
        log.info("workflow retired", workflow=name)

    def set_paused(self, name: str, paused: bool) -> None:
        entry = self._entry(name)
        entry.paused = paused
        self.store.set_paused(name, paused)

    def _entry(self, name: str) -> WorkflowEntry:
        entry = self.workflows.get(name)
        if entry is None or entry.status == RETIRED:
            raise EngineError(f"no workflow named '{name}'")
        return entry

    # -- timers ---------------------------------------------------------------------

    def _schedules(self, entry: WorkflowEntry) -> list[tuple[str, PeriodicConfig]]:
        assert entry.loaded is not None
        workflow = entry.loaded.workflow
        schedules = [("", workflow.periodic_config)] if workflow.periodic_config else []
        schedules += [(job, graph.config.periodic_config) for job, graph in workflow.jobs.items() if graph.config.periodic_config]
        return schedules

    def next_runs(self, entry: WorkflowEntry) -> list[tuple[str, PeriodicConfig, float]]:
        """(job, or '' for the whole workflow; its schedule; the slot its timer fires next) of each schedule.

        What ``systemctl list-timers`` shows as NEXT: at or before now means due (firing,
        or waiting for the run it must not overlap). Paused workflows keep their timers'
        slots, recorded but not run.
        """
        if entry.loaded is None or entry.status != ACTIVE:
            return []
        found = []
        for job, config in self._schedules(entry):
            # A slot waiting for its run comes first; else the one its timer sleeps until
            # (a listing of thousands of cron workflows must not compute each schedule again).
            waiting = entry.deferred_ticks.get(job) if job else entry.queued_tick
            slot = waiting if waiting is not None else entry.next_slots.get(job)
            if slot is None:  # its timer has not started yet
                try:
                    slot = scheduler.next_slot(config, self._last_tick(entry.name, job), self.clock.now(), entry.anchor)
                except Exception:  # noqa: BLE001 - one schedule that cannot say must not hide the others (its timer logs why)
                    continue
            found.append((job, config, slot))
        return found

    def _arm_timers(self, entry: WorkflowEntry) -> None:
        """(Re)start the workflow's timers: one task holding one timer per schedule."""
        if entry.timers is not None:
            entry.timers.cancel()
            entry.timers = None
        entry.next_slots = {}
        schedules = self._schedules(entry)
        if not schedules:
            return
        # One scope per workflow, entered by exactly one task (a scope is a single 'with' block).
        entry.timers = anyio.CancelScope()
        self._start_task(self._run_timers, entry.timers, entry.name, schedules, entry.anchor, what=f"timers of {entry.name}")

    async def _run_timers(
        self, scope: anyio.CancelScope, workflow: str, schedules: list[tuple[str, PeriodicConfig]], anchor: float
    ) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                for job, config in schedules:
                    tg.start_soon(self._timer, workflow, job, config, anchor)

    async def _timer(self, workflow: str, job: str, config: PeriodicConfig, anchor: float) -> None:
        """One schedule's ticks for ever; a failure is logged and the timer starts again after a pause."""
        failures = 0
        while True:
            try:
                await self._ticks_of(workflow, job, config, anchor)
            except Exception:
                failures += 1
                self.contained_errors += 1
                log.exception("timer failed; it starts again", workflow=workflow, job=job or None, failures=failures)
                await self.clock.sleep_until(self.clock.now() + min(TIMER_RESTART_MAX, 2.0**failures))

    async def _ticks_of(self, workflow: str, job: str, config: PeriodicConfig, anchor: float) -> None:
        last = self._last_tick(workflow, job)
        while True:
            slot = scheduler.next_slot(config, last, self.clock.now(), anchor)
            if (entry := self.workflows.get(workflow)) is not None:
                entry.next_slots[job] = slot
            await self.clock.sleep_until(slot)
            self.post(Tick(workflow, job, slot))
            last = slot

    def _last_tick(self, workflow: str, job: str) -> float | None:
        """The slot a schedule fired last: kept here, read from the store once (it may lag behind when degraded)."""
        key = (workflow, job)
        if key not in self._ticks:
            self._ticks[key] = self.store.last_tick(workflow, job)
        return self._ticks[key]

    def _record_tick(self, workflow: str, job: str, slot: float) -> None:
        self._ticks[(workflow, job)] = slot
        self.store.record_tick(workflow, job, slot)

    def _tick(self, workflow: str, job: str, slot: float) -> None:
        """A slot came. Recorded with what it starts, in one commit: after a restart it is neither lost nor fired again."""
        entry = self.workflows.get(workflow)
        if entry is None or entry.loaded is None or entry.status != ACTIVE or self._stopping:
            return
        if job and job not in entry.loaded.workflow.jobs:
            return  # a tick of an older version's schedule
        last = self._last_tick(workflow, job)
        if last is not None and slot <= last:
            return  # fired already (before a restart): never twice
        if entry.paused:
            self._record_tick(workflow, job, slot)
            return
        if not job:
            self._workflow_tick(entry, slot)
            return
        open_executions = [e for e in self.executions.values() if e.workflow == workflow and e.stop_reason is None]
        if open_executions and (state := open_executions[-1].states.get(job)) is not None and state.running:
            if entry.loaded.workflow.on_overlap == OverlapPolicy.SKIP:
                self._skip_tick(entry, job, slot)
                return
            # The job still runs (maybe taken over after a restart, this being its catch-up
            # tick): the slot waits, unrecorded, and starts the job when this run ends.
            # Slots coming meanwhile coalesce into the latest.
            entry.deferred_ticks[job] = slot
            return
        entry.deferred_ticks.pop(job, None)
        self._record_tick(workflow, job, slot)
        if open_executions:
            self._apply(open_executions[-1], [scheduler.Decision(job, JobAction.START, _trigger(slot))])
        else:
            self._start_execution(entry, _trigger(slot), only_job=job)

    def active_executions(self, workflow: str) -> list[ExecutionRun]:
        """The workflow's executions with jobs running or due: those its overlap rules count.

        An execution left open only for the events its rules wait for is not active (a new
        one ends it); one stopping is, until its jobs have ended.
        """
        return [e for e in self.executions.values() if e.workflow == workflow and not e.idle]

    def _workflow_tick(self, entry: WorkflowEntry, slot: float) -> None:
        """A workflow-level slot: start an execution, or skip or queue it while one is active.

        ``on_overlap: queue`` (the default) keeps at most one slot waiting, unrecorded; a
        later slot replaces it (coalesced, as a downtime's missed slots are). ``allow``
        starts beside the active ones up to ``max_active_executions``, then queues.
        """
        assert entry.loaded is not None
        if self._room_for_tick(entry):
            entry.queued_tick = None  # an older queued slot is coalesced into this one
            self._record_tick(entry.name, "", slot)
            self._start_execution(entry, _trigger(slot))
        elif entry.loaded.workflow.on_overlap == OverlapPolicy.SKIP:
            self._skip_tick(entry, "", slot)
        else:
            if entry.queued_tick is not None:
                log.info("queued periodic slot coalesced into a later one", workflow=entry.name, slot=_trigger(entry.queued_tick))
            entry.queued_tick = slot
            active = len(self.active_executions(entry.name))
            log.info("periodic slot queued until the active execution ends", workflow=entry.name, slot=_trigger(slot), active=active)

    def _room_for_tick(self, entry: WorkflowEntry) -> bool:
        """Whether a workflow-level slot may start an execution now, under ``on_overlap`` and the limit."""
        assert entry.loaded is not None
        active = len(self.active_executions(entry.name))
        return (active == 0 or entry.loaded.workflow.on_overlap == OverlapPolicy.ALLOW) and not self._at_limit(entry, active)

    def _at_limit(self, entry: WorkflowEntry, active: int) -> bool:
        """Whether ``active`` executions of the workflow reach its ``max_active_executions``."""
        assert entry.loaded is not None
        limit = entry.loaded.workflow.max_active_executions
        return limit is not None and active >= limit

    def _count_skipped(self, entry: WorkflowEntry) -> None:
        """Count a start not made because executions were active: the workflow's count, and the daemon's (never reset)."""
        entry.skipped_starts += 1
        self.skipped_starts += 1

    def _skip_tick(self, entry: WorkflowEntry, job: str, slot: float) -> None:
        """Drop a slot that came while its execution (or job) was active: recorded as fired, logged, counted."""
        self._record_tick(entry.name, job, slot)
        self._count_skipped(entry)
        log.info("periodic slot skipped: still active (on_overlap: skip)", workflow=entry.name, job=job or None, slot=_trigger(slot))

    def _start_queued_tick(self, workflow: str) -> None:
        """Start the slot queued while an execution was active, once none is (or queue it again)."""
        entry = self.workflows.get(workflow)
        if entry is None or entry.queued_tick is None or entry.loaded is None or not self._room_for_tick(entry):
            return
        slot, entry.queued_tick = entry.queued_tick, None
        if entry.loaded.workflow.periodic_config is not None:
            self._tick(workflow, "", slot)  # paused, removed or stopping meanwhile: handled as any tick

    def _start_deferred_tick(self, execution: ExecutionRun, job: str) -> None:
        """Start a job whose schedule's slot came while it ran (see ``_tick``)."""
        entry = self.workflows.get(execution.workflow)
        if entry is None or job not in entry.deferred_ticks or execution.states[job].running or self._stopping:
            return
        if entry.loaded is None or entry.status != ACTIVE or entry.paused or execution.stop_reason is not None:
            return
        slot = entry.deferred_ticks.pop(job)
        last = self._last_tick(execution.workflow, job)
        if last is not None and slot <= last:
            return
        self._record_tick(execution.workflow, job, slot)
        self._apply(execution, [scheduler.Decision(job, JobAction.START, _trigger(slot))])

    # -- executions ------------------------------------------------------------------

    def start_execution(
        self, workflow: str, only_job: str | None = None, trigger: str = "manual", params: dict[str, str] | None = None
    ) -> int:
        """Start an execution by request; refused (EngineError) beyond the workflow's ``max_active_executions``.

        ``params`` reach every job of the execution as ``AIFLOWD_PARAM_<NAME>``.
        """
        entry = self._entry(workflow)
        self._refuse_while_stopping()
        if entry.loaded is None:
            problems = "; ".join(str(p) for p in entry.problems[:3])
            raise EngineError(f"workflow '{workflow}' has no valid version: {problems}")
        if only_job is not None and only_job not in entry.loaded.workflow.jobs:
            raise EngineError(f"workflow '{workflow}' has no job '{only_job}' (jobs: {', '.join(entry.loaded.workflow.jobs)})")
        try:
            checked = check_params(params)
        except ValueError as err:
            raise EngineError(str(err)) from None
        if self._at_limit(entry, active := len(self.active_executions(workflow))):
            raise EngineError(
                f"workflow '{workflow}' has {active} active execution{'s' if active > 1 else ''}, its max_active_executions:"
                f" wait for one to end, or stop one (aiflowctl workflow stop-execution {workflow})"
            )
        return self._start_execution(entry, trigger, only_job, params=checked).id

    def _start_execution(
        self,
        entry: WorkflowEntry,
        trigger: str,
        only_job: str | None = None,
        *,
        params: dict[str, str] | None = None,
        event: Event | None = None,
    ) -> ExecutionRun:
        assert entry.loaded is not None
        workflow = entry.loaded.workflow
        if only_job is None:
            entry.start_when_idle = False  # this start is the one a held-back version waited for
        for older in [e for e in self.executions.values() if e.workflow == entry.name and e.idle]:
            self._end(older)  # an idle execution waiting for events gives way to the new one
        params = params or {}
        execution_id = self.store.create_execution(
            workflow.name, workflow.version, trigger, only_job, params=params, event=None if event is None else dataclasses.asdict(event)
        )
        execution = ExecutionRun(execution_id, workflow.name, entry.loaded, trigger, only_job, params=params, event=event)
        execution.states = {job: scheduler.JobState() for job in workflow.jobs}
        self.executions[execution_id] = execution
        log.info("execution started", workflow=workflow.name, execution=execution_id, trigger=trigger)
        decisions = scheduler.initial_decisions(workflow, only_job)
        # A job stopped with a savepoint because its workflow changed resumes at once, even
        # one that waits for an event: it was running, and the savepoint is its state.
        started = {d.job for d in decisions}
        for job in [j for j in entry.restore if j in workflow.jobs and j not in started and only_job in (None, j)]:
            decisions.append(scheduler.Decision(job, JobAction.START, CHANGED, kind=scheduler.RESTART))
        self._apply(execution, decisions)
        self._maybe_end(execution)
        return execution

    def run_workflow(self, loaded: LoadedWorkflow, only_job: str | None = None, trigger: str = "run-once") -> ExecutionRun:
        """Serve ``loaded`` and start one execution of it: no other trigger (file, schedule) starts another."""
        self._set_version(loaded.workflow.path, loaded, timers=False)
        return self._start_execution(self.workflows[loaded.workflow.name], trigger, only_job)

    def stop_execution(self, workflow: str, execution_id: int | None = None) -> list[int]:
        chosen = [e for e in self.executions.values() if e.workflow == workflow and (execution_id is None or e.id == execution_id)]
        if not chosen:
            raise EngineError(f"no running execution of '{workflow}'" + (f" with id {execution_id}" if execution_id else ""))
        for execution in chosen:
            self._stop_execution(execution, "stopped by request")
        return [e.id for e in chosen]

    def _stop_execution(self, execution: ExecutionRun, reason: str) -> None:
        execution.stop_reason = reason
        execution.pending.clear()
        execution.restart_after_stop.clear()
        for run in execution.running.values():
            self._to_stop.append((run, reason))
        self._maybe_end(execution)

    def _stop_everything(self, reason: str, kept: set[int], kept_open: set[int]) -> None:
        """Stop every execution but those a daemon keeps across its stop: their ids go to ``kept`` (jobs and all) and ``kept_open``."""
        self._stopping = True
        for entry in self.workflows.values():
            if entry.start_when_idle and entry.loaded is not None:
                # A new version waits for the old one's execution, which this stop ends or
                # leaves open: the store keeps the old version, so the next start finds the
                # file changed and applies ``on_change`` again instead of forgetting it.
                older = [e.loaded.workflow.version for e in self.executions.values() if e.workflow == entry.name]
                if older and older[-1] != entry.loaded.workflow.version:
                    self.store.save_workflow(entry.name, entry.path, older[-1], ACTIVE, [])
        for execution in list(self.executions.values()):
            handles = [run.supervisor.handle if run.supervisor is not None else None for run in execution.running.values()]
            if self.keep_open_for_events and handles and all(getattr(h, "keep_on_daemon_stop", False) for h in handles):
                for handle in handles:
                    handle.kept = True  # type: ignore[union-attr]  # its controller's stop leaves it running
                kept.add(execution.id)
                continue
            if execution.stop_reason is None and self._kept_open(execution):
                # Its jobs stop with the daemon; it waits for its events again in the next one.
                execution.quiet = anyio.Event()
                execution.pending.clear()
                execution.restart_after_stop.clear()
                for run in execution.running.values():
                    self._to_stop.append((run, reason))
                kept_open.add(execution.id)
                if execution.idle:
                    execution.quiet.set()
                continue
            self._stop_execution(execution, reason)

    def _refuse_while_stopping(self) -> None:
        """Nothing starts once the daemon stops: a request says so, rather than being taken and never run."""
        if self._stopping:
            raise EngineError("aiflowd is stopping: ask again once it is back")

    def job_action(self, workflow: str, job: str, action: JobAction) -> int:
        """START, STOP or RESTART a job in the workflow's latest open execution (START opens one)."""
        entry = self._entry(workflow)
        if action != JobAction.STOP:
            self._refuse_while_stopping()
        if entry.loaded is None or job not in entry.loaded.workflow.jobs:
            raise EngineError(f"workflow '{workflow}' has no job '{job}'")
        open_executions = [e for e in self.executions.values() if e.workflow == workflow and e.stop_reason is None]
        if action == JobAction.STOP and not any(e.states[job].running for e in open_executions):
            stopping = [e for e in self.executions.values() if e.workflow == workflow and job in e.running]
            if stopping:
                return stopping[-1].id  # its execution is being stopped (the daemon stops): so is the job
        if not open_executions:
            if action == JobAction.STOP:
                raise EngineError(f"job '{job}' of '{workflow}' is not running")
            return self._start_execution(entry, "manual", only_job=job).id
        execution = open_executions[-1]
        running = execution.states[job].running
        if action == JobAction.STOP and not running:
            raise EngineError(f"job '{job}' of '{workflow}' is not running")
        if action == JobAction.START and running:
            raise EngineError(f"job '{job}' of '{workflow}' is already running (use restart-execution)")
        kind = scheduler.RESTART if action == JobAction.RESTART and execution.states[job].attempt else scheduler.START
        self._apply(execution, [scheduler.Decision(job, action, BY_REQUEST, kind=kind)])
        return execution.id

    def _rules(self, execution: ExecutionRun, event: Event) -> list[scheduler.Decision]:
        """What the execution's rules ask for on ``event``, but for the jobs whose scheduling is held."""
        if self._stopping:
            return []  # nothing may start, and a several-event condition must not use its events up
        decisions = scheduler.on_event(execution.loaded.workflow, execution.states, event, execution.memory)
        self._store_memory(_memory_scope(execution.id), execution.memory, execution.loaded.workflow.version)
        return [d for d in decisions if d.job not in execution.held] if execution.held else decisions

    def _store_memory(self, scope: str, memory: scheduler.EventMemory, version: str | None) -> None:
        """Store what several-event conditions have seen when it changed: a restart forgets none of it."""
        if memory.changed:
            memory.changed = False
            self.store.save_event_memory(scope, memory.to_json(), version)

    def hold_job_rules(self, execution_id: int, job: str, held: bool) -> None:
        """Stop (``held``) or resume acting on the rules of ``job`` in one open execution."""
        execution = self.executions.get(execution_id)
        if execution is None:
            raise EngineError(f"no running execution with id {execution_id}")
        if job not in execution.loaded.workflow.jobs:
            raise EngineError(f"workflow '{execution.workflow}' has no job '{job}'")
        if held:
            execution.held.add(job)
        else:
            execution.held.discard(job)

    def _apply(self, execution: ExecutionRun, decisions: list[scheduler.Decision]) -> None:
        for decision in decisions:
            if execution.stop_reason is not None:
                return
            if self._stopping and decision.action != JobAction.STOP:
                continue  # nothing starts while the daemon stops; a stop still stops
            if decision.delay > 0:
                execution.pending[decision.job] = decision
                due = self.clock.now() + decision.delay
                self._start_task(self._due_later, execution.id, decision, due, what="retry delay")
                continue
            state = execution.states[decision.job]
            starts = decision.action == JobAction.RESTART or (decision.action == JobAction.START and not state.running)
            if starts and decision.kind != scheduler.RETRY:
                _note_job_event(execution, decision)
            if decision.action == JobAction.START and not state.running:
                self._start_job(execution, decision.job, decision.reason, decision.kind)
            elif decision.action == JobAction.RESTART:
                if state.running:
                    execution.restart_after_stop[decision.job] = decision.reason
                    run = execution.running[decision.job]
                    run.stopped_by = "restart"
                    self._to_stop.append((run, f"restarted ({decision.reason})"))
                else:
                    self._start_job(execution, decision.job, decision.reason, decision.kind)
            elif decision.action == JobAction.STOP and state.running:
                run = execution.running[decision.job]
                handle = run.supervisor.handle if run.supervisor is not None else None
                if getattr(handle, "kept", False):
                    handle.kept = False  # type: ignore[union-attr]  # asked to stop: not kept across the daemon's stop
                run.stopped_by = "request" if decision.reason == BY_REQUEST else "rule"
                self._to_stop.append((run, f"stopped ({decision.reason})"))

    async def _due_later(self, execution_id: int, decision: scheduler.Decision, due: float) -> None:
        await self.clock.sleep_until(due)
        self.post(Due(execution_id, scheduler.Decision(decision.job, decision.action, decision.reason, kind=decision.kind)))

    def _start_job(self, execution: ExecutionRun, job: str, reason: str, kind: str = scheduler.START) -> None:
        state = execution.states[job]
        state.attempt += 1
        if kind != scheduler.RETRY:
            state.fresh_attempt = state.attempt  # retries are counted from here
        state.status = Status.INIT
        generated = execution.loaded.jobs[job]
        run = self._job_run(execution, job, generated.job_type, state.attempt, reason)
        run.kind = kind
        entry = self.workflows.get(execution.workflow)
        if entry is not None and job in entry.restore:
            run.env.restore_savepoint = entry.restore.pop(job)
            run.env.restore_savepoints = entry.restore_each.pop(job, None)
            reason = f"{reason}, from savepoint {run.env.restore_savepoint}"
            run.reason = reason
        run.id = self.store.create_job_execution(
            execution_id=execution.id,
            workflow=execution.workflow,
            job=job,
            job_type=run.job_type,
            attempt=run.attempt,
            status=Status.INIT.value,
            reason=reason,
            kind=kind,
            created_at=self.clock.now(),
            log_path=run.env.log_path,
            working_dir=run.env.working_dir,
        )
        execution.running[job] = run
        self._to_launch.append(run)
        self._notify(run)

    def _job_run(self, execution: ExecutionRun, job: str, job_type: str, attempt: int, reason: str) -> JobRun:
        workflow = execution.workflow
        info = JobExecutionInfo(workflow, job, str(execution.id), f"{execution.id}.{job}.{attempt}", attempt)
        env = JobRuntimeEnv(
            working_dir=self.paths.working_dir(workflow, execution.id, job, attempt),
            log_path=self.paths.log_path(workflow, execution.id, job, attempt),
            workflow_dir=execution.loaded.workflow.workflow_dir,
            job_execution_info=info,
            settings=self._job_settings(),
            variables=_job_variables(execution, job),
        )
        run = JobRun(0, execution, job, job_type, attempt, env, reason)
        env.reporter = self._reporter(run)
        return run

    def _reporter(self, run: JobRun) -> Callable[[str | None, str, str, float | None], None]:
        """What ``run``'s ``env.report_condition`` calls: a message into the inbox, from any thread."""
        loop_thread = threading.get_ident()

        def report(condition: str | None, detail: str, subject: str, since: float | None) -> None:
            message = JobCondition(run, condition, since, detail, subject)
            if threading.get_ident() == loop_thread:
                self.post(message)
            else:  # a blocking controller, in a worker thread of the loop
                try:
                    anyio.from_thread.run_sync(self.post, message)
                except RuntimeError:  # a thread of the plugin's own, which cannot reach the loop
                    log.warning("a job's condition was reported from a thread aiflowd did not start; ignored", job=run.job)

        return report

    def _job_condition(self, run: JobRun, condition: str | None, since: float | None, detail: str, subject: str) -> None:
        """Record (or clear) a running job's condition; its status, and so its rules, stay as they are."""
        if run.status.is_final or run.id == 0:
            return
        if condition == run.condition:  # told again (after a restart, say): it began when first told
            run.condition_subject = subject if condition else ""
            return
        run.condition = condition or None
        run.condition_since = (since if since is not None else self.clock.now()) if condition else None
        run.condition_subject = subject if condition else ""
        self.store.update_job_execution(
            run.id, condition=run.condition, condition_since=run.condition_since, message=(detail or None) if condition else None
        )
        log.info(
            "job condition",
            workflow=run.execution.workflow,
            job=run.job,
            condition=run.condition or "none",
            since=run.condition_since,
            subject=subject,
        )

    def _job_settings(self) -> dict[str, Any]:
        """The settings a job's controller gets: the daemon's, with the control socket in ``job_env``.

        So a job reaches the daemon that runs it (``aiflowd.client``, AIFlow's notification
        client) without configuration; a ``job_env`` naming ``AIFLOWD_SOCKET`` wins.
        """
        if not self.control_socket:
            return self.settings
        return {**self.settings, "job_env": {"AIFLOWD_SOCKET": self.control_socket, **(self.settings.get("job_env") or {})}}

    async def _supervise(self, run: JobRun) -> None:
        try:
            outcome = await self._run_job(run)
            handle = run.supervisor.handle if run.supervisor is not None else None
            if not isinstance(getattr(handle, "ended_at", None), float):
                outcome.ended_at = self.clock.now()  # it ended now, not while no daemon watched
        except Exception as err:
            self.contained_errors += 1
            log.exception("job supervision failed", workflow=run.execution.workflow, job=run.job)
            outcome = JobOutcome(Status.FAILED, message=f"aiflowd failed to supervise the job: {type(err).__name__}: {err}")
            if run.recovered and (run.supervisor is None or run.supervisor.handle is None):
                run.lost = True  # it may run still, out of sight: starting it again could run it twice
                outcome.message = LOST + str(outcome.message)
        self.post(JobEnded(run, outcome))

    async def _run_job(self, run: JobRun) -> JobOutcome:
        plugin = self.registry.get(run.job_type) if run.job_type in self.registry else None
        if plugin is None:
            return JobOutcome(Status.FAILED, message=f"no plugin for job type '{run.job_type}' any more")
        execution = run.execution
        job = execution.loaded.jobs.get(run.job) or Job(JobConfig(run.job, run.job_type))
        handle: JobHandle | None = None
        if run.recovered:
            record = dict(run.recovered_handle or {}, job_execution_id=run.env.job_execution_info.job_execution_id)
            handle = await call(plugin.controller.reattach, record, run.env)
            if handle is None and (run.recovered_handle is not None or not _can_reattach(plugin.controller)):
                # Recorded as started, or its controller cannot look for it: it may still run.
                # Starting it again could run it twice, so it ends here, and is not retried.
                run.lost = True
                noted = plugin_processes.noted_processes(run.recovered_handle)
                if noted and not _can_reattach(plugin.controller):
                    return await self._stop_noted(run, noted)
                if run.recovered_handle is not None:
                    message = LOST + "the job could not be found again after a restart"
                else:
                    message = LOST + f"aiflowd restarted while starting it, and job type '{run.job_type}' cannot tell whether it started"
                return JobOutcome(Status.FAILED, message=message, ended_at=self.clock.now())
            if handle is not None and getattr(handle, "job", None) is None:
                handle.job = job
        async with self.limiter:
            if run.stop_reason is not None and handle is None:
                return JobOutcome(Status.KILLED, message=run.stop_reason)

            async def running(handle: JobHandle) -> None:
                self.post(JobRunning(run, plugin_processes.handle_record(handle)))

            controller = plugin.controller
            if handle is None and not _can_reattach(controller):
                controller = plugin_processes.TrackingController(controller)  # its processes are stopped after a restart
            run.supervisor = JobSupervisor(controller, job, run.env, timeout=job.job_config.timeout, on_running=running, handle=handle)
            if run.stop_reason is not None:
                run.supervisor.request_stop(run.stop_reason)
            return await run.supervisor.run()

    async def _stop_noted(self, run: JobRun, noted: list[tuple[int, int]]) -> JobOutcome:
        """End a job of a plugin without ``reattach`` after a restart: stop the processes it had started."""
        grace = float(self.settings.get("stop_grace_period", 10.0))
        with anyio.CancelScope(shield=True):
            stopped = await anyio.to_thread.run_sync(plugin_processes.stop_noted, noted, grace)
        if not stopped:
            message = f"job type '{run.job_type}' cannot reattach, and none of the processes it had started ran any more"
            return JobOutcome(Status.FAILED, message=LOST + message, ended_at=self.clock.now())
        pids = ", ".join(str(pid) for pid in stopped)
        message = f"job type '{run.job_type}' cannot reattach: the processes it had started (pid {pids}) were stopped"
        return JobOutcome(Status.KILLED, message=LOST + message, ended_at=self.clock.now())

    def _job_running(self, run: JobRun, handle_record: dict[str, Any]) -> None:
        if run.status.is_final:
            return
        if run.recovered and run.status == Status.RUNNING:
            self.store.update_job_execution(run.id, handle=handle_record)
            return  # reattached: its RUNNING was announced before the restart, rules fired then
        run.status = Status.RUNNING
        run.started_at = self.clock.now()
        execution = run.execution
        execution.states[run.job].status = Status.RUNNING
        self.store.update_job_execution(run.id, status=Status.RUNNING.value, started_at=run.started_at, handle=handle_record)
        self._notify(run)
        event = scheduler.job_status_event(execution.workflow, run.job, Status.RUNNING, run.started_at)
        self._apply(execution, self._rules(execution, event))

    def _record_end(self, run: JobRun, outcome: JobOutcome) -> None:
        """Write a job execution's end and forget it as running; the decisions that follow are the caller's."""
        run.status, run.exit_code, run.message, run.ended_at = outcome.status, outcome.exit_code, outcome.message, outcome.ended_at
        run.started_at = run.started_at or outcome.started_at
        run.condition, run.condition_since, run.condition_subject = None, None, ""
        self.store.update_job_execution(
            run.id,
            condition=None,
            condition_since=None,
            status=outcome.status.value,
            ended_at=outcome.ended_at,
            exit_code=outcome.exit_code,
            message=outcome.message,
            handle=outcome.handle_record,
        )
        status_file = getattr(run.supervisor.handle if run.supervisor is not None else None, "status_path", None)
        if isinstance(status_file, str) and run.status.is_final:
            self._settled_status_files.append(status_file)
        execution = run.execution
        if execution.running.get(run.job) is run:
            del execution.running[run.job]
        execution.states[run.job].status = outcome.status
        self._notify(run)

    def _notify(self, run: JobRun) -> None:
        try:
            self.on_job_change(run)
        except Exception:
            self.contained_errors += 1
            log.exception("job change callback failed", workflow=run.execution.workflow, job=run.job)

    def _job_ended(self, run: JobRun, outcome: JobOutcome) -> None:
        if run.status.is_final:
            return  # recorded already (killed at once by a second stop signal)
        self._record_end(run, outcome)
        execution = run.execution
        savepoint = (outcome.handle_record or {}).get("savepoint_path")
        entry = self.workflows.get(execution.workflow)
        if savepoint and execution.stop_reason == CHANGED and entry is not None:
            entry.restore[run.job] = str(savepoint)
            each = (outcome.handle_record or {}).get("savepoint_paths")
            if isinstance(each, list) and len(each) > 1:
                entry.restore_each[run.job] = [None if p is None else str(p) for p in each]
        state = execution.states[run.job]
        if execution.stop_reason is None:
            decisions: list[scheduler.Decision]
            event: Event | None
            if run.lost:  # never retried: it may still run
                decisions, event = [], scheduler.job_status_event(execution.workflow, run.job, outcome.status, self.clock.now())
            else:
                decisions, event = scheduler.on_job_ended(execution.loaded.workflow, run.job, state, outcome.status)
            if run.job in execution.restart_after_stop:
                why = execution.restart_after_stop.pop(run.job)
                decisions = [scheduler.Decision(run.job, JobAction.START, why, kind=scheduler.RESTART)]
            self._apply(execution, decisions)
            if event is not None:
                self._apply(execution, self._rules(execution, event))
            self._start_deferred_tick(execution, run.job)
        if self.alerts is not None:
            self._contained(self.alerts.job_ended, run, _retrying(execution, run.job))
        self._maybe_end(execution)

    def _kept_open(self, execution: ExecutionRun) -> bool:
        """Whether the execution stays open once its jobs are done: rules may still start jobs when their events come."""
        return self.keep_open_for_events and execution.listens_for_events and execution.only_job is None

    def _maybe_end(self, execution: ExecutionRun) -> None:
        if not execution.idle or execution.id not in self.executions:
            return
        if execution.stop_reason is not None or not self._kept_open(execution):
            self._end(execution)
        else:
            execution.quiet.set()
            entry = self.workflows.get(execution.workflow)
            if entry is not None and not self._recovering:
                self._start_waiting_version(entry)  # its work is done: a held-back version may start
        self._start_queued_tick(execution.workflow)

    def _end(self, execution: ExecutionRun) -> None:
        status = scheduler.execution_status(execution.states, stopped=execution.stop_reason is not None)
        execution.status = status
        self.store.end_execution(execution.id, status.value)
        if execution.memory.to_json():
            self.store.forget_event_memory(_memory_scope(execution.id))
        del self.executions[execution.id]
        execution.ended.set()
        execution.quiet.set()
        log.info("execution ended", workflow=execution.workflow, execution=execution.id, status=status.value)
        entry = self.workflows.get(execution.workflow)
        if entry is not None and execution.stop_reason == CHANGED and entry.restore:
            entry.start_when_idle = True  # the new version resumes from the savepoints this stop took
        if entry is not None and not self._recovering:
            self._start_waiting_version(entry)

    def _start_waiting_version(self, entry: WorkflowEntry) -> None:
        """Start the version ``on_change`` held back, once no execution of the workflow has work left.

        An execution only open for its events has none: the new one ends it. Nothing
        starts while the daemon stops (see ``_stop_everything``) or the workflow is paused.
        """
        if not entry.start_when_idle or any(e.workflow == entry.name and not e.idle for e in self.executions.values()):
            return
        entry.start_when_idle = False
        if entry.loaded is not None and entry.status == ACTIVE and not entry.paused and not self._stopping:
            self._start_execution(entry, "file changed")

    # -- events ----------------------------------------------------------------------

    def send_event(self, event: Event) -> None:
        self.post(UserEvent(event))

    def user_event(self, event: Event) -> None:
        """Record a user event and let every open execution's rules and every start trigger see it.

        Refused while the daemon stops: no rule could act on it, and a sender told so can
        send it again to the next daemon, where the rules it was meant for still wait.
        """
        self._refuse_while_stopping()
        self._user_event(event)

    def _user_event(self, event: Event) -> None:
        """Record the event; the rules and triggers of every workflow not paused see it.

        A paused workflow's executions run on, but its event rules hold, as its timers do:
        they do not see the event (nor count it toward a several-event condition) at all.
        """
        self.store.add_event(event.key, event.value, event.event_type, event.namespace, event.sender, event.time)
        if self._stopping:
            log.warning("event recorded but not acted on: aiflowd is stopping", key=event.key, value=event.value)
            return
        for execution in list(self.executions.values()):
            entry = self.workflows.get(execution.workflow)
            if execution.stop_reason is None and not (entry is not None and entry.paused):
                self._apply(execution, self._rules(execution, event))
                self._maybe_end(execution)
        for entry in list(self.workflows.values()):
            if entry.loaded is None or entry.status != ACTIVE or entry.paused:
                continue
            workflow, why = entry.loaded.workflow, f"event {event.key}={event.value}"
            if workflow.stop_on_events and scheduler.triggers_met(workflow.stop_on_events, event, entry.trigger_memory, "stop"):
                for execution in [e for e in self.executions.values() if e.workflow == entry.name and e.stop_reason is None]:
                    self._stop_execution(execution, f"stopped on {why}")
            triggers = workflow.start_on_events
            start = bool(triggers) and scheduler.triggers_met(triggers, event, entry.trigger_memory, "start")
            self._store_memory(_memory_scope(entry.name), entry.trigger_memory, entry.version)
            if not start:
                continue
            if self._at_limit(entry, active := len(self.active_executions(entry.name))):
                self._count_skipped(entry)
                log.info("event trigger skipped: max_active_executions reached", workflow=entry.name, trigger=why, active=active)
                continue
            self._start_execution(entry, why, event=event)

    # -- recovery --------------------------------------------------------------------

    def _recover(self) -> None:
        """Take over what a previous daemon left: open executions and their job executions.

        Jobs with a record are reattached (or their end is learned); jobs decided but
        never started are started now; a retry that was waiting is scheduled again. The
        workflow versions must have been loaded (``load_initial``) before.
        """
        self._recover_rows(reversed(self.store.executions(status=Status.RUNNING.value, limit=100_000)))

    def _recover_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Take over these executions, each contained; an end meanwhile starts no held-back version yet."""
        self._recovering = True
        try:
            for row in rows:
                with self._containing("recovering an execution", workflow=row["workflow"], execution=row["id"]):
                    self._recover_execution(row)
        finally:
            self._recovering = False

    def _recover_execution(self, row: dict[str, Any]) -> None:
        entry = self.workflows.get(row["workflow"])
        if entry is None or entry.status == RETIRED:  # its workflow is gone: its jobs are found only to be stopped
            self.store.end_execution(row["id"], Status.KILLED.value)
            self.store.forget_event_memory(_memory_scope(row["id"]))
            self._reattach_orphans(row)
            return
        if entry.loaded is None:
            # Invalid now, or not loaded yet: killing its jobs (and starting them again once
            # the workflow loads) would run them twice. They run on; they are taken over then.
            entry.unrecovered.append(row)
            log.warning("execution left as it runs until its workflow loads", workflow=entry.name, execution=row["id"])
            return
        execution = ExecutionRun(row["id"], row["workflow"], entry.loaded, row["trigger"], row["only_job"])
        execution.params, execution.event = dict(row.get("params") or {}), _event_from_record(row.get("event"))
        # Counted for the rules of the version it ran: a version edited in meanwhile counts afresh.
        seen = self.store.event_memory(_memory_scope(execution.id), entry.loaded.workflow.version)
        execution.memory = scheduler.EventMemory.from_json(seen)
        execution.states = {job: scheduler.JobState() for job in entry.loaded.workflow.jobs}
        self.executions[execution.id] = execution
        ended_at: dict[str, float] = {}
        lost: set[str] = set()
        for job_row in reversed(self.store.job_executions(execution_id=row["id"], limit=100_000)):
            job = job_row["job"]
            ended_at[job] = job_row["ended_at"] or 0.0
            if (job_row["message"] or "").startswith(LOST):
                lost.add(job)
            else:
                lost.discard(job)
            state = execution.states.setdefault(job, scheduler.JobState())
            state.attempt = max(state.attempt, job_row["attempt"])
            kind = job_row.get("kind") or scheduler.START
            if kind != scheduler.RETRY:
                state.fresh_attempt = job_row["attempt"]
            state.status = Status(job_row["status"])
            if not state.status.is_final:
                run = self._job_run(execution, job, job_row["job_type"], job_row["attempt"], job_row["reason"])
                run.id, run.status, run.recovered, run.recovered_handle = job_row["id"], state.status, True, job_row["handle"]
                run.kind = kind
                run.created_at, run.started_at = job_row["created_at"], job_row["started_at"]
                # Shown as it was until its controller, polling again, says otherwise.
                run.condition, run.condition_since = job_row.get("condition"), job_row.get("condition_since")
                execution.running[job] = run
                self._to_launch.append(run)
        for job, state in execution.states.items():
            config = entry.loaded.workflow.jobs[job].config if job in entry.loaded.workflow.jobs else None
            retry = state.status == Status.FAILED and state.retries_done < (config.retries if config else 0) and job not in lost
            if config and retry and job not in execution.running:
                delay = max(0.001, ended_at.get(job, 0.0) + config.retry_delay_for(state.retries_done + 1) - self.clock.now())
                reason = f"retry {state.retries_done + 1} of {config.retries}"
                self._apply(execution, [scheduler.Decision(job, JobAction.START, reason, delay=delay, kind=scheduler.RETRY)])
        if entry.loaded.workflow.version != row["version"]:
            self._apply_change_policy(entry)
        self._maybe_end(execution)

    def _reattach_orphans(self, row: dict[str, Any]) -> None:
        """Jobs of a workflow that is gone: found again only to be stopped."""
        for job_row in self.store.job_executions(execution_id=row["id"], statuses=[Status.INIT.value, Status.RUNNING.value]):
            ended = self.clock.now()
            self.store.update_job_execution(job_row["id"], status=Status.KILLED.value, ended_at=ended, message="workflow removed")
            self._start_task(self._stop_orphan, job_row, what="stopping a job of a removed workflow")

    async def _stop_orphan(self, job_row: dict[str, Any]) -> None:
        if job_row["job_type"] not in self.registry:
            return
        controller = self.registry.get(job_row["job_type"]).controller
        execution_id, job, attempt = job_row["execution_id"], job_row["job"], job_row["attempt"]
        info = JobExecutionInfo(job_row["workflow"], job, str(execution_id), f"{execution_id}.{job}.{attempt}", attempt)
        env = JobRuntimeEnv(job_row["working_dir"], job_row["log_path"], "", info, self.settings)
        handle = await call(controller.reattach, dict(job_row["handle"] or {}, job_execution_id=info.job_execution_id), env)
        if handle is None and not _can_reattach(controller):
            noted = plugin_processes.noted_processes(job_row["handle"])
            grace = float(self.settings.get("stop_grace_period", 10.0))
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(plugin_processes.stop_noted, noted, grace)
        if handle is not None:
            with anyio.CancelScope(shield=True):
                await call(controller.stop_job, handle, env)
                await call(controller.cleanup_job, handle, env)


def _retrying(execution: ExecutionRun, job: str) -> bool:
    """Whether the job's failure is being retried: its retry waits out its delay, or has started."""
    later = execution.pending.get(job) or execution.running.get(job)
    return later is not None and later.kind == scheduler.RETRY


def _can_reattach(controller: JobController) -> bool:
    """Whether a controller looks for executions that outlived a daemon (AIFlow-style ones do not)."""
    return getattr(type(controller), "reattach", None) is not JobController.reattach


def _note_job_event(execution: ExecutionRun, decision: scheduler.Decision) -> None:
    """Remember the user event a rule starts a job on (its retries get it too); a start without one forgets it."""
    if decision.event is not None and decision.event.event_type != JOB_STATUS_CHANGED:
        execution.job_events[decision.job] = decision.event
    else:
        execution.job_events.pop(decision.job, None)


def _job_variables(execution: ExecutionRun, job: str) -> dict[str, str]:
    """What a job of ``execution`` gets in its environment: the parameters, and the event that started it.

    The event is the user event whose rule started the job, else the one that started
    the execution; none for a job started otherwise.
    """
    variables = {PARAM_PREFIX + name: value for name, value in execution.params.items()}
    event = execution.job_events.get(job) or execution.event
    if event is not None:
        variables.update(event_variables(event))
    return variables


def _memory_scope(owner: int | str) -> str:
    """Where what several-event conditions have seen is stored: an execution's job rules, a workflow's triggers."""
    return f"execution {owner}" if isinstance(owner, int) else f"workflow {owner}"


def _event_from_record(record: dict[str, Any] | None) -> Event | None:
    return Event(**record) if record else None


def _trigger(slot: float) -> str:
    return f"periodic {datetime.datetime.fromtimestamp(slot).isoformat(timespec='milliseconds')}"


def _workflow_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    name, ext = os.path.splitext(base)
    return name if ext in (".yaml", ".yml") else base
