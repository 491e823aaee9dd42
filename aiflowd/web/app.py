"""The read-only HTTP side of the daemon: a small ASGI application, served by hypercorn.

Every answer comes from the control methods' read side (``aiflowd.daemon.methods``), so
``/api/...`` says what ``aiflowctl --json`` says and no logic is written twice. Only GET
and HEAD are answered: nothing here changes the daemon. Pages:

- ``/``: the status page; ``/workflows/NAME``: one workflow, its picture and history;
  ``/workflows/NAME/jobs/JOB/log?execution=&attempt=``: a job's log tail;
- ``/api/status``, ``/api/workflows``, ``/api/workflows/NAME``,
  ``/api/workflows/NAME/executions``, ``/api/workflows/NAME/jobs`` (``?job=``),
  ``/api/workflows/NAME/graph``, ``/api/executions`` (the latest of every workflow),
  ``/api/executions/ID``, ``/api/jobs`` (every workflow's), ``/api/running``, ``/api/flink``, ``/api/events``, ``/api/plugins``;
  history takes ``?limit=&since=&status=`` as aiflowctl does;
- ``/workflows/NAME/graph.svg``, ``/metrics`` (Prometheus), ``/healthz``.

The app is a plain ASGI callable rather than a framework's: a dozen routes, all GET, do
not need one, and it keeps the ``http`` extra to hypercorn and prometheus_client.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiflowd import graph as graphs
from aiflowd.control.protocol import BAD_REQUEST, ControlError
from aiflowd.web import pages

if TYPE_CHECKING:
    from aiflowd.daemon.methods import ControlMethods
    from aiflowd.web.metrics import Metrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: The log tail a page shows.
LOG_TAIL_BYTES = 64 * 1024
#: Workflows whose problems the status page spells out (the others show a count).
PROBLEMS_SHOWN = 50
#: The latest failed job executions of the last hour the status page lists, each with its log.
FAILURES_SHOWN = 10
#: Workflows the status page lists: those with problems or running first (all: /api/workflows).
WORKFLOWS_SHOWN = 200
HISTORY_SHOWN = 50


class Answer(Exception):
    """An error answer: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WebApp:
    """The ASGI application: routes a GET to a page, an API answer, the metrics or the health check."""

    def __init__(self, methods: ControlMethods, metrics: Metrics | None = None, refresh: float = 5.0) -> None:
        self.methods = methods
        self.metrics = metrics
        self.refresh = refresh
        api: list[tuple[str, Callable[..., Awaitable[Any]]]] = [
            (r"/api/status", self.api_status),
            (r"/api/workflows", self.api_workflows),
            (r"/api/workflows/(?P<workflow>[^/]+)", self.api_workflow),
            (r"/api/workflows/(?P<workflow>[^/]+)/executions", self.api_executions),
            (r"/api/workflows/(?P<workflow>[^/]+)/jobs", self.api_jobs),
            (r"/api/workflows/(?P<workflow>[^/]+)/graph", self.api_graph),
            (r"/api/executions", self.api_all_executions),
            (r"/api/jobs", self.api_all_jobs),
            (r"/api/executions/(?P<execution>\d+)", self.api_execution),
            (r"/api/running", self.api_running),
            (r"/api/flink", self.api_flink),
            (r"/api/events", self.api_events),
            (r"/api/plugins", self.api_plugins),
        ]
        html: list[tuple[str, Callable[..., Awaitable[Any]]]] = [
            (r"/", self.status_page),
            (r"/workflows/(?P<workflow>[^/]+)", self.workflow_page),
            (r"/workflows/(?P<workflow>[^/]+)/graph\.svg", self.graph_svg),
            (r"/workflows/(?P<workflow>[^/]+)/jobs/(?P<job>[^/]+)/log", self.log_page),
        ]
        self.routes = [(re.compile(p + "$"), h, True) for p, h in api] + [(re.compile(p + "$"), h, False) for p, h in html]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: none served
        path = scope["path"]
        head = scope["method"] == "HEAD"
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, "text/plain", b"read only: GET and HEAD\n", head, [(b"allow", b"GET, HEAD")])
            return
        if path == "/healthz":
            self._count("healthz")
            await _send(send, 200, "text/plain", b"ok\n", head)
            return
        if path == "/metrics":
            self._count("metrics")
            if self.metrics is None:
                await _send(send, 404, "text/plain", b"no metrics\n", head)
                return
            from aiflowd.web.metrics import CONTENT_TYPE

            await _send(send, 200, CONTENT_TYPE, self.metrics.scrape(), head)
            return
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        for pattern, handler, is_api in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            self._count(_page_name(pattern.pattern))
            args = match.groupdict()  # the server gives the path decoded already
            try:
                if is_api:
                    body = json.dumps(await handler(query, **args), indent=1, default=str).encode()
                    await _send(send, 200, "application/json", body, head)
                else:
                    content_type, text = await handler(query, **args)
                    await _send(send, 200, content_type, text.encode(), head)
            except (Answer, ControlError) as err:
                status, message = _status_of(err)
                if is_api:
                    body = json.dumps({"error": {"code": getattr(err, "code", str(status)), "message": message}}).encode()
                    await _send(send, status, "application/json", body, head)
                else:
                    await _send(send, status, "text/html; charset=utf-8", pages.error_page(status, message).encode(), head)
            return
        self._count("not found")
        await _send(send, 404, "text/plain", f"no page at {path}\n".encode(), head)

    def _count(self, page: str) -> None:
        if self.metrics is not None:
            self.metrics.http_requests.labels(page).inc()

    # -- JSON ------------------------------------------------------------------------

    async def api_status(self, query: dict[str, str]) -> Any:
        return await self.methods.m_status({})

    async def api_workflows(self, query: dict[str, str]) -> Any:
        return await self.methods.m_workflow_list({"all": query.get("all") not in (None, "", "0", "false")})

    async def api_workflow(self, query: dict[str, str], workflow: str) -> Any:
        return await self.methods.m_workflow_show({"workflow": workflow})

    async def api_executions(self, query: dict[str, str], workflow: str) -> Any:
        return await self.methods.m_workflow_list_executions({**_history(query), "workflow": workflow})

    async def api_jobs(self, query: dict[str, str], workflow: str) -> Any:
        return await self.methods.m_job_list_executions({**_history(query), "workflow": workflow, "job": query.get("job")})

    async def api_all_jobs(self, query: dict[str, str]) -> Any:
        return await self.methods.m_job_list_executions(_history(query))

    async def api_graph(self, query: dict[str, str], workflow: str) -> Any:
        return await self.methods.m_workflow_graph({"workflow": workflow})

    async def api_all_executions(self, query: dict[str, str]) -> Any:
        return await self.methods.m_execution_list(_history(query))

    async def api_execution(self, query: dict[str, str], execution: str) -> Any:
        return await self.methods.m_execution_show({"execution": execution})

    async def api_running(self, query: dict[str, str]) -> Any:
        return await self.methods.m_job_list_running({})

    async def api_flink(self, query: dict[str, str]) -> Any:
        return await self.methods.m_flink_list({})

    async def api_events(self, query: dict[str, str]) -> Any:
        params: dict[str, Any] = {k: _whole(query, k) for k in ("after", "limit") if k in query}
        return await self.methods.m_event_list(params)

    async def api_plugins(self, query: dict[str, str]) -> Any:
        return await self.methods.m_plugins({})

    # -- pages -----------------------------------------------------------------------

    async def status_page(self, query: dict[str, str]) -> tuple[str, str]:
        m = self.methods
        status = await m.m_status({})
        workflows = await m.m_workflow_list({})
        hidden = max(0, len(workflows) - WORKFLOWS_SHOWN)
        if hidden:
            workflows.sort(key=lambda w: (not w.get("problems"), not w.get("executions_running"), w["workflow"]))
            workflows = workflows[:WORKFLOWS_SHOWN]
        problems: dict[str, list[str]] = {}
        for row in [w for w in workflows if w.get("problems")][:PROBLEMS_SHOWN]:
            try:
                problems[row["workflow"]] = (await m.m_workflow_show({"workflow": row["workflow"]}))["problems"]
            except ControlError:
                continue  # gone since the listing
        running = await m.m_job_list_running({})
        executions = await m.m_execution_list({})
        flink = await m.m_flink_list({})
        failed = await m.m_job_list_executions({"status": "FAILED", "since": "1h", "limit": FAILURES_SHOWN})
        page = pages.status_page(status, workflows, problems, running, executions, flink, self.refresh, hidden, failed)
        return "text/html; charset=utf-8", page

    async def workflow_page(self, query: dict[str, str], workflow: str) -> tuple[str, str]:
        m = self.methods
        show = await _found(m.m_workflow_show({"workflow": workflow}))
        svg = await self._svg(workflow) if show.get("version") is not None else None
        history = {"limit": HISTORY_SHOWN, **_history(query)}
        executions = await m.m_workflow_list_executions({**history, "workflow": workflow})
        jobs = await m.m_job_list_executions({**history, "workflow": workflow})
        return "text/html; charset=utf-8", pages.workflow_page(show, svg, executions, jobs, self.refresh)

    async def _svg(self, workflow: str) -> str | None:
        try:
            return graphs.to_svg(graphs.Graph.from_json(await self.methods.m_workflow_graph({"workflow": workflow})))
        except ControlError:
            return None  # no valid version loaded (yet)

    async def graph_svg(self, query: dict[str, str], workflow: str) -> tuple[str, str]:
        data = await _found(self.methods.m_workflow_graph({"workflow": workflow}))
        return "image/svg+xml", graphs.to_svg(graphs.Graph.from_json(data))

    async def log_page(self, query: dict[str, str], workflow: str, job: str) -> tuple[str, str]:
        params: dict[str, Any] = {"workflow": workflow, "job": job, "bytes": LOG_TAIL_BYTES}
        for key in ("execution", "attempt"):
            if key in query:
                params[key] = _whole(query, key)
        chunks = await _found(self.methods.m_job_logs(params))
        path, text = "", []
        async for chunk in chunks:
            path = chunk.get("log_path", path)
            text.append(chunk["text"])
        return "text/html; charset=utf-8", pages.log_page(workflow, job, path, "".join(text), self.refresh)


def _page_name(pattern: str) -> str:
    """A route's pattern as a metrics label: ``/api/workflows/WORKFLOW/jobs`` (bounded, unlike paths)."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: m.group(1).upper(), pattern).rstrip("$").replace("\\.", ".")


def _history(query: dict[str, str]) -> dict[str, Any]:
    """``limit``, ``since`` and ``status`` from a query string, as the control methods take them."""
    return {key: query[key] for key in ("limit", "since", "status") if query.get(key)}


def _whole(query: dict[str, str], key: str) -> int:
    try:
        return int(query[key])
    except ValueError:
        raise Answer(400, f"'{key}' must be a whole number, got {query[key]!r}") from None


async def _found(call: Awaitable[Any]) -> Any:
    """A control method's answer; its refusal (an unknown workflow or job) becomes a 404."""
    try:
        return await call
    except ControlError as err:
        raise Answer(*_status_of(err)) from err


def _status_of(err: Exception) -> tuple[int, str]:
    if isinstance(err, Answer):
        return err.status, err.message
    assert isinstance(err, ControlError)
    return (400 if err.code == BAD_REQUEST else 404), err.message


async def _send(send: Send, status: int, content_type: str, body: bytes, head: bool, extra: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
