"""Runs one workflow execution: the scheduler's decisions carried out by job supervisors.

Each job execution is its own task (one failing never cancels another); their status
changes come back as events, the pure scheduler decides what follows, and this loop
carries it out until nothing runs and nothing is due. ``run-once`` uses it as is.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from aiflowd import scheduler
from aiflowd.controllers.supervisor import JobOutcome, JobSupervisor
from aiflowd.model import Event, JobAction, Status
from aiflowd.plugin_interface import JobExecutionInfo, JobHandle, JobRuntimeEnv, PluginRegistry
from aiflowd.workflows.loader import LoadedWorkflow


@dataclass
class JobExecutionRecord:
    """One run of one job, as listed to users (``aiflowctl --json`` prints these fields)."""

    workflow: str
    job: str
    execution_id: str
    job_execution_id: str
    attempt: int
    status: Status
    log_path: str
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    message: str | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["status"] = self.status.value
        return record


@dataclass
class ExecutionPaths:
    """Where job executions keep their working folders and logs."""

    state_dir: str
    log_dir: str

    def working_dir(self, workflow: str, execution_id: str, job: str, attempt: int) -> str:
        return os.path.join(self.state_dir, "work", workflow, execution_id, f"{job}.{attempt}")

    def log_path(self, workflow: str, execution_id: str, job: str, attempt: int) -> str:
        name = f"{job}.log" if attempt == 1 else f"{job}.{attempt}.log"
        return os.path.join(self.log_dir, workflow, execution_id, name)


@dataclass
class ExecutionResult:
    status: Status
    records: list[JobExecutionRecord] = field(default_factory=list)
    never_started: list[str] = field(default_factory=list)


class WorkflowExecutionRunner:
    """Carries one execution of a loaded workflow from its start to its last job's end."""

    def __init__(
        self,
        loaded: LoadedWorkflow,
        registry: PluginRegistry,
        *,
        execution_id: str,
        paths: ExecutionPaths,
        settings: dict[str, Any] | None = None,
        only_job: str | None = None,
        on_record: Callable[[JobExecutionRecord], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.workflow = loaded.workflow
        self.registry = registry
        self.execution_id = execution_id
        self.paths = paths
        self.settings = settings or {}
        self.only_job = only_job
        self.on_record = on_record or (lambda record: None)
        self.states: dict[str, scheduler.JobState] = {job: scheduler.JobState() for job in self.workflow.jobs}
        self.records: list[JobExecutionRecord] = []
        self._supervisors: dict[str, JobSupervisor] = {}
        self._restart_after_stop: dict[str, str] = {}
        self._pending = 0
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, Any]](math.inf)
        self._task_group: TaskGroup | None = None
        self._stopped = False

    async def run(self) -> ExecutionResult:
        with self._send, self._receive:
            return await self._run()

    async def _run(self) -> ExecutionResult:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            for decision in scheduler.initial_decisions(self.workflow, self.only_job):
                self._apply(decision)
            while self._supervisors or self._pending:
                kind, payload = await self._receive.receive()
                if kind == "ended":
                    self._job_ended(*payload)
                elif kind == "event":
                    self._event(payload)
                elif kind == "due":
                    self._pending -= 1
                    self._apply(payload)
        never = [job for job, state in self.states.items() if state.status is None]
        return ExecutionResult(scheduler.execution_status(self.states, self._stopped), self.records, never)

    def send_event(self, event: Event) -> None:
        """Deliver a user event to this execution's rules (ignored once the execution is over)."""
        with contextlib.suppress(anyio.ClosedResourceError):
            self._send.send_nowait(("event", event))

    def stop(self, reason: str = "execution stopped") -> None:
        self._stopped = True
        self._pending = 0
        for supervisor in self._supervisors.values():
            supervisor.request_stop(reason)

    def _event(self, event: Event) -> None:
        if self._stopped:
            return
        for decision in scheduler.on_event(self.workflow, self.states, event):
            self._apply(decision)

    def _apply(self, decision: scheduler.Decision) -> None:
        if self._stopped:
            return
        if decision.delay > 0:
            self._pending += 1
            assert self._task_group is not None
            self._task_group.start_soon(self._due_later, decision)
            return
        state = self.states[decision.job]
        if decision.action == JobAction.START and not state.running:
            self._start(decision.job, decision.reason)
        elif decision.action == JobAction.RESTART:
            if state.running:
                self._restart_after_stop[decision.job] = decision.reason
                self._supervisors[decision.job].request_stop(f"restarted ({decision.reason})")
            else:
                self._start(decision.job, decision.reason)
        elif decision.action == JobAction.STOP and state.running:
            self._supervisors[decision.job].request_stop(f"stopped ({decision.reason})")

    async def _due_later(self, decision: scheduler.Decision) -> None:
        await anyio.sleep(decision.delay)
        await self._send.send(("due", scheduler.Decision(decision.job, decision.action, decision.reason)))

    def _start(self, job: str, reason: str) -> None:
        state = self.states[job]
        state.attempt += 1
        state.status = Status.INIT
        attempt = state.attempt
        job_execution_id = f"{self.execution_id}.{job}.{attempt}"
        info = JobExecutionInfo(self.workflow.name, job, self.execution_id, job_execution_id, attempt, Status.INIT, time.time())
        env = JobRuntimeEnv(
            working_dir=self.paths.working_dir(self.workflow.name, self.execution_id, job, attempt),
            log_path=self.paths.log_path(self.workflow.name, self.execution_id, job, attempt),
            workflow_dir=self.workflow.workflow_dir,
            job_execution_info=info,
            settings=self.settings,
        )
        record = JobExecutionRecord(
            self.workflow.name, job, self.execution_id, job_execution_id, attempt, Status.INIT, env.log_path, time.time(), reason=reason
        )
        self.records.append(record)
        generated = self.loaded.jobs[job]
        plugin = self.registry.get(generated.job_type)

        async def running(handle: JobHandle) -> None:
            state.status = Status.RUNNING
            record.status = Status.RUNNING
            self.on_record(record)
            await self._send.send(("event", scheduler.job_status_event(self.workflow.name, job, Status.RUNNING, time.time())))

        supervisor = JobSupervisor(plugin.controller, generated, env, timeout=generated.job_config.timeout, on_running=running)
        self._supervisors[job] = supervisor
        assert self._task_group is not None
        self._task_group.start_soon(self._supervise, job, supervisor, record)

    async def _supervise(self, job: str, supervisor: JobSupervisor, record: JobExecutionRecord) -> None:
        try:
            outcome = await supervisor.run()
        except Exception as err:  # noqa: BLE001 - one job's failure never cancels the others
            outcome = JobOutcome(Status.FAILED, message=f"aiflowd failed to supervise the job: {type(err).__name__}: {err}")
        record.status, record.exit_code, record.message, record.ended_at = (
            outcome.status,
            outcome.exit_code,
            outcome.message,
            outcome.ended_at,
        )
        self.on_record(record)
        await self._send.send(("ended", (job, supervisor, outcome)))

    def _job_ended(self, job: str, supervisor: JobSupervisor, outcome: JobOutcome) -> None:
        if self._supervisors.get(job) is supervisor:
            del self._supervisors[job]
        state = self.states[job]
        state.status = outcome.status
        decisions, event = scheduler.on_job_ended(self.workflow, job, state, outcome.status)
        if job in self._restart_after_stop:
            decisions = [scheduler.Decision(job, JobAction.START, self._restart_after_stop.pop(job))]
        for decision in decisions:
            self._apply(decision)
        if event is not None:
            self._event(event)
