"""aiflowd.plugins.flink.sql: SQL client scripts split into typed statements, and checked, with lines."""

from __future__ import annotations

import textwrap

import pytest

from aiflowd.plugins.flink.sql import Kind, SqlProblem, SqlSyntaxError, Statement, Step, plan, split_script, validate


def script(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def kinds(text: str) -> list[tuple[Kind, int]]:
    return [(s.kind, s.line) for s in split_script(text)]


def test_a_sql_client_script_splits_into_typed_statements_with_their_lines() -> None:
    text = script(
        """
        -- word counts; written for sql-client.sh -f
        SET 'execution.runtime-mode' = 'batch';
        SET 'pipeline.name' = 'it''s; mine';
        ADD JAR '/opt/jars/my udfs.jar';
        /* the source;
           a table */
        CREATE TABLE src (line STRING) WITH ('connector' = 'filesystem', 'path' = '/data/in;put', 'format' = 'raw');
        CREATE TABLE `odd;name` (n BIGINT) WITH ('connector' = 'blackhole');
        BEGIN STATEMENT SET;
        INSERT INTO `odd;name` SELECT CHAR_LENGTH(line) FROM src;  -- first; of two
        INSERT INTO `odd;name` SELECT 1 FROM src;
        END;
        RESET 'pipeline.name';
        RESET;
        """
    )
    statements = split_script(text)
    assert [(s.kind, s.line) for s in statements] == [
        (Kind.SET, 2),
        (Kind.SET, 3),
        (Kind.ADD_JAR, 4),
        (Kind.DDL, 7),
        (Kind.DDL, 8),
        (Kind.BEGIN_STATEMENT_SET, 9),
        (Kind.INSERT, 10),
        (Kind.INSERT, 11),
        (Kind.END, 12),
        (Kind.RESET, 13),
        (Kind.RESET, 14),
    ]
    assert (statements[0].key, statements[0].value) == ("execution.runtime-mode", "batch")
    assert (statements[1].key, statements[1].value) == ("pipeline.name", "it's; mine")
    assert statements[2].value == "/opt/jars/my udfs.jar"
    assert statements[3].text.endswith("'path' = '/data/in;put', 'format' = 'raw')")
    assert statements[6].text == "INSERT INTO `odd;name` SELECT CHAR_LENGTH(line) FROM src"  # no ';', no comment after it
    assert (statements[9].key, statements[10].key) == ("pipeline.name", None)
    assert validate(text) == []


def test_comments_inside_a_statement_are_kept_so_hints_survive() -> None:
    [statement] = split_script("-- before\nINSERT INTO t /*+ OPTIONS('sink.parallelism' = '2') */\nSELECT 1 -- why\nFROM s;\n-- after\n")
    assert statement.text == "INSERT INTO t /*+ OPTIONS('sink.parallelism' = '2') */\nSELECT 1 -- why\nFROM s"
    assert statement.line == 2


def test_execute_statement_set_block_is_a_begin_its_inserts_and_an_end() -> None:
    text = "EXECUTE STATEMENT SET\nBEGIN\n  INSERT INTO a SELECT 1;\n  INSERT INTO b SELECT 2;\nEND;"
    statements = split_script(text)
    assert [(s.kind, s.line, s.text) for s in statements] == [
        (Kind.BEGIN_STATEMENT_SET, 1, "EXECUTE STATEMENT SET\nBEGIN"),
        (Kind.INSERT, 3, "INSERT INTO a SELECT 1"),
        (Kind.INSERT, 4, "INSERT INTO b SELECT 2"),
        (Kind.END, 5, "END"),
    ]
    assert validate(text) == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("insert overwrite t select 1", Kind.INSERT),
        ("CREATE TABLE t WITH ('connector' = 'blackhole') AS SELECT * FROM s", Kind.CREATE_TABLE_AS),
        ("CREATE TABLE t (a INT, b AS a + 1) WITH ('x' = 'AS SELECT')", Kind.DDL),
        ("CREATE TEMPORARY VIEW v AS SELECT 1", Kind.DDL),
        ("CREATE FUNCTION f AS 'com.example.F'", Kind.DDL),
        ("use catalog c", Kind.DDL),
        ("LOAD MODULE hive", Kind.DDL),
        ("DROP TABLE IF EXISTS t", Kind.DDL),
        ("EXECUTE INSERT INTO t SELECT 1", Kind.DML),
        ("EXECUTE PLAN '/p.json'", Kind.DML),
        ("DELETE FROM t WHERE a = 1", Kind.DML),
        ("SHOW TABLES", Kind.INFO),
        ("EXPLAIN SELECT 1", Kind.INFO),
        ("SHOW JARS", Kind.SHOW_JARS),
        ("REMOVE JAR '/x.jar'", Kind.REMOVE_JAR),
        ("SET", Kind.SET),
    ],
)
def test_statement_kinds(text: str, kind: Kind) -> None:
    [statement] = split_script(text + ";")
    assert statement.kind == kind and statement.problem is None
    assert statement.starts_job == (kind in (Kind.INSERT, Kind.CREATE_TABLE_AS, Kind.DML))


def test_the_last_statement_needs_no_semicolon_and_empty_pieces_are_skipped() -> None:
    assert kinds(";;\nCREATE TABLE t (a INT);\n;  INSERT INTO t SELECT 1") == [(Kind.DDL, 2), (Kind.INSERT, 3)]


def test_double_quotes_and_backquotes_with_doubled_quotes_inside() -> None:
    [statement] = split_script('SELECT "a;""b", `c;``d` FROM t;')
    assert statement.text == 'SELECT "a;""b", `c;``d` FROM t'


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("SELECT 1;\nSELECT 'open;\n", "unterminated ' quote", 2),
        ("CREATE TABLE `x (a INT);", "unterminated ` quote", 1),
        ("SET 'a' = 'b';\n\n/* never closed;\nINSERT INTO t SELECT 1;", "unterminated /* comment", 3),
        ("-- only a comment\n/* and another */", "no SQL statement found", 0),
        ("   \n", "no SQL statement found", 0),
    ],
)
def test_text_that_does_not_split(text: str, message: str, line: int) -> None:
    with pytest.raises(SqlSyntaxError) as info:
        split_script(text)
    assert (info.value.message, info.value.line) == (message, line)
    assert validate(text) == [SqlProblem(line or 1, message)]


def test_syntax_error_reads_as_the_plugin_reported_it() -> None:
    with pytest.raises(ValueError, match=r"^unterminated ' quote starting on line 1$"):
        split_script("select 'x")


def test_validate_reports_every_statement_that_will_not_run_with_its_line() -> None:
    text = script(
        """
        SET execution.runtime-mode = batch;
        RESET pipeline.name;
        ADD JAR /opt/x.jar;
        END;
        FROBNICATE TABLE t;
        SELECT * FROM src;
        BEGIN STATEMENT SET;
        CREATE TABLE inside (a INT);
        INSERT INTO t SELECT 1;
        BEGIN STATEMENT SET;
        QUIT;
        """
    )
    assert [str(p) for p in validate(text)] == [
        "line 1: SET takes a quoted key and value, as in SET 'key' = 'value'",
        "line 2: RESET takes a quoted key, as in RESET 'key', or none to reset all",
        "line 3: ADD JAR takes one quoted path, as in ADD JAR '/path/to.jar'",
        "line 4: END without BEGIN STATEMENT SET",
        "line 5: 'FROBNICATE' does not start a statement Flink's SQL client knows",
        "line 6: a query's rows have nowhere to go in a job; INSERT them INTO a table",
        "line 8: only INSERT statements may stand in a statement set (begun on line 7); this is DDL",
        "line 10: BEGIN STATEMENT SET inside the one begun on line 7",
        "line 10: BEGIN STATEMENT SET without END",
        "line 11: QUIT is a command of the interactive SQL client, not a statement a job runs",
    ]


def test_statements_are_plain_values() -> None:
    [statement] = split_script("SET 'a' = 'b'")
    assert statement == Statement(Kind.SET, "SET 'a' = 'b'", 1, "a", "b")
    assert Kind.ADD_JAR.value == "ADD JAR"


def test_plan_runs_a_script_as_the_sql_client_does() -> None:
    text = script(
        """
        SET 'execution.runtime-mode' = 'batch';
        SET;
        ADD JAR '/opt/udfs.jar';
        CREATE TABLE a (n INT) WITH ('connector' = 'blackhole');
        INSERT INTO a SELECT 1;
        BEGIN STATEMENT SET;
        INSERT INTO a SELECT 2;
        INSERT INTO a SELECT 3;
        END;
        BEGIN STATEMENT SET;
        END;
        RESET 'execution.runtime-mode';
        CREATE TABLE b WITH ('connector' = 'blackhole') AS SELECT 4 AS n;
        RESET;
        """
    )
    assert plan(text) == [
        Step("set", 1, key="execution.runtime-mode", value="batch"),
        Step("add_jar", 3, value="/opt/udfs.jar"),
        Step("execute", 4, ("CREATE TABLE a (n INT) WITH ('connector' = 'blackhole')",)),
        Step("job", 5, ("INSERT INTO a SELECT 1",)),
        Step("job", 6, ("INSERT INTO a SELECT 2", "INSERT INTO a SELECT 3")),
        Step("reset", 12, key="execution.runtime-mode"),
        Step("job", 13, ("CREATE TABLE b WITH ('connector' = 'blackhole') AS SELECT 4 AS n",), direct=True),
        Step("reset", 14),
    ]


def test_plan_refuses_a_script_that_will_not_run() -> None:
    with pytest.raises(SqlSyntaxError) as info:
        plan("CREATE TABLE a (n INT);\nEND;\nSELECT 1;")
    assert (info.value.line, info.value.message) == (2, "END without BEGIN STATEMENT SET")
    assert str(info.value) == "END without BEGIN STATEMENT SET on line 2"
