"""Supervised parts of the daemon: a failure is logged, counted and restarted, never spread.

The daemon is one task group; an exception that escapes any task in it would cancel all
the others, the engine and its jobs included. So each long-lived part (the watcher task,
the control server's accept loop, the watchdog) runs under ``supervise``: an unexpected
exception is logged with the part's name and context, counted in ``Restarts`` (which
``aiflowctl status`` shows), and the part starts again after a backoff that grows while
it keeps failing. Cancellation is not a failure and passes through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

log = structlog.get_logger("aiflowd")

#: The first pause before a failed part starts again, and the longest one.
BACKOFF_START = 0.1
BACKOFF_MAX = 30.0
#: A part that ran this long before failing starts again after the shortest pause.
HEALTHY_AFTER = 60.0


@dataclass
class Restarts:
    """How often each supervised part failed and was started again, by name."""

    counts: dict[str, int] = field(default_factory=dict)

    def count(self, part: str) -> int:
        self.counts[part] = self.counts.get(part, 0) + 1
        return self.counts[part]

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


class Backoff:
    """Pauses that double from ``start`` to ``limit``; ``reset`` after a healthy run."""

    def __init__(self, start: float = BACKOFF_START, limit: float = BACKOFF_MAX) -> None:
        self.start = start
        self.limit = limit
        self.next = start

    def reset(self) -> None:
        self.next = self.start

    async def wait(self) -> None:
        delay, self.next = self.next, min(self.next * 2, self.limit)
        await anyio.sleep(delay)


async def supervise(
    part: str,
    run: Callable[..., Awaitable[Any]],
    restarts: Restarts,
    *,
    on_restart: Callable[[], Awaitable[None]] | None = None,
    context: dict[str, Any] | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run(task_status=...)`` for ever: restarted after an exception, done when it returns.

    ``task_status.started()`` is passed on from the part's first start (and given on its
    behalf if that start fails before saying so, so that startup never waits on a part
    that is restarting). ``on_restart`` runs before each restart (a watcher's rescan).
    """
    backoff = Backoff()
    started = False

    def mark_started(value: Any = None) -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started()

    status = _Status(mark_started)
    while True:
        began = anyio.current_time()
        try:
            await run(task_status=status)
            return
        except (Exception, SystemExit) as err:  # a plugin calling sys.exit() is a failure too
            number = restarts.count(part)
            log.exception(
                "supervised part failed; it starts again",
                part=part,
                restarts=number,
                error=f"{type(err).__name__}: {err}",
                **(context or {}),
            )
        mark_started()
        if anyio.current_time() - began > HEALTHY_AFTER:
            backoff.reset()
        await backoff.wait()
        if on_restart is not None:
            try:
                await on_restart()
            except (Exception, SystemExit):
                restarts.count(part)
                log.exception("supervised part failed while starting again", part=part, **(context or {}))


class _Status(TaskStatus[None]):
    """A task status that reports the first ``started`` only (a restarted part says it again)."""

    def __init__(self, on_started: Callable[[Any], None]) -> None:
        self._on_started = on_started

    def started(self, value: Any = None) -> None:
        self._on_started(value)
