"""The daemon: startup -> serve -> shutdown, and the control methods aiflowctl calls.

One task group holds the control server, the folder watcher, the engine (with one task
per job execution), the watchdog and the signal handler. READY=1 is sent only once the
socket listens, the watcher watches and the initial scan is served.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import structlog

import aiflowd
from aiflowd.config import DaemonConfig, load_config
from aiflowd.control.protocol import REFUSED, ControlError
from aiflowd.control.server import ControlServer, Method, bind_socket
from aiflowd.engine import ACTIVE, RETIRED, Engine, EngineError, EnginePaths, _workflow_name
from aiflowd.model import Event, JobAction, Status
from aiflowd.store import Store
from aiflowd.systemd import ServiceManager
from aiflowd.watcher import FolderWatcher
from aiflowd.workflows.errors import LoadError, Problem
from aiflowd.workflows.loader import LoadedWorkflow, WorkflowLoader, discover, find_source, is_workflow_folder, loader_for, workflow_version

log = structlog.get_logger("aiflowd")

#: Beyond the stop grace period, how long shutdown waits for plugins before it gives up.
SHUTDOWN_SLACK = 5.0


class Daemon:
    """aiflowd serving one config until it is told to stop."""

    def __init__(self, config: DaemonConfig, manager: ServiceManager | None = None) -> None:
        self.config = config
        self.manager = manager or ServiceManager()
        self.started = time.time()
        self.loader: WorkflowLoader
        self.engine: Engine
        self.stopping = anyio.Event()
        self.store: Store | None = None
        self.watcher: FolderWatcher | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def run(self) -> int:
        config = self.config
        os.makedirs(config.state_dir, exist_ok=True)
        self.store = Store(os.path.join(config.state_dir, "aiflowd.db"))
        self.loader, plugin_errors = loader_for(config.plugin_modules, config.plugin_paths, config.compile_timeout)
        for error in plugin_errors:
            log.error("plugin failed", module=error.module, error=error.message)
        settings = config.job_settings()
        settings["instance_id"] = _instance_id(config.state_dir)
        self.engine = Engine(
            self.loader.registry,
            self.store,
            EnginePaths(config.state_dir, config.log_dir),
            settings=settings,
            max_concurrent_jobs=config.max_concurrent_jobs,
        )
        sock = self.manager.sockets[0] if self.manager.sockets else bind_socket(config.control_socket, config.control_group)
        server = ControlServer(sock, self.methods(), config.control_group)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals, tg.cancel_scope)
                tg.start_soon(server.serve)
                self.watcher = watcher = FolderWatcher(config.workflows_dir, self._entries_changed, self._rescan)
                await tg.start(watcher.run)
                initial = await anyio.to_thread.run_sync(self._load_all)
                await tg.start(self.engine.serve, initial)
                if self.manager.watchdog_interval:
                    tg.start_soon(self._watchdog, self.manager.watchdog_interval)
                count = sum(1 for entry in self.engine.workflows.values() if entry.status != RETIRED)
                self.manager.notify("READY=1", f"STATUS=serving {count} workflows from {config.workflows_dir}")
                log.info("aiflowd ready", workflows=count, folder=config.workflows_dir, socket=config.control_socket, pid=os.getpid())
                await self.stopping.wait()
                self.manager.notify("STOPPING=1")
                log.info("aiflowd stopping")
                with anyio.move_on_after(config.stop_grace_period + SHUTDOWN_SLACK):
                    await self.engine.stop_all("aiflowd stopped")
                watcher.close()
                tg.cancel_scope.cancel()
        finally:
            self.store.close()
            if not self.manager.sockets:
                try:
                    os.unlink(config.control_socket)
                except OSError:
                    pass
        log.info("aiflowd stopped")
        return 0

    async def _signals(self, scope: anyio.CancelScope) -> None:
        # SIGTERM: systemd or an operator stops us; SIGINT: Ctrl-C; SIGHUP: reload (systemctl reload).
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                elif self.stopping.is_set():
                    killed = self.engine.kill_all()
                    log.warning("second stop signal: not waiting for jobs any longer", killed=killed)
                    if self.watcher is not None:
                        self.watcher.close()
                    scope.cancel()  # job tasks still stop their process groups, shielded and bounded
                    return
                else:
                    self.stopping.set()

    async def _watchdog(self, interval: float) -> None:
        # Pinged from the live loop: a blocked loop misses pings and systemd restarts us.
        while True:
            self.manager.notify("WATCHDOG=1")
            await anyio.sleep(interval)

    async def reload(self) -> dict[str, Any]:
        """Read the config again; a bad one is refused and the old one keeps serving."""
        self.manager.reloading()
        try:
            new = load_config(self.config.file)
        except LoadError as err:
            problems = [str(p) for p in err.problems]
            log.error("reload refused: the config has errors", problems=problems)
            self.manager.notify("READY=1", "STATUS=reload refused: the config has errors")
            raise ControlError(REFUSED, "config not reloaded:\n" + "\n".join(problems)) from err
        fixed = [
            key
            for key in ("workflows_dir", "state_dir", "log_dir", "control_socket", "run_dir")
            if getattr(new, key) != getattr(self.config, key)
        ]
        errors = self.loader.registry.discover(new.plugin_modules, new.plugin_paths, entry_points=True)
        for error in errors:
            log.error("plugin failed", module=error.module, error=error.message)
        self.loader.settings.compile_timeout = new.compile_timeout
        self.loader.settings.plugin_paths = list(new.plugin_paths)
        self.engine.settings.update({k: v for k, v in new.job_settings().items() if k != "run_dir"})
        self.engine.limiter.total_tokens = new.max_concurrent_jobs
        for key in fixed:
            setattr(new, key, getattr(self.config, key))
        self.config = new
        await self._rescan()
        self.manager.notify("READY=1", "STATUS=reloaded")
        log.info("config reloaded", needs_restart=fixed)
        return {"reloaded": True, "needs_restart": fixed, "plugin_errors": [str(e) for e in errors]}

    # -- the watched folder ----------------------------------------------------------

    def _load_all(self) -> list[tuple[str, LoadedWorkflow | LoadError]]:
        return [(path, self._load(path)) for path in discover(self.config.workflows_dir)]

    def _load(self, path: str, version: str | None = None) -> LoadedWorkflow | LoadError:
        try:
            return self.loader.load(path, version)
        except LoadError as err:
            return err
        except Exception as err:
            log.exception("loading failed", path=path)
            return LoadError([Problem(path, 0, 0, "", f"aiflowd could not load it: {type(err).__name__}: {err}")])

    async def _entries_changed(self, entries: set[str]) -> None:
        for path in sorted(entries):
            await self._look_again(path)

    async def _look_again(self, path: str) -> None:
        name = _workflow_name(path)
        is_workflow = (os.path.isdir(path) and is_workflow_folder(path)) or (os.path.isfile(path) and path.endswith((".yaml", ".yml")))
        entry = self.engine.workflows.get(name)
        if not is_workflow:
            if entry is not None and entry.status != RETIRED and entry.path == path:
                self.engine.post("removed", name)
            return
        version = None
        if entry is not None and entry.status == ACTIVE and entry.loaded is not None and not entry.problems:
            try:
                version = await anyio.to_thread.run_sync(workflow_version, find_source(path))
            except LoadError:
                version = None
            if version == entry.loaded.workflow.version:
                return  # the same content: a no-op save, a touch, a bytecode cache
        result = await anyio.to_thread.run_sync(self._load, path, version)  # hashed once, not again
        self.engine.post("loaded", (path, result))

    async def _rescan(self) -> None:
        present = discover(self.config.workflows_dir) if os.path.isdir(self.config.workflows_dir) else []
        names = {_workflow_name(path) for path in present}
        for name, entry in list(self.engine.workflows.items()):
            if entry.status != RETIRED and name not in names:
                self.engine.post("removed", name)
        for path in present:
            await self._look_again(path)

    # -- control methods -------------------------------------------------------------

    def methods(self) -> dict[str, Method]:
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
            return await self.engine.request(fn)
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
                "uptime": round(time.time() - self.started, 3),
                "workflows_dir": self.config.workflows_dir,
                "state_dir": self.config.state_dir,
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
            return rows

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
            current = await self.engine.request(
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
        return [info.describe() for info in self.loader.registry]

    async def m_reload(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self.reload()


def _instance_id(state_dir: str) -> str:
    """A random id made once per state folder: Flink job ids derive from it, so that two
    daemons (or one whose state was wiped) never choose the same id for a job."""
    path = os.path.join(state_dir, "instance-id")
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        value = os.urandom(8).hex()
        with open(path, "w") as fh:
            fh.write(value + "\n")
        return value


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
