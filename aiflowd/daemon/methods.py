"""The control methods aiflowctl calls, each a request to the engine or the daemon.

Kept apart from the daemon's lifecycle so that a failing request and a signal never
share an error path: a method's error is an answer to its caller, nothing more.
"""

from __future__ import annotations

import codecs
import datetime
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

import aiflowd
from aiflowd import graph as graphs
from aiflowd.control.protocol import BAD_REQUEST, REFUSED, ControlError
from aiflowd.control.server import Method
from aiflowd.engine import RETIRED, Engine, EngineError
from aiflowd.model import Event, JobAction, Status, check_params, parse_duration
from aiflowd.plugin_interface import UNREACHABLE

if TYPE_CHECKING:
    from aiflowd.daemon.lifecycle import Daemon

#: A log is sent in chunks of this size, each read in a thread: memory stays bounded and
#: the loop never waits on a large read.
LOG_CHUNK = 64 * 1024
#: ``status``: failures counted from this long ago.
FAILED_WINDOW = 3600.0
#: The status page's and ``execution.list``'s latest executions, and the Flink jobs it looks through.
RECENT = 20
FLINK_LOOKBACK = 500
#: ``job.logs`` without ``follow``: the tail it sends by default, and at most.
DEFAULT_LOG_BYTES = 1 << 20
MAX_LOG_BYTES = 64 << 20


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
            "workflow.graph": read(self.m_workflow_graph),
            "execution.list": read(self.m_execution_list),
            "job.list_running": read(self.m_job_list_running),
            "flink.list": read(self.m_flink_list),
            "workflow.start_execution": write(self.m_workflow_start_execution),
            "workflow.stop_execution": write(self.m_workflow_stop_execution),
            "workflow.pause_scheduling": write(self.m_pause),
            "execution.show": read(self.m_execution_show),
            "workflow.resume_scheduling": write(self.m_resume),
            "job.list_executions": read(self.m_job_list_executions),
            "job.start_execution": write(self.m_job_start),
            "job.stop_execution": write(self.m_job_stop),
            "job.restart_execution": write(self.m_job_restart),
            "job.stop_scheduling": write(self.m_job_stop_scheduling),
            "job.resume_scheduling": write(self.m_job_resume_scheduling),
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
            runs = [run for e in engine.executions.values() for run in e.running.values()]
            jobs = len(runs)
            now = time.time()
            return {
                "pid": os.getpid(),
                "version": aiflowd.__version__,
                "uptime": round(time.time() - self.daemon.started, 3),
                "workflows_dir": self.daemon.config.workflows_dir,
                "state_dir": self.daemon.config.state_dir,
                "workflows": counts,
                "executions_running": len(engine.executions),
                "jobs_running": jobs,
                # Started (or being started) vs. waiting for a slot under max_concurrent_jobs.
                "jobs_active": sum(1 for run in runs if run.status == Status.RUNNING),
                "jobs_queued": sum(1 for run in runs if run.status == Status.INIT),
                "jobs_failed_last_hour": engine.store.count_job_executions(Status.FAILED.value, now - FAILED_WINDOW),
                # Running, but their cluster does not answer: shown UNREACHABLE.
                "jobs_unreachable": sum(1 for run in runs if run.condition == UNREACHABLE and run.status == Status.RUNNING),
                "store_problem": engine.store_problem,
                "restarts": self.daemon.restarts.snapshot(),
                "errors_contained": engine.contained_errors,
                "hooks": engine.alerts.snapshot() if engine.alerts is not None else None,
                "retention": self.daemon.retention.status(),
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
                        "next_run": min((at for _, _, at in engine.next_runs(entry)), default=None),
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
                "on_overlap": workflow.on_overlap.value if workflow else None,
                "max_active_executions": workflow.max_active_executions if workflow else None,
                "queued_slot": entry.queued_tick,
                "skipped_starts": entry.skipped_starts,
                "schedules": [
                    {"job": job or None, "schedule": config.describe(), "next_run": at}
                    for job, config, at in engine.next_runs(entry)
                ],
                "problems": [str(p) for p in entry.problems],
                "jobs": [
                    {"job": job, "job_type": graph.config.job_type, "rules": len(workflow.rules_for(job))}
                    for job, graph in workflow.jobs.items()
                ]
                if workflow is not None
                else [],
                "executions": [shown_execution(engine, row) for row in engine.store.executions(workflow=name, limit=5)],
            }

        return await self._ask(show)

    async def m_workflow_list_executions(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """A workflow's executions, the latest first; ``limit``, ``since`` and ``status`` narrow them."""
        name = _param(params, "workflow")
        limit, since, status = history_filters(params)
        rows = await self._ask(
            lambda engine: [
                shown_execution(engine, row) for row in engine.store.executions(workflow=name, status=status, limit=limit, since=since)
            ]
        )
        return [with_duration(row) for row in rows]

    async def m_execution_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The latest executions of every workflow (``limit``, ``since``, ``status`` as for one workflow's)."""
        limit, since, status = history_filters(params, default_limit=RECENT)
        rows = await self._ask(
            lambda engine: [shown_execution(engine, row) for row in engine.store.executions(status=status, limit=limit, since=since)]
        )
        return [with_duration(row) for row in rows]

    async def m_workflow_graph(self, params: dict[str, Any]) -> dict[str, Any]:
        """The workflow's picture as data (see ``aiflowd.graph``): boxes coloured by each job's last status."""
        name = _param(params, "workflow")

        def picture(engine: Engine) -> dict[str, Any]:
            entry = engine.workflows.get(name)
            if entry is None:
                raise EngineError(f"no workflow named '{name}'")
            if entry.loaded is None:
                raise EngineError(f"workflow '{name}' has no valid version to draw; see 'aiflowctl workflow show {name}'")
            statuses: dict[str, str] = {}
            for job in entry.loaded.workflow.jobs:  # one indexed look each, however long the history
                last = engine.store.job_executions(workflow=name, job=job, limit=1)
                if last:
                    statuses[job] = last[0]["status"]
            for execution in engine.executions.values():  # what runs now wins over what is recorded
                if execution.workflow == name:
                    statuses.update({job: run.shown_status for job, run in execution.running.items()})
            return graphs.build(entry.loaded.workflow, statuses).to_json()

        return await self._ask(picture)

    async def m_workflow_start_execution(self, params: dict[str, Any]) -> dict[str, Any]:
        """Start an execution now; ``params`` (names to strings) reach its jobs as ``AIFLOWD_PARAM_<NAME>``."""
        name = _param(params, "workflow")
        try:
            given = check_params(params.get("params"))
        except ValueError as err:
            raise ControlError(BAD_REQUEST, str(err)) from None
        return {"execution_id": await self._ask(lambda engine: engine.start_execution(name, params=given))}

    async def m_workflow_stop_execution(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _param(params, "workflow")
        execution = params.get("execution")
        ids = await self._ask(lambda engine: engine.stop_execution(name, int(execution) if execution is not None else None))
        return {"stopped": ids}

    async def m_execution_show(self, params: dict[str, Any]) -> dict[str, Any]:
        """One workflow execution by id (ids are unique across workflows), with its job executions."""
        try:
            execution_id = int(params.get("execution"))  # type: ignore[arg-type]
        except (TypeError, ValueError) as err:
            raise ControlError(BAD_REQUEST, "'execution' must be a whole number") from err

        def show(engine: Engine) -> dict[str, Any]:
            row = engine.store.execution(execution_id)
            if row is None:
                raise EngineError(f"no execution with id {execution_id}")
            jobs = engine.store.job_executions(execution_id=execution_id, limit=100_000)
            shown = shown_execution(engine, row)
            return {**shown, "execution_id": row["id"], "jobs": [_job_row(job) for job in reversed(jobs)]}

        return await self._ask(show)

    async def m_pause(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _param(params, "workflow")
        await self._ask(lambda engine: engine.set_paused(name, True))
        return {"workflow": name, "paused": True}

    async def m_resume(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _param(params, "workflow")
        await self._ask(lambda engine: engine.set_paused(name, False))
        return {"workflow": name, "paused": False}

    async def m_job_list_executions(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """A workflow's job executions (or one job's; without ``workflow``, every workflow's), the latest
        first; ``limit``, ``since`` and ``status`` narrow them."""
        name = _param(params, "workflow") if params.get("workflow") is not None or params.get("job") is not None else None
        job = params.get("job")
        limit, since, status = history_filters(params)
        rows = await self._ask(
            lambda engine: engine.store.job_executions(
                workflow=name, job=job, limit=limit, since=since, statuses=[status] if status else None
            )
        )
        return [_job_row(row) for row in rows]

    async def m_job_list_running(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The job executions the engine carries now (running, or queued for a slot), the longest running first."""

        def running(engine: Engine) -> list[dict[str, Any]]:
            now = time.time()
            rows = []
            for execution in engine.executions.values():
                for run in execution.running.values():
                    begun = run.started_at or run.created_at
                    rows.append(
                        {
                            "workflow": execution.workflow,
                            "job": run.job,
                            "job_type": run.job_type,
                            "execution_id": execution.id,
                            "job_execution_id": run.id,
                            "attempt": run.attempt,
                            "kind": run.kind,
                            "status": run.shown_status,
                            "status_since": run.condition_since if run.condition else None,
                            "started_at": run.started_at,
                            "duration": round(max(0.0, now - begun), 3),
                        }
                    )
            return sorted(rows, key=lambda row: -row["duration"])

        return await self._ask(running)

    async def m_flink_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The latest job execution of each Flink job known (it has a Flink job id), with its web UI link."""

        def flink(engine: Engine) -> list[dict[str, Any]]:
            seen: dict[tuple[str, str], dict[str, Any]] = {}
            for row in engine.store.job_executions(limit=FLINK_LOOKBACK):
                handle = row.get("handle")
                if not isinstance(handle, dict) or not handle.get("job_id") or (row["workflow"], row["job"]) in seen:
                    continue
                url = handle.get("rest_url")
                state = "running" if row["status"] == Status.RUNNING.value else "completed"
                seen[(row["workflow"], row["job"])] = {
                    **_job_row(row),
                    "flink_job_id": handle["job_id"],
                    "web_url": f"{url}/#/job/{state}/{handle['job_id']}/overview" if isinstance(url, str) and url else None,
                }
            return list(seen.values())

        return await self._ask(flink)

    async def _job_action(self, params: dict[str, Any], action: JobAction) -> dict[str, Any]:
        name, job = _param(params, "workflow"), _param(params, "job")
        return {"execution_id": await self._ask(lambda engine: engine.job_action(name, job, action))}

    async def m_job_start(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._job_action(params, JobAction.START)

    async def m_job_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._job_action(params, JobAction.STOP)

    async def m_job_restart(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._job_action(params, JobAction.RESTART)

    async def _hold(self, params: dict[str, Any], held: bool) -> dict[str, Any]:
        job = _param(params, "job")
        try:
            execution_id = int(params.get("execution"))  # type: ignore[arg-type]
        except (TypeError, ValueError) as err:
            raise ControlError(BAD_REQUEST, "'execution' must be a whole number") from err
        await self._ask(lambda engine: engine.hold_job_rules(execution_id, job, held))
        return {"execution_id": execution_id, "job": job, "held": held}

    async def m_job_stop_scheduling(self, params: dict[str, Any]) -> dict[str, Any]:
        """Hold the rules of a job in one execution: events no longer start, stop or restart it."""
        return await self._hold(params, True)

    async def m_job_resume_scheduling(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._hold(params, False)

    async def m_job_logs(self, params: dict[str, Any]) -> Any:
        """A job's log in chunks of at most ``LOG_CHUNK`` bytes, read in a thread.

        Without ``follow``: the last ``bytes`` of the latest attempt (at most ``MAX_LOG_BYTES``),
        then the answer ends. With ``follow``: the latest attempt's log from its start, then
        each later attempt's (retries, restarts) in turn, until the job is final with no
        other attempt to come.
        """
        name, job = _param(params, "workflow"), _param(params, "job")
        execution, attempt = params.get("execution"), params.get("attempt")
        try:
            limit = int(params.get("bytes", DEFAULT_LOG_BYTES))
            execution_id = int(execution) if execution is not None else None
            attempt_number = int(attempt) if attempt is not None else None
        except (TypeError, ValueError) as err:
            raise ControlError(BAD_REQUEST, f"'bytes', 'execution' and 'attempt' must be whole numbers: {err}") from err

        def find(engine: Engine) -> dict[str, Any] | None:
            rows = engine.store.job_executions(workflow=name, job=job, execution_id=execution_id, attempt=attempt_number, limit=1)
            return rows[0] if rows else None

        row = await self._ask(find)
        if row is None:
            where = (f" in execution {execution}" if execution else "") + (f" with attempt {attempt}" if attempt is not None else "")
            raise ControlError(REFUSED, f"no execution of job '{job}' of '{name}'" + where)
        if (
            row["started_at"] is not None
            and Status(row["status"]).is_final
            and not await anyio.to_thread.run_sync(os.path.exists, row["log_path"])
        ):
            keep = self.daemon.config.retention.get("logs", 0)
            why = f"retention keeps logs {keep / 86400:g} days" if keep else "it was removed"
            raise ControlError(REFUSED, f"the log of execution {row['execution_id']} of '{name}.{job}' is gone ({why}): {row['log_path']}")
        if not params.get("follow"):
            return self._tail(row, max(0, min(limit, MAX_LOG_BYTES)))
        return self._follow(row)

    async def _tail(self, row: dict[str, Any], limit: int) -> AsyncIterator[dict[str, Any]]:
        path = row["log_path"]
        size = await anyio.to_thread.run_sync(_size, path)
        position = max(0, size - limit)
        decoder = _decoder()
        yield {"log_path": path, "text": ""}
        while position < size:
            chunk = await anyio.to_thread.run_sync(_read_from, path, position, min(LOG_CHUNK, size - position))
            if not chunk:
                break
            position += len(chunk)
            yield {"text": decoder.decode(chunk)}
        if rest := decoder.decode(b"", final=True):
            yield {"text": rest}

    async def _follow(self, row: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        execution_id, job = row["execution_id"], row["job"]

        def next_attempt(current_id: int) -> Any:
            def look(engine: Engine) -> tuple[dict[str, Any] | None, bool, bool]:
                rows = engine.store.job_executions(execution_id=execution_id, job=job, limit=1000)
                later = [r for r in rows if r["id"] > current_id]
                current = next((r for r in rows if r["id"] == current_id), None)
                live = engine.executions.get(execution_id)
                # Another attempt (a retry, or a restart by a rule) is still to come while the
                # execution carries the job as running or as a pending decision.
                coming = live is not None and (job in live.running or job in live.pending)
                final = current is None or Status(current["status"]).is_final
                return (min(later, key=lambda r: r["id"]) if later else None), final, coming

            return look

        position, decoder = 0, _decoder()
        while True:
            chunk = await anyio.to_thread.run_sync(_read_from, row["log_path"], position, LOG_CHUNK)
            if chunk:
                position += len(chunk)
                yield {"text": decoder.decode(chunk)}
                continue
            following, final, coming = await self._ask(next_attempt(row["id"]))
            if not final and following is None:
                await anyio.sleep(0.1)  # as tail -f: the job writes the file directly, no event tells us
                continue
            # This attempt is over: the rest of its log, then the next attempt's from its start.
            while rest := await anyio.to_thread.run_sync(_read_from, row["log_path"], position, LOG_CHUNK):
                position += len(rest)
                yield {"text": decoder.decode(rest)}
            if tail := decoder.decode(b"", final=True):
                yield {"text": tail}
            if following is not None:
                row, position, decoder = following, 0, _decoder()
            elif coming:
                await anyio.sleep(0.1)  # a retry is due (after its retry_delay): wait for its row
            else:
                return

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
        # Without ``after``, a listing is the latest events (as tail); with it, the ones after that id.
        newest = "after" not in params
        if not params.get("follow"):
            return await self._ask(lambda engine: engine.store.events(after, limit, newest=newest))
        return self._follow_events(after, limit, newest)

    async def _follow_events(self, after: int, limit: int, newest: bool) -> AsyncIterator[dict[str, Any]]:
        def since(last: int, count: int, newest: bool = False) -> Any:
            return lambda engine: engine.store.events(last, count, newest=newest)

        rows = await self._ask(since(after, limit, newest))
        while True:
            for row in rows:
                yield row
            after = rows[-1]["id"] if rows else after
            await anyio.sleep(0.1)  # events arrive through the engine's loop; the store is where they are kept
            rows = await self._ask(since(after, 1000))

    async def m_plugins(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [info.describe() for info in self.daemon.loader.registry]

    async def m_reload(self, params: dict[str, Any]) -> dict[str, Any]:
        from aiflowd.daemon.lifecycle import ReloadRefused

        try:
            return await self.daemon.reload()
        except ReloadRefused as err:
            raise ControlError(REFUSED, str(err)) from err


def _param(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise ControlError("bad_request", f"'{key}' is required")
    return value


def history_filters(params: dict[str, Any], default_limit: int = 100) -> tuple[int, float | None, str | None]:
    """``limit``, ``since`` (see ``parse_since``) and ``status`` of a history request, checked."""
    try:
        limit = int(params.get("limit", default_limit))
    except (TypeError, ValueError) as err:
        raise ControlError(BAD_REQUEST, f"'limit' must be a whole number, got {params.get('limit')!r}") from err
    if limit < 1:
        raise ControlError(BAD_REQUEST, f"'limit' must be 1 or more, got {limit}")
    since = parse_since(params["since"]) if params.get("since") not in (None, "") else None
    status = params.get("status")
    if status in (None, ""):
        return limit, since, None
    name = str(status).upper()
    if name not in Status.__members__:
        raise ControlError(BAD_REQUEST, f"'status' must be one of {', '.join(Status.__members__)}, got {status!r}")
    return limit, since, name


def parse_since(value: Any, now: float | None = None) -> float:
    """A point in time: ``1h``, ``30m``, ``2d`` or ``90`` (that long before ``now``), an ISO time
    (local when it names no zone), or a JSON number (epoch seconds)."""
    now = time.time() if now is None else now
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        message = f"'since' must be a duration like 1h or 30m, or an ISO time like 2024-05-01T12:00, got {text!r}"
        raise ControlError(BAD_REQUEST, message) from None
    return moment.timestamp()  # a naive time is taken as local, as people write it


def with_duration(row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """``row`` with ``duration``: seconds from its start to its end (to now while it runs; None before it started)."""
    started, ended = row.get("started_at"), row.get("ended_at")
    if started is None:
        return {**row, "duration": None}
    end = ended if ended is not None else (time.time() if now is None else now)
    return {**row, "duration": round(max(0.0, end - started), 3)}


def shown_execution(engine: Engine, row: dict[str, Any]) -> dict[str, Any]:
    """An execution's row as shown: a running one with a job whose cluster does not answer is
    UNREACHABLE (``status_since``: since when, the earliest), as that job is."""
    execution = engine.executions.get(row["id"]) if row.get("status") == Status.RUNNING.value else None
    conditions = [run for run in execution.running.values() if run.condition] if execution is not None else []
    if not conditions:
        return {**row, "status_since": None}
    first = min(conditions, key=lambda run: run.condition_since or 0.0)
    return {**row, "status": first.condition, "status_since": first.condition_since}


def _job_row(row: dict[str, Any]) -> dict[str, Any]:
    condition = row.get("condition") if row["status"] == Status.RUNNING.value else None
    return with_duration(
        {
            "workflow": row["workflow"],
            "job": row["job"],
            "execution_id": row["execution_id"],
            "job_execution_id": row["id"],
            "attempt": row["attempt"],
            # What runs with a condition (UNREACHABLE: its cluster does not answer) is shown as
            # that, since ``status_since``; rules and --status filters see it RUNNING.
            "status": condition or row["status"],
            "status_since": row.get("condition_since") if condition else None,
            "started_at": row["started_at"],
            "ended_at": row["ended_at"],
            "exit_code": row["exit_code"],
            "message": row["message"],
            "reason": row["reason"],
            "kind": row.get("kind", "start"),
            "job_type": row.get("job_type"),
            "log_path": row["log_path"],
        }
    )


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _read_from(path: str, position: int, size: int) -> bytes:
    """At most ``size`` bytes of ``path`` from ``position`` (nothing when it is not there)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(position)
            return fh.read(size)
    except OSError:
        return b""


def _decoder() -> codecs.IncrementalDecoder:
    """UTF-8 across chunk boundaries: a character split between two chunks stays whole."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")
