"""SQL scripts as Flink's SQL client reads them (``sql-client.sh -f``): split, typed, checked.

A script is split at the semicolons that stand outside quotes (``'...'`` with ``''``
inside, ``"..."``, and backquoted identifiers) and outside comments (``--`` to the end of
the line, ``/* ... */``); each piece becomes a :class:`Statement` with its kind, its text
(comments inside it kept, so that hints like ``/*+ OPTIONS(...) */`` survive; comments
around it dropped) and the line it starts on. The SQL client's own statements are typed
so that a runner can do what the client does with them, since ``TableEnvironment.
execute_sql`` refuses most of them: ``SET 'key' = 'value'`` and ``RESET ['key']`` change
the session's configuration, ``BEGIN STATEMENT SET; ... END;`` (or ``EXECUTE STATEMENT
SET BEGIN ... END;``) groups INSERTs into one job, ``ADD JAR '...'`` adds a jar.

:func:`split_script` raises :class:`SqlSyntaxError` (with its line) where the text does
not split at all; :func:`validate` reports every statement that will not run, each with
its line, without raising; :func:`plan` turns a valid script into the steps a runner
takes (set, reset, add a jar, execute at once, start a job). Pure functions: no Flink,
no files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    """What a statement is, as far as running it goes."""

    SET = "SET"  # SET 'key' = 'value' (or SET alone: lists the settings)
    RESET = "RESET"  # RESET 'key', or RESET alone: every key
    ADD_JAR = "ADD JAR"
    REMOVE_JAR = "REMOVE JAR"
    SHOW_JARS = "SHOW JARS"
    BEGIN_STATEMENT_SET = "BEGIN STATEMENT SET"
    END = "END"
    INSERT = "INSERT"  # INSERT INTO / INSERT OVERWRITE: a job
    CREATE_TABLE_AS = "CREATE TABLE AS"  # CREATE TABLE ... AS SELECT: DDL that starts a job
    DML = "DML"  # EXECUTE ..., DELETE, UPDATE, TRUNCATE, CALL: run at once, may start a job
    DDL = "DDL"  # CREATE, DROP, ALTER, USE, LOAD/UNLOAD MODULE, ANALYZE: run at once
    QUERY = "QUERY"  # SELECT, WITH, VALUES: rows for a screen, nowhere to go in a job
    INFO = "INFO"  # SHOW, DESCRIBE, EXPLAIN: prints, changes nothing
    CLIENT = "CLIENT"  # QUIT, EXIT, HELP, CLEAR, SOURCE: commands of the interactive client
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Statement:
    """One statement of a script.

    ``text`` has no final semicolon. ``key`` and ``value`` hold what SET (key and value),
    RESET (key, None for all) and ADD/REMOVE JAR (the path, in ``value``) name, unquoted.
    ``problem`` says why the statement cannot run as written (None when it can).
    """

    kind: Kind
    text: str
    line: int
    key: str | None = None
    value: str | None = None
    problem: str | None = None

    @property
    def starts_job(self) -> bool:
        """Whether running it submits a Flink job."""
        return self.kind in (Kind.INSERT, Kind.CREATE_TABLE_AS, Kind.DML)


@dataclass(frozen=True)
class SqlProblem:
    """Something in a script that will not run, with the line it is on."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class SqlSyntaxError(ValueError):
    """The script does not split into statements (an unterminated quote or comment, or no statement)."""

    def __init__(self, line: int, message: str) -> None:
        where = "starting on" if message.startswith("unterminated") else "on"
        super().__init__(f"{message} {where} line {line}" if line else message)
        self.line = line
        self.message = message


_QUOTES = ("'", '"', "`")


def _blank_comments(text: str) -> tuple[str, list[int]]:
    """The text with every comment turned into spaces (newlines kept), and where the separating semicolons are."""
    out = list(text)
    semicolons: list[int] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in _QUOTES:
            end = i + 1
            while True:
                end = text.find(char, end)
                if end < 0:
                    raise SqlSyntaxError(text.count("\n", 0, i) + 1, f"unterminated {char} quote")
                if end + 1 < n and text[end + 1] == char:  # a doubled quote stands for itself
                    end += 2
                    continue
                break
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise SqlSyntaxError(text.count("\n", 0, i) + 1, "unterminated /* comment")
            for j in range(i, end + 2):
                if out[j] != "\n":
                    out[j] = " "
            i = end + 2
        else:
            if char == ";":
                semicolons.append(i)
            i += 1
    return "".join(out), semicolons


def _unquote(literal: str) -> str:
    return literal[1:-1].replace("''", "'")


_STRING = r"'(?:[^']|'')*'"
_RULES: list[tuple[re.Pattern[str], Kind]] = [
    (re.compile(r"SET\b", re.I), Kind.SET),
    (re.compile(r"RESET\b", re.I), Kind.RESET),
    (re.compile(r"ADD\s+JAR\b", re.I), Kind.ADD_JAR),
    (re.compile(r"REMOVE\s+JAR\b", re.I), Kind.REMOVE_JAR),
    (re.compile(r"SHOW\s+JARS\s*$", re.I), Kind.SHOW_JARS),
    (re.compile(r"BEGIN\s+STATEMENT\s+SET\s*$", re.I), Kind.BEGIN_STATEMENT_SET),
    (re.compile(r"END\s*$", re.I), Kind.END),
    (re.compile(r"INSERT\s+(INTO|OVERWRITE)\b", re.I), Kind.INSERT),
    (
        re.compile(r"(CREATE|REPLACE)\s+(OR\s+REPLACE\s+)?(TEMPORARY\s+)?TABLE\b.*?\bAS\s*\(?\s*(SELECT|WITH|VALUES)\b", re.I | re.S),
        Kind.CREATE_TABLE_AS,
    ),
    (re.compile(r"(EXECUTE|DELETE|UPDATE|TRUNCATE|CALL)\b", re.I), Kind.DML),
    (re.compile(r"(CREATE|DROP|ALTER|USE|LOAD|UNLOAD|ANALYZE)\b", re.I), Kind.DDL),
    (re.compile(r"(SELECT|WITH|VALUES)\b|\(", re.I), Kind.QUERY),
    (re.compile(r"(SHOW|DESCRIBE|DESC|EXPLAIN)\b", re.I), Kind.INFO),
    (re.compile(r"(QUIT|EXIT|HELP|CLEAR|SOURCE)\b", re.I), Kind.CLIENT),
]
_EXECUTE_SET = re.compile(r"EXECUTE\s+STATEMENT\s+SET\s+BEGIN\b", re.I)


def _statement(text: str, code: str, line: int) -> Statement:
    """Type one statement; ``code`` is its text with comments blanked out."""
    code = code.strip()
    words = re.sub(_STRING, "''", code)  # what a string says cannot make the kind
    kind = next((k for pattern, k in _RULES if pattern.match(words)), Kind.UNKNOWN)
    if kind == Kind.SET:
        rest = code[3:].strip()
        if not rest:
            return Statement(kind, text, line)
        found = re.fullmatch(rf"({_STRING})\s*=\s*({_STRING})", rest, re.S)
        if found:
            return Statement(kind, text, line, _unquote(found.group(1)), _unquote(found.group(2)))
        return Statement(kind, text, line, problem="SET takes a quoted key and value, as in SET 'key' = 'value'")
    if kind == Kind.RESET:
        rest = code[5:].strip()
        if not rest:
            return Statement(kind, text, line)
        if re.fullmatch(_STRING, rest, re.S):
            return Statement(kind, text, line, _unquote(rest))
        return Statement(kind, text, line, problem="RESET takes a quoted key, as in RESET 'key', or none to reset all")
    if kind in (Kind.ADD_JAR, Kind.REMOVE_JAR):
        rest = re.sub(r"^\w+\s+JAR", "", code, flags=re.I).strip()
        if re.fullmatch(_STRING, rest, re.S):
            return Statement(kind, text, line, value=_unquote(rest))
        return Statement(kind, text, line, problem=f"{kind.value} takes one quoted path, as in {kind.value} '/path/to.jar'")
    if kind == Kind.QUERY:
        return Statement(kind, text, line, problem="a query's rows have nowhere to go in a job; INSERT them INTO a table")
    if kind == Kind.CLIENT:
        word = code.split()[0].upper()
        return Statement(kind, text, line, problem=f"{word} is a command of the interactive SQL client, not a statement a job runs")
    if kind == Kind.UNKNOWN:
        word = code.split()[0] if code.split() else code
        return Statement(kind, text, line, problem=f"{word!r} does not start a statement Flink's SQL client knows")
    return Statement(kind, text, line)


def split_script(text: str) -> list[Statement]:
    """The statements of a script, in order, typed and with their lines.

    Raises SqlSyntaxError for an unterminated quote or comment, or a script with no statement.
    A last statement without its semicolon counts, as in the SQL client.
    """
    code, semicolons = _blank_comments(text)
    statements: list[Statement] = []
    begin = 0
    for end in [*semicolons, len(text)]:
        piece = code[begin:end]
        first = len(piece) - len(piece.lstrip())
        start = begin + first
        while start < end:
            stop = begin + len(piece.rstrip())
            line = text.count("\n", 0, start) + 1
            opening = _EXECUTE_SET.match(code, start, stop)
            if opening:  # EXECUTE STATEMENT SET BEGIN <first INSERT>: a BEGIN, then the INSERT
                statements.append(Statement(Kind.BEGIN_STATEMENT_SET, text[start : opening.end()], line))
                rest = code[opening.end() : stop]
                start = opening.end() + len(rest) - len(rest.lstrip())
                continue
            statements.append(_statement(text[start:stop], code[start:stop], line))
            break
        begin = end + 1
    if not statements:
        raise SqlSyntaxError(0, "no SQL statement found")
    return statements


def validate(text: str) -> list[SqlProblem]:
    """Every statement of the script that will not run, each with its line; [] for a runnable script."""
    try:
        statements = split_script(text)
    except SqlSyntaxError as err:
        return [SqlProblem(err.line or 1, err.message)]
    problems = [SqlProblem(s.line, s.problem) for s in statements if s.problem]
    opened: Statement | None = None
    for statement in statements:
        if statement.kind == Kind.BEGIN_STATEMENT_SET:
            if opened is not None:
                problems.append(SqlProblem(statement.line, f"BEGIN STATEMENT SET inside the one begun on line {opened.line}"))
            opened = statement
        elif statement.kind == Kind.END:
            if opened is None:
                problems.append(SqlProblem(statement.line, "END without BEGIN STATEMENT SET"))
            opened = None
        elif opened is not None and statement.kind != Kind.INSERT and not statement.problem:
            problems.append(
                SqlProblem(
                    statement.line,
                    f"only INSERT statements may stand in a statement set (begun on line {opened.line}); this is {statement.kind.value}",
                )
            )
    if opened is not None:
        problems.append(SqlProblem(opened.line, "BEGIN STATEMENT SET without END"))
    return sorted(problems, key=lambda p: p.line)


@dataclass(frozen=True)
class Step:
    """One thing a runner does for a script, in order, as the SQL client would.

    ``action`` is one of:

    - ``set``: put ``key`` = ``value`` in the table environment's configuration (for the
      statements and jobs that follow);
    - ``reset``: take ``key`` back to the value the job started with (``key`` None: every key);
    - ``add_jar``: make the jar at ``value`` part of the jobs that follow (``pipeline.jars``,
      and the class path of the statements that follow);
    - ``execute``: run ``statements[0]`` at once with ``execute_sql`` (DDL, SHOW, ...; no job);
    - ``job``: start one Flink job: ``statements`` are the INSERTs of one statement set (one
      INSERT outside a set is a set of its own), or, with ``direct``, one statement that
      ``execute_sql`` turns into a job (CREATE TABLE AS, EXECUTE, DELETE, ...).
    """

    action: str
    line: int
    statements: tuple[str, ...] = ()
    key: str | None = None
    value: str | None = None
    direct: bool = False


def plan(text: str) -> list[Step]:
    """The steps that run a script; raises SqlSyntaxError naming the first problem validate() finds."""
    problems = validate(text)
    if problems:
        raise SqlSyntaxError(problems[0].line, problems[0].message)
    steps: list[Step] = []
    opened: Statement | None = None
    inserts: list[str] = []
    for s in split_script(text):
        if s.kind == Kind.BEGIN_STATEMENT_SET:
            opened, inserts = s, []
        elif s.kind == Kind.END:
            if inserts:  # an empty set starts no job, as in the SQL client
                assert opened is not None
                steps.append(Step("job", opened.line, tuple(inserts)))
            opened = None
        elif opened is not None:
            inserts.append(s.text)
        elif s.kind == Kind.SET:
            if s.key is not None:  # SET alone only lists the settings
                steps.append(Step("set", s.line, key=s.key, value=s.value))
        elif s.kind == Kind.RESET:
            steps.append(Step("reset", s.line, key=s.key))
        elif s.kind == Kind.ADD_JAR:
            steps.append(Step("add_jar", s.line, value=s.value))
        elif s.kind == Kind.INSERT:
            steps.append(Step("job", s.line, (s.text,)))
        elif s.starts_job:
            steps.append(Step("job", s.line, (s.text,), direct=True))
        else:
            steps.append(Step("execute", s.line, (s.text,)))
    return steps
