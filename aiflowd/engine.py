"""The engine: every workflow, execution and job execution aiflowd serves, driven by one loop.

Everything that changes state arrives as a message in one inbox (a workflow loaded or
removed, a job running or ended, an event, a timer tick, a control request). One turn of
the loop handles all waiting messages, asks the pure scheduler what follows, writes it
all to the store in one transaction, and only then acts: starts and stops jobs, answers
requests. So a crash between deciding and acting is repaired on restart from the store,
and persistence costs one commit per turn, not one per job.

Each job execution is its own task under a JobSupervisor; one failing never cancels the
others. ``run-once`` drives the same engine with an in-memory store.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from aiflowd import scheduler
from aiflowd.controllers.supervisor import JobOutcome, JobSupervisor, call
from aiflowd.model import ChangePolicy, Event, EventCondition, JobAction, JobConfig, Status
from aiflowd.plugin_interface import Job, JobExecutionInfo, JobHandle, JobRuntimeEnv, PluginRegistry
from aiflowd.store import Store
from aiflowd.workflows.errors import LoadError, Problem
from aiflowd.workflows.loader import LoadedWorkflow

log = structlog.get_logger("aiflowd.engine")

ACTIVE, INVALID, RETIRED = "active", "invalid", "retired"
CHANGED = "workflow changed"


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
    #: Savepoints the jobs of a stopped older version left, for the new version to start from.
    restore: dict[str, str] = field(default_factory=dict)

    @property
    def change_triggered(self) -> bool:
        workflow = self.loaded.workflow if self.loaded else None
        if workflow is None:
            return False
        scheduled = workflow.periodic_config is not None or any(g.config.periodic_config for g in workflow.jobs.values())
        return not scheduled and not workflow.start_on_events

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
    stop_reason: str | None = None
    status: Status = Status.RUNNING
    ended: anyio.Event = field(default_factory=anyio.Event)

    @property
    def listens_for_events(self) -> bool:
        return any(isinstance(rule.condition, EventCondition) for rule in self.loaded.workflow.rules)

    @property
    def idle(self) -> bool:
        return not self.running and not self.pending


class _Reply:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


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
    ) -> None:
        self.registry = registry
        self.store = store
        self.paths = paths
        self.settings = settings or {}
        self.keep_open_for_events = keep_open_for_events
        self.on_job_change = on_job_change or (lambda run: None)
        self.workflows: dict[str, WorkflowEntry] = {}
        self.executions: dict[int, ExecutionRun] = {}
        self.limiter = anyio.CapacityLimiter(max_concurrent_jobs)
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, Any]](math.inf)
        self._to_launch: list[JobRun] = []
        self._to_stop: list[tuple[JobRun, str]] = []
        self._replies: list[_Reply] = []
        self._task_group: TaskGroup | None = None
        self._stored: dict[str, dict[str, Any]] | None = None

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
                changes = [change for path, result in initial if (change := self._set_version(path, result))]
                loaded = {_workflow_name(path) for path, _ in initial}
                for name, row in self._stored_workflows().items():
                    if row["status"] != RETIRED and name not in loaded and name not in loading:
                        self.workflows[name] = WorkflowEntry(name, row["path"])
                        self._removed(name)  # gone while the daemon was down
                self._recover()
                for entry, replaced in changes:
                    self._on_new_version(entry, replaced)
                self._flush()
                task_status.started()
                while True:
                    batch = [await self._receive.receive()]
                    while True:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except anyio.WouldBlock:
                            break
                    for kind, payload in batch:
                        try:
                            self._handle(kind, payload)
                        except Exception:
                            log.exception("engine message failed", kind=kind)
                    self._flush()

    def post(self, kind: str, payload: Any) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._send.send_nowait((kind, payload))

    async def request(self, fn: Callable[[Engine], Any]) -> Any:
        """Run ``fn(engine)`` inside the loop; its answer once the turn is committed."""
        reply = _Reply()
        self.post("call", (fn, reply))
        await reply.done.wait()
        if reply.error is not None:
            raise reply.error
        return reply.value

    async def stop_all(self, reason: str) -> None:
        """Stop every job execution (for shutdown) and wait until all have ended."""
        await self.request(lambda engine: engine._stop_everything(reason))
        while self.executions:
            await next(iter(self.executions.values())).ended.wait()

    def kill_all(self) -> int:
        """SIGKILL every local job's process group now (a second stop signal: no more waiting).

        Jobs elsewhere (on a Flink cluster) are left to the stop already under way.
        """
        killed = 0
        for execution in self.executions.values():
            for run in execution.running.values():
                handle = run.supervisor.handle if run.supervisor is not None else None
                group = getattr(handle, "group", None)  # local process groups; cluster jobs have none
                if group is not None and group.signal_group(signal.SIGKILL):
                    killed += 1
        return killed

    def _flush(self) -> None:
        self.store.commit()
        for run, reason in self._to_stop:
            if run.supervisor is not None:
                run.supervisor.request_stop(reason)
            else:
                run.stop_reason = reason
        self._to_stop.clear()
        assert self._task_group is not None
        for run in self._to_launch:
            self._task_group.start_soon(self._supervise, run)
        self._to_launch.clear()
        for reply in self._replies:
            reply.done.set()
        self._replies.clear()

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "call":
            fn, reply = payload
            try:
                reply.value = fn(self)
            except Exception as err:  # noqa: BLE001 - handed back to the requester
                reply.error = err
            self._replies.append(reply)
        elif kind == "job_running":
            self._job_running(*payload)
        elif kind == "job_ended":
            self._job_ended(*payload)
        elif kind == "event":
            self._user_event(payload)
        elif kind == "due":
            execution_id, decision = payload
            execution = self.executions.get(execution_id)
            if execution is not None and execution.pending.pop(decision.job, None) is not None:
                self._apply(execution, [decision])
                self._maybe_end(execution)
        elif kind == "tick":
            self._tick(*payload)
        elif kind == "loaded":
            self._loaded(*payload)
        elif kind == "removed":
            self._removed(payload)

    # -- workflows -----------------------------------------------------------------

    def _loaded(self, path: str, result: LoadedWorkflow | LoadError) -> None:
        changed = self._set_version(path, result)
        if changed is not None:
            self._on_new_version(*changed)

    def _set_version(self, path: str, result: LoadedWorkflow | LoadError) -> tuple[WorkflowEntry, bool] | None:
        """Record what was loaded; (entry, whether it replaced a running version) when the version is new."""
        name = _workflow_name(path)
        entry = self.workflows.get(name)
        if entry is None:
            stored = self._stored_workflows().get(name)
            entry = WorkflowEntry(name, path, paused=bool(stored and stored["paused"]))
            self.workflows[name] = entry
            previous_version = stored["version"] if stored and stored["status"] != RETIRED else None
        elif entry.status == RETIRED:
            entry = WorkflowEntry(name, path, paused=entry.paused)
            self.workflows[name] = entry
            previous_version = None
        else:
            previous_version = entry.loaded.workflow.version if entry.loaded else None
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
        version = result.workflow.version
        self.store.save_workflow(name, path, version, ACTIVE, [])
        if previous_version == version and old is not None:
            return None  # the same content again: nothing to do
        if previous_version != version:
            log.info("workflow loaded", workflow=name, version=version)
        self._arm_timers(entry)
        return (entry, old is not None or previous_version is not None) if previous_version != version else None

    def _stored_workflows(self) -> dict[str, dict[str, Any]]:
        if self._stored is None:
            self._stored = {row["name"]: row for row in self.store.workflows()}
        return self._stored

    def _on_new_version(self, entry: WorkflowEntry, replaced: bool) -> None:
        if replaced:
            self._apply_change_policy(entry)
        if entry.change_triggered and not entry.paused and not entry.start_when_idle:
            self._start_execution(entry, "file changed" if replaced else "file added")

    def _apply_change_policy(self, entry: WorkflowEntry) -> None:
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
        for execution in [e for e in self.executions.values() if e.workflow == name]:
            self._stop_execution(execution, "workflow removed")
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

    def _arm_timers(self, entry: WorkflowEntry) -> None:
        if entry.timers is not None:
            entry.timers.cancel()
            entry.timers = None
        assert entry.loaded is not None
        workflow = entry.loaded.workflow
        schedules = [("", workflow.periodic_config)] if workflow.periodic_config else []
        schedules += [(job, graph.config.periodic_config) for job, graph in workflow.jobs.items() if graph.config.periodic_config]
        if not schedules:
            return
        scope = anyio.CancelScope()
        entry.timers = scope
        assert self._task_group is not None
        for job, config in schedules:
            self._task_group.start_soon(self._timer, scope, entry.name, job, config, entry.anchor)

    async def _timer(self, scope: anyio.CancelScope, workflow: str, job: str, config: Any, anchor: float) -> None:
        with scope:
            last = self.store.last_tick(workflow, job)
            while True:
                slot = scheduler.next_slot(config, last, time.time(), anchor)
                await anyio.sleep(max(0.0, slot - time.time()))
                self.post("tick", (workflow, job, slot))
                last = slot

    def _tick(self, workflow: str, job: str, slot: float) -> None:
        entry = self.workflows.get(workflow)
        if entry is None or entry.loaded is None or entry.status != ACTIVE:
            return
        last = self.store.last_tick(workflow, job)
        if last is not None and slot <= last:
            return  # fired already (before a restart): never twice
        self.store.record_tick(workflow, job, slot)
        if entry.paused:
            return
        trigger = f"periodic {datetime.datetime.fromtimestamp(slot).isoformat(timespec='milliseconds')}"
        if not job:
            self._start_execution(entry, trigger)
            return
        open_executions = [e for e in self.executions.values() if e.workflow == workflow and e.stop_reason is None]
        if open_executions:
            self._apply(open_executions[-1], [scheduler.Decision(job, JobAction.START, trigger)])
        else:
            self._start_execution(entry, trigger, only_job=job)

    # -- executions ------------------------------------------------------------------

    def start_execution(self, workflow: str, only_job: str | None = None, trigger: str = "manual") -> int:
        entry = self._entry(workflow)
        if entry.loaded is None:
            problems = "; ".join(str(p) for p in entry.problems[:3])
            raise EngineError(f"workflow '{workflow}' has no valid version: {problems}")
        if only_job is not None and only_job not in entry.loaded.workflow.jobs:
            raise EngineError(f"workflow '{workflow}' has no job '{only_job}' (jobs: {', '.join(entry.loaded.workflow.jobs)})")
        return self._start_execution(entry, trigger, only_job).id

    def _start_execution(self, entry: WorkflowEntry, trigger: str, only_job: str | None = None) -> ExecutionRun:
        assert entry.loaded is not None
        workflow = entry.loaded.workflow
        for older in [e for e in self.executions.values() if e.workflow == entry.name and e.idle]:
            self._end(older)  # an idle execution waiting for events gives way to the new one
        execution_id = self.store.create_execution(workflow.name, workflow.version, trigger, only_job)
        execution = ExecutionRun(execution_id, workflow.name, entry.loaded, trigger, only_job)
        execution.states = {job: scheduler.JobState() for job in workflow.jobs}
        self.executions[execution_id] = execution
        log.info("execution started", workflow=workflow.name, execution=execution_id, trigger=trigger)
        self._apply(execution, scheduler.initial_decisions(workflow, only_job))
        self._maybe_end(execution)
        return execution

    def run_workflow(self, loaded: LoadedWorkflow, only_job: str | None = None, trigger: str = "run-once") -> ExecutionRun:
        """Serve ``loaded`` (without the triggers of a new version) and start one execution of it."""
        self._set_version(loaded.workflow.path, loaded)
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

    def _stop_everything(self, reason: str) -> None:
        for execution in list(self.executions.values()):
            self._stop_execution(execution, reason)

    def job_action(self, workflow: str, job: str, action: JobAction) -> int:
        """START, STOP or RESTART a job in the workflow's latest open execution (START opens one)."""
        entry = self._entry(workflow)
        if entry.loaded is None or job not in entry.loaded.workflow.jobs:
            raise EngineError(f"workflow '{workflow}' has no job '{job}'")
        open_executions = [e for e in self.executions.values() if e.workflow == workflow and e.stop_reason is None]
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
        self._apply(execution, [scheduler.Decision(job, action, "by request")])
        return execution.id

    def _apply(self, execution: ExecutionRun, decisions: list[scheduler.Decision]) -> None:
        for decision in decisions:
            if execution.stop_reason is not None:
                return
            if decision.delay > 0:
                execution.pending[decision.job] = decision
                assert self._task_group is not None
                self._task_group.start_soon(self._due_later, execution.id, decision)
                continue
            state = execution.states[decision.job]
            if decision.action == JobAction.START and not state.running:
                self._start_job(execution, decision.job, decision.reason)
            elif decision.action == JobAction.RESTART:
                if state.running:
                    execution.restart_after_stop[decision.job] = decision.reason
                    self._to_stop.append((execution.running[decision.job], f"restarted ({decision.reason})"))
                else:
                    self._start_job(execution, decision.job, decision.reason)
            elif decision.action == JobAction.STOP and state.running:
                self._to_stop.append((execution.running[decision.job], f"stopped ({decision.reason})"))

    async def _due_later(self, execution_id: int, decision: scheduler.Decision) -> None:
        await anyio.sleep(decision.delay)
        self.post("due", (execution_id, scheduler.Decision(decision.job, decision.action, decision.reason)))

    def _start_job(self, execution: ExecutionRun, job: str, reason: str) -> None:
        state = execution.states[job]
        state.attempt += 1
        state.status = Status.INIT
        generated = execution.loaded.jobs[job]
        run = self._job_run(execution, job, generated.job_type, state.attempt, reason)
        entry = self.workflows.get(execution.workflow)
        if entry is not None and job in entry.restore:
            run.env.restore_savepoint = entry.restore.pop(job)
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
            created_at=time.time(),
            log_path=run.env.log_path,
            working_dir=run.env.working_dir,
        )
        execution.running[job] = run
        self._to_launch.append(run)
        self.on_job_change(run)

    def _job_run(self, execution: ExecutionRun, job: str, job_type: str, attempt: int, reason: str) -> JobRun:
        workflow = execution.workflow
        info = JobExecutionInfo(workflow, job, str(execution.id), f"{execution.id}.{job}.{attempt}", attempt)
        env = JobRuntimeEnv(
            working_dir=self.paths.working_dir(workflow, execution.id, job, attempt),
            log_path=self.paths.log_path(workflow, execution.id, job, attempt),
            workflow_dir=execution.loaded.workflow.workflow_dir,
            job_execution_info=info,
            settings=self.settings,
        )
        return JobRun(0, execution, job, job_type, attempt, env, reason)

    async def _supervise(self, run: JobRun) -> None:
        try:
            outcome = await self._run_job(run)
        except Exception as err:
            log.exception("job supervision failed", workflow=run.execution.workflow, job=run.job)
            outcome = JobOutcome(Status.FAILED, message=f"aiflowd failed to supervise the job: {type(err).__name__}: {err}")
        self.post("job_ended", (run, outcome))

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
            if handle is None and run.recovered_handle is not None:
                return JobOutcome(Status.FAILED, message="the job could not be found again after a restart")
            if handle is not None and getattr(handle, "job", None) is None:
                handle.job = job
        async with self.limiter:
            if run.stop_reason is not None and handle is None:
                return JobOutcome(Status.KILLED, message=run.stop_reason)

            async def running(handle: JobHandle) -> None:
                self.post("job_running", (run, handle.to_json()))

            run.supervisor = JobSupervisor(
                plugin.controller, job, run.env, timeout=job.job_config.timeout, on_running=running, handle=handle
            )
            if run.stop_reason is not None:
                run.supervisor.request_stop(run.stop_reason)
            return await run.supervisor.run()

    def _job_running(self, run: JobRun, handle_record: dict[str, Any]) -> None:
        if run.status.is_final:
            return
        if run.recovered and run.status == Status.RUNNING:
            self.store.update_job_execution(run.id, handle=handle_record)
            return  # reattached: its RUNNING was announced before the restart, rules fired then
        run.status = Status.RUNNING
        run.started_at = time.time()
        execution = run.execution
        execution.states[run.job].status = Status.RUNNING
        self.store.update_job_execution(run.id, status=Status.RUNNING.value, started_at=run.started_at, handle=handle_record)
        self.on_job_change(run)
        event = scheduler.job_status_event(execution.workflow, run.job, Status.RUNNING, time.time())
        self._apply(execution, scheduler.on_event(execution.loaded.workflow, execution.states, event))

    def _job_ended(self, run: JobRun, outcome: JobOutcome) -> None:
        run.status, run.exit_code, run.message, run.ended_at = outcome.status, outcome.exit_code, outcome.message, outcome.ended_at
        run.started_at = run.started_at or outcome.started_at
        self.store.update_job_execution(
            run.id,
            status=outcome.status.value,
            ended_at=outcome.ended_at,
            exit_code=outcome.exit_code,
            message=outcome.message,
            handle=outcome.handle_record,
        )
        self.on_job_change(run)
        execution = run.execution
        savepoint = (outcome.handle_record or {}).get("savepoint_path")
        entry = self.workflows.get(execution.workflow)
        if savepoint and execution.stop_reason == CHANGED and entry is not None:
            entry.restore[run.job] = str(savepoint)
        if execution.running.get(run.job) is run:
            del execution.running[run.job]
        state = execution.states[run.job]
        state.status = outcome.status
        if execution.stop_reason is None:
            decisions, event = scheduler.on_job_ended(execution.loaded.workflow, run.job, state, outcome.status)
            if run.job in execution.restart_after_stop:
                decisions = [scheduler.Decision(run.job, JobAction.START, execution.restart_after_stop.pop(run.job))]
            self._apply(execution, decisions)
            if event is not None:
                self._apply(execution, scheduler.on_event(execution.loaded.workflow, execution.states, event))
        self._maybe_end(execution)

    def _maybe_end(self, execution: ExecutionRun) -> None:
        if not execution.idle or execution.id not in self.executions:
            return
        if execution.stop_reason is None and self.keep_open_for_events and execution.listens_for_events and execution.only_job is None:
            return  # rules may still start jobs when their events come
        self._end(execution)

    def _end(self, execution: ExecutionRun) -> None:
        status = scheduler.execution_status(execution.states, stopped=execution.stop_reason is not None)
        execution.status = status
        self.store.end_execution(execution.id, status.value)
        del self.executions[execution.id]
        execution.ended.set()
        log.info("execution ended", workflow=execution.workflow, execution=execution.id, status=status.value)
        entry = self.workflows.get(execution.workflow)
        if entry is not None and entry.start_when_idle and not any(e.workflow == entry.name for e in self.executions.values()):
            entry.start_when_idle = False
            if entry.loaded is not None and entry.status == ACTIVE and not entry.paused:
                self._start_execution(entry, "file changed")

    # -- events ----------------------------------------------------------------------

    def send_event(self, event: Event) -> None:
        self.post("event", event)

    def user_event(self, event: Event) -> None:
        """Record a user event and let every open execution's rules and every start trigger see it."""
        self._user_event(event)

    def _user_event(self, event: Event) -> None:
        self.store.add_event(event.key, event.value, event.event_type, event.namespace, event.sender, event.time)
        for execution in list(self.executions.values()):
            if execution.stop_reason is None:
                self._apply(execution, scheduler.on_event(execution.loaded.workflow, execution.states, event))
                self._maybe_end(execution)
        for entry in list(self.workflows.values()):
            if entry.loaded is None or entry.status != ACTIVE or entry.paused:
                continue
            if any(condition.matches(event) for condition in entry.loaded.workflow.start_on_events):
                self._start_execution(entry, f"event {event.key}={event.value}")

    # -- recovery --------------------------------------------------------------------

    def _recover(self) -> None:
        """Take over what a previous daemon left: open executions and their job executions.

        Jobs with a record are reattached (or their end is learned); jobs decided but
        never started are started now; a retry that was waiting is scheduled again. The
        workflow versions must have been loaded (``load_initial``) before.
        """
        for row in reversed(self.store.executions(status=Status.RUNNING.value, limit=100_000)):
            entry = self.workflows.get(row["workflow"])
            if entry is None or entry.loaded is None:
                self.store.end_execution(row["id"], Status.KILLED.value)
                self._reattach_orphans(row)
                continue
            execution = ExecutionRun(row["id"], row["workflow"], entry.loaded, row["trigger"], row["only_job"])
            execution.states = {job: scheduler.JobState() for job in entry.loaded.workflow.jobs}
            self.executions[execution.id] = execution
            ended_at: dict[str, float] = {}
            for job_row in reversed(self.store.job_executions(execution_id=row["id"], limit=100_000)):
                job = job_row["job"]
                ended_at[job] = job_row["ended_at"] or 0.0
                state = execution.states.setdefault(job, scheduler.JobState())
                state.attempt = max(state.attempt, job_row["attempt"])
                state.status = Status(job_row["status"])
                if not state.status.is_final:
                    run = self._job_run(execution, job, job_row["job_type"], job_row["attempt"], job_row["reason"])
                    run.id, run.status, run.recovered, run.recovered_handle = job_row["id"], state.status, True, job_row["handle"]
                    run.created_at, run.started_at = job_row["created_at"], job_row["started_at"]
                    execution.running[job] = run
                    self._to_launch.append(run)
            for job, state in execution.states.items():
                config = entry.loaded.workflow.jobs[job].config if job in entry.loaded.workflow.jobs else None
                if config and state.status == Status.FAILED and state.attempt <= config.retries and job not in execution.running:
                    delay = max(0.001, ended_at.get(job, 0.0) + config.retry_delay - time.time())
                    reason = f"retry {state.attempt} of {config.retries}"
                    self._apply(execution, [scheduler.Decision(job, JobAction.START, reason, delay=delay)])
            if entry.loaded.workflow.version != row["version"]:
                self._apply_change_policy(entry)
            self._maybe_end(execution)

    def _reattach_orphans(self, row: dict[str, Any]) -> None:
        """Jobs of a workflow that is gone: found again only to be stopped."""
        for job_row in self.store.job_executions(execution_id=row["id"], statuses=[Status.INIT.value, Status.RUNNING.value]):
            self.store.update_job_execution(job_row["id"], status=Status.KILLED.value, ended_at=time.time(), message="workflow removed")
            assert self._task_group is not None
            self._task_group.start_soon(self._stop_orphan, job_row)

    async def _stop_orphan(self, job_row: dict[str, Any]) -> None:
        if job_row["job_type"] not in self.registry:
            return
        controller = self.registry.get(job_row["job_type"]).controller
        execution_id, job, attempt = job_row["execution_id"], job_row["job"], job_row["attempt"]
        info = JobExecutionInfo(job_row["workflow"], job, str(execution_id), f"{execution_id}.{job}.{attempt}", attempt)
        env = JobRuntimeEnv(job_row["working_dir"], job_row["log_path"], "", info, self.settings)
        handle = await call(controller.reattach, dict(job_row["handle"] or {}, job_execution_id=info.job_execution_id), env)
        if handle is not None:
            with anyio.CancelScope(shield=True):
                await call(controller.stop_job, handle, env)
                await call(controller.cleanup_job, handle, env)


def _workflow_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    name, ext = os.path.splitext(base)
    return name if ext in (".yaml", ".yml") else base
