"""The daemon: its lifecycle, the watched folder it serves and the control methods it answers."""

from aiflowd.daemon.lifecycle import Daemon

__all__ = ["Daemon"]
