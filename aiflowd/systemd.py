"""The service manager's protocols: sd_notify, the watchdog, and socket activation.

Written here rather than taken from a library: each is a few lines of the documented
wire format (sd_notify(3), sd_watchdog_enabled(3), sd_listen_fds(3)). The manager's
variables are read once and then removed, so no job or helper ever sees them.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

LISTEN_FDS_START = 3
VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass
class ServiceManager:
    """What systemd handed this process: where to notify, the watchdog period, sockets."""

    notify_address: str | None = None
    watchdog_interval: float | None = None
    sockets: list[socket.socket] = field(default_factory=list)

    @classmethod
    def from_environment(cls) -> ServiceManager:
        env, pid = os.environ, str(os.getpid())
        manager = cls(notify_address=env.get("NOTIFY_SOCKET") or None)
        if env.get("WATCHDOG_USEC") and env.get("WATCHDOG_PID", pid) == pid:
            try:
                manager.watchdog_interval = int(env["WATCHDOG_USEC"]) / 2_000_000  # ping at half the timeout
            except ValueError:
                pass
        if env.get("LISTEN_PID") == pid:
            try:
                count = int(env.get("LISTEN_FDS", "0"))
            except ValueError:
                count = 0
            for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
                os.set_inheritable(fd, False)
                manager.sockets.append(socket.socket(fileno=fd))
        for name in VARIABLES:
            env.pop(name, None)
        return manager

    def notify(self, *states: str) -> bool:
        """Send state lines (``READY=1``, ``STATUS=...``); False when no manager listens."""
        if not self.notify_address:
            return False
        address = self.notify_address
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        try:  # never raises: out of descriptors or a manager gone, the daemon goes on
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(states).encode(), address)
        except OSError:
            return False
        return True

    def reloading(self) -> bool:
        """``RELOADING=1`` with the ``MONOTONIC_USEC`` that Type=notify-reload expects."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
