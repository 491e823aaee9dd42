"""Serving the web app inside the daemon's own event loop, with hypercorn.

hypercorn's ``serve`` runs in an existing asyncio loop, takes a shutdown trigger instead
of installing signal handlers (the daemon owns SIGTERM/SIGINT/SIGHUP), and binds TCP or a
Unix socket alike. Cancelling hypercorn's
tasks from outside leaves its connection tasks complaining on stderr, so the daemon ends
it through the trigger first. The daemon runs ``serve_http`` under ``supervise``: a failure here (a
taken port, a bug) is logged, counted and retried, and never ends the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat

import anyio
import structlog
from anyio.abc import TaskStatus

from aiflowd.web.app import WebApp

log = structlog.get_logger("aiflowd")


def bind_address(listen: str) -> str:
    """hypercorn's bind string for ``http.listen``: ``HOST:PORT``, or a Unix socket path."""
    return f"unix:{listen}" if listen.startswith("/") else listen


async def serve_http(app: WebApp, listen: str, stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``listen`` until ``stop`` is set (the daemon's shutdown); then close
    its connections, giving answers under way ``graceful_timeout`` to end."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [bind_address(listen)]
    config.accesslog = None
    config.errorlog = logging.getLogger("aiflowd.http")  # hypercorn's own messages: the app's errors, a bind failure
    config.graceful_timeout = 1.0
    config.include_server_header = False
    if listen.startswith("/"):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(listen).st_mode):
                os.unlink(listen)  # left by a daemon that was killed; never a regular file
    log.info("http serving", listen=listen)
    task_status.started()
    try:
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    finally:
        if listen.startswith("/"):
            with contextlib.suppress(OSError):
                os.unlink(listen)
