"""The store's schema version: a database of the releases before versioning is migrated in place, atomically;
one from a newer aiflowd is refused, untouched."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from aiflowd import store as store_module
from aiflowd.store import EXPIRED_EVENTS, EXPIRED_EXECUTIONS, EXPIRED_JOB_EXECUTIONS, SCHEMA_VERSION, SchemaTooNew, Store

# The schema exactly as aiflowd created it before the schema had a version (user_version 0).
# A literal copy on purpose, not ``store.SCHEMA``: it is the frozen past that the migrations
# must bring forward, so it never follows later edits of SCHEMA (do not "deduplicate" it).
PRE_VERSIONING_DDL = """
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


def pre_versioning_database(path: Path, *, without_kind: bool = False) -> None:
    """A database as the releases before versioning left it, with a row in every table."""
    ddl = PRE_VERSIONING_DDL
    if without_kind:  # the first releases: job executions had no kind yet
        ddl = ddl.replace("    kind TEXT NOT NULL DEFAULT 'start', -- why it started: start, retry or restart\n", "")
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(ddl)
    db.execute("INSERT INTO workflows VALUES ('etl', '/w/etl.yaml', 'v1', 'active', '[]', 1, 10.0)")
    db.execute("INSERT INTO workflow_versions VALUES ('etl', 'v1', 10.0)")
    db.execute("INSERT INTO executions VALUES (7, 'etl', 'v1', 'FINISHED', 'manual', NULL, 11.0, 12.0)")
    db.execute(
        "INSERT INTO job_executions (id, execution_id, workflow, job, job_type, attempt, status, created_at, log_path, working_dir, handle) "
        "VALUES (9, 7, 'etl', 'load', 'bash', 1, 'FINISHED', 11.0, '/l/load.log', '/w/load.1', ?)",
        (json.dumps({"pid": 5}),),
    )
    db.execute("INSERT INTO events VALUES (3, 'k', 'v', 'UNDEFINED', 'default', 'me', 11.5)")
    db.execute("INSERT INTO ticks VALUES ('etl', '', 3600.0)")
    db.commit()
    db.close()


def indexes(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")}


@pytest.mark.parametrize("without_kind", [False, True])
def test_a_pre_versioning_database_is_migrated_in_place_with_its_rows(tmp_path: Path, without_kind: bool) -> None:
    path = tmp_path / "aiflowd.db"
    pre_versioning_database(path, without_kind=without_kind)
    store = Store(str(path))
    assert store.schema_version == SCHEMA_VERSION
    assert {"executions_by_ended_at", "events_by_time", "job_executions_by_execution_job"} <= indexes(store.db)
    assert store.workflows()[0] | {"updated_at": 0} == {
        "name": "etl",
        "path": "/w/etl.yaml",
        "version": "v1",
        "status": "active",
        "problems": [],
        "paused": True,
        "updated_at": 0,
    }
    assert [(e["id"], e["status"], e["ended_at"]) for e in store.executions()] == [(7, "FINISHED", 12.0)]
    (job,) = store.job_executions()
    assert (job["id"], job["execution_id"], job["kind"], job["handle"]) == (9, 7, "start", {"pid": 5})
    assert [(e["id"], e["key"]) for e in store.events()] == [(3, "k")]
    assert store.last_tick("etl", "") == 3600.0
    # New rows take ids after the old ones, and the migrated file opens again as it is.
    assert store.create_execution("etl", "v1", "manual", None) == 8
    store.close()
    again = Store(str(path))
    assert again.schema_version == SCHEMA_VERSION and [e["id"] for e in again.executions()] == [8, 7]
    again.close()


def test_a_new_database_gets_the_current_version(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state" / "aiflowd.db"))
    assert store.schema_version == SCHEMA_VERSION
    store.close()


def test_a_database_from_a_newer_aiflowd_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "aiflowd.db"
    pre_versioning_database(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")  # one file, so that its bytes say everything
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SchemaTooNew) as raised:
        Store(str(path))
    message = str(raised.value)
    assert "\n" not in message
    assert f"schema version {SCHEMA_VERSION + 5} is from a newer aiflowd (this one knows up to {SCHEMA_VERSION})" in message
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aiflowd.db"]  # not even a write-ahead log


def test_a_failed_migration_leaves_the_old_database_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "aiflowd.db"
    pre_versioning_database(path)
    broken = [*store_module.MIGRATIONS, ("CREATE INDEX extra ON executions (trigger)", "CREATE INDEX broken ON no_such_table (x)")]
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(broken))
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        Store(str(path))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (0,)
    assert indexes(db) == set(re_indexes(PRE_VERSIONING_DDL))  # neither version 2's indexes nor the failed step's
    assert db.execute("SELECT id, status FROM executions").fetchall() == [(7, "FINISHED")]
    db.close()
    monkeypatch.undo()
    assert Store(str(path)).schema_version == SCHEMA_VERSION  # the real migrations still apply afterwards


def re_indexes(ddl: str) -> list[str]:
    return [line.split()[5] for line in ddl.splitlines() if line.startswith("CREATE INDEX")]


def test_retention_queries_read_an_index_not_the_whole_table() -> None:
    store = Store(":memory:")
    for query, index in (
        (EXPIRED_EXECUTIONS, "executions_by_ended_at"),
        (EXPIRED_EVENTS, "events_by_time"),
        (EXPIRED_JOB_EXECUTIONS, "job_executions_by_execution_job"),
    ):
        plan = [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + query, (0.0, 500))]
        assert not any(step.startswith("SCAN") for step in plan), plan
        assert any(index in step for step in plan), plan
    for table, column in (("job_executions", "execution_id"), ("executions", "id")):
        plan = [row[3] for row in store.db.execute(f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE {column} IN (?, ?)", (1, 2))]
        assert not any(step.startswith("SCAN") for step in plan), plan
