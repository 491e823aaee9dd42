"""Time as the engine sees it: wall-clock now, and sleeping until a moment.

The engine never calls ``time.time()`` or ``anyio.sleep()`` for its schedules and retry
delays; it asks the clock it was given. ``SystemClock`` is the real one. ``ManualClock``
moves only when a test tells it to, so periodic ticks, catch-up after a downtime and
retry delays are tested as exact sequences, never as windows of real time that a
loaded machine may miss.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio
import anyio.lowlevel

#: The longest a real sleep lasts before the wall clock is read again: a clock set forward
#: or back (NTP, a suspended machine) moves a schedule's next tick at most this late.
_RECHECK = 30.0


class Clock(Protocol):
    """What the engine needs of time."""

    def now(self) -> float:
        """Seconds since the epoch, as a schedule's slots are expressed."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now()`` has reached ``deadline`` (at once if it has already)."""
        ...


class SystemClock:
    """The wall clock; sleeps are monotonic but re-read the wall clock now and then."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        while (left := deadline - time.time()) > 0:
            await anyio.sleep(min(left, _RECHECK))
        await anyio.lowlevel.checkpoint()


class ManualClock:
    """A clock for tests: it stands still until ``advance`` or ``set`` moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        entry = (deadline, anyio.Event())
        self._sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def set(self, moment: float) -> None:
        """Move to ``moment`` (never backwards) and wake every sleeper whose deadline passed."""
        self._now = max(self._now, moment)
        for deadline, event in list(self._sleepers):
            if deadline <= self._now:
                self._sleepers.remove((deadline, event))
                event.set()

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    @property
    def deadlines(self) -> list[float]:
        """When the tasks sleeping on this clock want to wake, earliest first."""
        return sorted(deadline for deadline, _ in self._sleepers)
