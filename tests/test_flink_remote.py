"""Python and SQL jobs submitted over REST to a cluster that cannot read a file of the daemon's.

The cluster runs as another user (``nobody``, through the cluster script's
``$AIFLOWD_FLINK_USER``) from a copy of the distribution in a work folder open to it; the
workflow folder, the daemon's state and the job's working folder stay below pytest's
temporary folder, which only root may enter. The program is compiled on the daemon's side
and Flink's REST client sends the job graphs and artifacts: nothing on the cluster's side
names a path of the daemon's. Outputs go to a folder anyone may write, the one thing both
sides share (as a remote cluster and its client would share a bucket). Such a cluster needs
``flink.shared_files: false``; with the default, the JobManager is refused the daemon's files.

A Python UDF from a module of the workflow folder runs there too, shipped as an artifact
of the job: its workers need an interpreter with pyflink that the cluster's user can run,
here the system's Python with this environment's packages. Where that user cannot read
them (a private checkout, as in CI) that test is skipped and says why; the other programs
use the Table API without Python functions, which needs no interpreter on the cluster.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiflowd.config import FLINK_REST_URL_VARIABLE

from .conftest import REPO, cli_env, write
from .test_flink import csv_numbers
from .test_flink_cluster_script import free_port_block, jvms_of

pytestmark = pytest.mark.flink

USER = "nobody"
SCRIPT = REPO / "scripts" / "flink-cluster.sh"


def as_user(*argv: str) -> list[str]:
    entry = pwd.getpwnam(USER)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--", *argv]


def user_can(test: str, path: Path) -> bool:
    """Whether the cluster's user passes ``test -<flag> path`` (run as that user, not guessed from modes)."""
    return subprocess.run(as_user("test", test, str(path)), capture_output=True).returncode == 0


def uid_of(pid: int) -> int:
    """The real uid a process runs as."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


@pytest.fixture(scope="module")
def foreign_cluster() -> Iterator[str]:
    """A cluster run as ``nobody``, from a work folder of its own (open to it; the distribution linked in)."""
    if os.geteuid() != 0:
        pytest.skip("running a cluster as another user needs root")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no user {USER!r} on this host")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    pytest.importorskip("pyflink")
    root = Path(tempfile.mkdtemp(prefix="aiflowd-foreign-flink-"))
    root.chmod(0o755)
    base = os.environ.get("AIFLOWD_TEST_FOREIGN_FLINK_PORT_BASE") or str(free_port_block())
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_")}
    env.update(AIFLOWD_PYTHON=sys.executable, AIFLOWD_FLINK_WORKDIR=str(root / "flink"), FLINK_PORT_BASE=base, AIFLOWD_FLINK_USER=USER)
    start = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=200)
    try:
        if start.returncode != 0 and "Java 17" in start.stderr:
            pytest.skip(start.stderr.strip())
        assert start.returncode == 0, start.stdout + start.stderr
        jvms = jvms_of([root / "flink"])
        assert len(jvms) == 2 and {uid_of(pid) for pid in jvms} == {pwd.getpwnam(USER).pw_uid}
        yield start.stdout.strip()
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def shared_out() -> Iterator[Path]:
    """An output folder both sides may write (mode 0777)."""
    folder = Path(tempfile.mkdtemp(prefix="aiflowd-foreign-out-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


SQL_SCRIPT = """\
SET 'execution.runtime-mode' = 'batch';
SET 'parallelism.default' = '2';  -- for the statement set
/* five numbers; a 'quoted; semicolon' in a comment */
CREATE TABLE src (n BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '5',
    'fields.n.kind' = 'sequence', 'fields.n.start' = '1', 'fields.n.end' = '5');
CREATE TABLE a (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/a', 'format' = 'csv');
CREATE TABLE b (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/b', 'format' = 'csv');
BEGIN STATEMENT SET;
INSERT INTO a SELECT n FROM src;
INSERT INTO b SELECT n * 10 FROM src;
END;
RESET 'parallelism.default';
"""

PROGRAMS = """
from aiflowd import FlinkPythonProcessor, job_config, user_define_operation

from sinks import sink  # a module of the workflow folder, on the daemon's side only


class BySql(FlinkPythonProcessor):
    def process(self, ctx, inputs):
        sink(ctx.table_env, "by_sql")
        ctx.table_env.execute_sql("INSERT INTO by_sql VALUES (1), (2)")
        return []


class ByStatementSet(FlinkPythonProcessor):
    def process(self, ctx, inputs):
        t = ctx.table_env
        sink(t, "by_set")
        ctx.statement_set.add_insert("by_set", t.from_elements([(3,), (4,)], ["n"]))
        return []


with job_config("by_sql"):
    user_define_operation(processor=BySql())
with job_config("by_set"):
    user_define_operation(processor=ByStatementSet())
"""

SINKS = """
def sink(t_env, name):
    t_env.execute_sql(
        f"CREATE TABLE {{name}} (n BIGINT) WITH ('connector'='filesystem','path'='{out}/{{name}}','format'='csv')"
    )
"""

WORKFLOW = """
by_file:
  job_type: flink
  sql_file: script.sql
by_sql:
  job_type: flink
  properties: {execution_mode: batch}
by_set:
  job_type: flink
  properties: {execution_mode: batch}
"""


def test_sql_and_python_jobs_reach_a_cluster_that_reads_nothing_of_the_daemons(
    foreign_cluster: str, shared_out: Path, tmp_path: Path
) -> None:
    wf = tmp_path / "remote_wf"
    write(wf / "script.sql", SQL_SCRIPT.format(out=shared_out))
    write(wf / "sinks.py", SINKS.format(out=shared_out))
    write(wf / "remote_wf.py", PROGRAMS)
    write(wf / "remote_wf.yaml", WORKFLOW)
    # The premise: the cluster's user can read neither the workflow folder nor where the daemon works.
    assert not user_can("-r", wf / "script.sql") and not user_can("-x", tmp_path)
    assert user_can("-w", shared_out)

    def aiflowd(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aiflowd.cli.aiflowd", *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=cli_env(**{FLINK_REST_URL_VARIABLE: foreign_cluster}),
            timeout=400,
            # Flink's client makes a batch file sink's staging folder itself, before the job runs
            # on the cluster: open to all, so that the cluster's user can write below it.
            preexec_fn=lambda: os.umask(0),
        )

    # With shared files (the default) the JobManager runs the program from the daemon's folders: refused here.
    refused = aiflowd("run-once", "--job", "by_sql", str(wf))
    assert refused.returncode != 0 and "the cluster refused the job" in refused.stdout, refused.stdout + refused.stderr

    config = write(tmp_path / "remote.yaml", "flink:\n  shared_files: false\n")
    result = aiflowd("--config", str(config), "run-once", str(wf))
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob(".aiflowd/**/*.log"))
    assert result.returncode == 0, result.stdout + result.stderr + logs
    finished = re.findall(r"^  (\w+) +FINISHED ", result.stdout, re.MULTILINE)  # run-once's line for each job's end
    assert sorted(finished) == ["by_file", "by_set", "by_sql"], result.stdout
    assert csv_numbers(shared_out / "a") == [1, 2, 3, 4, 5]
    assert csv_numbers(shared_out / "b") == [10, 20, 30, 40, 50]
    assert (csv_numbers(shared_out / "by_sql"), csv_numbers(shared_out / "by_set")) == ([1, 2], [3, 4])
    # Written by the cluster's user: the jobs ran there, not in a MiniCluster of the daemon's side.
    written = [f for f in (shared_out / "by_sql").rglob("*") if f.is_file() and not f.name.startswith(".")]
    assert written and all(f.stat().st_uid == pwd.getpwnam(USER).pw_uid for f in written)


UDF_MODULE = """
from pyflink.table.udf import udf


@udf(result_type="BIGINT")
def triple(n):
    return n * 3
"""

UDF_PROGRAM = """
from aiflowd import FlinkSqlProcessor, job_config, user_define_operation

from udfs import triple  # the workflow folder's module: it reaches the UDF workers as an artifact of the job


class Tripled(FlinkSqlProcessor):
    def udf_list(self, ctx):
        return [("triple", triple)]

    def sql_statements(self, ctx):
        return [
            "CREATE TABLE o (n BIGINT) WITH ('connector'='filesystem','path'='{out}/udf','format'='csv')",
            "INSERT INTO o SELECT triple(n) FROM (VALUES (1), (2)) AS t(n)",
        ]


with job_config("udf"):
    user_define_operation(processor=Tripled())
"""


def test_a_python_udf_of_the_workflow_folder_runs_on_a_cluster_that_cannot_read_it(
    foreign_cluster: str, shared_out: Path, tmp_path: Path
) -> None:
    import sysconfig

    import pyflink

    # The UDF workers run as the cluster's user with an interpreter that has pyflink: the
    # system's Python of this version with this environment's packages, where that user can
    # read them (not in a private checkout, as in CI; nor a Python installed in root's home).
    system_python = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    packages = Path(sysconfig.get_paths()["purelib"])
    if not (user_can("-x", system_python) and user_can("-r", Path(pyflink.__file__))):
        pytest.skip(f"{USER} cannot run {system_python} with pyflink from {packages}, which Python UDF workers need")
    wrapper = shared_out / "python-for-udfs"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={packages} exec {system_python} "$@"\n')
    wrapper.chmod(0o755)
    wf = tmp_path / "udf_wf"
    write(wf / "udfs.py", UDF_MODULE)
    write(wf / "udf_wf.py", UDF_PROGRAM.format(out=shared_out))
    write(
        wf / "udf_wf.yaml",
        f"udf:\n  job_type: flink\n  properties: {{execution_mode: batch, flink_run_args: [-Dpython.executable={wrapper}]}}\n",
    )
    assert not user_can("-r", wf / "udfs.py")
    config = write(tmp_path / "remote.yaml", "flink:\n  shared_files: false\n")
    result = subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(config), "run-once", str(wf)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(**{FLINK_REST_URL_VARIABLE: foreign_cluster}),
        timeout=400,
        preexec_fn=lambda: os.umask(0),  # the client-made staging folder, open to the cluster's user
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert csv_numbers(shared_out / "udf") == [3, 6]
