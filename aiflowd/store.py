"""SQLite persistence of workflows, executions, job executions, events and schedule ticks.

WAL mode with ``synchronous=NORMAL``: a committed transaction survives any crash of the
daemon process (only a power loss may take the last ones). Writes are batched by the
engine: everything one turn of its loop decides is committed together, before any of
it is acted upon, so persistence does not cap job throughput and a crash never leaves
an action without its record.

A store that cannot write for a while (disk full, a read-only folder) is degraded, not
dead: every write since the last commit is kept in a journal, ``commit`` raises
``StoreUnavailable`` and the next ``commit`` replays the journal. Row ids are chosen
here, not by SQLite, so that a replay gives every row the id the engine already uses.
A database file deleted (or replaced) under the running daemon is noticed at the next
commit and written back from the open connection, which still holds all of it.

The schema has a version, ``PRAGMA user_version``: opening a database brings it to
``SCHEMA_VERSION`` through ``MIGRATIONS``, all in one transaction (a failure leaves the
file as it was). A database without a version (0) is the schema of the releases before
versioning, or a new file. One from a newer aiflowd is refused, untouched.

Old rows go in bounded batches (``aiflowd.retention``): each batch is its own short
transaction, taken only while the engine has nothing waiting to commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger("aiflowd.store")

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
    kind TEXT NOT NULL DEFAULT 'start', -- why it started: start, retry or restart
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

#: What each schema version adds to the one before, in order: version N is ``MIGRATIONS[N - 1]``.
#: Version 1 is the schema before versioning (``SCHEMA``, which a database of the first
#: releases may lack the job executions' ``kind`` of); never edit a step once released.
MIGRATIONS: list[tuple[str, ...]] = [
    (SCHEMA,),
    (
        # Retention deletes finished executions and events by age: without these it would scan.
        "CREATE INDEX IF NOT EXISTS executions_by_ended_at ON executions (ended_at)",
        "CREATE INDEX IF NOT EXISTS events_by_time ON events (time)",
        # ... and the job executions of an execution open for months, keeping each job's latest.
        "CREATE INDEX IF NOT EXISTS job_executions_by_execution_job ON job_executions (execution_id, job, id)",
    ),
    (
        # What an execution was started with, passed on to its retries and restarted jobs.
        "ALTER TABLE executions ADD COLUMN params TEXT",  # JSON: start-execution --param K=V
        "ALTER TABLE executions ADD COLUMN event TEXT",  # JSON: the event that started it
    ),
    (
        # While a job runs: what its controller reported (UNREACHABLE), else NULL, and since when.
        "ALTER TABLE job_executions ADD COLUMN condition TEXT",
        "ALTER TABLE job_executions ADD COLUMN condition_since REAL",
    ),
    (
        # What the several-event conditions have seen, so that a restart forgets none of it:
        # scope 'execution ID' (its job rules) or 'workflow NAME' (its triggers, for one version).
        "CREATE TABLE IF NOT EXISTS event_memory (scope TEXT PRIMARY KEY, version TEXT, seen TEXT NOT NULL)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

#: Retention's queries (``EXPLAIN QUERY PLAN`` of each reads an index, never the whole table).
EXPIRED_EXECUTIONS = (
    "SELECT id FROM executions AS e WHERE ended_at < ? AND status != 'RUNNING' "
    "AND EXISTS (SELECT 1 FROM executions AS later WHERE later.workflow = e.workflow AND later.id > e.id) "
    "ORDER BY ended_at LIMIT ?"
)
EXPIRED_JOB_EXECUTIONS = (
    "SELECT j.id FROM executions AS e JOIN job_executions AS j ON j.execution_id = e.id "
    "WHERE e.status = 'RUNNING' AND j.status IN ('FINISHED', 'FAILED', 'KILLED') AND j.ended_at < ? "
    "AND j.id < (SELECT k.id FROM job_executions AS k WHERE k.execution_id = j.execution_id AND k.job = j.job "
    "AND k.kind != 'retry' ORDER BY k.id DESC LIMIT 1) "
    "LIMIT ?"
)
EXPIRED_EVENTS = "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time < ? ORDER BY time LIMIT ?)"


#: Tables whose row ids the store hands out itself (see the module docstring).
_ID_TABLES = ("executions", "job_executions", "events")


class SchemaTooNew(sqlite3.DatabaseError):
    """The database was written by a newer aiflowd; it is left untouched."""


class StoreUnavailable(Exception):
    """The database refused a write or a commit (disk full, read-only, I/O error); the writes are kept."""


class Store:
    """The daemon's database. Used from the event loop's thread only; ``commit`` ends a batch."""

    def __init__(self, path: str) -> None:
        self.path = path
        #: Why writes fail now (None while they succeed): shown by ``aiflowctl status``.
        self.problem: str | None = None
        self._journal: list[tuple[str, tuple[Any, ...]]] = []
        self._identity: tuple[int, int] | None = None
        self.db = self._open()  # an unusable file raises sqlite3's own error, for the daemon's start to report
        self._next_id = {table: self._max_id(table) + 1 for table in _ID_TABLES}

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level="DEFERRED")
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:  # before anything writes (even the journal mode)
                raise SchemaTooNew(
                    f"schema version {version} is from a newer aiflowd (this one knows up to {SCHEMA_VERSION}); "
                    "left untouched: run the newer aiflowd, or move the file aside"
                )
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            if version < SCHEMA_VERSION:
                _migrate(db, version)
        except BaseException:
            db.close()
            raise
        if self.path != ":memory:":
            status = os.stat(self.path)
            self._identity = (status.st_dev, status.st_ino)
        return db

    @property
    def schema_version(self) -> int:
        (version,) = self.db.execute("PRAGMA user_version").fetchone()
        return int(version)

    def _max_id(self, table: str) -> int:
        (used,) = self.db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return max(int(used), int(row[0]) if row else 0)

    def close(self) -> None:
        try:
            self.commit()
        except StoreUnavailable as err:
            log.error("state store: the last writes are lost", error=str(err), writes=len(self._journal))
        self.db.close()

    @property
    def pending_writes(self) -> int:
        """How many writes wait for the next commit."""
        return len(self._journal)

    def commit(self) -> None:
        """Make every write since the last commit durable, or raise StoreUnavailable (they are kept)."""
        if self._journal:
            try:
                if self.problem is not None:
                    self._replay()
                self.db.commit()
            except sqlite3.DatabaseError as err:  # full, read-only, I/O error, or worse: kept, retried, shown
                self._failed(err)
                raise StoreUnavailable(self.problem) from err
            self._journal.clear()
            if self.problem is not None:
                log.warning("state store writes again", was=self.problem)
                self.problem = None
        self.check()

    def check(self) -> str | None:
        """Write the database back if its file was deleted or replaced; what happened, if anything.

        SQLite keeps writing into the file it opened even once that file has no name any
        more, so a deleted database would lose everything at the next start. The open
        connection still reads all of it: ``VACUUM INTO`` copies it back to its path.
        """
        if self._identity is None or self._journal:
            return None  # in memory, or writes not yet committed (a commit checks after them)
        try:
            status: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            status = None
        if status is not None and (status.st_dev, status.st_ino) == self._identity:
            return None
        what = "deleted" if status is None else "replaced by another file"
        try:
            kept = self._write_back(aside=status is not None)
        except (OSError, sqlite3.Error) as err:
            self.problem = f"the state database {self.path} was {what} and cannot be written back: {err}"
            log.error("state store lost its file", path=self.path, error=str(err))
            return self.problem
        message = f"the state database {self.path} was {what} while aiflowd ran; written back from the open connection"
        if kept:
            message += f" (the other file is kept as {kept})"
        log.error("state store file was " + what + "; written back", path=self.path, kept=kept)
        return message

    def _write_back(self, aside: bool) -> str | None:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        temporary = self.path + ".restoring"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        self.db.execute("VACUUM INTO ?", (temporary,))
        # Closing checkpoints into the unnamed file and removes the -wal and -shm names, which
        # belong to it: the copy must not be opened beside another database's write-ahead log.
        self.db.close()
        kept = None
        if aside:
            kept = f"{self.path}.replaced-{int(time.time())}"
            os.replace(self.path, kept)
        os.replace(temporary, self.path)
        self.db = self._open()
        return kept

    def _failed(self, err: sqlite3.DatabaseError) -> None:
        if self.problem is None:
            log.error("state store cannot write; keeping the writes to retry", error=str(err))
        self.problem = f"the state database cannot be written: {err}"
        with contextlib.suppress(sqlite3.Error):
            self.db.rollback()

    def _replay(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.rollback()
        for sql, params in self._journal:
            self.db.execute(sql, params)

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        """Run one write now (unless writes fail: then at the next commit), and remember it."""
        self._journal.append((sql, params))
        if self.problem is None:
            try:
                self.db.execute(sql, params)
            except sqlite3.OperationalError as err:
                self._failed(err)

    def _insert(self, table: str, fields: dict[str, Any]) -> int:
        row_id = self._next_id[table]
        self._next_id[table] = row_id + 1
        names = ", ".join(["id", *fields])
        marks = ", ".join("?" for _ in range(len(fields) + 1))
        self._write(f"INSERT INTO {table} ({names}) VALUES ({marks})", (row_id, *fields.values()))
        return row_id

    # -- workflows -------------------------------------------------------------------

    def save_workflow(self, name: str, path: str, version: str | None, status: str, problems: list[dict[str, Any]]) -> None:
        now = time.time()
        self._write(
            "INSERT INTO workflows (name, path, version, status, problems, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET path = excluded.path, version = COALESCE(excluded.version, workflows.version), "
            "status = excluded.status, problems = excluded.problems, updated_at = excluded.updated_at",
            (name, path, version, status, json.dumps(problems), now),
        )
        if version is not None and status == "active":
            self._write("INSERT OR IGNORE INTO workflow_versions VALUES (?, ?, ?)", (name, version, now))

    def set_paused(self, name: str, paused: bool) -> None:
        self._write("UPDATE workflows SET paused = ? WHERE name = ?", (int(paused), name))

    def workflows(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM workflows ORDER BY name").fetchall()
        return [dict(row, problems=json.loads(row["problems"]), paused=bool(row["paused"])) for row in rows]

    # -- executions ------------------------------------------------------------------

    def create_execution(
        self,
        workflow: str,
        version: str,
        trigger: str,
        only_job: str | None,
        *,
        params: dict[str, str] | None = None,
        event: dict[str, Any] | None = None,
    ) -> int:
        return self._insert(
            "executions",
            {
                "workflow": workflow,
                "version": version,
                "status": "RUNNING",
                "trigger": trigger,
                "only_job": only_job,
                "started_at": time.time(),
                "params": json.dumps(params) if params else None,
                "event": json.dumps(event) if event else None,
            },
        )

    def end_execution(self, execution_id: int, status: str) -> None:
        self._write("UPDATE executions SET status = ?, ended_at = ? WHERE id = ?", (status, time.time(), execution_id))

    def executions(
        self, workflow: str | None = None, status: str | None = None, limit: int = 100, since: float | None = None
    ) -> list[dict[str, Any]]:
        """The latest executions first; ``since``: only those started at or after that time."""
        query, params = "SELECT * FROM executions WHERE 1=1", list[Any]()
        if workflow is not None:
            query += " AND workflow = ?"
            params.append(workflow)
        if status is not None:
            query += " AND status = ?"
            params.append(status)
        if since is not None:
            query += " AND started_at >= ?"
            params.append(since)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_execution_row(row) for row in self.db.execute(query, params).fetchall()]

    def execution(self, execution_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
        return _execution_row(row) if row else None

    # -- job executions --------------------------------------------------------------

    def create_job_execution(self, **fields: Any) -> int:
        return self._insert("job_executions", fields)

    def update_job_execution(self, job_execution_id: int, **fields: Any) -> None:
        if "handle" in fields and fields["handle"] is not None and not isinstance(fields["handle"], str):
            fields["handle"] = json.dumps(fields["handle"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._write(f"UPDATE job_executions SET {assignments} WHERE id = ?", (*fields.values(), job_execution_id))

    def job_executions(
        self,
        workflow: str | None = None,
        job: str | None = None,
        execution_id: int | None = None,
        statuses: Iterable[str] | None = None,
        limit: int = 1000,
        since: float | None = None,
        attempt: int | None = None,
    ) -> list[dict[str, Any]]:
        """The latest first; ``since``: only those started (or, never started, created) at or after it."""
        query, params = "SELECT * FROM job_executions WHERE 1=1", list[Any]()
        for column, value in (("workflow", workflow), ("job", job), ("execution_id", execution_id), ("attempt", attempt)):
            if value is not None:
                query += f" AND {column} = ?"
                params.append(value)
        if statuses is not None:
            statuses = list(statuses)
            query += f" AND status IN ({', '.join('?' for _ in statuses)})"
            params.extend(statuses)
        if since is not None:
            query += " AND COALESCE(started_at, created_at) >= ?"
            params.append(since)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = [dict(row) for row in self.db.execute(query, params).fetchall()]
        for row in rows:
            row["handle"] = json.loads(row["handle"]) if row["handle"] else None
        return rows

    def count_job_executions(self, status: str, ended_since: float) -> int:
        """How many job executions ended with ``status`` at or after ``ended_since`` (``status``'s failed in the last hour)."""
        query = "SELECT COUNT(*) FROM job_executions WHERE status = ? AND ended_at >= ?"
        (count,) = self.db.execute(query, (status, ended_since)).fetchone()
        return int(count)

    # -- events and ticks ------------------------------------------------------------

    def add_event(self, key: str, value: str, event_type: str, namespace: str, sender: str, at: float) -> int:
        return self._insert(
            "events", {"key": key, "value": value, "event_type": event_type, "namespace": namespace, "sender": sender, "time": at}
        )

    def events(self, after_id: int = 0, limit: int = 100, *, newest: bool = False) -> list[dict[str, Any]]:
        """Events with an id above ``after_id``, oldest first: the first ``limit`` of them.

        A follower asks again from the last id it got, so it never skips one however many
        arrive between two polls. ``newest`` gives the last ``limit`` instead (a listing).
        """
        order = "DESC" if newest else "ASC"
        rows = self.db.execute(f"SELECT * FROM events WHERE id > ? ORDER BY id {order} LIMIT ?", (after_id, limit)).fetchall()
        result = [dict(row) for row in rows]
        return result[::-1] if newest else result

    def last_tick(self, workflow: str, job: str) -> float | None:
        row = self.db.execute("SELECT fired_for FROM ticks WHERE workflow = ? AND job = ?", (workflow, job)).fetchone()
        return None if row is None else float(row[0])

    def record_tick(self, workflow: str, job: str, fired_for: float) -> None:
        self._write(
            "INSERT INTO ticks VALUES (?, ?, ?) ON CONFLICT (workflow, job) DO UPDATE SET fired_for = excluded.fired_for",
            (workflow, job, fired_for),
        )

    # -- what several-event conditions have seen ---------------------------------------

    def save_event_memory(self, scope: str, seen: list[Any], version: str | None) -> None:
        """Store what a scope's several-event conditions have seen (``EventMemory.to_json``); nothing seen: forget it."""
        if not seen:
            self.forget_event_memory(scope)
            return
        self._write(
            "INSERT INTO event_memory VALUES (?, ?, ?) ON CONFLICT (scope) DO UPDATE SET version = excluded.version, seen = excluded.seen",
            (scope, version, json.dumps(seen)),
        )

    def event_memory(self, scope: str, version: str | None) -> list[Any]:
        """What was stored for ``scope``, counted for ``version``; else [] (and a row of another version is deleted)."""
        row = self.db.execute("SELECT version, seen FROM event_memory WHERE scope = ?", (scope,)).fetchone()
        if row is None:
            return []
        if row[0] != version:
            self.forget_event_memory(scope)  # counted for rules that are gone: never read again
            return []
        return list(json.loads(row[1]))

    def forget_event_memory(self, scope: str) -> None:
        self._write("DELETE FROM event_memory WHERE scope = ?", (scope,))

    # -- retention -------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Whether nothing waits for a commit: only then may a retention batch take a transaction of its own."""
        return not self._journal and self.problem is None

    def open_execution_ids(self) -> set[int]:
        """The executions not finished (running, or open for events): never deleted, their folders never removed."""
        return {int(row[0]) for row in self.db.execute("SELECT id FROM executions WHERE status = 'RUNNING'")}

    def max_execution_id(self) -> int:
        (used,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM executions").fetchone()
        return int(used)

    def delete_expired_executions(self, ended_before: float, limit: int) -> tuple[int, list[str]]:
        """Delete up to ``limit`` finished executions that ended before ``ended_before`` (the oldest) with their job executions.

        Each workflow's latest execution is never among them: ``aiflowctl workflow show``
        lists it as the workflow's last run however long ago that was. One transaction of
        its own; returns how many went, and the exit-status files their job executions had
        recorded (for the caller to remove once this is committed). Raises
        ``StoreUnavailable`` when the engine has writes waiting or the delete fails
        (nothing is deleted then).
        """
        ids = [int(row[0]) for row in self.db.execute(EXPIRED_EXECUTIONS, (ended_before, limit))]
        return len(ids), self._delete_job_rows("execution_id", ids, "DELETE FROM executions WHERE id IN ({marks}) AND status != 'RUNNING'")

    def delete_expired_job_executions(self, ended_before: float, limit: int) -> tuple[int, list[str]]:
        """Delete up to ``limit`` finished job executions of executions still open that ended before ``ended_before``.

        An execution open for events may live for months, one job execution per event.
        Per job, the latest start that was not a retry and what followed it are kept: a
        restarted daemon rebuilds the job's attempt, retries left and status from them.
        Returns and raises as ``delete_expired_executions``.
        """
        ids = [int(row[0]) for row in self.db.execute(EXPIRED_JOB_EXECUTIONS, (ended_before, limit))]
        return len(ids), self._delete_job_rows("id", ids, None)

    def busy_paths(self) -> set[str]:
        """The logs and working folders of job executions not finished: never deleted, however old."""
        rows = self.db.execute("SELECT log_path, working_dir FROM job_executions WHERE status IN ('INIT', 'RUNNING')").fetchall()
        return {path for row in rows for path in row if path}

    def _delete_job_rows(self, column: str, ids: list[int], then: str | None) -> list[str]:
        if not ids:
            return []
        self._own_transaction()
        marks = ", ".join("?" for _ in ids)
        try:
            # The same rows both times: an unfinished job's row stays, and so does its status file.
            finished = f"{column} IN ({marks}) AND status NOT IN ('INIT', 'RUNNING')"
            handles = self.db.execute(f"SELECT handle FROM job_executions WHERE {finished} AND handle LIKE '%status_path%'", ids).fetchall()
            self.db.execute(f"DELETE FROM job_executions WHERE {finished}", ids)
            if then is not None:
                self.db.execute(then.format(marks=marks), ids)
            self.db.commit()
        except sqlite3.DatabaseError as err:
            with contextlib.suppress(sqlite3.Error):
                self.db.rollback()
            raise StoreUnavailable(f"deleting old history failed: {err}") from err
        paths = []
        for (handle,) in handles:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                path = json.loads(handle).get("status_path")
                if isinstance(path, str) and path:
                    paths.append(path)
        return paths

    def delete_events(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` events older than ``before`` (the oldest) in a transaction of its own; how many."""
        self._own_transaction()
        try:
            cursor = self.db.execute(EXPIRED_EVENTS, (before, limit))
            self.db.commit()
        except sqlite3.DatabaseError as err:
            with contextlib.suppress(sqlite3.Error):
                self.db.rollback()
            raise StoreUnavailable(f"deleting old events failed: {err}") from err
        return int(cursor.rowcount)

    def _own_transaction(self) -> None:
        if not self.idle:
            raise StoreUnavailable(self.problem or "the engine has writes waiting for their commit")


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring ``db`` from schema ``version`` to ``SCHEMA_VERSION`` in one transaction: all of it, or nothing."""
    (tables,) = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    db.isolation_level = None  # explicit BEGIN/COMMIT: DDL and user_version roll back together
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number - 1]:
                    for sql in _statements(statement):
                        db.execute(sql)
                if number == 1:
                    _add_kind(db)
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.isolation_level = "DEFERRED"
    if tables:
        log.info("state store schema migrated", from_version=version, to_version=SCHEMA_VERSION)


def _add_kind(db: sqlite3.Connection) -> None:
    """A database of the first releases lacks the job executions' ``kind`` (part of version 1)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(job_executions)")}
    if "kind" not in columns:
        db.execute("ALTER TABLE job_executions ADD COLUMN kind TEXT NOT NULL DEFAULT 'start'")


def _statements(script: str) -> list[str]:
    """The statements of a script of DDL (no ``;`` inside one; comments are SQLite's to skip).

    Not ``executescript``: it commits first, which would end the migration's transaction.
    """
    return [part for part in script.split(";") if part.strip()]


def _execution_row(row: sqlite3.Row) -> dict[str, Any]:
    """An execution's record, its parameters and event decoded (``{}`` and None when it has none)."""
    record = dict(row)
    record["params"] = json.loads(record["params"]) if record.get("params") else {}
    record["event"] = json.loads(record["event"]) if record.get("event") else None
    return record
