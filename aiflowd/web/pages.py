"""The status pages as HTML: written here, on the server, with no script and nothing fetched.

Every value shown is escaped. The pages refresh themselves with ``<meta http-equiv=refresh>``
(the workflow picture is inline SVG), so they work in any browser with JavaScript off and
on a machine that cannot reach the internet.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
body{font-family:sans-serif;margin:1.2em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;font-size:.9em}td,th{border-bottom:1px solid #ddd;padding:.25em .7em;text-align:left}
th{background:#f3f3f3}.FINISHED{color:#1b7f3a}.FAILED{color:#b3261e;font-weight:bold}.RUNNING{color:#1a5fb4}
.UNREACHABLE{color:#c2410c;font-weight:bold}.KILLED{color:#8a5a00}.INIT{color:#8a7400}.invalid{color:#b3261e}.problem{color:#b3261e}.muted{color:#777}
.summary span{margin-right:1.4em}a{color:#1a5fb4}pre{background:#f6f6f6;padding:.6em;overflow:auto}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def duration(seconds: float | None) -> str:
    """``4.2s``, ``3m05s``, ``2h01m``, ``1d03h``: short enough for a table cell."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def when(stamp: float | None) -> str:
    return "" if not stamp else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def timer_line(timer: dict[str, Any]) -> str:
    """``job f: cron '*/5 * * * *'; next 2026-12-03 02:25:00``: one schedule of a workflow (``workflow.show``)."""
    whose = f"job {timer['job']}: " if timer["job"] else ""
    return f"{whose}{timer['schedule']}; next {when(timer['next_run'])}"


def link(href: str, text: Any) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def workflow_href(name: str) -> str:
    return "/workflows/" + urllib.parse.quote(name, safe="")


def log_href(row: dict[str, Any]) -> str:
    query = urllib.parse.urlencode({"execution": row["execution_id"], "attempt": row["attempt"]})
    return f"{workflow_href(row['workflow'])}/jobs/{urllib.parse.quote(row['job'], safe='')}/log?{query}"


def status_cell(status: Any, since: float | None = None) -> str:
    """A status, coloured; with ``since`` (a running job's condition, UNREACHABLE) the time it began."""
    text = f"{status} since {when(since)}" if since else status
    return f'<span class="{esc(status)}">{esc(text)}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """A table of cells already escaped (or built from escaped parts)."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str, refresh: float) -> str:
    meta = f'<meta http-equiv="refresh" content="{max(1, round(refresh))}">' if refresh > 0 else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta name="viewport" content="width=device-width">{meta}<title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def status_page(
    status: dict[str, Any],
    workflows: list[dict[str, Any]],
    problems: dict[str, list[str]],
    running: list[dict[str, Any]],
    executions: list[dict[str, Any]],
    flink: list[dict[str, Any]],
    refresh: float,
    hidden: int = 0,
    failed: Sequence[dict[str, Any]] = (),
) -> str:
    """The status page; ``hidden``: how many workflows are left out of the listing (quiet ones, the
    page lists those with problems or running first)."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status["workflows"].items())) or "none"
    summary = [
        f"<span>up {esc(duration(status['uptime']))}</span>",
        f"<span>workflows: {esc(counts)}</span>",
        f"<span>jobs running: {status.get('jobs_active', status['jobs_running'])}</span>",
        f"<span>queued: {status.get('jobs_queued', 0)}</span>",
        f'<span class="{"FAILED" if status.get("jobs_failed_last_hour") else ""}">failed in the last hour: '
        f"{status.get('jobs_failed_last_hour', 0)}</span>",
    ]
    if status.get("jobs_unreachable"):
        summary.append(f'<span class="UNREACHABLE">unreachable: {status["jobs_unreachable"]}</span>')
    parts = [
        f"<h1>aiflowd {esc(status['version'])}</h1>",
        f'<p class="muted">pid {esc(status["pid"])}, serving {esc(status["workflows_dir"])}</p>',
        f'<p class="summary">{"".join(summary)}</p>',
    ]
    if status.get("store_problem"):
        parts.append(f'<p class="problem">state store degraded: {esc(status["store_problem"])}</p>')
    if status.get("restarts"):
        parts.append('<p class="problem">restarted parts: ' + esc(", ".join(f"{p} {n}" for p, n in status["restarts"].items())) + "</p>")
    hooks = status.get("hooks") or {}
    if hooks.get("failed") or hooks.get("dropped"):
        parts.append(f'<p class="problem">hooks failed: {hooks["failed"]}, dropped: {hooks["dropped"]} (see the daemon\'s log)</p>')
    parts.append("<h2>Running jobs</h2>")
    parts.append(
        table(
            ["workflow", "job", "type", "execution", "attempt", "status", "running for"],
            (
                [
                    link(workflow_href(r["workflow"]), r["workflow"]),
                    link(log_href(r), r["job"]),
                    esc(r["job_type"]),
                    esc(r["execution_id"]),
                    esc(f"{r['attempt']} ({r['kind']})"),
                    status_cell(r["status"], r.get("status_since")),
                    esc(duration(r["duration"])),
                ]
                for r in running
            ),
            "no job runs now",
        )
    )
    if failed:
        parts.append("<h2>Failed in the last hour</h2>")
        parts.append(
            table(
                ["workflow", "job", "execution", "attempt", "exit", "ended", "message", "log"],
                (
                    [
                        link(workflow_href(j["workflow"]), j["workflow"]),
                        esc(j["job"]),
                        esc(j["execution_id"]),
                        esc(f"{j['attempt']} ({j.get('kind')})"),
                        esc(j.get("exit_code")),
                        esc(when(j.get("ended_at"))),
                        esc(j.get("message") or ""),
                        link(log_href(j), "log tail"),
                    ]
                    for j in failed
                ),
                "",
            )
        )
    parts.append("<h2>Workflows</h2>")
    parts.append(
        table(
            ["workflow", "status", "version", "paused", "running", "next run", "problems"],
            (
                [
                    link(workflow_href(w["workflow"]), w["workflow"]),
                    f'<span class="{esc(w["status"])}">{esc(w["status"])}</span>',
                    esc(w.get("version") or ""),
                    "paused" if w.get("paused") else "",
                    esc(w.get("executions_running") or ""),
                    esc(when(w.get("next_run"))),
                    "<br>".join(f'<span class="problem">{esc(p)}</span>' for p in problems.get(w["workflow"], []))
                    or esc(w.get("problems") or ""),
                ]
                for w in workflows
            ),
            "no workflow in the folder",
        )
    )
    if hidden:
        parts.append(
            f'<p class="muted">and {hidden} more without problems or running executions: <a href="/api/workflows">/api/workflows</a></p>'
        )
    parts.append("<h2>Last executions</h2>")
    parts.append(
        table(
            ["id", "workflow", "status", "trigger", "started", "duration"],
            (
                [
                    esc(e["id"]),
                    link(workflow_href(e["workflow"]), e["workflow"]),
                    status_cell(e["status"], e.get("status_since")),
                    esc(e["trigger"]),
                    esc(when(e["started_at"])),
                    esc(duration(e.get("duration"))),
                ]
                for e in executions
            ),
            "no execution yet",
        )
    )
    if flink:
        parts.append("<h2>Flink jobs</h2>")
        parts.append(
            table(
                ["workflow", "job", "Flink job id", "status", "started", "web UI"],
                (
                    [
                        link(workflow_href(f["workflow"]), f["workflow"]),
                        link(log_href(f), f["job"]),
                        esc(f["flink_job_id"]),
                        status_cell(f["status"], f.get("status_since")),
                        esc(when(f["started_at"])),
                        link(f["web_url"], "open") if f.get("web_url") else "",
                    ]
                    for f in flink
                ),
                "",
            )
        )
    parts.append('<p class="muted">JSON: <a href="/api/status">/api/status</a> · <a href="/metrics">/metrics</a></p>')
    return page("aiflowd", "".join(parts), refresh)


def workflow_page(
    show: dict[str, Any], svg: str | None, executions: list[dict[str, Any]], jobs: list[dict[str, Any]], refresh: float
) -> str:
    name = show["workflow"]
    parts = [
        '<p><a href="/">&larr; all workflows</a></p>',
        f"<h1>{esc(name)}</h1>",
        f'<p class="muted">{esc(show["status"])}{", paused" if show.get("paused") else ""} · version {esc(show.get("version"))}'
        f" · {esc(show.get('path'))}</p>",
        *(f'<p class="muted">timer: {esc(timer_line(t))}</p>' for t in show.get("schedules") or []),
    ]
    if show.get("problems"):
        parts.append("<h2>Problems</h2><ul>" + "".join(f'<li class="problem">{esc(p)}</li>' for p in show["problems"]) + "</ul>")
    parts.append("<h2>Picture</h2>")
    parts.append(svg if svg is not None else '<p class="muted">no valid version to draw</p>')
    parts.append("<h2>Job executions</h2>")
    parts.append(
        table(
            ["execution", "job", "attempt", "why", "status", "exit", "started", "duration", "message", "log"],
            (
                [
                    esc(j["execution_id"]),
                    esc(j["job"]),
                    esc(j["attempt"]),
                    esc(j.get("kind")),
                    status_cell(j["status"], j.get("status_since")),
                    esc(j.get("exit_code")),
                    esc(when(j.get("started_at"))),
                    esc(duration(j.get("duration"))),
                    esc(j.get("message") or ""),
                    link(log_href(j), "log"),
                ]
                for j in jobs
            ),
            "no job ran yet",
        )
    )
    parts.append("<h2>Executions</h2>")
    parts.append(
        table(
            ["id", "status", "trigger", "version", "started", "ended", "duration"],
            (
                [
                    esc(e["id"]),
                    status_cell(e["status"], e.get("status_since")),
                    esc(e["trigger"]),
                    esc(e["version"]),
                    esc(when(e["started_at"])),
                    esc(when(e.get("ended_at"))),
                    esc(duration(e.get("duration"))),
                ]
                for e in executions
            ),
            "no execution yet",
        )
    )
    return page(f"{name} - aiflowd", "".join(parts), refresh)


def log_page(workflow: str, job: str, path: str, text: str, refresh: float) -> str:
    body = (
        f"<p>{link(workflow_href(workflow), '← ' + workflow)}</p><h1>{esc(job)}: log tail</h1>"
        f'<p class="muted">{esc(path)}</p><pre>{esc(text)}</pre>'
    )
    return page(f"{job} log - aiflowd", body, refresh)


def error_page(status: int, message: str) -> str:
    return page(f"{status} - aiflowd", f'<p><a href="/">&larr; status</a></p><h1>{status}</h1><p class="problem">{esc(message)}</p>', 0)
