"""Flink jobs as Flink users write them: SQL client scripts, and every job a PyFlink processor starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiflowd.model import Status

from .conftest import run_execution, write
from .test_flink import cluster, csv_numbers, jar  # noqa: F401 - the session's cluster and jar fixtures

pytestmark = pytest.mark.flink

#: A script for ``sql-client.sh -f``: batch mode set first, a quoted semicolon, comments,
#: a statement set of two INSERTs, RESET, and an INSERT of its own.
SCRIPT = """\
SET 'execution.runtime-mode' = 'batch';
SET 'parallelism.default' = '2';  -- for the jobs below
/* the source: five numbers; a 'quoted; semicolon' in a comment */
CREATE TABLE src (n BIGINT, s STRING) WITH ('connector' = 'datagen', 'number-of-rows' = '5',
    'fields.n.kind' = 'sequence', 'fields.n.start' = '1', 'fields.n.end' = '5', 'fields.s.length' = '3');
CREATE TABLE a (n BIGINT, t STRING) WITH ('connector' = 'filesystem', 'path' = '{out}/a', 'format' = 'csv');
CREATE TABLE b (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/b', 'format' = 'csv');
CREATE TABLE c (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/c', 'format' = 'csv');
BEGIN STATEMENT SET;
INSERT INTO a SELECT n, 'x;y' FROM src;
INSERT INTO b SELECT n * 10 FROM src;
END;
RESET 'parallelism.default';
INSERT INTO c SELECT n * 100 FROM src
"""


def settings(url: str) -> dict:
    return {"flink": {"rest_url": url}, "instance_id": os.urandom(8).hex()}


def numbers(folder: Path) -> list[int]:
    return csv_numbers(folder) if folder.exists() else []


@pytest.mark.parametrize("submit_via", ["rest", "cli"])
async def test_a_sql_client_script_runs_step_by_step(loader, cluster: str, tmp_path: Path, submit_via: str) -> None:  # noqa: F811
    out = tmp_path / "out"
    write(tmp_path / "wf" / "script.sql", SCRIPT.format(out=out))
    write(tmp_path / "wf" / "wf.yaml", f"j:\n  job_type: flink\n  sql_file: script.sql\n  properties: {{submit_via: {submit_via}}}\n")
    execution, runs = await run_execution(loader, tmp_path / "wf", tmp_path, settings=settings(cluster))
    log = Path(runs[0].env.log_path).read_text()
    assert execution.status.value == "FINISHED", log[-3000:]
    assert numbers(out / "b") == [10, 20, 30, 40, 50]
    assert numbers(out / "c") == [100, 200, 300, 400, 500]
    assert sorted(line for f in (out / "a").iterdir() if not f.name.startswith(".") for line in f.read_text().split()) == [
        f"{n},x;y" for n in range(1, 6)
    ]
    assert "and 1 more" in log  # the statement set and the lone INSERT: two jobs, both tracked


def test_a_script_that_will_not_run_is_a_load_error_with_its_line(loader, tmp_path: Path) -> None:
    from aiflowd.workflows.errors import LoadError

    write(tmp_path / "wf" / "bad.sql", "CREATE TABLE t (n INT) WITH ('connector' = 'blackhole');\n\nSELECT * FROM t;\n")
    path = write(tmp_path / "wf" / "wf.yaml", "j:\n  job_type: flink\n  sql_file: bad.sql\n")
    with pytest.raises(LoadError) as info:
        loader.load(str(path))
    assert str(info.value).endswith("j.sql_file: line 3: a query's rows have nowhere to go in a job; INSERT them INTO a table")


def test_runtime_mode_set_after_a_statement_is_refused(loader, tmp_path: Path) -> None:
    from aiflowd.workflows.errors import LoadError

    path = write(
        tmp_path / "m.yaml",
        "j:\n  job_type: flink\n  sql: |\n    CREATE TABLE t (n INT) WITH ('connector' = 'blackhole');\n"
        "    SET 'execution.runtime-mode' = 'batch';\n",
    )
    with pytest.raises(LoadError) as info:
        loader.load(str(path))
    assert "j.sql: line 2: 'execution.runtime-mode' can change only before the first statement that is not SET" in str(info.value)


INSERTS = """
from aiflowd import FlinkPythonProcessor, job_config, user_define_operation

def sink(t_env, name):
    t_env.execute_sql(f"CREATE TABLE {{name}} (n BIGINT) WITH ('connector'='filesystem','path'='{out}/{{name}}','format'='csv')")

class Inserts(FlinkPythonProcessor):
    def process(self, ctx, inputs):
        t = ctx.table_env
        sink(t, "by_sql"); sink(t, "by_table"); sink(t, "by_set")
        t.execute_sql("INSERT INTO by_sql VALUES (1), (2)")
        t.from_elements([(3,)], ["n"]).execute_insert("by_table")
        own = t.create_statement_set()
        own.add_insert_sql("INSERT INTO by_set VALUES (4)")
        own.execute()
        return []

with job_config("j"):
    user_define_operation(processor=Inserts())
"""


@pytest.mark.parametrize(("run_mode", "submit_via"), [("local", "rest"), ("cluster", "rest"), ("cluster", "cli")])
async def test_every_insert_is_counted_and_awaited(loader, cluster: str, tmp_path: Path, run_mode: str, submit_via: str) -> None:  # noqa: F811
    out = tmp_path / "out"
    write(tmp_path / "wf" / "wf.py", INSERTS.format(out=out))
    write(
        tmp_path / "wf" / "wf.yaml",
        f"j:\n  job_type: flink\n  properties: {{run_mode: {run_mode}, submit_via: {submit_via}, execution_mode: batch}}\n",
    )
    execution, runs = await run_execution(loader, tmp_path / "wf", tmp_path, settings=settings(cluster))
    log = Path(runs[0].env.log_path).read_text()
    assert execution.status.value == "FINISHED", log[-3000:]
    assert (numbers(out / "by_sql"), numbers(out / "by_table"), numbers(out / "by_set")) == ([1, 2], [3], [4])


NO_JOB = """
from aiflowd import FlinkPythonProcessor, FlinkSqlProcessor, job_config, user_define_operation

class Nothing(FlinkPythonProcessor):
    def process(self, ctx, inputs):
        ctx.table_env.execute_sql("CREATE TABLE t (n INT) WITH ('connector' = 'blackhole')")
        return []

class Opened(FlinkSqlProcessor):
    def open(self, ctx):
        open("{marks}/opened", "w").close()
    def sql_statements(self, ctx):
        return []
    def close(self, ctx):
        open("{marks}/closed", "w").close()

with job_config("j"):
    user_define_operation(processor=Nothing())
    user_define_operation(processor=Opened())
"""


async def test_a_job_that_starts_no_flink_job_fails_and_sql_processors_are_opened_and_closed(loader, tmp_path: Path) -> None:
    write(tmp_path / "wf" / "wf.py", NO_JOB.format(marks=tmp_path))
    write(tmp_path / "wf" / "wf.yaml", "j:\n  job_type: flink\n  properties: {run_mode: local}\n")
    execution, runs = await run_execution(loader, tmp_path / "wf", tmp_path, settings=settings("http://127.0.0.1:9"))
    assert execution.status.value == "FAILED"
    assert "the job's nodes started no Flink job" in Path(runs[0].env.log_path).read_text()
    assert (tmp_path / "opened").exists() and (tmp_path / "closed").exists()


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        (
            "{flink_run_args: [-d]}",
            "j.properties.flink_run_args: '-d' cannot be honoured over REST (it takes -p, -s, -n, -c, -D, -pyfs); use submit_via: cli for it",
        ),
        (
            "{stop_mode: stop, flink_stop_args: [--bogus]}",
            "j.properties.flink_stop_args: '--bogus' cannot be honoured over REST (it takes -p, -d, --type); use submit_via: cli for it",
        ),
    ],
)
def test_run_and_stop_args_rest_cannot_honour_are_load_errors(loader, tmp_path: Path, properties: str, expected: str) -> None:
    from aiflowd.workflows.errors import LoadError

    path = write(tmp_path / "a.yaml", f"j:\n  job_type: flink\n  sql: 'INSERT INTO t SELECT 1'\n  properties: {properties}\n")
    with pytest.raises(LoadError) as info:
        loader.load(str(path))
    assert str(info.value).endswith(expected)


async def test_run_args_are_honoured_over_rest(loader, cluster: str, tmp_path: Path) -> None:  # noqa: F811
    from .test_flink import rest

    out = tmp_path / "out"
    write(tmp_path / "wf" / "script.sql", SCRIPT.format(out=out))
    write(
        tmp_path / "wf" / "wf.yaml",
        "j:\n  job_type: flink\n  sql_file: script.sql\n  properties: {flink_run_args: [-p, '3', -Dpipeline.max-parallelism=64]}\n",
    )
    execution, runs = await run_execution(loader, tmp_path / "wf", tmp_path, settings=settings(cluster))
    log = Path(runs[0].env.log_path).read_text()
    assert execution.status.value == "FINISHED", log[-3000:]
    job_id = log.split("and 1 more (")[1].split(")")[0]  # the lone INSERT, after the RESET of the script's own parallelism
    assert {v["parallelism"] for v in rest(f"/jobs/{job_id}")["vertices"]} == {3}


UDF_MODULE = """
from pyflink.table.udf import udf

@udf(result_type="BIGINT")
def triple(n):
    return n * 3
"""

UDF_USER = """
from aiflowd import FlinkSqlProcessor, job_config, user_define_operation
from udfs import triple

class Tripled(FlinkSqlProcessor):
    def udf_list(self, ctx):
        return [("triple", triple)]
    def sql_statements(self, ctx):
        return [
            "CREATE TABLE o (n BIGINT) WITH ('connector'='filesystem','path'='{out}','format'='csv')",
            "INSERT INTO o SELECT triple(n) FROM (VALUES (1), (2)) AS t(n)",
        ]

with job_config("j"):
    user_define_operation(processor=Tripled())
"""


@pytest.mark.parametrize("submit_via", ["rest", "cli"])
async def test_udfs_from_a_module_of_the_workflow_folder_reach_the_workers(loader, cluster: str, tmp_path: Path, submit_via: str) -> None:  # noqa: F811
    out = tmp_path / "out"
    write(tmp_path / "wf" / "udfs.py", UDF_MODULE)
    write(tmp_path / "wf" / "wf.py", UDF_USER.format(out=out))
    write(tmp_path / "wf" / "wf.yaml", f"j:\n  job_type: flink\n  properties: {{submit_via: {submit_via}, execution_mode: batch}}\n")
    execution, runs = await run_execution(loader, tmp_path / "wf", tmp_path, settings=settings(cluster))
    assert execution.status.value == "FINISHED", Path(runs[0].env.log_path).read_text()[-3000:]
    assert numbers(out) == [3, 6]


#: An AIFlow 0.3-shaped Flink workflow (as AIFlow's flink demo is written): a word count into
#: a print sink, by a FlinkPythonProcessor and a FlinkSqlProcessor, each job started by an event.
AIFLOW_COUNTING = """
from typing import List

from pyflink.table import DataTypes, Schema, Table, TableDescriptor
from pyflink.table.expressions import col, lit

from ai_flow_plugins.job_plugins import flink
from ai_flow_plugins.job_plugins.flink import ExecutionContext, UDFWrapper

WORDS = ["tide", "moon", "tide"]


class CountProcessor(flink.flink_processor.FlinkPythonProcessor):
    def process(self, execution_context: ExecutionContext, input_list: List[Table] = None) -> List[Table]:
        t_env = execution_context.table_env
        words = t_env.from_elements([(w,) for w in WORDS], DataTypes.ROW([DataTypes.FIELD("w", DataTypes.STRING())]))
        schema = Schema.new_builder().column("word", DataTypes.STRING()).column("n", DataTypes.BIGINT()).build()
        t_env.create_temporary_table("out", TableDescriptor.for_connector("print").schema(schema).build())
        counted = words.alias("word").group_by(col("word")).select(col("word"), lit(1).count)
        execution_context.statement_set.add_insert("out", counted)
        return []


class CountSqlProcessor(flink.flink_processor.FlinkSqlProcessor):
    def sql_statements(self, execution_context: ExecutionContext) -> List[str]:
        t_env = execution_context.table_env
        words = t_env.from_elements([(w,) for w in WORDS], DataTypes.ROW([DataTypes.FIELD("word", DataTypes.STRING())]))
        t_env.create_temporary_view("words", words, col("word"))
        return [
            "CREATE TABLE counts (word STRING, n BIGINT) WITH ('connector' = 'print')",
            "INSERT INTO counts SELECT word, COUNT(word) FROM words GROUP BY word",
        ]

    def udf_list(self, execution_context: ExecutionContext) -> List[UDFWrapper]:
        return []
"""

AIFLOW_DEFINITION = """
import ai_flow as af
from counting import CountProcessor, CountSqlProcessor

af.init_ai_flow_context()
with af.job_config("count_job"):
    af.user_define_operation(processor=CountProcessor())
af.action_on_event(job_name="count_job", event_key="run_job", event_value="count_job", event_type="*", sender="*", namespace="*")
with af.job_config("count_sql_job"):
    af.user_define_operation(processor=CountSqlProcessor())
af.action_on_event(job_name="count_sql_job", event_key="run_job", event_value="count_sql_job", event_type="*", sender="*", namespace="*")
"""


@pytest.mark.parametrize("job", ["count_job", "count_sql_job"])
async def test_an_aiflow_flink_demo_runs_unchanged_in_aiflows_batch_mode(loader, tmp_path: Path, job: str) -> None:
    folder = tmp_path / "demo"
    write(folder / "counting.py", AIFLOW_COUNTING)
    write(folder / "demo.py", AIFLOW_DEFINITION)
    write(
        folder / "demo.yaml",
        "".join(f"{j}:\n  job_type: flink\n  properties:\n    run_mode: local\n" for j in ("count_job", "count_sql_job")),
    )
    execution, runs = await run_execution(loader, folder, tmp_path, only_job=job, settings=settings("http://127.0.0.1:9"))
    log = Path(runs[0].env.log_path).read_text()
    assert execution.status.value == "FINISHED", log[-3000:]
    assert "+I[tide, 2]" in log and "+I[moon, 1]" in log and "-U[" not in log  # batch: final counts only


def test_aiflow_flink_environment_names() -> None:
    from aiflowd import compat

    compat.enable()
    from ai_flow_plugins.job_plugins import flink

    flink.set_flink_env(flink.FlinkStreamEnv())
    assert flink.get_flink_env().mode == "streaming"
    assert (flink.UDFWrapper("f", len).name, flink.UDFWrapper("f", len).udf) == ("f", len)
    assert {"execution_env", "table_env", "statement_set"} <= set(vars(flink.ExecutionContext({}, "n", None, 1, 2, 3)))
    with pytest.raises(TypeError, match="set_flink_env takes a FlinkEnv"):
        flink.set_flink_env("batch")


def recorded_handle_env(tmp_path: Path, url: str, **flink: object):  # type: ignore[no-untyped-def]
    from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv

    return JobRuntimeEnv(
        str(tmp_path / "w"),
        str(tmp_path / "job.log"),
        str(tmp_path),
        JobExecutionInfo("wf", "j", "1", "1.j.1"),
        {"flink": {"rest_url": url, **flink}},
    )


async def test_a_cluster_that_does_not_answer_is_unreachable_then_failed_after_the_timeout(tmp_path: Path) -> None:
    from aiflowd.plugins.flink.controller import FlinkClusterUnreachable, FlinkJobController

    env = recorded_handle_env(tmp_path, "http://127.0.0.1:9", unreachable_timeout=0.5)
    controller = FlinkJobController()
    handle = await controller.reattach({"job_id": os.urandom(16).hex(), "rest_url": "http://127.0.0.1:9"}, env)
    assert await controller.get_job_status(handle) == Status.RUNNING  # its fate is unknown: not ended yet
    assert "UNREACHABLE since " in (tmp_path / "job.log").read_text()
    assert await controller.get_result(handle) == 1
    with pytest.raises(FlinkClusterUnreachable, match=r"did not answer for 0.5s \(UNREACHABLE since \d{4}-"):
        await controller.get_job_status(handle)


async def test_a_cluster_that_answers_again_in_time_is_re_adopted(cluster: str, tmp_path: Path) -> None:  # noqa: F811
    from aiflowd.plugins.flink.controller import FlinkJobController

    env = recorded_handle_env(tmp_path, cluster)
    controller = FlinkJobController()
    handle = await controller.reattach({"job_id": os.urandom(16).hex(), "rest_url": "http://127.0.0.1:9"}, env)
    assert await controller.get_job_status(handle) == Status.RUNNING
    handle.rest_url = cluster  # the cluster is back (here: found at its address; it does not know this job)
    await controller.get_result(handle, False)
    assert "the Flink cluster answers again (UNREACHABLE since " in (tmp_path / "job.log").read_text()
    assert handle.unreachable_since is None


DATASTREAM = """
from aiflowd import FlinkPythonProcessor, job_config, user_define_operation

class Streams(FlinkPythonProcessor):
    def process(self, ctx, inputs):
        ctx.stream_execution_env.from_collection([1, 2, 3]).map(lambda n: n * 7).print()
        ctx.stream_execution_env.execute("aiflowd-datastream")
        ctx.table_env.execute_sql("CREATE TABLE o (n BIGINT) WITH ('connector'='filesystem','path'='{out}','format'='csv')")
        ctx.table_env.execute_sql("INSERT INTO o VALUES (5)")
        return []

with job_config("j"):
    user_define_operation(processor=Streams())
"""


@pytest.mark.parametrize(("run_mode", "submit_via"), [("local", "rest"), ("cluster", "rest"), ("cluster", "cli")])
async def test_a_datastream_execute_and_an_insert_are_both_jobs(
    loader,
    cluster: str,  # noqa: F811
    tmp_path: Path,
    run_mode: str,
    submit_via: str,
) -> None:
    out = tmp_path / "out"
    write(tmp_path / "wf" / "wf.py", DATASTREAM.format(out=out))
    write(
        tmp_path / "wf" / "wf.yaml",
        f"j:\n  job_type: flink\n  properties: {{run_mode: {run_mode}, submit_via: {submit_via}, execution_mode: batch}}\n",
    )
    execution, runs = await run_execution(loader, tmp_path / "wf", tmp_path, settings=settings(cluster))
    log = Path(runs[0].env.log_path).read_text()
    assert execution.status.value == "FINISHED", log[-3000:]
    assert numbers(out) == [5]
    if run_mode == "local":
        assert "started by execute()" in log and "\n21\n" in log
    else:
        assert "and 1 more" in log  # both jobs tracked


async def test_many_tracked_jobs_cost_one_overview_call_per_poll(loader, cluster: str, jar: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    """50 handles on one running job, each asked for its status 10 times: the cluster sees overview calls, not 500 per-job calls."""
    import shutil
    import time
    from collections import Counter

    import anyio
    import httpx

    from aiflowd.plugins.flink.controller import POLL_INTERVAL, FlinkJobController

    from .test_flink import jar_workflow

    calls: Counter[str] = Counter()
    send = httpx.AsyncClient.send

    async def counting(self: httpx.AsyncClient, request: httpx.Request, **kwargs: object) -> httpx.Response:
        calls[request.url.path.rsplit("/", 1)[-1]] += 1
        return await send(self, request, **kwargs)

    folder = tmp_path / "wf"
    folder.mkdir()
    shutil.copy(jar, folder / "wordcount.jar")
    jar_workflow(folder, jar, tmp_path / "o.txt", 10**9, "{run_mode: cluster}", pause_ms=20)

    async def during(engine, runs) -> None:  # type: ignore[no-untyped-def]
        while not runs or runs[0].supervisor is None or runs[0].supervisor.handle is None:
            await anyio.sleep(0.05)
        job_id = runs[0].supervisor.handle.job_id
        controller = engine.registry.get("flink").controller  # the one tracking the job already
        assert isinstance(controller, FlinkJobController)
        handles = [await controller.reattach({"job_id": job_id, "rest_url": cluster}, runs[0].env) for _ in range(50)]
        monkeypatch.setattr(httpx.AsyncClient, "send", counting)
        began = time.monotonic()
        for _ in range(10):
            async with anyio.create_task_group() as tg:
                for handle in handles:
                    tg.start_soon(controller.get_job_status, handle)
            await anyio.sleep(0.2)
        monkeypatch.setattr(httpx.AsyncClient, "send", send)
        elapsed.append(time.monotonic() - began)
        engine.stop_execution("wf")

    elapsed: list[float] = []
    await run_execution(loader, folder, tmp_path, settings=settings(cluster), during=during)
    # One overview call per poll interval at most, for the 51 handles together (the engine's own included).
    assert calls["execution-result"] == 0 and 1 <= calls["overview"] <= elapsed[0] / POLL_INTERVAL + 2, (calls, elapsed)


TWO_STREAMS = """
from aiflowd import FlinkPythonProcessor, job_config, user_define_operation

class TwoStreams(FlinkPythonProcessor):
    def process(self, ctx, inputs):
        t = ctx.table_env
        t.execute_sql("CREATE TABLE src (n BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '5')")
        t.execute_sql("CREATE TABLE snk (n BIGINT) WITH ('connector' = 'blackhole')")
        t.execute_sql("INSERT INTO snk SELECT n FROM src")
        t.execute_sql("INSERT INTO snk SELECT n + 1 FROM src /* the second job */")
        return []

with job_config("j"):
    user_define_operation(processor=TwoStreams())
"""


def restored_from(url: str, job_id: str) -> str | None:
    """The savepoint a running job restored its state from, as the cluster reports it."""
    import httpx

    answer = httpx.get(f"{url}/jobs/{job_id}/checkpoints", timeout=10).json()
    return ((answer.get("latest") or {}).get("restored") or {}).get("external_path")


@pytest.mark.parametrize(("shared_files", "submit_via"), [(True, "rest"), (False, "rest"), (True, "cli")])
async def test_each_job_of_a_program_resumes_from_its_own_savepoint(
    loader,
    cluster: str,  # noqa: F811
    tmp_path: Path,
    shared_files: bool,
    submit_via: str,
) -> None:
    import anyio
    import httpx

    from aiflowd.plugin_interface import JobExecutionInfo, JobRuntimeEnv
    from aiflowd.plugins.flink.controller import FlinkJobController

    write(tmp_path / "wf" / "wf.py", TWO_STREAMS)
    write(tmp_path / "wf" / "wf.yaml", f"j:\n  job_type: flink\n  properties: {{stop_mode: stop, submit_via: {submit_via}}}\n")
    job = loader.load(str(tmp_path / "wf")).jobs["j"]
    controller = FlinkJobController()
    flink = {"rest_url": cluster, "shared_files": shared_files}
    instance = os.urandom(8).hex()

    def env(run: int, **restore: object) -> JobRuntimeEnv:
        info = JobExecutionInfo("wf", "j", str(run), f"{run}.j.1")
        return JobRuntimeEnv(
            str(tmp_path / f"work{run}"),
            str(tmp_path / f"j{run}.log"),
            str(tmp_path / "wf"),
            info,
            {"flink": flink, "instance_id": instance},
            **restore,
        )  # type: ignore[arg-type]

    async def all_running(job_ids: list[str]) -> None:
        with anyio.fail_after(120):
            while not all(httpx.get(f"{cluster}/jobs/{j}", timeout=10).json().get("state") == "RUNNING" for j in job_ids):
                await anyio.sleep(0.2)

    first_env = env(1)
    first = await controller.submit_job(job, first_env)
    assert len(first.job_ids) == 2  # type: ignore[attr-defined]
    await all_running(first.job_ids)  # type: ignore[attr-defined]
    await controller.stop_job(first, first_env)
    paths = first.savepoint_paths  # type: ignore[attr-defined]
    assert len(paths) == 2 and all(paths) and paths[0] != paths[1], Path(first_env.log_path).read_text()[-2000:]
    assert first.savepoint_path == paths[0]  # type: ignore[attr-defined]

    second_env = env(2, restore_savepoint=paths[0], restore_savepoints=paths)
    second = await controller.submit_job(job, second_env)
    try:
        await all_running(second.job_ids)  # type: ignore[attr-defined]
        assert [restored_from(cluster, j) for j in second.job_ids] == paths  # type: ignore[attr-defined]
    finally:
        await controller.stop_job(second, second_env)


OWN_ENV = """
from ai_flow_plugins.job_plugins.flink import FlinkEnv, set_flink_env
from ai_flow_plugins.job_plugins.flink.flink_processor import FlinkPythonProcessor
from aiflowd import job_config, user_define_operation


class OwnEnv(FlinkEnv):
    def create_env(self):
        raise AssertionError("never called when compiled on the daemon's side")


set_flink_env(OwnEnv())


class Nothing(FlinkPythonProcessor):
    def process(self, ctx, inputs):
        return []


with job_config("j"):
    user_define_operation(processor=Nothing())
"""


async def test_an_own_flink_env_is_refused_when_compiled_on_the_daemons_side(loader, tmp_path: Path) -> None:
    write(tmp_path / "wf" / "wf.py", OWN_ENV)
    write(tmp_path / "wf" / "wf.yaml", "j:\n  job_type: flink\n")
    flink = {"rest_url": "http://127.0.0.1:9", "shared_files": False}  # refused before any cluster is asked
    execution, runs = await run_execution(loader, tmp_path / "wf", tmp_path, settings={"flink": flink, "instance_id": "x"})
    assert execution.status.value == "FAILED"
    assert runs[0].message == (
        "submission failed: RuntimeError: the job's program failed to submit (exit status 1): RuntimeError:"
        " OwnEnv.create_env() makes its own environments, which cannot be sent to the cluster from the daemon's side"
        " (flink.shared_files: false); use FlinkBatchEnv or FlinkStreamEnv, or submit_via: cli"
    )


async def test_sql_jobs_of_one_workflow_submitted_at_once_all_run(loader, cluster: str, tmp_path: Path) -> None:  # noqa: F811
    """Jobs with no rule between them start together; SQL, like PyFlink, runs under Flink's Python driver in the JobManager."""
    out, count = tmp_path / "out", 3
    jobs = "".join(
        f"j{i}:\n  job_type: flink\n  properties: {{execution_mode: batch}}\n  sql: |\n"
        f"    CREATE TABLE t{i} (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/t{i}', 'format' = 'csv');\n"
        f"    INSERT INTO t{i} VALUES ({i}), ({i * 10});\n"
        for i in range(count)
    )
    write(tmp_path / "wf" / "wf.yaml", jobs)
    execution, runs = await run_execution(loader, tmp_path / "wf", tmp_path, settings=settings(cluster))
    logs = "\n".join(Path(run.env.log_path).read_text()[-2000:] for run in runs)
    assert execution.status.value == "FINISHED", logs
    assert [numbers(out / f"t{i}") for i in range(count)] == [[i, i * 10] for i in range(count)]
