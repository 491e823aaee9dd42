"""The daemon's life in three named phases: startup -> serve -> shutdown; signals and reload.

The rule: the daemon ends only on SIGTERM/SIGINT (a requested stop, which stops the jobs)
or a state store it cannot use at all. A workflow, a request, a job, a timer or a plugin
never ends it:

- **startup** takes the state dir's lock before anything else (one daemon per state
  dir), opens the store, binds the socket. Any failure is a ``StartupError`` whose
  message is one line naming the file and the cause; nothing has started yet.
- **serve** runs one task group: the control server, the watcher task, the engine (with
  one task per job execution), the watchdog, retention (``aiflowd.retention``), the signal
  handler and, when the config has an ``http`` section, the HTTP server (``aiflowd.web``).
  The watcher task, the control server's accept loop, the HTTP server, retention and the
  watchdog are supervised (see
  ``aiflowd.supervision``): a failure is logged, counted and restarted, the others go on.
  READY=1 is sent once the socket listens, the watcher watches and the scan is served.
- **shutdown** begins on SIGTERM/SIGINT: STOPPING=1, every job stopped (bounded), exit 0.
  A second signal stops waiting for the jobs.

Signals and control requests never share an error path: a signal handler logs what
went wrong and goes on (a SIGHUP with a bad config is answered with RELOADING=1 then
READY=1 and the old config keeps serving); a request's error is an answer to its caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sqlite3
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from aiflowd.alerts import Alerts
from aiflowd.config import DaemonConfig, load_config
from aiflowd.control.protocol import ControlError
from aiflowd.control.server import ControlServer, Method, SocketPathError, bind_socket
from aiflowd.controllers import process_group
from aiflowd.daemon.folder import WorkflowFolder
from aiflowd.daemon.methods import ControlMethods
from aiflowd.engine import RETIRED, Engine, EnginePaths, JobRun
from aiflowd.retention import Retention
from aiflowd.store import Store
from aiflowd.supervision import Restarts, supervise
from aiflowd.systemd import ServiceManager
from aiflowd.watcher import FolderWatcher
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import WorkflowLoader, loader_for

if TYPE_CHECKING:
    from aiflowd.web.metrics import Metrics

log = structlog.get_logger("aiflowd")

#: Beyond the stop grace period, how long shutdown waits for plugins before it gives up.
SHUTDOWN_SLACK = 5.0
#: How long shutdown waits for the HTTP server to close its connections.
HTTP_CLOSE_WAIT = 3.0
#: How long shutdown waits for the hooks still queued (after the jobs have stopped).
HOOKS_DRAIN = 5.0
#: The config keys a reload cannot apply: a changed one is kept and named as needing a restart.
RESTART_KEYS = (
    "workflows_dir",
    "state_dir",
    "log_dir",
    "control_socket",
    "run_dir",
    "control_group",
    "http",
    "max_concurrent_hooks",
    "max_parallel_loads",  # the compile slots are made once, at start
)
#: The file in the state dir whose lock says "a daemon serves this state".
LOCK_NAME = "aiflowd.lock"


class StartupError(Exception):
    """The daemon cannot start; the message is one line naming the file and the cause."""


class ReloadRefused(Exception):
    """The config file has errors; the old config keeps serving."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("config not reloaded:\n" + "\n".join(problems))
        self.problems = problems


class Daemon:
    """aiflowd serving one config until it is told to stop."""

    def __init__(self, config: DaemonConfig, manager: ServiceManager | None = None) -> None:
        self.config = config
        self.manager = manager or ServiceManager()
        self.started = time.time()
        self.loader: WorkflowLoader
        self.engine: Engine
        self.alerts: Alerts
        self.folder: WorkflowFolder
        self.server: ControlServer | None = None
        self.retention: Retention
        self.stopping = anyio.Event()
        self.store: Store | None = None
        self.watcher: FolderWatcher | None = None
        self.restarts = Restarts()
        self._lock_fd: int | None = None
        self._bound_socket = False
        self._reloading = anyio.Lock()
        self._task_group: TaskGroup | None = None
        #: The metrics /metrics serves; None without ``http`` (nothing is counted then).
        self.metrics: Metrics | None = None
        self.methods = ControlMethods(self)
        #: Set at shutdown: the HTTP server closes (``http_done`` once it has).
        self._http_stop = anyio.Event()
        self._http_done = anyio.Event()

    async def run(self) -> int:
        """Start, serve until a stop signal, shut down; 0 after a requested stop.

        ``StartupError`` when it cannot start; 1 when the engine (its store) fails for good.
        """
        try:
            self._startup()
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                await self._serve(tg)
                await self._shutdown(tg)
        except StartupError:
            raise
        except Exception as err:
            log.exception("aiflowd failed", error=_one_line(err))
            return 1
        finally:
            self._close()
        log.info("aiflowd stopped")
        return 0

    # -- startup ---------------------------------------------------------------------

    def _startup(self) -> None:
        """Take the state dir, open the store, bind the socket: each failure one located line."""
        config = self.config
        _attempt(config.state_dir, "cannot create the state dir", os.makedirs, config.state_dir, exist_ok=True)
        self._lock_fd = lock_state_dir(config.state_dir)  # before anything else touches the state
        database = os.path.join(config.state_dir, "aiflowd.db")
        self.store = _attempt(database, "cannot open the state database", Store, database)
        if config.http:
            from aiflowd.web import missing

            if problem := missing():
                raise StartupError(f"{config.file or 'the config'}: {problem}")
            from aiflowd.web.metrics import Metrics

            self.metrics = Metrics()
        self.loader, plugin_errors = loader_for(config.plugin_modules, config.plugin_paths, config.compile_timeout, config.warm_start)
        for error in plugin_errors:
            log.error("plugin failed", module=error.module, error=error.message)
        settings = config.job_settings()
        settings["instance_id"] = _instance_id(config.state_dir)
        self.alerts = Alerts(config.hooks, config.max_concurrent_hooks)
        self.engine = Engine(
            self.loader.registry,
            self.store,
            EnginePaths(config.state_dir, config.log_dir),
            settings=settings,
            max_concurrent_jobs=config.max_concurrent_jobs,
            on_job_change=self._job_changed,
            alerts=self.alerts,
        )
        if self.metrics is not None:
            self._instrument(self.metrics)
        self.retention = Retention(self.store, config.state_dir, config.log_dir, config.retention, clock=self.engine.clock)
        if self.manager.sockets:
            sock = self.manager.sockets[0]
        else:
            try:
                sock = _attempt(
                    config.control_socket, "cannot create the control socket", bind_socket, config.control_socket, config.control_group
                )
            except SocketPathError as err:
                raise StartupError(str(err)) from err
            self._bound_socket = True
        self.engine.control_socket = _socket_path(sock, config.control_socket)  # jobs get it as AIFLOWD_SOCKET
        self.alerts.environment["AIFLOWD_SOCKET"] = self.engine.control_socket  # and command hooks, for aiflowctl
        self.folder = WorkflowFolder(config.workflows_dir, self.loader, self.engine)
        self.server = ControlServer(
            sock,
            self._method_table(),
            config.control_group,
            idle_timeout=config.control_idle_timeout,
            request_timeout=config.control_request_timeout,
            restarts=self.restarts,
        )

    def _job_changed(self, run: JobRun) -> None:
        if self.metrics is not None:
            self.metrics.job_changed(run)

    def _instrument(self, metrics: Metrics) -> None:
        """Feed the metrics from the parts that know: the store's commits, the loader's loads, the engine's state."""
        assert self.store is not None
        store, loader = self.store, self.loader
        metrics.watch_engine(self.engine)
        setattr(store, "commit", metrics.timed(store.commit, lambda seconds, _: metrics.commit_seconds.observe(seconds)))  # noqa: B010

        def loaded(seconds: float, result: Any) -> None:
            name = getattr(getattr(result, "workflow", None), "name", None)
            if name is not None:  # a failed load is shown as the workflow's problems
                metrics.workflow_loaded(name, seconds)

        setattr(loader, "load_source", metrics.timed(loader.load_source, loaded))  # noqa: B010

    def _method_table(self) -> dict[str, Method]:
        """The control methods; with metrics on, each call is counted by method and outcome."""
        table = self.methods.table()
        metrics = self.metrics
        if metrics is None:
            return table

        def counted(name: str, method: Method) -> Method:
            async def handler(params: dict[str, Any]) -> Any:
                try:
                    result = await method.handler(params)
                except ControlError as err:
                    metrics.control_request(name, err.code)
                    raise
                except BaseException:
                    metrics.control_request(name, "error")
                    raise
                metrics.control_request(name, "ok")
                return result

            return Method(handler, write=method.write)

        return {name: counted(name, method) for name, method in table.items()}

    async def _entries_changed(self, entries: set[str]) -> None:
        if self.metrics is not None:
            self.metrics.watcher_events.inc(len(entries))
        await self.folder.entries_changed(entries)

    # -- serve -----------------------------------------------------------------------

    async def _serve(self, tg: TaskGroup) -> None:
        """Start every part, then say READY=1 and wait for a stop signal."""
        config = self.config
        assert self.server is not None
        await tg.start(supervise, "signals", self._signals, self.restarts)  # handlers in place before anything else
        await tg.start(self.server.serve)
        await tg.start(partial(supervise, "watcher", self._watch, self.restarts, on_restart=self.folder.rescan))
        # READY does not wait for slow definitions: they are served as they compile.
        initial, loading = await self.folder.scan(tg, config.max_parallel_loads)
        await tg.start(supervise, "alerts", self.alerts.serve, self.restarts)
        await tg.start(self.engine.serve, initial, loading)
        if config.http.get("listen"):
            from aiflowd.web.app import WebApp
            from aiflowd.web.server import serve_http

            app = WebApp(self.methods, self.metrics, refresh=config.http.get("refresh", 5.0))
            tg.start_soon(
                self._http, partial(supervise, "http", partial(serve_http, app, config.http["listen"], self._http_stop), self.restarts)
            )
        tg.start_soon(supervise, "retention", self.retention.run, self.restarts)
        if self.manager.watchdog_interval:
            tg.start_soon(supervise, "watchdog", partial(self._watchdog, self.manager.watchdog_interval), self.restarts)
        count = sum(1 for entry in self.engine.workflows.values() if entry.status != RETIRED)
        self.manager.notify("READY=1", f"STATUS=serving {count} workflows from {config.workflows_dir}")
        log.info("aiflowd ready", workflows=count, folder=config.workflows_dir, socket=config.control_socket, pid=os.getpid())
        await self.stopping.wait()

    async def _http(self, run: Any) -> None:
        try:
            await run()
        finally:
            self._http_done.set()

    async def _watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The folder watcher; a fresh one each time the supervisor starts it again."""
        self.watcher = watcher = FolderWatcher(self.config.workflows_dir, self._entries_changed, self.folder.rescan)
        if self.stopping.is_set():
            return
        await watcher.run(task_status=task_status)

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # SIGTERM: systemd or an operator stops us; SIGINT: Ctrl-C; SIGHUP: reload (systemctl reload).
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                try:
                    self._on_signal(signum)
                except (Exception, SystemExit):
                    log.exception("handling a signal failed", signal=signal.Signals(signum).name)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            assert self._task_group is not None
            self._task_group.start_soon(self._reload_on_signal)  # the handler goes on listening meanwhile
        elif self.stopping.is_set():
            killed = self.engine.kill_all()
            log.warning("second stop signal: not waiting for jobs any longer", killed=killed)
            if self.watcher is not None:
                self.watcher.close()
            assert self._task_group is not None
            self._task_group.cancel_scope.cancel()  # job tasks still stop their process groups, shielded and bounded
        else:
            self.stopping.set()

    async def _reload_on_signal(self) -> None:
        try:
            await self.reload()
        except ReloadRefused:
            pass  # logged and announced by reload(); the old config keeps serving
        except (Exception, SystemExit):
            log.exception("reload failed; the old config keeps serving")

    async def _watchdog(self, interval: float, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Pinged from the live loop: a blocked loop misses pings and systemd restarts us.
        task_status.started()
        while True:
            self.manager.notify("WATCHDOG=1")
            await anyio.sleep(interval)

    # -- shutdown --------------------------------------------------------------------

    async def _shutdown(self, tg: TaskGroup) -> None:
        """Stop every job (bounded by the grace period), then every part."""
        self.manager.notify("STOPPING=1")
        log.info("aiflowd stopping")
        with anyio.move_on_after(self.config.stop_grace_period + SHUTDOWN_SLACK):
            await self.engine.stop_all("aiflowd stopped")
        await self.alerts.drain(HOOKS_DRAIN)
        if self.watcher is not None:
            self.watcher.close()
        if self.config.http.get("listen"):
            self._http_stop.set()
            with anyio.move_on_after(HTTP_CLOSE_WAIT):
                await self._http_done.wait()
        tg.cancel_scope.cancel()

    def _close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        if self._bound_socket:
            with contextlib.suppress(OSError):
                os.unlink(self.config.control_socket)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the lock goes with it
            self._lock_fd = None

    # -- reload ----------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Read the config again; a bad one raises ``ReloadRefused`` and the old one keeps serving.

        RELOADING=1 is always followed by READY=1, whatever happens in between.
        """
        async with self._reloading:
            self.manager.reloading()
            status = "STATUS=reload failed"
            try:
                result = await self._reload()
                status = "STATUS=reloaded"
                return result
            except ReloadRefused:
                status = "STATUS=reload refused: the config has errors"
                raise
            finally:
                self.manager.notify("READY=1", status)

    async def _reload(self) -> dict[str, Any]:
        try:
            new = load_config(self.config.file)
        except LoadError as err:
            problems = [str(p) for p in err.problems]
            log.error("reload refused: the config has errors", problems=problems)
            raise ReloadRefused(problems) from err
        fixed = [key for key in RESTART_KEYS if getattr(new, key) != getattr(self.config, key)]
        errors = self.loader.registry.discover(new.plugin_modules, new.plugin_paths, entry_points=True)
        for error in errors:
            log.error("plugin failed", module=error.module, error=error.message)
        self.loader.settings.compile_timeout = new.compile_timeout
        self.loader.settings.plugin_paths = list(new.plugin_paths)
        self.loader.settings.warm_start = new.warm_start  # compiles as the jobs (job_settings) do
        self.engine.settings.update({k: v for k, v in new.job_settings().items() if k != "run_dir"})
        self.engine.limiter.total_tokens = new.max_concurrent_jobs
        self.alerts.hooks = new.hooks
        self.retention.settings = dict(new.retention)  # the interval counts from the next pass on
        if self.server is not None:
            self.server.idle_timeout = new.control_idle_timeout
            self.server.request_timeout = new.control_request_timeout
        for key in fixed:
            setattr(new, key, getattr(self.config, key))
        self.config = new
        # A fork server runs the code it imported at its start: one whose files changed
        # since (an upgrade of aiflowd, of Python) is replaced before anything is compiled again.
        await anyio.to_thread.run_sync(process_group.refresh_fork_servers)
        await self.folder.rescan()
        log.info("config reloaded", needs_restart=fixed)
        return {"reloaded": True, "needs_restart": fixed, "plugin_errors": [str(e) for e in errors]}


def lock_state_dir(state_dir: str) -> int:
    """Lock the state dir for this process's life (the open descriptor); ``StartupError``
    naming the holder's pid when another daemon has it.

    An flock on ``aiflowd.lock``: the kernel drops it when the process ends, however it
    ends, so a kill -9 never leaves a stale lock. The descriptor is close-on-exec: jobs and
    helpers never hold it.
    """
    path = os.path.join(state_dir, LOCK_NAME)
    fd = _attempt(path, "cannot open the state dir's lock file", os.open, path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartupError(f"{state_dir}: another aiflowd (pid {holder}) already serves this state dir") from None
    except OSError as err:
        os.close(fd)
        raise StartupError(f"{path}: cannot lock the state dir: {err.strerror or err}") from err
    with contextlib.suppress(OSError):  # the pid is for people; the lock is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _attempt(path: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``; an OS or SQLite error becomes a ``StartupError`` naming ``path``."""
    try:
        return fn(*args, **kwargs)
    except (OSError, sqlite3.Error) as err:
        cause = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise StartupError(f"{path}: {what}: {cause}") from err


def _one_line(err: BaseException) -> str:
    while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
        err = err.exceptions[0]
    return f"{type(err).__name__}: {err}".splitlines()[0]


def _instance_id(state_dir: str) -> str:
    """A random id made once per state folder: Flink job ids derive from it, so that two
    daemons (or one whose state was wiped) never choose the same id for a job."""
    path = os.path.join(state_dir, "instance-id")
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        value = os.urandom(8).hex()

        def write() -> None:
            with open(path, "w") as fh:
                fh.write(value + "\n")

        _attempt(path, "cannot write the instance id", write)
        return value
    except OSError as err:
        raise StartupError(f"{path}: cannot read the instance id: {err.strerror or err}") from err


def _socket_path(sock: socket.socket, configured: str) -> str:
    """The path clients reach ``sock`` at (systemd may have bound it elsewhere than configured)."""
    name = sock.getsockname()
    return name if isinstance(name, str) and name else configured
