"""SQLite persistence of workflows, executions, job executions, events and schedule ticks.

WAL mode with ``synchronous=NORMAL``: a committed transaction survives any crash of the
daemon process (only a power loss may take the last ones). Writes are batched by the
engine: everything one turn of its loop decides is committed together, before any of
it is acted upon, so persistence does not cap job throughput and a crash never leaves
an action without its record.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    version TEXT,
    status TEXT NOT NULL,            -- active, invalid, retired
    problems TEXT NOT NULL DEFAULT '[]',
    paused INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workflow_versions (
    workflow TEXT NOT NULL,
    version TEXT NOT NULL,
    loaded_at REAL NOT NULL,
    PRIMARY KEY (workflow, version)
);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    only_job TEXT,
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (workflow, id);
CREATE INDEX IF NOT EXISTS executions_by_status ON executions (status);
CREATE TABLE IF NOT EXISTS job_executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    job TEXT NOT NULL,
    job_type TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    exit_code INTEGER,
    message TEXT,
    log_path TEXT NOT NULL,
    working_dir TEXT NOT NULL,
    handle TEXT
);
CREATE INDEX IF NOT EXISTS job_executions_by_execution ON job_executions (execution_id);
CREATE INDEX IF NOT EXISTS job_executions_by_job ON job_executions (workflow, job, id);
CREATE INDEX IF NOT EXISTS job_executions_by_status ON job_executions (status);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    event_type TEXT NOT NULL,
    namespace TEXT NOT NULL,
    sender TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ticks (
    workflow TEXT NOT NULL,
    job TEXT NOT NULL,               -- '' for a workflow-level schedule
    fired_for REAL NOT NULL,         -- the scheduled time of the last tick fired
    PRIMARY KEY (workflow, job)
);
"""

JOB_EXECUTION_COLUMNS = (
    "id",
    "execution_id",
    "workflow",
    "job",
    "job_type",
    "attempt",
    "status",
    "reason",
    "created_at",
    "started_at",
    "ended_at",
    "exit_code",
    "message",
    "log_path",
    "working_dir",
    "handle",
)


class Store:
    """The daemon's database. Used from the event loop's thread only; ``commit`` ends a batch."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level="DEFERRED")
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    def commit(self) -> None:
        self.db.commit()

    # -- workflows -------------------------------------------------------------------

    def save_workflow(self, name: str, path: str, version: str | None, status: str, problems: list[dict[str, Any]]) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO workflows (name, path, version, status, problems, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET path = excluded.path, version = COALESCE(excluded.version, workflows.version), "
            "status = excluded.status, problems = excluded.problems, updated_at = excluded.updated_at",
            (name, path, version, status, json.dumps(problems), now),
        )
        if version is not None and status == "active":
            self.db.execute("INSERT OR IGNORE INTO workflow_versions VALUES (?, ?, ?)", (name, version, now))

    def set_paused(self, name: str, paused: bool) -> None:
        self.db.execute("UPDATE workflows SET paused = ? WHERE name = ?", (int(paused), name))

    def workflows(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM workflows ORDER BY name").fetchall()
        return [dict(row, problems=json.loads(row["problems"]), paused=bool(row["paused"])) for row in rows]

    # -- executions ------------------------------------------------------------------

    def create_execution(self, workflow: str, version: str, trigger: str, only_job: str | None) -> int:
        cursor = self.db.execute(
            "INSERT INTO executions (workflow, version, status, trigger, only_job, started_at) VALUES (?, ?, 'RUNNING', ?, ?, ?)",
            (workflow, version, trigger, only_job, time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def end_execution(self, execution_id: int, status: str) -> None:
        self.db.execute("UPDATE executions SET status = ?, ended_at = ? WHERE id = ?", (status, time.time(), execution_id))

    def executions(self, workflow: str | None = None, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query, params = "SELECT * FROM executions WHERE 1=1", []
        if workflow is not None:
            query += " AND workflow = ?"
            params.append(workflow)
        if status is not None:
            query += " AND status = ?"
            params.append(status)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [dict(row) for row in self.db.execute(query, params).fetchall()]

    # -- job executions --------------------------------------------------------------

    def create_job_execution(self, **fields: Any) -> int:
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        cursor = self.db.execute(f"INSERT INTO job_executions ({names}) VALUES ({marks})", tuple(fields.values()))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def update_job_execution(self, job_execution_id: int, **fields: Any) -> None:
        if "handle" in fields and fields["handle"] is not None and not isinstance(fields["handle"], str):
            fields["handle"] = json.dumps(fields["handle"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE job_executions SET {assignments} WHERE id = ?", (*fields.values(), job_execution_id))

    def job_executions(
        self,
        workflow: str | None = None,
        job: str | None = None,
        execution_id: int | None = None,
        statuses: Iterable[str] | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        query, params = "SELECT * FROM job_executions WHERE 1=1", []
        for column, value in (("workflow", workflow), ("job", job), ("execution_id", execution_id)):
            if value is not None:
                query += f" AND {column} = ?"
                params.append(value)
        if statuses is not None:
            statuses = list(statuses)
            query += f" AND status IN ({', '.join('?' for _ in statuses)})"
            params.extend(statuses)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = [dict(row) for row in self.db.execute(query, params).fetchall()]
        for row in rows:
            row["handle"] = json.loads(row["handle"]) if row["handle"] else None
        return rows

    # -- events and ticks ------------------------------------------------------------

    def add_event(self, key: str, value: str, event_type: str, namespace: str, sender: str, at: float) -> int:
        cursor = self.db.execute(
            "INSERT INTO events (key, value, event_type, namespace, sender, time) VALUES (?, ?, ?, ?, ?, ?)",
            (key, value, event_type, namespace, sender, at),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def events(self, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM events WHERE id > ? ORDER BY id DESC LIMIT ?", (after_id, limit)).fetchall()
        return [dict(row) for row in reversed(rows)]

    def last_tick(self, workflow: str, job: str) -> float | None:
        row = self.db.execute("SELECT fired_for FROM ticks WHERE workflow = ? AND job = ?", (workflow, job)).fetchone()
        return None if row is None else float(row[0])

    def record_tick(self, workflow: str, job: str, fired_for: float) -> None:
        self.db.execute(
            "INSERT INTO ticks VALUES (?, ?, ?) ON CONFLICT (workflow, job) DO UPDATE SET fired_for = excluded.fired_for",
            (workflow, job, fired_for),
        )
