"""Flink jar jobs on the real cluster started by scripts/flink-cluster.sh, and in local mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, run_execution, wait_for, write
from .daemon_harness import Daemon

REST = "http://127.0.0.1:" + os.environ.get("FLINK_REST_PORT", "8081")


def rest(path: str) -> dict:
    with urllib.request.urlopen(REST + path, timeout=10) as answer:
        return json.load(answer)


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """The project's cluster: used if it runs (scripts/test.sh starts it), else started here."""
    status = subprocess.run([str(REPO / "scripts" / "flink-cluster.sh"), "status"], capture_output=True, text=True)
    started = status.returncode != 0
    if started:
        subprocess.run([str(REPO / "scripts" / "flink-cluster.sh"), "start"], check=True, capture_output=True)
    yield REST
    if started:
        subprocess.run([str(REPO / "scripts" / "flink-cluster.sh"), "stop"], check=True)


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
