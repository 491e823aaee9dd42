"""A Python client of a running aiflowd: what ``aiflowctl`` does, as calls (stdlib only, blocking).

Use it from a notebook, a script, or inside a job::

    from aiflowd.client import Client

    client = Client()                      # the socket found as aiflowctl finds it
    execution_id = client.start_execution("etl")
    client.send_event("model_updated", "v2")
    for row in client.list_job_executions("etl", execution_id=execution_id):
        print(row["job"], row["status"], row["kind"])

The socket is the ``socket`` argument, else ``$AIFLOWD_SOCKET``, else the
``control_socket`` of the daemon config ``config`` (the default config when None). The
daemon puts ``AIFLOWD_SOCKET`` into every job's environment, so inside a job
``Client()`` reaches the daemon that runs it.

Each call opens its own short connection, so a client kept for hours in a notebook never
trips the daemon's idle time-out. Every failure is one of three exceptions with a
one-line message: ``Unreachable`` (no daemon answers, or not in time), ``Refused`` (the
socket's permissions refuse this user) and ``ControlError`` (the daemon refuses the
request: unknown workflow, job not running, ...; its ``code`` says which kind).

What a caller may do is what the socket lets it do: a job runs as the daemon's user, so
from inside a job every call is allowed (it can start, stop and send as the daemon's
operator can). Answers are plain dicts and lists, as ``aiflowctl --json`` prints them.
"""

from __future__ import annotations

import os
from typing import Any

from aiflowd.control.client import ControlClient, Refused, Unreachable
from aiflowd.control.protocol import ControlError

__all__ = ["Client", "ControlError", "Refused", "Unreachable", "find_socket"]

#: Seconds a call waits for its answer unless the client is given another ``timeout``.
DEFAULT_TIMEOUT = 60.0


def find_socket(socket: str | None = None, config: str | None = None) -> str:
    """The control socket's path: ``socket``, else ``$AIFLOWD_SOCKET``, else the config's.

    The config file is read only in the last case (it needs PyYAML, which a job's own
    interpreter may lack; it never does when ``$AIFLOWD_SOCKET`` is set, as in jobs).
    """
    if socket:
        return str(socket)
    if os.environ.get("AIFLOWD_SOCKET"):
        return os.environ["AIFLOWD_SOCKET"]
    from aiflowd.config import load_config

    return load_config(config).control_socket


class Client:
    """Calls to one aiflowd over its control socket; each call a short connection of its own."""

    def __init__(self, socket: str | None = None, *, config: str | None = None, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.socket = find_socket(socket, config)
        self.timeout = timeout

    def call(self, method: str, **params: Any) -> Any:
        """One control request (``method`` as in ``aiflowd/daemon/methods.py``) and its answer."""
        with ControlClient(self.socket, timeout=self.timeout) as connection:
            return connection.call(method, **{k: v for k, v in params.items() if v is not None})

    def __repr__(self) -> str:
        return f"Client(socket={self.socket!r})"

    # -- the daemon ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The daemon's state: pid, version, workflows by status, running executions and jobs."""
        return dict(self.call("status"))

    # -- workflows -------------------------------------------------------------------

    def list_workflows(self, include_retired: bool = False) -> list[dict[str, Any]]:
        """Every workflow served: name, status, version, paused, problems, running executions."""
        return list(self.call("workflow.list", all=include_retired or None))

    def show_workflow(self, workflow: str) -> dict[str, Any]:
        """One workflow: its jobs, problems and latest executions."""
        return dict(self.call("workflow.show", workflow=workflow))

    def list_executions(self, workflow: str, limit: int = 100) -> list[dict[str, Any]]:
        """The workflow's executions, newest first."""
        return list(self.call("workflow.list_executions", workflow=workflow, limit=limit))

    def get_execution(self, execution_id: int) -> dict[str, Any]:
        """One workflow execution by its id, with its job executions under ``jobs`` (oldest first)."""
        return dict(self.call("execution.show", execution=int(execution_id)))

    def start_execution(self, workflow: str, params: dict[str, str] | None = None) -> int:
        """Start an execution of the workflow now; its id. ``params`` reach its jobs as ``AIFLOWD_PARAM_<NAME>``."""
        given = dict(params) if params else None
        return int(self.call("workflow.start_execution", workflow=workflow, params=given)["execution_id"])

    def stop_execution(self, workflow: str, execution_id: int | None = None) -> list[int]:
        """Stop the workflow's running executions (or only ``execution_id``); the ids stopped."""
        return list(self.call("workflow.stop_execution", workflow=workflow, execution=execution_id)["stopped"])

    def pause_scheduling(self, workflow: str) -> None:
        """Hold the workflow's timers and event rules alike: no tick or event starts an execution or a job."""
        self.call("workflow.pause_scheduling", workflow=workflow)

    def resume_scheduling(self, workflow: str) -> None:
        """Undo ``pause_scheduling``."""
        self.call("workflow.resume_scheduling", workflow=workflow)

    # -- jobs ------------------------------------------------------------------------

    def list_job_executions(
        self, workflow: str, job: str | None = None, execution_id: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Job executions of the workflow (of one job, of one execution), newest first.

        Each row has ``kind``: why it started (``start``, ``retry`` or ``restart``).
        """
        if execution_id is not None:
            rows = self.get_execution(execution_id)["jobs"]
            if rows and rows[0]["workflow"] != workflow:
                raise ControlError("refused", f"execution {execution_id} is not an execution of '{workflow}'")
            return [row for row in reversed(rows) if job is None or row["job"] == job][:limit]
        return list(self.call("job.list_executions", workflow=workflow, job=job, limit=limit))

    def start_job(self, workflow: str, job: str) -> int:
        """Start the job in the workflow's open execution (a new one when none is open); the execution's id."""
        return int(self.call("job.start_execution", workflow=workflow, job=job)["execution_id"])

    def stop_job(self, workflow: str, job: str) -> int:
        """Stop the running job; the id of its execution."""
        return int(self.call("job.stop_execution", workflow=workflow, job=job)["execution_id"])

    def restart_job(self, workflow: str, job: str) -> int:
        """Stop the job if it runs, then start it; the id of its execution."""
        return int(self.call("job.restart_execution", workflow=workflow, job=job)["execution_id"])

    def stop_scheduling_job(self, execution_id: int, job: str) -> None:
        """Hold the job's rules in one running execution: no event starts, stops or restarts it there."""
        self.call("job.stop_scheduling", execution=int(execution_id), job=job)

    def resume_scheduling_job(self, execution_id: int, job: str) -> None:
        """Undo ``stop_scheduling_job``."""
        self.call("job.resume_scheduling", execution=int(execution_id), job=job)

    # -- events ----------------------------------------------------------------------

    def send_event(self, key: str, value: str = "", event_type: str = "*", namespace: str = "default", sender: str | None = None) -> None:
        """Send an event: every open execution's rules and every workflow's triggers see it.

        ``sender`` defaults to the job sending it (``$AIFLOWD_JOB``) inside a job, else empty.
        """
        if sender is None:
            sender = os.environ.get("AIFLOWD_JOB", "")
        self.call("event.send", key=key, value=str(value), event_type=event_type, namespace=namespace, sender=sender)

    def list_events(self, after: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest ``limit`` events, oldest first; with ``after``, the first ``limit`` after that id."""
        return list(self.call("event.list", after=after, limit=limit))
