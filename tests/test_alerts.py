"""Alerts: on_failure, on_retry and on_success hooks, from the config and the workflow file.

The webhooks go to a real HTTP server on 127.0.0.1 (a thread of the test), the commands
are real processes, and the end-to-end tests drive a real daemon with real bash jobs.
The engine-level tests use test_engine's job type and clock to say exactly when each
hook fires, without processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from aiflowd.alerts import Alerts, JobFacts, parse_hooks
from aiflowd.clock import ManualClock
from aiflowd.config import load_config
from aiflowd.engine import Engine, EnginePaths
from aiflowd.model import Hook, JobAction
from aiflowd.plugin_interface import PluginRegistry
from aiflowd.store import Store
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import WorkflowLoader

from .conftest import pid_alive, wait_for, write
from .daemon_harness import Daemon
from .test_engine import T0, AIFlowStyleController, FakeController, FakeFactory, Harness, World, crash, job, workflow
from .test_http import free_port

# -- a real webhook receiver ---------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each POSTed JSON body.

    ``answers`` are the status codes of the next requests (then 200); ``delay`` holds each
    answer back that long (a receiver too slow for the hook's timeout).
    """

    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self.released = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.headers.append(dict(self.headers))
                receiver.bodies.append(json.loads(body))
                if receiver.delay:
                    receiver.released.wait(receiver.delay)
                code = receiver.answers.pop(0) if receiver.answers else 200
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the hook gave up waiting and went away

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook/secret-token"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def closed_port_url() -> str:
    """A URL nobody listens at: the port of a socket bound and closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# -- reading hooks -----------------------------------------------------------------------------


def test_the_three_shapes_and_a_list() -> None:
    problems: list[str] = []
    hooks = parse_hooks(
        ["notify $AIFLOWD_JOB", {"command": ["page", "--loud"], "timeout": "5s"}, {"webhook": "https://x.example/h", "retries": 1}],
        ("on_failure",),
        lambda path, message: problems.append(f"{path}: {message}"),
        cwd="/srv",
    )
    assert problems == []
    assert hooks == (
        Hook(command="notify $AIFLOWD_JOB", timeout=60.0, cwd="/srv"),
        Hook(command=("page", "--loud"), timeout=5.0, cwd="/srv"),
        Hook(webhook="https://x.example/h", timeout=10.0, retries=1, backoff=1.0),
    )


def test_a_bad_hook_in_a_workflow_is_located_by_file_line_and_key(loader: WorkflowLoader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "wf.yaml",
        """
        on_failure:
          - {webhook: "ftp://example.com/x", retries: -1}
          - {command: echo, timout: 5s}
        on_success: {command: echo, webhook: "http://example.com"}
        on_retry: 42
        job: {job_type: bash, bash_command: "true"}
        """,
    )
    with pytest.raises(LoadError) as caught:
        loader.load(str(path))
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:2:6: on_failure[0].webhook: must be an http:// or https:// URL with a host; got 'ftp://example.com/x'",
        f"{path}:2:38: on_failure[0].retries: must be a whole number >= 0, got -1",
        f"{path}:3:21: on_failure[1].timout: unknown key (did you mean 'timeout'?)",
        f"{path}:4:1: on_success: give exactly one of 'command' and 'webhook' "
        "(a command string, {command: ..., timeout: 10s} or {webhook: URL, timeout: 5s, retries: 3})",
        f"{path}:5:1: on_retry: must be a command string, {{command: ..., timeout: 10s}} or "
        "{webhook: URL, timeout: 5s, retries: 3}; got 42",
    ]


def test_a_typo_of_a_hook_key_at_the_top_is_suggested(loader: WorkflowLoader, tmp_path: Path) -> None:
    path = write(tmp_path / "wf.yaml", "on_falure: echo\njob: {job_type: bash, bash_command: 'true'}\n")
    with pytest.raises(LoadError) as caught:
        loader.load(str(path))
    assert [str(p) for p in caught.value.problems] == [f"{path}:1:1: on_falure: unknown workflow key (did you mean 'on_failure'?)"]


def test_a_bad_hook_in_the_config_is_located_by_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "aiflowd.yaml",
        """
        on_failure: {webhook: "http://example.com/h", timeout: 0}
        on_retry: [{command: ""}]
        max_concurrent_hooks: 0
        """,
    )
    with pytest.raises(LoadError) as caught:
        load_config(str(path))
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:3:1: max_concurrent_hooks: must be a whole number >= 1, got 0",
        f"{path}:1:47: on_failure.timeout: must be longer than 0, got 0",
        f"{path}:2:13: on_retry[0].command: must be a command line (run by sh) or a list of arguments; got ''",
    ]


def test_the_config_hooks_run_in_the_config_files_folder(tmp_path: Path) -> None:
    path = write(tmp_path / "etc" / "aiflowd.yaml", "on_success: ./notify.sh\nmax_concurrent_hooks: 2\n")
    config = load_config(str(path))
    assert config.hooks["on_success"] == (Hook(command="./notify.sh", timeout=60.0, cwd=str(tmp_path / "etc")),)
    assert config.max_concurrent_hooks == 2


def test_the_workflow_hooks_are_loaded_with_the_workflow(loader: WorkflowLoader, tmp_path: Path) -> None:
    path = write(tmp_path / "wf.yaml", "on_retry: echo again\njob: {job_type: bash, bash_command: 'true'}\n")
    hooks = loader.load(str(path)).workflow.hooks
    assert hooks == {"on_retry": (Hook(command="echo again", timeout=60.0, cwd=str(tmp_path)),)}


# -- delivering one hook -----------------------------------------------------------------------

FACTS = JobFacts("on_failure", "wf", "job", 7, "7.job.2", 2, "FAILED", 3, "/nonexistent/job.log", "retry 1 of 1", "exit 3", 1.0, 2.0)


async def test_a_webhook_gets_the_facts_as_json(receiver: Receiver, tmp_path: Path) -> None:
    log = write(tmp_path / "job.log", "".join(f"line {i}\n" for i in range(30)))
    facts = dataclasses.replace(FACTS, log=str(log))
    alerts = Alerts()
    assert await alerts.deliver(Hook(webhook=receiver.url, timeout=5, headers=(("X-Token", "t1"),)), facts)
    [body] = receiver.bodies
    assert body["workflow"] == "wf" and body["job"] == "job" and body["execution"] == 7 and body["attempt"] == 2
    assert (body["status"], body["exit_code"], body["hook"], body["message"]) == ("FAILED", 3, "on_failure", "exit 3")
    assert body["log"] == str(log) and body["log_tail"].splitlines() == [f"line {i}" for i in range(10, 30)]
    assert body["text"] == "aiflowd: job wf.job FAILED, exit 3 (execution 7, attempt 2): exit 3"
    assert receiver.headers[0]["X-Token"] == "t1"
    assert alerts.counts.sent == 1
    assert await alerts.deliver(Hook(webhook=receiver.url, timeout=5), dataclasses.replace(facts, hook="on_retry"))
    assert receiver.bodies[1]["text"] == "aiflowd: job wf.job FAILED, exit 3 (execution 7, attempt 2; it will be retried): exit 3"


async def test_a_refused_webhook_is_retried_then_given_up_with_one_line(tmp_path: Path) -> None:
    alerts = Alerts()
    hook = Hook(webhook=closed_port_url(), timeout=2, retries=2, backoff=0.01)
    with capture_logs() as logs:
        assert not await alerts.deliver(hook, FACTS)
    tries = [line for line in logs if line["event"] == "webhook attempt failed; trying again"]
    assert [line["attempt"] for line in tries] == [1, 2]
    assert [line["pause"] for line in tries] == [0.01, 0.02]  # doubling
    [failed] = [line for line in logs if line["event"].startswith("hook failed")]
    assert failed["event"].startswith("hook failed: gave up after 3 attempts: ConnectError")
    assert failed["log_level"] == "warning" and failed["workflow"] == "wf" and failed["job"] == "job"
    assert "secret" not in failed["target"] and failed["target"].startswith("webhook http://127.0.0.1:")
    assert (alerts.counts.failed, alerts.counts.sent) == (1, 0)


async def test_a_5xx_is_retried_and_a_4xx_is_not(receiver: Receiver) -> None:
    alerts = Alerts()
    receiver.answers = [503, 500]
    assert await alerts.deliver(Hook(webhook=receiver.url, timeout=5, retries=3, backoff=0.01), FACTS)
    assert len(receiver.bodies) == 3
    receiver.answers = [404]
    with capture_logs() as logs:
        assert not await alerts.deliver(Hook(webhook=receiver.url, timeout=5, retries=3, backoff=0.01), FACTS)
    assert len(receiver.bodies) == 4
    assert [line["event"] for line in logs if "failed" in line["event"]] == ["hook failed: answered 404 Not Found; not retried"]


async def test_a_slow_webhook_times_out_each_attempt(receiver: Receiver) -> None:
    receiver.delay = 30
    alerts = Alerts()
    began = time.monotonic()
    with capture_logs() as logs:
        assert not await alerts.deliver(Hook(webhook=receiver.url, timeout=0.3, retries=1, backoff=0.01), FACTS)
    assert time.monotonic() - began < 10
    assert len(receiver.bodies) == 2
    assert [line["event"] for line in logs if "failed:" in line["event"]] == [
        "hook failed: gave up after 2 attempts: no answer within 0.3s"
    ]


async def test_a_command_hook_gets_the_facts_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    alerts = Alerts(environment={"AIFLOWD_SOCKET": "/run/aiflowd.sock"})
    assert await alerts.deliver(Hook(command=f"env > {out}; echo told", timeout=10, cwd=str(tmp_path)), FACTS)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    env.pop("AIFLOWD_HELPER_PARENT")  # every helper's (its own runners' parent-death check), not a fact
    # The daemon's own environment (AIFLOWD_FLINK_REST_URL under scripts/test.sh, ...) passes through.
    facts = {k: v for k, v in env.items() if k.startswith("AIFLOWD_") and k not in os.environ}
    assert facts == {
        "AIFLOWD_HOOK": "on_failure",
        "AIFLOWD_WORKFLOW": "wf",
        "AIFLOWD_JOB": "job",
        "AIFLOWD_EXECUTION": "7",
        "AIFLOWD_JOB_EXECUTION_ID": "7.job.2",
        "AIFLOWD_ATTEMPT": "2",
        "AIFLOWD_STATUS": "FAILED",
        "AIFLOWD_EXIT_CODE": "3",
        "AIFLOWD_LOG": "/nonexistent/job.log",
        "AIFLOWD_REASON": "retry 1 of 1",
        "AIFLOWD_MESSAGE": "exit 3",
        "AIFLOWD_SOCKET": "/run/aiflowd.sock",
    }
    assert env["PWD"] == str(tmp_path)


async def test_a_failing_command_is_one_line_with_its_exit_status_and_last_words() -> None:
    alerts = Alerts()
    with capture_logs() as logs:
        assert not await alerts.deliver(Hook(command="echo first; echo 'no route to pager' >&2; exit 4", timeout=10), FACTS)
    assert [line["event"] for line in logs] == ["hook failed: exit status 4; it printed: no route to pager"]
    assert alerts.counts.failed == 1


async def test_a_command_that_hangs_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    alerts = Alerts()
    began = time.monotonic()
    with capture_logs() as logs:
        assert not await alerts.deliver(Hook(command=f"sleep 60 & echo $! > {pids}; sleep 60", timeout=0.5), FACTS)
    assert time.monotonic() - began < 10
    assert [line["event"] for line in logs] == ["hook failed: no end within 0.5s: killed"]
    wait_for(lambda: not pid_alive(int(pids.read_text())), timeout=5)


async def test_a_command_cut_short_by_a_stop_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    alerts = Alerts()
    async with anyio.create_task_group() as tg:
        tg.start_soon(alerts.deliver, Hook(command=f"sleep 60 & echo $! > {pids}; sleep 60", timeout=60), FACTS)
        with anyio.fail_after(10):
            while not pids.exists() or not pids.read_text().strip():
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    wait_for(lambda: not pid_alive(int(pids.read_text())), timeout=5)
    assert alerts.counts.sent == alerts.counts.failed == 0  # cut short: neither


async def test_one_receiver_hears_of_one_jobs_ends_in_order_and_other_jobs_do_not_wait(tmp_path: Path) -> None:
    heard = tmp_path / "heard"
    hook = Hook(command=f'[ "$AIFLOWD_ATTEMPT" = 1 ] && sleep 0.5; echo $AIFLOWD_JOB.$AIFLOWD_ATTEMPT >> {heard}', timeout=10)
    alerts = Alerts(max_concurrent=4)
    async with anyio.create_task_group() as tg:
        await tg.start(alerts.serve)
        alerts.queue(hook, dataclasses.replace(FACTS, attempt=1))
        alerts.queue(hook, dataclasses.replace(FACTS, attempt=2))  # would overtake the first, if it could
        alerts.queue(hook, dataclasses.replace(FACTS, job="other", attempt=2))
        with anyio.fail_after(10):
            await alerts.drain(10)
        tg.cancel_scope.cancel()
    assert heard.read_text().splitlines() == ["other.2", "job.1", "job.2"]


# -- the engine: which hook fires when -----------------------------------------------------------


class Recording(Alerts):
    """Alerts that note what they were asked to deliver instead of delivering it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.delivered: list[tuple[str, str, int, str, Hook]] = []

    async def deliver(self, hook: Hook, facts: JobFacts) -> bool:
        self.delivered.append((facts.hook, facts.job, facts.attempt, facts.status, hook))
        self.counts.sent += 1
        return True


DAEMON_HOOK = Hook(command="daemon")
WORKFLOW_HOOK = Hook(command="workflow")


@asynccontextmanager
async def engine_with(
    tmp_path: Path,
    alerts: Alerts,
    *loaded: Any,
    world: World,
    store: Store | None = None,
    controller: type[FakeController] = FakeController,
) -> AsyncIterator[Harness]:
    """An engine (on ``store``, or a new one) whose ended jobs go to ``alerts``; served until the block ends."""
    registry = PluginRegistry()
    registry.register(FakeFactory(controller(world)), module="tests.test_engine")
    store = store or Store(str(tmp_path / "aiflowd.db"))
    clock = ManualClock(T0)
    engine = Engine(
        registry,
        store,
        EnginePaths(str(tmp_path / "state"), str(tmp_path / "logs")),
        settings={"stop_grace_period": 1.0, "run_dir": str(tmp_path / "run")},
        clock=clock,
        store_check_interval=0,
        alerts=alerts,
    )
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(alerts.serve)
            await tg.start(engine.serve, list(loaded))
            harness = Harness(engine, clock, world, store, [])
            await harness.settle()
            yield harness
            tg.cancel_scope.cancel()


def with_hooks(entry: tuple[str, Any], **hooks: tuple[Hook, ...]) -> tuple[str, Any]:
    entry[1].workflow.hooks = hooks
    return entry


async def test_retries_then_the_final_failure_then_a_success(tmp_path: Path) -> None:
    world = World(exit_codes={"flaky": [1, 1, 1], "fine": [0]})
    moments = {"on_failure": (DAEMON_HOOK,), "on_retry": (DAEMON_HOOK,), "on_success": (DAEMON_HOOK,)}
    alerts = Recording(moments)
    loaded = with_hooks(workflow("wf", job("flaky", retries=2, retry_delay=30), job("fine")), on_failure=(WORKFLOW_HOOK,))
    async with engine_with(tmp_path, alerts, loaded, world=world) as h:
        await h.settle()
        assert sorted(alerts.delivered[:2], key=lambda d: d[1]) == [
            ("on_success", "fine", 1, "FINISHED", DAEMON_HOOK),
            ("on_retry", "flaky", 1, "FAILED", DAEMON_HOOK),
        ]
        await h.advance_to(T0 + 30)
        assert alerts.delivered[2:] == [("on_retry", "flaky", 2, "FAILED", DAEMON_HOOK)]
        await h.advance_to(T0 + 60)
        # The last failure: the daemon's hook and the workflow's, both.
        assert alerts.delivered[3:] == [
            ("on_failure", "flaky", 3, "FAILED", DAEMON_HOOK),
            ("on_failure", "flaky", 3, "FAILED", WORKFLOW_HOOK),
        ]
        assert alerts.counts.sent == 5 and alerts.pending == 0


async def test_a_retry_without_delay_is_a_retry_and_its_success_a_success(tmp_path: Path) -> None:
    world = World(exit_codes={"a": [2, 0]})
    alerts = Recording({"on_failure": (DAEMON_HOOK,), "on_retry": (DAEMON_HOOK,), "on_success": (DAEMON_HOOK,)})
    async with engine_with(tmp_path, alerts, workflow("wf", job("a", retries=1)), world=world) as h:
        await h.settle()
        assert [d[:4] for d in alerts.delivered] == [("on_retry", "a", 1, "FAILED"), ("on_success", "a", 2, "FINISHED")]


async def test_a_job_stopped_by_a_user_calls_no_hook(tmp_path: Path) -> None:
    world = World(blocking={"a"})
    alerts = Recording({"on_failure": (DAEMON_HOOK,), "on_success": (DAEMON_HOOK,)})
    async with engine_with(tmp_path, alerts, workflow("wf", job("a", retries=3)), world=world) as h:
        await h.engine.request(lambda engine: engine.job_action("wf", "a", JobAction.STOP))
        await h.settle()
        assert [row["status"] for row in h.rows("wf")] == ["KILLED"]
        assert alerts.delivered == []


async def test_a_job_lost_in_a_restart_is_a_failure_never_a_retry(tmp_path: Path) -> None:
    """A job a restarted engine cannot find again may still run: never retried, so its end is on_failure."""
    world = World(blocking={"a"})
    alerts = Recording({"on_failure": (DAEMON_HOOK,), "on_retry": (DAEMON_HOOK,)})
    loaded = workflow("wf", job("a", retries=2))
    async with engine_with(tmp_path, alerts, loaded, world=world, controller=AIFlowStyleController) as h:
        await h.settle()
        store = crash(h)
    world.crashed = False
    async with engine_with(tmp_path, alerts, loaded, world=world, store=store, controller=AIFlowStyleController) as h:
        await h.settle()
        assert [row["status"] for row in h.rows("wf")] == ["FAILED"]
        assert [d[:4] for d in alerts.delivered] == [("on_failure", "a", 1, "FAILED")]


async def test_a_full_queue_drops_with_a_line_and_a_count(tmp_path: Path) -> None:
    world = World(exit_codes={"a": [1], "b": [1], "c": [1]})
    release = anyio.Event()

    class Stuck(Recording):
        async def deliver(self, hook: Hook, facts: JobFacts) -> bool:
            await release.wait()
            return await super().deliver(hook, facts)

    alerts = Stuck({"on_failure": (DAEMON_HOOK,)}, max_concurrent=1, max_pending=2)
    with capture_logs() as logs:
        async with engine_with(tmp_path, alerts, workflow("wf", job("a"), job("b"), job("c")), world=world) as h:
            await h.settle()
            # The three end in one turn of the engine: two wait, the third is dropped.
            assert alerts.snapshot() == {"sent": 0, "failed": 0, "dropped": 1, "pending": 2}
            release.set()
            await h.settle()
            assert alerts.snapshot() == {"sent": 2, "failed": 0, "dropped": 1, "pending": 0}
    assert [line["event"] for line in logs if "dropped" in line["event"]] == ["hook dropped: too many waiting"]


# -- a real daemon -----------------------------------------------------------------------------------


@pytest.fixture
def hooked(tmp_path: Path, receiver: Receiver) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path, f'on_failure: {{webhook: "{receiver.url}", timeout: 5s, retries: 1, backoff: 0.1s}}\n')
    try:
        yield daemon.start()
    finally:
        daemon.close()


def test_a_failed_bash_job_reaches_the_webhook_and_the_workflows_command(hooked: Daemon, receiver: Receiver, tmp_path: Path) -> None:
    env_file = tmp_path / "hook-env.txt"
    hooked.write_workflow(
        "etl.yaml",
        f"""
        on_failure: "env | grep ^AIFLOWD_ > {env_file}"
        load:
          job_type: bash
          bash_command: "echo loading rows; echo the disk is full >&2; exit 3"
        """,
    )
    wait_for(lambda: receiver.bodies, timeout=30)
    [body] = receiver.bodies
    [row] = hooked.jobs("etl")
    assert (body["workflow"], body["job"], body["status"], body["exit_code"], body["attempt"]) == ("etl", "load", "FAILED", 3, 1)
    assert body["execution"] == row["execution_id"] and body["hook"] == "on_failure"
    assert body["log_tail"].splitlines() == ["loading rows", "the disk is full"]
    assert Path(body["log"]).read_text() == "loading rows\nthe disk is full\n"
    wait_for(lambda: env_file.exists() and "AIFLOWD_STATUS" in env_file.read_text(), timeout=30)
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert (env["AIFLOWD_WORKFLOW"], env["AIFLOWD_JOB"], env["AIFLOWD_EXECUTION"]) == ("etl", "load", str(row["execution_id"]))
    assert (env["AIFLOWD_ATTEMPT"], env["AIFLOWD_STATUS"], env["AIFLOWD_EXIT_CODE"]) == ("1", "FAILED", "3")
    assert env["AIFLOWD_LOG"] == body["log"] and env["AIFLOWD_SOCKET"] == str(hooked.socket)
    wait_for(lambda: hooked.json("status")["hooks"]["sent"] == 2, timeout=10)
    assert "hooks: 2 sent, 0 pending" in hooked.ctl("status").stdout


def test_retry_then_success_fire_in_order_and_no_failure(tmp_path: Path, receiver: Receiver) -> None:
    marker = tmp_path / "tried-once"
    daemon = Daemon(tmp_path)
    try:
        daemon.start()
        hook = f'{{webhook: "{receiver.url}", timeout: 5s}}'
        daemon.write_workflow(
            "flaky.yaml",
            f"""
            on_retry: {hook}
            on_success: {hook}
            on_failure: {hook}
            fetch:
              job_type: bash
              retries: 1
              bash_command: "if [ -e {marker} ]; then echo fetched; else touch {marker}; exit 1; fi"
            """,
        )
        daemon.wait_jobs("flaky", lambda rows: [r["status"] for r in rows] == ["FINISHED", "FAILED"], timeout=30)
        wait_for(lambda: len(receiver.bodies) >= 2, timeout=20)
        assert [(b["hook"], b["attempt"], b["status"]) for b in receiver.bodies] == [
            ("on_retry", 1, "FAILED"),
            ("on_success", 2, "FINISHED"),
        ]
        assert receiver.bodies[1]["log_tail"] == "fetched"
    finally:
        daemon.close()


def test_a_webhook_that_refuses_or_hangs_is_given_up_and_the_daemon_goes_on(tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay = 60
    port = free_port()
    daemon = Daemon(
        tmp_path,
        f"""
        http: {{listen: "127.0.0.1:{port}"}}
        on_failure:
          - {{webhook: "{closed_port_url()}", timeout: 2s, retries: 2, backoff: 0.1s}}
          - {{webhook: "{receiver.url}", timeout: 0.5s, retries: 1, backoff: 0.1s}}
        """,
    )
    try:
        daemon.start()
        daemon.write_workflow("broken.yaml", "job: {job_type: bash, bash_command: 'exit 1'}\n")
        wait_for(lambda: daemon.json("status")["hooks"]["failed"] == 2, timeout=30)
        lines = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{") and "hook failed" in line]
        events = sorted(line["event"] for line in lines)
        assert len(events) == 2
        assert events[0] == "hook failed: gave up after 2 attempts: no answer within 0.5s"
        assert re.fullmatch(r"hook failed: gave up after 3 attempts: ConnectError.*", events[1])
        assert len(receiver.bodies) == 2
        assert "hooks: 0 sent, 2 failed (see the daemon's log), 0 pending" in daemon.ctl("status").stdout
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'aiflowd_hooks_total{outcome="failed"} 2.0' in metrics and 'aiflowd_hooks_total{outcome="sent"} 0.0' in metrics
        assert "hooks failed: 2, dropped: 0 (see the daemon's log)" in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
        # The daemon goes on: the next job runs, and its failure is told again.
        daemon.write_workflow("after.yaml", "job: {job_type: bash, bash_command: 'echo fine'}\n")
        daemon.wait_jobs("after", lambda rows: rows and rows[0]["status"] == "FINISHED", timeout=30)
        assert daemon.process is not None and daemon.process.poll() is None
    finally:
        daemon.close()


def test_a_bad_hook_in_the_config_stops_the_start_with_one_located_line(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, "on_failure: {webhook: not-a-url}\n")
    try:
        daemon.start(wait=False)
        assert daemon.process is not None
        assert daemon.process.wait(timeout=30) != 0
        assert f"{daemon.config}:" in daemon.log()
        [line] = [line for line in daemon.log().splitlines() if "on_failure.webhook" in line]
        assert re.search(r":\d+:\d+: on_failure\.webhook: must be an http:// or https:// URL with a host; got 'not-a-url'", line)
    finally:
        daemon.close()


def test_a_bad_hook_in_a_workflow_is_shown_by_validate(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)  # not started: validate needs no daemon
    path = daemon.write_workflow(
        "wf.yaml", "on_retry: {webhook: 'https://x.example', retries: many}\njob: {job_type: bash, bash_command: 'true'}\n"
    )
    result = daemon.ctl("validate", str(path), check=False)
    assert result.returncode == 1
    assert result.stdout == f"{path}:1:42: on_retry.retries: must be a whole number >= 0, got 'many'\n"


def test_a_reload_brings_the_configs_new_hooks(daemon: Daemon, receiver: Receiver) -> None:
    daemon.write_config(f'on_failure: {{webhook: "{receiver.url}", timeout: 5s}}\nmax_concurrent_hooks: 8\n')
    answer = daemon.json("reload")
    assert answer["reloaded"] and answer["needs_restart"] == ["max_concurrent_hooks"]  # the workers are counted at start
    daemon.write_workflow("late.yaml", "job: {job_type: bash, bash_command: 'exit 2'}\n")
    wait_for(lambda: receiver.bodies, timeout=30)
    assert [(b["workflow"], b["hook"], b["exit_code"]) for b in receiver.bodies] == [("late", "on_failure", 2)]


def test_a_stop_lets_the_hooks_under_way_finish(tmp_path: Path) -> None:
    told, gate, waiting = tmp_path / "told", tmp_path / "gate", tmp_path / "waiting"
    # The hook holds until the test opens the gate, which it does only once the daemon has
    # been told to stop: what the hook then writes, the stop waited for (up to 5s).
    hook = f"touch {waiting}; while [ ! -e {gate} ]; do sleep 0.02; done; echo $AIFLOWD_JOB > {told}"
    daemon = Daemon(tmp_path, f"on_failure: '{hook}'\n")
    try:
        daemon.start()
        daemon.write_workflow("wf.yaml", "job: {job_type: bash, bash_command: 'exit 1'}\n")
        wait_for(waiting.exists, timeout=30)
        assert daemon.json("status")["hooks"]["pending"] == 1
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.notifications is not None
        wait_for(lambda: daemon.notifications.count("STOPPING=1"), timeout=20)
        gate.touch()
        assert daemon.process.wait(timeout=30) == 0  # not stop(): a second SIGTERM means "do not wait"
        assert told.read_text() == "job\n"
    finally:
        daemon.close()
