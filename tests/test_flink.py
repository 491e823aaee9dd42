"""Flink jar jobs on the real cluster started by scripts/flink-cluster.sh, and in local mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiflowd.config import FLINK_REST_URL_VARIABLE

from .conftest import REPO, cli_env, run_execution, wait_for, write
from .daemon_harness import Daemon

#: The cluster's URL as the daemon gets it: flink.rest_url, from $AIFLOWD_FLINK_REST_URL
#: (scripts/test.sh sets it to the cluster it uses), else the cluster script's URL.
REST = os.environ.get(FLINK_REST_URL_VARIABLE) or ""


def rest(path: str) -> dict:
    with urllib.request.urlopen(REST + path, timeout=10) as answer:
        return json.load(answer)


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """The cluster of $AIFLOWD_FLINK_REST_URL (whoever set it runs it), else the cluster script's, started here if need be."""
    global REST
    script = str(REPO / "scripts" / "flink-cluster.sh")
    if REST:
        yield REST
        return
    REST = subprocess.run([script, "url"], capture_output=True, text=True, check=True).stdout.strip()
    status = subprocess.run([script, "status"], capture_output=True, text=True)
    started = status.returncode == 3  # not running; 1 (another's cluster on the port, or a broken one) fails in start
    try:
        if status.returncode != 0:
            start = subprocess.run([script, "start"], capture_output=True, text=True)
            assert start.returncode == 0, status.stdout + start.stderr
        yield REST
    finally:
        if started:
            subprocess.run([script, "stop"], check=True)


@pytest.fixture(scope="session")
def jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Flink program, compiled with javac against the distribution's lib/."""
    import pyflink

    lib = Path(pyflink.__file__).parent / "lib"
    out = tmp_path_factory.mktemp("jar")
    javac = shutil.which("javac")
    assert javac, "javac (a JDK 17) is needed to build the test job"
    subprocess.run(
        [javac, "-d", str(out / "classes"), "-cp", f"{lib}/*", str(Path(__file__).parent / "flink" / "WordCount.java")], check=True
    )
    subprocess.run(["jar", "cf", str(out / "wordcount.jar"), "-C", str(out / "classes"), "."], check=True)
    return out / "wordcount.jar"


def jar_workflow(folder: Path, jar: Path, out: Path, count: int, properties: str, pause_ms: int = 0) -> Path:
    return write(
        folder / f"{folder.name}.yaml",
        f"""
        count:
          job_type: flink
          main_jar_file: wordcount.jar
          entry_class: org.example.WordCount
          args: ["{out}", "{count}", "{pause_ms}"]
          properties: {properties}
        """,
    )


def prepare(tmp_path: Path, name: str, jar: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(jar, folder / "wordcount.jar")
    return folder


@pytest.mark.parametrize("submit_via", ["rest", "cli"])
async def test_jar_job_runs_on_the_cluster(loader, cluster: str, jar: Path, tmp_path: Path, submit_via: str) -> None:
    folder = prepare(tmp_path, f"wc_{submit_via}", jar)
    out = tmp_path / "out.txt"
    jar_workflow(folder, jar, out, 5, f"{{run_mode: cluster, submit_via: {submit_via}}}")
    execution, runs = await run_execution(
        loader, folder, tmp_path, settings={"flink": {"rest_url": cluster}, "instance_id": os.urandom(8).hex()}
    )
    log = Path(runs[0].env.log_path).read_text()
    assert execution.status.value == "FINISHED", log
    assert sorted(int(x) for x in out.read_text().split()) == [1, 2, 3, 4, 5]
    assert any(j["name"] == f"aiflowd-test-{out.name}" and j["state"] == "FINISHED" for j in rest("/jobs/overview")["jobs"])
    assert f"via {submit_via}" in log


async def test_jar_upload_is_cached_by_content(loader, cluster: str, jar: Path, tmp_path: Path) -> None:
    for i in range(2):
        folder = prepare(tmp_path, f"cached{i}", jar)
        jar_workflow(folder, jar, tmp_path / f"o{i}", 1, "{run_mode: cluster}")
        execution, _ = await run_execution(
            loader, folder, tmp_path / f"s{i}", settings={"flink": {"rest_url": cluster}, "instance_id": os.urandom(8).hex()}
        )
        assert execution.status.value == "FINISHED"
    import hashlib

    digest = hashlib.sha256(jar.read_bytes()).hexdigest()[:16]
    assert [f["name"] for f in rest("/jars")["files"]].count(f"{digest}-wordcount.jar") == 1


async def test_local_mode_needs_no_cluster(loader, jar: Path, tmp_path: Path) -> None:
    folder = prepare(tmp_path, "local", jar)
    out = tmp_path / "local.txt"
    jar_workflow(folder, jar, out, 3, "{run_mode: local}")
    # A REST URL where nothing listens: local mode must not need it.
    execution, runs = await run_execution(loader, folder, tmp_path, settings={"flink": {"rest_url": "http://127.0.0.1:9"}})
    assert execution.status.value == "FINISHED", Path(runs[0].env.log_path).read_text()[-3000:]
    assert sorted(int(x) for x in out.read_text().split()) == [1, 2, 3]


async def test_failing_job_is_failed_with_its_root_cause_in_the_log(loader, cluster: str, jar: Path, tmp_path: Path) -> None:
    folder = prepare(tmp_path, "broken", jar)
    jar_workflow(folder, jar, Path("/nonexistent/folder/out"), 3, "{run_mode: cluster}")
    execution, runs = await run_execution(
        loader, folder, tmp_path, settings={"flink": {"rest_url": cluster}, "instance_id": os.urandom(8).hex()}
    )
    log = Path(runs[0].env.log_path).read_text()
    assert execution.status.value == "FAILED"
    assert "failed:" in log and "NoSuchFileException" in log and "/nonexistent/folder/out" in log
    assert "root exception of Flink job " in log and "exception history of Flink job " in log
    assert "ended: FAILED" in log and "Flink web UI: " in log and "submitting to " in log


async def test_cluster_down_at_submission_fails_clearly(loader, jar: Path, tmp_path: Path) -> None:
    folder = prepare(tmp_path, "down", jar)
    jar_workflow(folder, jar, tmp_path / "o", 1, "{run_mode: cluster}")
    execution, runs = await run_execution(loader, folder, tmp_path, settings={"flink": {"rest_url": "http://127.0.0.1:9"}})
    assert execution.status.value == "FAILED"
    assert runs[0].message.startswith("submission failed: ConnectError")


def test_missing_jar_is_a_load_time_error(loader, tmp_path: Path) -> None:
    from aiflowd.workflows.errors import LoadError

    path = write(tmp_path / "nojar.yaml", "j:\n  job_type: flink\n  main_jar_file: missing.jar\n  entry_class: x.Y\n  args: [a]\n")
    with pytest.raises(LoadError) as info:
        loader.load(str(path))
    assert str(info.value) == f"{path}:3:3: j.main_jar_file: jar file 'missing.jar' does not exist (looked for {tmp_path}/missing.jar)"


def running_copies(name: str) -> int:
    return sum(1 for j in rest("/jobs/overview")["jobs"] if j["name"] == name and j["state"] in ("RUNNING", "CREATED", "INITIALIZING"))


@pytest.fixture
def daemon(tmp_path: Path, cluster: str) -> Iterator[Daemon]:
    running = Daemon(tmp_path, config=f"flink: {{rest_url: '{cluster}'}}\n")
    try:
        yield running.start()
    finally:
        running.close()


def test_streaming_job_stopped_with_a_savepoint_and_kill_9_leaves_one_copy(daemon: Daemon, jar: Path, tmp_path: Path) -> None:
    folder = daemon.workflows / "stream"
    folder.mkdir()
    shutil.copy(jar, folder / "wordcount.jar")
    out = tmp_path / "stream.txt"
    savepoints = tmp_path / "savepoints"
    jar_workflow(folder, jar, out, 10**9, f"{{run_mode: cluster, stop_mode: stop, savepoint_dir: 'file://{savepoints}'}}", pause_ms=20)
    daemon.wait_jobs("stream", lambda rows: rows and rows[0]["status"] == "RUNNING")
    wait_for(lambda: out.exists() and running_copies(f"aiflowd-test-{out.name}") == 1, timeout=60)
    daemon.kill9()
    daemon.start()
    daemon.wait_jobs("stream", lambda rows: rows and rows[0]["status"] == "RUNNING")
    assert len(daemon.jobs("stream")) == 1
    assert running_copies(f"aiflowd-test-{out.name}") == 1  # taken over by its id, not submitted again
    daemon.ctl("job", "stop-execution", "stream", "count")
    rows = daemon.wait_jobs("stream", lambda rows: rows[0]["status"] == "KILLED", timeout=60)
    log = daemon.ctl("job", "logs", "stream", "count").stdout
    assert f"stopped with savepoint file:{savepoints}" in log, log
    assert any(savepoints.iterdir())
    assert running_copies(f"aiflowd-test-{out.name}") == 0
    assert rows[0]["message"].startswith("stopped")


SQL = """
CREATE TABLE src (n BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '5',
    'fields.n.kind' = 'sequence', 'fields.n.start' = '1', 'fields.n.end' = '5');  -- a comment; with a semicolon
CREATE TABLE dst (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');
INSERT INTO dst SELECT n * 10 FROM src;
"""


def csv_numbers(folder: Path) -> list[int]:
    return sorted(int(line.split(",")[0]) for f in folder.iterdir() if not f.name.startswith(".") for line in f.read_text().split())


@pytest.mark.parametrize(("run_mode", "submit_via"), [("cluster", "rest"), ("cluster", "cli"), ("local", "rest")])
async def test_sql_job(loader, cluster: str, tmp_path: Path, run_mode: str, submit_via: str) -> None:
    out = tmp_path / "sql_out"
    write(tmp_path / "report" / "report.sql", SQL.format(out=out))
    write(
        tmp_path / "report" / "report.yaml",
        f"report:\n  job_type: flink\n  sql_file: report.sql\n  properties: {{run_mode: {run_mode}, submit_via: {submit_via}}}\n",
    )
    execution, runs = await run_execution(
        loader, tmp_path / "report", tmp_path, settings={"flink": {"rest_url": cluster}, "instance_id": os.urandom(8).hex()}
    )
    log = Path(runs[0].env.log_path).read_text()
    assert execution.status.value == "FINISHED", log[-3000:]
    assert csv_numbers(out) == [10, 20, 30, 40, 50]
    if run_mode == "cluster":
        job_id = log.split("submitted Flink job ")[1].split()[0]
        assert rest(f"/jobs/{job_id}")["state"] == "FINISHED"  # the id aiflowd chose is the cluster's


@pytest.mark.parametrize("submit_via", ["rest", "cli"])
async def test_python_processors_share_a_table_env_and_pass_tables(loader, cluster: str, tmp_path: Path, submit_via: str) -> None:
    out = tmp_path / "py_out"
    folder = tmp_path / "words"
    write(folder / "words.yaml", f"words:\n  job_type: flink\n  properties: {{run_mode: cluster, submit_via: {submit_via}}}\n")
    write(
        folder / "words.py",
        f"""
        from pyflink.table.udf import udf
        from aiflowd import FlinkPythonProcessor, FlinkSqlProcessor, job_config, user_define_operation

        class Source(FlinkPythonProcessor):
            def process(self, ctx, inputs):
                ctx.table_env.create_temporary_view("words", ctx.table_env.from_elements([(1, "a"), (2, "bb")], ["id", "word"]))
                return [ctx.table_env.from_path("words")]

        @udf(result_type="BIGINT")
        def word_length(word):
            return len(word) * 100

        class Lengths(FlinkSqlProcessor):
            def udf_list(self, ctx):
                return [("word_length", word_length)]
            def sql_statements(self, ctx):
                return [
                    "CREATE TABLE out_t (id BIGINT, n BIGINT) WITH ('connector'='filesystem','path'='{out}','format'='csv')",
                    "INSERT INTO out_t SELECT id, word_length(word) FROM words",
                ]

        with job_config("words"):
            table = user_define_operation(processor=Source())
            user_define_operation(processor=Lengths(), input=table)
        """,
    )
    execution, runs = await run_execution(
        loader, folder, tmp_path, settings={"flink": {"rest_url": cluster}, "instance_id": os.urandom(8).hex()}
    )
    assert execution.status.value == "FINISHED", Path(runs[0].env.log_path).read_text()[-3000:]
    rows = sorted(line for f in out.iterdir() if not f.name.startswith(".") for line in f.read_text().split())
    assert rows == ["1,100", "2,200"]


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        (
            'j:\n  job_type: flink\n  sql: "select \'x"\n',
            "j.sql: line 1: unterminated ' quote",
        ),
        ("j:\n  job_type: flink\n  sql_file: nope.sql\n", "j.sql_file: cannot read 'nope.sql': No such file or directory"),
        ("j:\n  job_type: flink\n  sql: '-- only a comment'\n", "j.sql: line 1: no SQL statement found"),
        (
            "j:\n  job_type: flink\n  sql: 'INSERT INTO t SELECT 1'\n  properties: {run_mode: remote}\n",
            "j.properties.run_mode: must be one of local, cluster; got 'remote'",
        ),
        (
            "j:\n  job_type: flink\n  main_jar_file: x.jar\n  args: --input /data\n",
            "j.args: must be a list of arguments (never one string)",
        ),
    ],
)
def test_flink_load_errors(loader, tmp_path: Path, yaml: str, expected: str) -> None:
    from aiflowd.workflows.errors import LoadError

    path = write(tmp_path / "bad.yaml", yaml)
    with pytest.raises(LoadError) as info:
        loader.load(str(path))
    assert next(p.split(": ", 1)[1] for p in str(info.value).splitlines()) == expected


def test_mixing_a_jar_with_python_nodes_is_a_load_error(loader, jar: Path, tmp_path: Path) -> None:
    from aiflowd.workflows.errors import LoadError

    folder = prepare(tmp_path, "mixed", jar)
    write(folder / "mixed.yaml", "j:\n  job_type: flink\n")
    write(
        folder / "mixed.py",
        """
        from aiflowd import FlinkJavaProcessor, FlinkPythonProcessor, job_config, user_define_operation
        class P(FlinkPythonProcessor):
            def process(self, ctx, inputs):
                return []
        with job_config("j"):
            user_define_operation(processor=FlinkJavaProcessor("x.Y", "wordcount.jar"))
            user_define_operation(processor=P())
        """,
    )
    with pytest.raises(LoadError) as info:
        loader.load(str(folder))
    assert "a flink jar job runs exactly one FlinkJavaProcessor; this one has 2 nodes" in str(info.value)


def test_changed_workflow_restarts_a_streaming_job_from_its_savepoint(daemon: Daemon, jar: Path, tmp_path: Path) -> None:
    folder = daemon.workflows / "evolving"
    folder.mkdir()
    shutil.copy(jar, folder / "wordcount.jar")
    out = tmp_path / "evolving.txt"
    savepoints = tmp_path / "savepoints"
    jar_workflow(folder, jar, out, 10**9, f"{{run_mode: cluster, stop_mode: stop, savepoint_dir: 'file://{savepoints}'}}", pause_ms=20)
    daemon.wait_jobs("evolving", lambda rows: rows and rows[0]["status"] == "RUNNING")
    wait_for(lambda: out.exists(), timeout=60)
    (folder / "NOTES.txt").write_text("a new asset makes a new version\n")
    rows = daemon.wait_jobs("evolving", lambda rows: len(rows) == 2 and rows[0]["status"] == "RUNNING", timeout=60)
    old, new = rows[1], rows[0]
    assert (old["status"], old["message"]) == ("KILLED", "workflow changed")
    assert f"from savepoint file:{savepoints}" in new["reason"]
    wait_for(lambda: running_copies(f"aiflowd-test-{out.name}") == 1, timeout=30)
    log = daemon.ctl("job", "logs", "evolving", "count").stdout
    assert f"from savepoint file:{savepoints}" in log
    daemon.ctl("workflow", "stop-execution", "evolving")
    daemon.wait_jobs("evolving", lambda rows: rows[0]["status"] == "KILLED", timeout=60)


TWO_STREAMS = """
from aiflowd import FlinkPythonProcessor, job_config, user_define_operation

class TwoStreams(FlinkPythonProcessor):
    def process(self, ctx, inputs):
        t = ctx.table_env
        t.execute_sql("CREATE TABLE src (n BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '5')")
        t.execute_sql("CREATE TABLE snk (n BIGINT) WITH ('connector' = 'blackhole')")
        t.execute_sql("INSERT INTO snk SELECT n FROM src")
        t.execute_sql("INSERT INTO snk SELECT n + 1 FROM src")
        return []

with job_config("two"):
    user_define_operation(processor=TwoStreams())
"""


def test_a_changed_workflow_resumes_each_job_of_a_program_from_its_own_savepoint(daemon: Daemon, cluster: str) -> None:
    folder = daemon.workflows / "two_streams"
    write(folder / "two_streams.py", TWO_STREAMS)
    write(folder / "two_streams.yaml", "two:\n  job_type: flink\n  properties: {stop_mode: stop}\n")
    daemon.wait_jobs("two_streams", lambda rows: rows and rows[0]["status"] == "RUNNING", timeout=120)
    wait_for(lambda: "and 1 more" in daemon.ctl("job", "logs", "two_streams", "two").stdout, timeout=60)
    old_ids = flink_ids(daemon.ctl("job", "logs", "two_streams", "two").stdout)
    wait_for(lambda: all(rest(f"/jobs/{j}")["state"] == "RUNNING" for j in old_ids), timeout=60)
    (folder / "NOTES.txt").write_text("a new asset makes a new version\n")
    rows = daemon.wait_jobs("two_streams", lambda rows: len(rows) == 2 and rows[0]["status"] == "RUNNING", timeout=120)
    assert (rows[1]["status"], rows[1]["message"]) == ("KILLED", "workflow changed")
    wait_for(lambda: "and 1 more" in daemon.ctl("job", "logs", "two_streams", "two").stdout, timeout=60)
    new_ids = flink_ids(daemon.ctl("job", "logs", "two_streams", "two").stdout)
    wait_for(lambda: all(rest(f"/jobs/{j}")["state"] == "RUNNING" for j in new_ids), timeout=60)
    restored = [rest(f"/jobs/{j}/checkpoints")["latest"]["restored"]["external_path"] for j in new_ids]
    # Each job from a savepoint of its own: the old first job's for the first, the second's for the second.
    assert restored[0] != restored[1]
    assert all(f"savepoint-{old[:6]}-" in path for old, path in zip(old_ids, restored, strict=True)), (old_ids, restored)
    daemon.ctl("workflow", "stop-execution", "two_streams")
    daemon.wait_jobs("two_streams", lambda rows: rows[0]["status"] == "KILLED", timeout=60)


def flink_ids(log: str) -> list[str]:
    """The Flink job ids of the last submission a job's log notes ("submitted Flink job A and 1 more (B)")."""
    line = [x for x in log.splitlines() if "submitted Flink job" in x][-1]
    first = line.split("submitted Flink job ")[1].split()[0]
    return [first, *line.split(" more (")[1].split(")")[0].split(", ")]


EXAMPLES = REPO / "examples" / "workflows"


def test_flink_examples_are_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.name.startswith("flink")) == ["flink_streaming", "flink_wordcount"]


def test_aiflow_flink_demo_example_runs_once(cluster: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowd", "run-once", str(EXAMPLES / "flink_wordcount")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(**{FLINK_REST_URL_VARIABLE: cluster}),  # run-once reads flink.rest_url, which this sets
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Each execution writes below its own folder in the state folder (.aiflowd in the current folder).
    [out] = (tmp_path / ".aiflowd").glob("run-once/*/*/flink_wordcount/*/output")  # STATE/WORK/WORKFLOW/EXECUTION
    for job in ("count_local", "count_cluster"):
        counts = {
            json.loads(line)["word"]: json.loads(line)["n"]
            for f in (out / job).iterdir()
            if not f.name.startswith(".")
            for line in f.read_text().split("\n")
            if line
        }
        assert counts["hello"] == 2 and counts["schedules"] == 1 and len(counts) == 7
    assert "".join(f.read_text() for f in (out / "count_sql").iterdir() if not f.name.startswith(".")).strip() == "7,10"


def test_streaming_example_starts_and_restarts_on_events(daemon: Daemon) -> None:
    shutil.copytree(EXAMPLES / "flink_streaming", daemon.workflows / "flink_streaming")
    wait_for(lambda: daemon.known("flink_streaming"))
    assert daemon.jobs("flink_streaming") == []  # waits for its event
    daemon.ctl("event", "send", "model_updated", "v1")
    daemon.wait_jobs("flink_streaming", lambda rows: rows and rows[0]["status"] == "RUNNING", timeout=60)
    daemon.ctl("event", "send", "model_updated", "v2")
    rows = daemon.wait_jobs(
        "flink_streaming", lambda rows: len(rows) == 2 and rows[0]["status"] == "RUNNING" and rows[1]["status"] == "KILLED", timeout=60
    )
    assert rows[0]["reason"] == "event model_updated=v2"
    daemon.ctl("workflow", "stop-execution", "flink_streaming")
    daemon.wait_jobs("flink_streaming", lambda rows: rows[0]["status"] == "KILLED", timeout=60)


async def test_cli_submission_failure_is_clear_and_keeps_the_clients_output(loader, cluster: str, jar: Path, tmp_path: Path) -> None:
    folder = prepare(tmp_path, "badclass", jar)
    write(
        folder / "badclass.yaml",
        "j:\n  job_type: flink\n  main_jar_file: wordcount.jar\n  entry_class: org.example.NoSuchClass\n  args: []\n  properties: {submit_via: cli}\n",
    )
    execution, runs = await run_execution(
        loader, folder, tmp_path, settings={"flink": {"rest_url": cluster}, "instance_id": os.urandom(8).hex()}
    )
    assert execution.status.value == "FAILED"
    assert runs[0].message == "submission failed: RuntimeError: flink run failed (exit status 1); its output is in the job's log"
    assert "org.example.NoSuchClass" in Path(runs[0].env.log_path).read_text()


async def test_yaml_processor_reference_for_a_flink_python_node(loader, cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "ref_out"
    folder = tmp_path / "byref"
    write(
        folder / "byref.yaml",
        f"j:\n  job_type: flink\n  processor: steps:Numbers\n  args: {{path: '{out}'}}\n  properties: {{execution_mode: batch}}\n",
    )
    write(
        folder / "steps.py",
        """
        from aiflowd import FlinkPythonProcessor

        class Numbers(FlinkPythonProcessor):
            def __init__(self, path):
                self.path = path
            def process(self, ctx, inputs):
                ctx.table_env.execute_sql(f"CREATE TABLE o (n BIGINT) WITH ('connector'='filesystem','path'='{self.path}','format'='csv')")
                ctx.statement_set.add_insert("o", ctx.table_env.from_elements([(7,), (8,)], ["n"]))
                return []
        """,
    )
    execution, runs = await run_execution(
        loader, folder, tmp_path, settings={"flink": {"rest_url": cluster}, "instance_id": os.urandom(8).hex()}
    )
    assert execution.status.value == "FINISHED", Path(runs[0].env.log_path).read_text()[-2000:]
    assert csv_numbers(out) == [7, 8]


@pytest.mark.parametrize(
    ("shared_files", "said"),
    [
        (True, "the cluster refused the job: ValidationException"),  # in the JobManager
        (False, "the job's program failed to submit (exit status 1): ValidationException"),  # compiled here
    ],
)
async def test_a_python_job_refused_through_rest_names_its_cause(
    loader, cluster: str, tmp_path: Path, shared_files: bool, said: str
) -> None:
    path = write(
        tmp_path / "mismatch.yaml",
        "x:\n  job_type: flink\n  sql: \"CREATE TABLE o (n INT) WITH ('connector'='blackhole'); INSERT INTO o SELECT 'text'\"\n",
    )
    flink = {"rest_url": cluster, "shared_files": shared_files}
    execution, runs = await run_execution(loader, path, tmp_path, settings={"flink": flink, "instance_id": os.urandom(8).hex()})
    assert execution.status.value == "FAILED"
    assert runs[0].message.startswith(f"submission failed: RuntimeError: {said}: Column types of query result and sink")
    assert "Traceback" in Path(runs[0].env.log_path).read_text()


async def test_a_recorded_job_the_cluster_does_not_know_fails_with_a_note(cluster: str, tmp_path: Path) -> None:
    from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
    from aiflowd.plugins.flink.controller import FlinkJobController, FlinkJobUnknown

    env = JobRuntimeEnv(
        str(tmp_path / "w"),
        str(tmp_path / "job.log"),
        str(tmp_path),
        JobExecutionInfo("wf", "j", "1", "1.j.1"),
        {"flink": {"rest_url": cluster}},
    )
    controller = FlinkJobController()
    job_id = os.urandom(16).hex()
    handle = await controller.reattach({"job_id": job_id, "rest_url": cluster, "submit_via": "rest"}, env)
    assert handle is not None
    assert await controller.get_result(handle) is None
    # Its fate is unknown: FAILED, with the reason as the job execution's message.
    with pytest.raises(FlinkJobUnknown, match=f"the Flink cluster at {cluster} does not know Flink job {job_id} "):
        await controller.get_job_status(handle)
    assert "the cluster does not know Flink job" in (tmp_path / "job.log").read_text()


def test_a_daemon_stop_keeps_cluster_jobs_running_and_the_next_start_re_adopts_them(daemon: Daemon, jar: Path, tmp_path: Path) -> None:
    folder = daemon.workflows / "kept"
    folder.mkdir()
    shutil.copy(jar, folder / "wordcount.jar")
    out = tmp_path / "kept.txt"
    jar_workflow(folder, jar, out, 10**9, "{run_mode: cluster}", pause_ms=20)
    daemon.wait_jobs("kept", lambda rows: rows and rows[0]["status"] == "RUNNING")
    wait_for(lambda: out.exists() and running_copies(f"aiflowd-test-{out.name}") == 1, timeout=60)
    assert daemon.stop() == 0  # SIGTERM, as systemctl restart sends
    assert running_copies(f"aiflowd-test-{out.name}") == 1
    daemon.start()
    rows = daemon.wait_jobs("kept", lambda rows: rows and rows[0]["status"] == "RUNNING")
    assert len(rows) == 1 and running_copies(f"aiflowd-test-{out.name}") == 1  # the same job execution, one copy
    assert "keeps running" in daemon.ctl("job", "logs", "kept", "count").stdout
    daemon.ctl("workflow", "stop-execution", "kept")
    daemon.wait_jobs("kept", lambda rows: rows[0]["status"] == "KILLED", timeout=60)
    assert running_copies(f"aiflowd-test-{out.name}") == 0


def test_a_changed_event_started_streaming_job_resumes_from_its_savepoint_at_once(daemon: Daemon) -> None:
    shutil.copytree(EXAMPLES / "flink_streaming", daemon.workflows / "flink_streaming")
    wait_for(lambda: daemon.known("flink_streaming"))
    daemon.ctl("event", "send", "model_updated", "v1")
    daemon.wait_jobs("flink_streaming", lambda rows: rows and rows[0]["status"] == "RUNNING", timeout=60)
    (daemon.workflows / "flink_streaming" / "NOTES.txt").write_text("a new asset makes a new version\n")
    rows = daemon.wait_jobs("flink_streaming", lambda rows: len(rows) == 2 and rows[0]["status"] == "RUNNING", timeout=60)
    assert rows[1]["message"] == "workflow changed" and "from savepoint " in rows[0]["reason"]  # no event needed
    daemon.ctl("workflow", "stop-execution", "flink_streaming")
    daemon.wait_jobs("flink_streaming", lambda rows: rows[0]["status"] == "KILLED", timeout=60)
