"""A Flink cluster that stops answering, as aiflowctl shows it: UNREACHABLE since T, RUNNING again, or FAILED.

The daemon reaches the real cluster through a relay of real TCP connections that the
test closes and opens again: a network cut, while the job keeps running on the cluster
(a standalone cluster that is itself restarted forgets its jobs, which is another case:
the job is then failed as unknown). Closing the relay refuses connections at once, as a
stopped cluster does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiflowd.clock import ManualClock
from aiflowd.model import Status

from .conftest import wait_for
from .daemon_harness import Daemon
from .test_flink import cluster, jar, jar_workflow, rest  # noqa: F401 - the session's cluster and jar fixtures
from .test_flink_cluster_script import Clusters, clusters, free_port_block  # noqa: F401 - its clusters fixture
from .test_flink_jobs import recorded_handle_env

pytestmark = pytest.mark.flink


class Relay:
    """A TCP relay from a port of its own to the cluster's: ``close`` cuts every connection and refuses new ones."""

    def __init__(self, target: str) -> None:
        host_port = target.split("//", 1)[1].rstrip("/")
        self.target = (host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1]))
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def open(self) -> Relay:
        server = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        server.settimeout(0.1)
        self.server = server
        self._spawn(self._accept, server)
        return self

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        with self.lock:
            connections, self.connections = self.connections, []
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=5)

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while self.server is server:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self.lock:
                self.connections += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def relay(cluster: str) -> Iterator[Relay]:  # noqa: F811
    opened = Relay(cluster).open()
    try:
        yield opened
    finally:
        opened.close()
        opened.join()


def running_copies(name: str) -> int:
    return sum(1 for j in rest("/jobs/overview")["jobs"] if j["name"] == name and j["state"] in ("RUNNING", "CREATED", "INITIALIZING"))


def cancel_named(name: str) -> None:
    """Cancel the cluster's running jobs of that name (what a test left there)."""
    for job in rest("/jobs/overview")["jobs"]:
        if job["name"] == name and job["state"] not in ("FINISHED", "FAILED", "CANCELED"):
            request = urllib.request.Request(f"{cluster_url()}/jobs/{job['jid']}?mode=cancel", method="PATCH")
            urllib.request.urlopen(request, timeout=10).close()


def cluster_url() -> str:
    from . import test_flink

    return test_flink.REST


def streaming_workflow(daemon: Daemon, jar: Path, tmp_path: Path, name: str) -> str:  # noqa: F811
    folder = daemon.workflows / name
    folder.mkdir()
    shutil.copy(jar, folder / "wordcount.jar")
    out = tmp_path / f"{name}.txt"
    jar_workflow(folder, jar, out, 10**9, "{run_mode: cluster}", pause_ms=20)
    daemon.wait_jobs(name, lambda rows: rows and rows[0]["status"] == "RUNNING", timeout=60)
    flink_name = f"aiflowd-test-{out.name}"
    wait_for(lambda: out.exists() and running_copies(flink_name) == 1, timeout=60)
    return flink_name


def test_a_cut_cluster_is_shown_unreachable_then_running_again(relay: Relay, jar: Path, tmp_path: Path) -> None:  # noqa: F811
    daemon = Daemon(tmp_path, config=f"flink: {{rest_url: '{relay.url}', unreachable_timeout: 600s}}\n").start()
    try:
        flink_name = streaming_workflow(daemon, jar, tmp_path, "cut")
        relay.close()
        rows = daemon.wait_jobs("cut", lambda rows: rows[0]["status"] == "UNREACHABLE", timeout=30)
        since = rows[0]["status_since"]
        assert isinstance(since, float) and rows[0]["ended_at"] is None
        assert rows[0]["message"] == f"the Flink cluster at {relay.url} does not answer"
        text = daemon.ctl("job", "list-executions", "cut").stdout
        assert "UNREACHABLE since " in text, text
        [execution] = daemon.json("workflow", "list-executions", "cut")
        assert (execution["status"], execution["status_since"]) == ("UNREACHABLE", since)
        assert "UNREACHABLE since " in daemon.ctl("workflow", "list-executions", "cut").stdout
        status = daemon.json("status")
        assert status["jobs_unreachable"] == 1 and status["jobs_active"] == 1  # still running for rules and scheduling
        assert "unreachable: 1 running job" in daemon.ctl("status").stdout
        assert daemon.json("job", "list-executions", "cut", "--status", "RUNNING")  # stored as running
        assert "UNREACHABLE since " in daemon.ctl("job", "logs", "cut", "count").stdout
        assert running_copies(flink_name) == 1  # the job itself runs on, out of the daemon's sight

        relay.open()
        rows = daemon.wait_jobs("cut", lambda rows: rows[0]["status"] == "RUNNING", timeout=30)
        assert rows[0]["status_since"] is None and rows[0]["message"] is None
        assert daemon.json("status")["jobs_unreachable"] == 0
        assert "answers again" in daemon.ctl("job", "logs", "cut", "count").stdout
        assert len(daemon.jobs("cut")) == 1  # the same job execution, re-adopted

        daemon.ctl("workflow", "stop-execution", "cut")
        daemon.wait_jobs("cut", lambda rows: rows[0]["status"] == "KILLED", timeout=60)
        assert running_copies(flink_name) == 0
    finally:
        daemon.close()


def test_a_cluster_silent_past_the_timeout_fails_its_job_with_the_reason(relay: Relay, jar: Path, tmp_path: Path) -> None:  # noqa: F811
    daemon = Daemon(tmp_path, config=f"flink: {{rest_url: '{relay.url}', unreachable_timeout: 3s}}\n").start()
    flink_name = ""
    try:
        flink_name = streaming_workflow(daemon, jar, tmp_path, "silent")
        relay.close()
        daemon.wait_jobs("silent", lambda rows: rows[0]["status"] == "UNREACHABLE", timeout=30)
        rows = daemon.wait_jobs("silent", lambda rows: rows[0]["status"] == "FAILED", timeout=60)
        assert rows[0]["status_since"] is None
        assert f"the Flink cluster at {relay.url} did not answer for 3s (UNREACHABLE since " in rows[0]["message"], rows[0]
        [execution] = daemon.json("workflow", "list-executions", "silent")
        assert execution["status"] == "FAILED"
        assert daemon.json("status")["jobs_unreachable"] == 0
    finally:
        daemon.close()
        if flink_name:
            cancel_named(flink_name)  # its fate was unknown to the daemon: it ran on, on the cluster


async def test_the_controller_reports_unreachable_and_its_end_on_an_injected_clock(cluster: str, tmp_path: Path) -> None:  # noqa: F811
    from aiflowd.plugins.flink.controller import FlinkClusterUnreachable, FlinkJobController, FlinkJobUnknown

    clock = ManualClock()
    reports: list[tuple] = []
    env = recorded_handle_env(tmp_path, "http://127.0.0.1:9", unreachable_timeout=60)
    env.reporter = lambda *report: reports.append(report)
    controller = FlinkJobController()
    controller.rest.clock = clock
    handle = await controller.reattach({"job_id": os.urandom(16).hex(), "rest_url": "http://127.0.0.1:9"}, env)
    assert handle is not None
    assert await controller.get_job_status(handle) == Status.RUNNING
    assert reports == [("UNREACHABLE", "the Flink cluster at http://127.0.0.1:9 does not answer", "http://127.0.0.1:9", clock.now())]
    clock.advance(59.9)
    assert await controller.get_job_status(handle) == Status.RUNNING  # not yet: the window is the clock's, not the machine's
    assert len(reports) == 1  # told once, not at each poll
    handle.rest_url = cluster  # the cluster answers again (it does not know this job: it ends, as unknown)
    with pytest.raises(FlinkJobUnknown, match="does not know Flink job"):
        await controller.get_job_status(handle)
    assert reports[-1] == (None, "", cluster, None)

    reports.clear()
    silent = await controller.reattach({"job_id": os.urandom(16).hex(), "rest_url": "http://127.0.0.1:9"}, env)
    assert silent is not None
    assert await controller.get_job_status(silent) == Status.RUNNING
    assert [r[0] for r in reports] == ["UNREACHABLE"]
    clock.advance(60)
    with pytest.raises(FlinkClusterUnreachable, match=r"did not answer for 60s \(UNREACHABLE since \d{4}-"):
        await controller.get_job_status(silent)


def test_metrics_give_how_long_a_cluster_has_not_answered(relay: Relay, jar: Path, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("prometheus_client")
    port = free_port()
    daemon = Daemon(tmp_path, config=f"flink: {{rest_url: '{relay.url}', unreachable_timeout: 600s}}\nhttp:\n  listen: 127.0.0.1:{port}\n")
    daemon.start()
    try:
        streaming_workflow(daemon, jar, tmp_path, "gauge")
        relay.close()
        daemon.wait_jobs("gauge", lambda rows: rows[0]["status"] == "UNREACHABLE", timeout=30)
        line = f'aiflowd_unreachable_seconds{{cluster="{relay.url}"}} '
        wait_for(lambda: float(metric(port, line) or 0) > 0.5, timeout=30)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert 'class="UNREACHABLE">UNREACHABLE since ' in page
        relay.open()
        daemon.wait_jobs("gauge", lambda rows: rows[0]["status"] == "RUNNING", timeout=30)
        assert metric(port, line) is None
        daemon.ctl("workflow", "stop-execution", "gauge")
        daemon.wait_jobs("gauge", lambda rows: rows[0]["status"] == "KILLED", timeout=60)
    finally:
        daemon.close()


def metric(port: int, prefix: str) -> str | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return next((line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_relay_passes_the_cluster_through(relay: Relay) -> None:
    with urllib.request.urlopen(f"{relay.url}/config", timeout=10) as answer:
        assert "flink-version" in json.load(answer)


def test_a_daemon_stop_ends_an_execution_with_a_local_job_whole_cluster_job_included(cluster: str, jar: Path, tmp_path: Path) -> None:  # noqa: F811
    """``flink.on_daemon_stop: keep`` keeps only executions whose running jobs all run on a cluster."""
    daemon = Daemon(tmp_path, config=f"flink: {{rest_url: '{cluster}', on_daemon_stop: keep}}\n").start()
    try:
        folder = daemon.workflows / "mixed"
        folder.mkdir()
        shutil.copy(jar, folder / "wordcount.jar")
        out = tmp_path / "mixed.txt"
        marker = tmp_path / "local.pid"
        (folder / "mixed.yaml").write_text(
            f"""
count:
  job_type: flink
  main_jar_file: wordcount.jar
  entry_class: org.example.WordCount
  args: ["{out}", "{10**9}", "20"]
  properties: {{run_mode: cluster}}
local:
  job_type: bash
  bash_command: echo $$ > {marker}; exec sleep 600
"""
        )
        rows = daemon.wait_jobs("mixed", lambda rows: len(rows) == 2 and all(r["status"] == "RUNNING" for r in rows), timeout=60)
        flink_name = f"aiflowd-test-{out.name}"
        wait_for(lambda: out.exists() and running_copies(flink_name) == 1 and marker.exists() and marker.read_text().strip(), timeout=60)
        local_pid = int(marker.read_text())
        assert daemon.stop(timeout=60) == 0  # SIGTERM
        assert running_copies(flink_name) == 0  # cancelled, not kept: its execution had a local job
        assert not os.path.exists(f"/proc/{local_pid}")  # nor is the local job left behind
        daemon.start()
        rows = daemon.wait_jobs("mixed", lambda rows: len(rows) == 2 and all(r["status"] == "KILLED" for r in rows), timeout=60)
        assert all(r["ended_at"] is not None for r in rows)
        [execution] = daemon.json("workflow", "list-executions", "mixed")
        assert execution["status"] == "KILLED" and execution["ended_at"] is not None, execution
        assert running_copies(flink_name) == 0  # nothing started again either
        assert "keeps running" not in daemon.ctl("job", "logs", "mixed", "count").stdout
    finally:
        daemon.close()


def test_a_stopped_cluster_is_shown_unreachable_and_a_restarted_one_that_forgot_the_job_fails_it(
    clusters: Clusters,  # noqa: F811
    jar: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A real cluster of the test's own, stopped under a running job, then started again (without HA it forgets its jobs)."""
    base = free_port_block()
    workdir = clusters.workdir("lost")
    started = clusters.run("start", workdir, base)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    daemon = Daemon(tmp_path, config=f"flink: {{rest_url: '{url}', unreachable_timeout: 600s}}\n").start()
    try:
        folder = daemon.workflows / "lost"
        folder.mkdir()
        shutil.copy(jar, folder / "wordcount.jar")
        out = tmp_path / "lost.txt"
        jar_workflow(folder, jar, out, 10**9, "{run_mode: cluster}", pause_ms=20)
        daemon.wait_jobs("lost", lambda rows: rows and rows[0]["status"] == "RUNNING", timeout=60)
        wait_for(lambda: out.exists() and out.stat().st_size > 0, timeout=60)

        assert clusters.run("stop", workdir, base).returncode == 0
        rows = daemon.wait_jobs("lost", lambda rows: rows[0]["status"] == "UNREACHABLE", timeout=60)
        assert rows[0]["status_since"] and rows[0]["message"] == f"the Flink cluster at {url} does not answer"
        assert "UNREACHABLE since " in daemon.ctl("job", "list-executions", "lost").stdout

        assert clusters.run("start", workdir, base).returncode == 0
        rows = daemon.wait_jobs("lost", lambda rows: rows[0]["status"] == "FAILED", timeout=90)
        assert rows[0]["status_since"] is None
        assert f"the Flink cluster at {url} does not know Flink job " in rows[0]["message"], rows[0]
        log = daemon.ctl("job", "logs", "lost", "count").stdout
        assert "the Flink cluster answers again (UNREACHABLE since " in log and "the cluster does not know Flink job" in log, log
    finally:
        daemon.close()


async def test_many_jobs_on_a_silent_cluster_cost_one_try_per_poll(tmp_path: Path) -> None:
    """Handles waiting for a silent cluster's answer share it: one try per poll interval, not one per job."""
    import anyio

    from aiflowd.plugins.flink.controller import FlinkJobController

    env = recorded_handle_env(tmp_path, "http://127.0.0.1:9", unreachable_timeout=600)
    controller = FlinkJobController()
    handles = [await controller.reattach({"job_id": os.urandom(16).hex(), "rest_url": "http://127.0.0.1:9"}, env) for _ in range(40)]
    statuses: list[Status] = []

    async def ask(handle) -> None:  # type: ignore[no-untyped-def]
        statuses.append(await controller.get_job_status(handle))

    async with anyio.create_task_group() as tg:
        for handle in handles:
            tg.start_soon(ask, handle)
    assert statuses == [Status.RUNNING] * 40
    assert all(h is not None and h.unreachable_since is not None for h in handles)
    assert controller.rest._overviews["http://127.0.0.1:9"].calls < 5  # one, or a few on a machine that stalls a task past 0.2 s; 40 before
    assert (tmp_path / "job.log").read_text().count("UNREACHABLE since ") == 40  # each job's log says it
