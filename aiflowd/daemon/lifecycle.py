"""The daemon's life: startup -> serve -> shutdown, signals and reload.

One task group holds the control server, the folder watcher, the engine (with one task
per job execution), the watchdog and the signal handler. READY=1 is sent only once the
socket listens, the watcher watches and the initial scan is served.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import anyio
import structlog

from aiflowd.config import DaemonConfig, load_config
from aiflowd.control.protocol import REFUSED, ControlError
from aiflowd.control.server import ControlServer, bind_socket
from aiflowd.daemon.folder import WorkflowFolder
from aiflowd.daemon.methods import ControlMethods
from aiflowd.engine import RETIRED, Engine, EnginePaths
from aiflowd.store import Store
from aiflowd.systemd import ServiceManager
from aiflowd.watcher import FolderWatcher
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import WorkflowLoader, loader_for

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
        self.folder: WorkflowFolder
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
        self.folder = WorkflowFolder(config.workflows_dir, self.loader, self.engine)
        server = ControlServer(sock, ControlMethods(self).table(), config.control_group)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals, tg.cancel_scope)
                tg.start_soon(server.serve)
                self.watcher = watcher = FolderWatcher(config.workflows_dir, self.folder.entries_changed, self.folder.rescan)
                await tg.start(watcher.run)
                # READY does not wait for slow definitions: they are served as they compile.
                initial, loading = await self.folder.scan(tg, config.max_parallel_loads)
                await tg.start(self.engine.serve, initial, loading)
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
        await self.folder.rescan()
        self.manager.notify("READY=1", "STATUS=reloaded")
        log.info("config reloaded", needs_restart=fixed)
        return {"reloaded": True, "needs_restart": fixed, "plugin_errors": [str(e) for e in errors]}

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
