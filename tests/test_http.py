"""The read-only HTTP side against a real daemon: JSON API, Prometheus metrics, the pages in a real browser.

The browser is Debian's chromium driven by Selenium through its chromedriver (never a
downloaded browser); the browser test skips, saying why, where chromium is not installed.
"""

from __future__ import annotations

import contextlib
import html
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiflowd.config import load_config
from aiflowd.workflows.errors import LoadError

from .conftest import wait_for
from .daemon_harness import Daemon

pytest.importorskip("hypercorn", reason="the http extra (hypercorn) is not installed")
prometheus_parser = pytest.importorskip("prometheus_client.parser", reason="the http extra (prometheus_client) is not installed")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

WORKFLOW = """
job_1:
  job_type: bash
  bash_command: echo hello from job_1
job_2:
  job_type: bash
  bash_command: echo broken; exit 3
  action_on_job_status:
    - {upstream_job: job_1, upstream_job_status: FINISHED, action: START}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    """A daemon serving HTTP, whose workflow ``demo`` ran once: job_1 FINISHED, job_2 FAILED."""
    port = free_port()
    daemon = Daemon(tmp_path_factory.mktemp("http"), f"http:\n  listen: 127.0.0.1:{port}\n  refresh: 30s\n")
    try:
        daemon.write_workflow("demo.yaml", WORKFLOW)
        daemon.start()
        daemon.wait_jobs("demo", lambda rows: sorted((r["job"], r["status"]) for r in rows) == [("job_1", "FINISHED"), ("job_2", "FAILED")])
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base + "/healthz"), timeout=20)
        yield daemon, base
    finally:
        daemon.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_healthz_and_read_only(served: tuple[Daemon, str]) -> None:
    _, base = served
    assert httpx.get(base + "/healthz").text == "ok\n"
    refused = httpx.post(base + "/api/status")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert httpx.get(base + "/no/such/page").status_code == 404


def test_json_api_mirrors_the_control_methods(served: tuple[Daemon, str]) -> None:
    daemon, base = served
    assert httpx.get(base + "/api/workflows").json() == daemon.json("workflow", "list")
    assert httpx.get(base + "/api/workflows/demo/jobs").json() == daemon.json("job", "list-executions", "demo")
    assert httpx.get(base + "/api/workflows/demo/executions").json() == daemon.json("workflow", "list-executions", "demo")
    assert httpx.get(base + "/api/workflows/demo/graph").json() == daemon.json("workflow", "graph", "demo")
    status = httpx.get(base + "/api/status").json()
    assert status["jobs_failed_last_hour"] == 1 and status["jobs_queued"] == 0 and status["workflows"] == {"active": 1}
    failed = httpx.get(base + "/api/workflows/demo/jobs", params={"status": "failed"}).json()
    assert [(r["job"], r["exit_code"]) for r in failed] == [("job_2", 3)]
    execution = failed[0]["execution_id"]
    assert [j["job"] for j in httpx.get(f"{base}/api/executions/{execution}").json()["jobs"]] == ["job_1", "job_2"]
    assert [e["workflow"] for e in httpx.get(base + "/api/executions").json()] == ["demo"]
    everywhere = httpx.get(base + "/api/jobs", params={"status": "FAILED", "since": "1h"}).json()
    assert everywhere == failed
    # Errors are the control methods' own, with an HTTP status.
    missing = httpx.get(base + "/api/workflows/nope")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "no workflow named 'nope'"
    bad = httpx.get(base + "/api/workflows/demo/jobs", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "'since' must be a duration" in bad.json()["error"]["message"]


def test_metrics_parse_and_count_what_happened(served: tuple[Daemon, str]) -> None:
    daemon, base = served
    daemon.ctl("status")  # one control request at least, counted by method
    answer = httpx.get(base + "/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in prometheus_parser.text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    labels = (("job_type", "bash"), ("workflow", "demo"))
    assert samples[("aiflowd_jobs_started_total", labels)] == 2
    assert samples[("aiflowd_jobs_finished_total", labels)] == 1
    assert samples[("aiflowd_jobs_failed_total", labels)] == 1
    assert samples[("aiflowd_job_duration_seconds_count", (("job_type", "bash"),))] == 2
    assert samples[("aiflowd_workflow_load_seconds_count", ())] == 1
    assert 0 < samples[("aiflowd_workflow_last_load_seconds", (("workflow", "demo"),))] < 30
    assert samples[("aiflowd_control_requests_total", (("method", "status"), ("outcome", "ok")))] >= 1
    assert samples[("aiflowd_store_commit_seconds_count", ())] >= 1
    assert samples[("aiflowd_job_queue_depth", ())] == 0
    assert samples[("aiflowd_workflows", (("status", "active"),))] == 1
    assert ("aiflowd_watcher_events_total", ()) in samples


def test_pages_in_a_real_browser(served: tuple[Daemon, str]) -> None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"needs Debian's chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    _, base = served
    profile = tempfile.mkdtemp(prefix="aiflowd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.set_page_load_timeout(30)
        browser.get(base + "/")
        assert browser.title == "aiflowd"
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "demo" in body and "FAILED" in body and "failed in the last hour: 1" in body
        # The failed job, one click from its log tail.
        browser.find_element(By.LINK_TEXT, "log tail").click()
        assert browser.find_element(By.TAG_NAME, "h1").text == "job_2: log tail"
        assert browser.find_element(By.TAG_NAME, "pre").text == "broken"
        browser.get(base + "/")
        browser.find_element(By.LINK_TEXT, "demo").click()
        boxes = browser.find_elements(By.CSS_SELECTOR, "svg.workflow-graph g.box.job")
        assert sorted(box.get_attribute("data-id") for box in boxes) == ["job_1", "job_2"]
        assert {box.get_attribute("data-id"): box.get_attribute("data-status") for box in boxes} == {"job_1": "FINISHED", "job_2": "FAILED"}
        arrows = browser.find_elements(By.CSS_SELECTOR, "svg.workflow-graph g.edge text")
        assert [arrow.text for arrow in arrows] == ["FINISHED → START"]
        table = browser.find_element(By.TAG_NAME, "table").text
        assert "job_1" in table and "job_2" in table and "exit 3" not in table
        # And from the workflow's history.
        rows = browser.find_elements(By.XPATH, "//tr[td[2]='job_2']//a[text()='log']")
        rows[0].click()
        assert "broken" in browser.find_element(By.TAG_NAME, "pre").text
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_a_taken_port_never_ends_the_daemon(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon(tmp_path, f"http:\n  listen: 127.0.0.1:{port}\n")
        try:
            daemon.start()
            wait_for(lambda: daemon.json("status")["restarts"].get("http", 0) >= 1, timeout=20)
            assert daemon.ctl("workflow", "list").returncode == 0
        finally:
            daemon.close()


def test_unix_socket_listen(tmp_path: Path) -> None:
    folder = tempfile.mkdtemp(prefix="aiflowd-http-")  # short: socket paths are limited to 108 bytes
    path = os.path.join(folder, "http.sock")
    daemon = Daemon(tmp_path, f"http:\n  listen: {path}\n")
    try:
        daemon.start()
        client = httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://aiflowd")
        wait_for(lambda: os.path.exists(path), timeout=20)

        def healthy() -> bool:
            # The socket's file appears at bind(), a moment before listen(): refused until then.
            try:
                return client.get("/healthz").status_code == 200
            except httpx.ConnectError:
                return False

        wait_for(healthy, timeout=20)
        assert client.get("/api/status").json()["pid"] == daemon.process.pid  # type: ignore[union-attr]
        client.close()
        assert daemon.stop() == 0
        assert not os.path.exists(path)
    finally:
        daemon.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("http:\n  listen: 8790\n", "http.listen: must be HOST:PORT"),
        ("http:\n  listen: localhost:port\n", "http.listen: must be HOST:PORT"),
        ("http:\n  lisen: 127.0.0.1:1\n", "unknown key (did you mean 'listen'?)"),
        ("http: yes\n", "http: must be a mapping"),
        ("http:\n  listen: 127.0.0.1:1\n  refresh: soon\n", "http.refresh"),
    ],
)
def test_http_config_errors_are_located(tmp_path: Path, section: str, message: str) -> None:
    config = tmp_path / "aiflowd.yaml"
    config.write_text(section)
    with pytest.raises(LoadError) as raised:
        load_config(str(config))
    assert message in str(raised.value)


def test_http_config_defaults(tmp_path: Path) -> None:
    config = tmp_path / "aiflowd.yaml"
    config.write_text("http:\n  listen: run/http.sock\n")
    assert load_config(str(config)).http == {"listen": str(tmp_path / "run" / "http.sock"), "refresh": 5.0}
    config.write_text("{}\n")
    assert load_config(str(config)).http == {}


def test_the_last_load_lines_parse_whatever_the_workflow_name() -> None:
    from aiflowd.web.metrics import Metrics

    metrics = Metrics()
    for name in ("plain", 'quote"d', "back\\slash", "new\nline"):
        metrics.workflow_loaded(name, 0.25)
    metrics.workflow_loaded("plain", 0.5)  # the last load wins
    families = {f.name: f for f in prometheus_parser.text_string_to_metric_families(metrics.scrape().decode())}
    samples = {s.labels["workflow"]: s.value for s in families["aiflowd_workflow_last_load_seconds"].samples}
    assert samples == {"plain": 0.5, 'quote"d': 0.25, "back\\slash": 0.25, "new\nline": 0.25}
    assert families["aiflowd_workflow_load_seconds"].type == "histogram"


def test_without_the_http_extra_the_daemon_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from aiflowd.daemon.lifecycle import Daemon as RealDaemon
    from aiflowd.daemon.lifecycle import StartupError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "hypercorn" else real(name, *args))
    config = tmp_path / "aiflowd.yaml"
    config.write_text(f"workflows_dir: {tmp_path / 'w'}\nstate_dir: {tmp_path / 's'}\nhttp:\n  listen: 127.0.0.1:8790\n")
    daemon = RealDaemon(load_config(str(config)))
    try:
        with pytest.raises(StartupError) as raised:
            daemon._startup()
    finally:
        daemon._close()
    assert str(raised.value) == (
        f"{config}: the http section needs the http extra (hypercorn, prometheus_client): pip install 'aiflowd[http]'; missing: hypercorn"
    )


def test_flink_jobs_are_listed_with_their_web_ui_link(tmp_path: Path) -> None:
    """A Flink job execution recorded with its job id and REST URL (as the flink job type records
    its handle): the page and /api/flink link to the job in Flink's web UI."""
    from aiflowd.store import Store

    port = free_port()
    daemon = Daemon(tmp_path, f"http:\n  listen: 127.0.0.1:{port}\n")
    store = Store(str(daemon.state / "aiflowd.db"))
    execution = store.create_execution("stream", "v1", "manual", None)
    job = store.create_job_execution(
        execution_id=execution,
        workflow="stream",
        job="count",
        job_type="flink",
        attempt=1,
        status="FINISHED",
        reason="test",
        created_at=1.0,
        log_path=str(tmp_path / "count.log"),
        working_dir=str(tmp_path),
    )
    handle = {"job_id": "a" * 32, "rest_url": "http://127.0.0.1:8081"}
    store.update_job_execution(job, started_at=2.0, ended_at=3.0, exit_code=0, handle=handle)
    store.end_execution(execution, "FINISHED")
    store.commit()
    store.close()
    try:
        daemon.start()
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base + "/healthz"), timeout=20)
        [row] = httpx.get(base + "/api/flink").json()
        assert (row["workflow"], row["job"], row["flink_job_id"]) == ("stream", "count", "a" * 32)
        assert row["web_url"] == f"http://127.0.0.1:8081/#/job/completed/{'a' * 32}/overview"
        page = httpx.get(base + "/").text
        assert "<h2>Flink jobs</h2>" in page and f'href="{row["web_url"]}"' in page
    finally:
        daemon.close()


@contextlib.contextmanager
def _serving(tmp_path: Path, workflows: dict[str, str]) -> Iterator[tuple[Daemon, str]]:
    """A daemon with these workflows and its pages served, once they answer; (daemon, base URL)."""
    port = free_port()
    daemon = Daemon(tmp_path, f"http:\n  listen: 127.0.0.1:{port}\n")
    try:
        for name, text in workflows.items():
            daemon.write_workflow(name, text)
        daemon.start()
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base + "/healthz"), timeout=20)
        yield daemon, base
    finally:
        daemon.close()


def test_the_status_page_spells_out_a_workflow_s_problems(tmp_path: Path) -> None:
    with _serving(tmp_path, {"broken.yaml": "j:\n  job_type: bash\n  bash_comand: echo <hi>\n"}) as (_, base):
        [problem] = httpx.get(base + "/api/workflows/broken").json()["problems"]
        page = httpx.get(base + "/").text
        assert '<span class="invalid">invalid</span>' in page
        assert html.escape(problem) in page and "<hi>" not in page
        assert "no valid version to draw" in httpx.get(base + "/workflows/broken").text
        assert httpx.get(base + "/workflows/broken/graph.svg").status_code == 404
        metrics = httpx.get(base + "/metrics").text
        assert "aiflowd_errors_contained_total 0.0" in metrics
        assert "aiflowd_starts_skipped_total 0.0" in metrics


def test_pages_show_when_a_timer_fires_next(tmp_path: Path) -> None:
    fives = "f:\n  job_type: bash\n  bash_command: 'true'\n  periodic_config: {cron: '*/5 * * * *'}\n"
    with _serving(tmp_path, {"fives.yaml": fives}) as (daemon, base):
        wait_for(lambda: daemon.known("fives"), timeout=20)
        [timer] = httpx.get(base + "/api/workflows/fives").json()["schedules"]
        next_run = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timer["next_run"]))
        assert f"<td>{next_run}</td>" in httpx.get(base + "/").text
        assert f"timer: job f: cron &#x27;*/5 * * * *&#x27;; next {next_run}" in httpx.get(base + "/workflows/fives").text
