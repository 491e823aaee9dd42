"""The control methods aiflowctl calls, each a request to the engine or the daemon.

Kept apart from the daemon's lifecycle so that a failing request and a signal never
share an error path: a method's error is an answer to its caller, nothing more.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

import aiflowd
from aiflowd.control.protocol import REFUSED, ControlError
from aiflowd.control.server import Method
from aiflowd.engine import RETIRED, Engine, EngineError
from aiflowd.model import Event, JobAction, Status

if TYPE_CHECKING:
    from aiflowd.daemon.lifecycle import Daemon


class ControlMethods:
    """The daemon's answers to control requests."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def table(self) -> dict[str, Method]:
        """Every method aiflowctl may call, with whether it changes things."""
        read, write = (lambda fn: Method(fn)), (lambda fn: Method(fn, write=True))
        return {
            "status": read(self.m_status),
            "workflow.list": read(self.m_workflow_list),
            "workflow.show": read(self.m_workflow_show),
            "workflow.list_executions": read(self.m_workflow_list_executions),
            "workflow.start_execution": write(self.m_workflow_start_execution),
            "workflow.stop_execution": write(self.m_workflow_stop_execution),
            "workflow.pause_scheduling": write(self.m_pause),
            "workflow.resume_scheduling": write(self.m_resume),
            "job.list_executions": read(self.m_job_list_executions),
            "job.start_execution": write(self.m_job_start),
            "job.stop_execution": write(self.m_job_stop),
            "job.restart_execution": write(self.m_job_restart),
            "job.logs": read(self.m_job_logs),
            "event.send": write(self.m_event_send),
            "event.list": read(self.m_event_list),
            "plugins": read(self.m_plugins),
            "reload": write(self.m_reload),
        }

    async def _ask(self, fn: Any) -> Any:
        try:
            return await self.daemon.engine.request(fn)
        except EngineError as err:
            raise ControlError(REFUSED, str(err)) from err

    async def m_status(self, params: dict[str, Any]) -> dict[str, Any]:
        def status(engine: Engine) -> dict[str, Any]:
            counts: dict[str, int] = {}
            for entry in engine.workflows.values():
                counts[entry.status] = counts.get(entry.status, 0) + 1
            jobs = sum(len(e.running) for e in engine.executions.values())
            return {
                "pid": os.getpid(),
                "version": aiflowd.__version__,
                "uptime": round(time.time() - self.daemon.started, 3),
                "workflows_dir": self.daemon.config.workflows_dir,
                "state_dir": self.daemon.config.state_dir,
                "workflows": counts,
                "executions_running": len(engine.executions),
                "jobs_running": jobs,
            }

        return await self._ask(status)

    async def m_workflow_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        def listing(engine: Engine) -> list[dict[str, Any]]:
            rows = []
            for name, entry in sorted(engine.workflows.items()):
                if entry.status == RETIRED and not params.get("all"):
                    continue
                rows.append(
                    {
                        "workflow": name,
                        "status": entry.status,
                        "version": entry.loaded.workflow.version if entry.loaded else None,
                        "paused": entry.paused,
                        "problems": len(entry.problems),
                        "executions_running": sum(1 for e in engine.executions.values() if e.workflow == name),
                        "path": entry.path,
                    }
                )
            return sorted(rows + self.daemon.folder.loading_rows(engine.workflows), key=lambda row: row["workflow"])

        return await self._ask(listing)

    async def m_workflow_show(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _param(params, "workflow")

        def show(engine: Engine) -> dict[str, Any]:
            entry = engine.workflows.get(name)
            if entry is None:
                raise EngineError(f"no workflow named '{name}'")
            workflow = entry.loaded.workflow if entry.loaded else None
            return {
                "workflow": name,
                "status": entry.status,
                "path": entry.path,
                "version": workflow.version if workflow else None,
                "paused": entry.paused,
                "problems": [str(p) for p in entry.problems],
                "jobs": [
                    {"job": job, "job_type": graph.config.job_type, "rules": len(workflow.rules_for(job))}
                    for job, graph in (workflow.jobs.items() if workflow else [])
                ],
                "executions": engine.store.executions(workflow=name, limit=5),
            }

        return await self._ask(show)

    async def m_workflow_list_executions(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        name = _param(params, "workflow")
        return await self._ask(lambda engine: engine.store.executions(workflow=name, limit=int(params.get("limit", 100))))

    async def m_workflow_start_execution(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _param(params, "workflow")
        return {"execution_id": await self._ask(lambda engine: engine.start_execution(name))}

    async def m_workflow_stop_execution(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _param(params, "workflow")
        execution = params.get("execution")
        ids = await self._ask(lambda engine: engine.stop_execution(name, int(execution) if execution is not None else None))
        return {"stopped": ids}

    async def m_pause(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _param(params, "workflow")
        await self._ask(lambda engine: engine.set_paused(name, True))
        return {"workflow": name, "paused": True}

    async def m_resume(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _param(params, "workflow")
        await self._ask(lambda engine: engine.set_paused(name, False))
        return {"workflow": name, "paused": False}

    async def m_job_list_executions(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        name = _param(params, "workflow")
        job = params.get("job")
        rows = await self._ask(lambda engine: engine.store.job_executions(workflow=name, job=job, limit=int(params.get("limit", 100))))
        return [_job_row(row) for row in rows]

    async def _job_action(self, params: dict[str, Any], action: JobAction) -> dict[str, Any]:
        name, job = _param(params, "workflow"), _param(params, "job")
        return {"execution_id": await self._ask(lambda engine: engine.job_action(name, job, action))}

    async def m_job_start(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._job_action(params, JobAction.START)

    async def m_job_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._job_action(params, JobAction.STOP)

    async def m_job_restart(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._job_action(params, JobAction.RESTART)

    async def m_job_logs(self, params: dict[str, Any]) -> Any:
        name, job = _param(params, "workflow"), _param(params, "job")
        execution = params.get("execution")

        def find(engine: Engine) -> dict[str, Any] | None:
            rows = engine.store.job_executions(
                workflow=name, job=job, execution_id=int(execution) if execution is not None else None, limit=1
            )
            return rows[0] if rows else None

        row = await self._ask(find)
        if row is None:
            raise ControlError(REFUSED, f"no execution of job '{job}' of '{name}'" + (f" in execution {execution}" if execution else ""))
        if not params.get("follow"):
            return {"log_path": row["log_path"], "text": _read_tail(row["log_path"], int(params.get("bytes", 1 << 20)))}
        return self._follow(row)

    async def _follow(self, row: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        position = 0
        while True:
            chunk = await anyio.to_thread.run_sync(_read_from, row["log_path"], position)
            if chunk:
                position += len(chunk)
                yield {"text": chunk.decode("utf-8", "replace")}
                continue
            current = await self.daemon.engine.request(
                lambda engine: engine.store.job_executions(execution_id=row["execution_id"], job=row["job"], limit=1)
            )
            if current and Status(current[0]["status"]).is_final and current[0]["id"] == row["id"]:
                rest = await anyio.to_thread.run_sync(_read_from, row["log_path"], position)
                if rest:
                    yield {"text": rest.decode("utf-8", "replace")}
                return
            await anyio.sleep(0.1)  # as tail -f: the job writes the file directly, no event tells us

    async def m_event_send(self, params: dict[str, Any]) -> dict[str, Any]:
        key, value = _param(params, "key"), str(params.get("value", ""))
        event = Event(
            key=key,
            value=value,
            event_type=str(params.get("event_type") or "*"),
            namespace=str(params.get("namespace") or "default"),
            sender=str(params.get("sender") or ""),
        )
        await self._ask(lambda engine: engine.user_event(event))
        return {"sent": True}

    async def m_event_list(self, params: dict[str, Any]) -> Any:
        after, limit = int(params.get("after", 0)), int(params.get("limit", 100))
        if not params.get("follow"):
            return await self._ask(lambda engine: engine.store.events(after, limit))
        return self._follow_events(after, limit)

    async def _follow_events(self, after: int, limit: int) -> AsyncIterator[dict[str, Any]]:
        def since(last: int, count: int) -> Any:
            return lambda engine: engine.store.events(last, count)

        rows = await self._ask(since(after, limit))
        while True:
            for row in rows:
                yield row
            after = rows[-1]["id"] if rows else after
            await anyio.sleep(0.1)  # events arrive through the engine's loop; the store is where they are kept
            rows = await self._ask(since(after, 1000))

    async def m_plugins(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [info.describe() for info in self.daemon.loader.registry]

    async def m_reload(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self.daemon.reload()



def _param(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise ControlError("bad_request", f"'{key}' is required")
    return value


def _job_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "workflow": row["workflow"],
        "job": row["job"],
        "execution_id": row["execution_id"],
        "job_execution_id": row["id"],
        "attempt": row["attempt"],
        "status": row["status"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "exit_code": row["exit_code"],
        "message": row["message"],
        "reason": row["reason"],
        "log_path": row["log_path"],
    }


def _read_tail(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _read_from(path: str, position: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(position)
            return fh.read(1 << 16)
    except OSError:
        return b""
