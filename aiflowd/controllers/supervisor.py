"""The async supervision of one job execution, whatever its controller.

Submits the job, waits for its result, enforces its timeout, stops it when asked (or
when the supervising task is cancelled) and always cleans up, shielded and time-boxed
so that a stuck plugin cannot hold the daemon. A plugin that raises fails its own job
execution, with the reason in that execution's log, never anything else.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from aiflowd.model import Status
from aiflowd.plugin_interface import Job, JobController, JobHandle, JobRuntimeEnv, make_working_dir

#: Extra time a controller gets beyond the stop grace period before it is abandoned.
CONTROLLER_SLACK = 5.0


async def call(method: Callable[..., Any], *args: Any, abandon_on_cancel: bool = False) -> Any:
    """Call a controller method: awaited if async, in a worker thread if blocking (AIFlow style)."""
    if inspect.iscoroutinefunction(method):
        return await method(*args)
    result = await anyio.to_thread.run_sync(functools.partial(method, *args), abandon_on_cancel=abandon_on_cancel)
    if inspect.isawaitable(result):
        return await result
    return result


def _after_making(env: JobRuntimeEnv, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, called once the working folder exists (``make_working_dir``): made in the
    worker thread a blocking method runs in, or at once before an async one (no extra thread hop)."""
    if inspect.iscoroutinefunction(method):

        async def after_async(*args: Any) -> Any:
            make_working_dir(env)
            return await method(*args)

        return after_async

    def after(*args: Any) -> Any:
        make_working_dir(env)
        return method(*args)

    return after


class JobStartError(Exception):
    """A job could not start, for a reason its message tells the user whole (a controller raises it)."""


@dataclass
class JobOutcome:
    """How a job execution ended."""

    status: Status
    exit_code: int | None = None
    message: str | None = None
    handle_record: dict[str, Any] | None = None
    started_at: float | None = None
    ended_at: float = field(default_factory=time.time)


class JobSupervisor:
    """Runs one job execution to its end; ``request_stop`` ends it early as KILLED."""

    def __init__(
        self,
        controller: JobController,
        job: Job,
        env: JobRuntimeEnv,
        *,
        timeout: float | None = None,
        on_running: Callable[[JobHandle], Awaitable[None]] | None = None,
        handle: JobHandle | None = None,
    ) -> None:
        self.controller = controller
        self.job = job
        self.env = env
        self.timeout = timeout
        self.on_running = on_running
        self.handle = handle
        self.log = structlog.get_logger("aiflowd.job").bind(
            workflow=env.workflow_name, job=env.job_name, execution=env.job_execution_info.job_execution_id
        )
        self._stop_reason: str | None = None
        self._wait_scope: anyio.CancelScope | None = None

    @property
    def grace(self) -> float:
        """How long a stop may take: the controller's say (AIFlow-style controllers have none)."""
        stop_timeout = getattr(self.controller, "stop_timeout", None)
        if callable(stop_timeout):
            try:
                return float(stop_timeout(self.env))
            except Exception:  # noqa: BLE001 - a plugin's bug must not block stopping
                pass
        return float(self.env.settings.get("stop_grace_period", 10.0))

    def request_stop(self, reason: str = "stopped") -> None:
        self._stop_reason = reason
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def run(self) -> JobOutcome:
        started = time.time()
        if self.handle is None:
            try:
                submit = self.controller.submit_job
                if not getattr(self.controller, "creates_working_dir", False):
                    submit = _after_making(self.env, submit)  # plugins may write there at once, as AIFlow's do
                self.handle = await call(submit, self.job, self.env)
            except JobStartError as err:
                message = str(err)
                self.note(message)
                self.log.warning("job could not start", error=message)
                return JobOutcome(Status.FAILED, message=message, started_at=started)
            except Exception as err:  # noqa: BLE001 - a plugin may raise anything; it fails this job only
                message = f"submission failed: {type(err).__name__}: {err}"
                self.note(message)
                self.log.warning("job submission failed", error=str(err))
                return JobOutcome(Status.FAILED, message=message, started_at=started)
        handle = self.handle
        self.log.info("job running")
        try:
            if self.on_running is not None:
                await self.on_running(handle)
            return await self._wait(handle, started)
        except BaseException:
            # Cancelled (the daemon stops, or run-once got Ctrl-C): the job must not outlive us.
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace + CONTROLLER_SLACK):
                await self._stop(handle)
            raise
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace + CONTROLLER_SLACK):
                try:
                    await call(self.controller.cleanup_job, handle, self.env)
                except Exception as err:  # noqa: BLE001 - cleanup problems are logged, not fatal
                    self.log.warning("job cleanup failed", error=str(err))

    async def _wait(self, handle: JobHandle, started: float) -> JobOutcome:
        timed_out = False
        message = None
        if self._stop_reason is None:
            with anyio.move_on_after(self.timeout if self.timeout else float("inf")) as timeout_scope:
                with anyio.CancelScope() as self._wait_scope:
                    await call(self.controller.get_result, handle, True, abandon_on_cancel=True)
            timed_out = timeout_scope.cancelled_caught
        if timed_out:
            message = f"timed out after {self.timeout:g}s"
            self.note(f"{message}; stopping")
        if timed_out or self._stop_reason is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace + CONTROLLER_SLACK):
                await self._stop(handle)
            if await self._still_running(handle):
                # The stop did not finish in time: the job may still run, so it is not
                # reported ended until it is (a Flink savepoint can take long).
                self.note("the stop did not finish in time; waiting for the job to end")
                await call(self.controller.get_result, handle, True, abandon_on_cancel=True)
        try:
            status = await call(self.controller.get_job_status, handle)
            result = await call(self.controller.get_result, handle, False)
        except Exception as err:  # noqa: BLE001 - a plugin may raise anything; it fails this job only
            status, result, message = Status.FAILED, None, f"status unknown: {type(err).__name__}: {err}"
        if timed_out:
            status = Status.FAILED
        elif self._stop_reason is not None:
            status, message = Status.KILLED, self._stop_reason
        exit_code = result if isinstance(result, int) and not isinstance(result, bool) else None
        if status == Status.FAILED and exit_code is None and message is None:
            message = "the job ended, but its exit status was lost"
        self.log.info("job ended", status=status.value, exit_code=exit_code)
        ended_at = getattr(handle, "ended_at", None)
        outcome = JobOutcome(status, exit_code, message, _record(handle), started)
        if isinstance(ended_at, float):
            outcome.ended_at = ended_at
        return outcome

    async def _still_running(self, handle: JobHandle) -> bool:
        try:
            return bool(await call(self.controller.get_job_status, handle) == Status.RUNNING)
        except Exception:  # noqa: BLE001 - unknown counts as ended; the status call below reports it
            return False

    async def _stop(self, handle: JobHandle) -> None:
        try:
            await call(self.controller.stop_job, handle, self.env)
        except Exception as err:  # noqa: BLE001 - a plugin may raise anything
            self.log.warning("job stop failed", error=str(err))

    def note(self, message: str) -> None:
        """Append aiflowd's own word to the job's log, where the user looks first."""
        try:
            os.makedirs(self.env.log_dir, exist_ok=True)
            with open(self.env.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"aiflowd: {message}\n")
        except OSError:
            pass


def _record(handle: JobHandle) -> dict[str, Any] | None:
    try:
        return handle.to_json()
    except Exception:  # noqa: BLE001 - a plugin's handle may fail to serialize; the store keeps less
        return None
