"""``aiflowd.client`` and AIFlow's workflow_operation and notification client, against a real daemon.

Each test starts an aiflowd process on a temporary folder. Jobs reach it through the
``AIFLOWD_SOCKET`` the daemon gives them; the test reaches it through the same client.
Nothing is awaited by sleeping: where a test shows that something did *not* happen, it
sends a later event whose rule does fire, and the engine handles events in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiflowd.client import Client, ControlError, Unreachable

from ..conftest import REPO, wait_for
from ..daemon_harness import Daemon
from .conftest import aiflow_workflow


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path / "d", config=f"job_env:\n  PYTHONPATH: {REPO}\n")
    try:
        running.start()
        yield running
    finally:
        running.close()


def rows_of(client: Client, workflow: str, job: str) -> list[dict[str, Any]]:
    """The job's executions, oldest first."""
    return list(reversed(client.list_job_executions(workflow, job)))


def wait_rows(client: Client, workflow: str, job: str, predicate: Any) -> list[dict[str, Any]]:
    found: list[list[dict[str, Any]]] = [[]]

    def check() -> bool:
        found[0] = rows_of(client, workflow, job) if any(w["workflow"] == workflow for w in client.list_workflows()) else []
        return bool(predicate(found[0]))

    wait_for(check, timeout=30, interval=0.05)
    return found[0]


def statuses(rows: list[dict[str, Any]]) -> list[str]:
    return [row["status"] for row in rows]


def test_the_client_drives_a_daemon(daemon: Daemon) -> None:
    client = Client(str(daemon.socket))
    daemon.write_workflow(
        "ops.yaml",
        """
        long:
          job_type: bash
          bash_command: sleep 60
        waiter:
          job_type: bash
          bash_command: echo waited
          action_on_event: [{event_key: go, event_value: now}]
        """,
    )
    [first] = wait_rows(client, "ops", "long", lambda rows: statuses(rows) == ["RUNNING"])
    assert first["kind"] == "start"
    execution_id = first["execution_id"]
    execution = client.get_execution(execution_id)
    assert (execution["workflow"], execution["status"], [j["job"] for j in execution["jobs"]]) == ("ops", "RUNNING", ["long"])

    client.send_event("go", "now")
    wait_rows(client, "ops", "waiter", lambda rows: statuses(rows) == ["FINISHED"])
    assert (client.list_events()[-1]["key"], client.list_events()[-1]["value"]) == ("go", "now")

    assert client.restart_job("ops", "long") == execution_id
    rows = wait_rows(client, "ops", "long", lambda rows: statuses(rows) == ["KILLED", "RUNNING"])
    assert [r["kind"] for r in rows] == ["start", "restart"], "a restart by request is a restart, not a retry"

    client.pause_scheduling("ops")
    assert client.show_workflow("ops")["paused"] is True
    client.resume_scheduling("ops")
    assert client.show_workflow("ops")["paused"] is False

    assert client.stop_job("ops", "long") == execution_id
    wait_rows(client, "ops", "long", lambda rows: statuses(rows) == ["KILLED", "KILLED"])
    assert client.stop_execution("ops") == [execution_id]
    wait_for(lambda: client.get_execution(execution_id)["status"] == "KILLED", timeout=20)
    assert client.start_execution("ops") > execution_id

    with pytest.raises(ControlError, match="no workflow named 'nope'"):
        client.show_workflow("nope")
    with pytest.raises(ControlError, match="no execution with id 9999"):
        client.get_execution(9999)
    with pytest.raises(Unreachable):
        Client(str(daemon.socket) + ".missing").status()
    client.stop_execution("ops")


def test_the_socket_is_found_as_aiflowctl_finds_it(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIFLOWD_SOCKET", str(daemon.socket))
    assert Client().status()["pid"] == daemon.process.pid  # type: ignore[union-attr]
    monkeypatch.delenv("AIFLOWD_SOCKET")
    assert Client(config=str(daemon.config)).socket == str(daemon.socket)


SENDER = """
import os

import ai_flow as af
from ai_flow_plugins.job_plugins import bash, python
from notification_service.base_notification import BaseEvent


class Sender(python.PythonProcessor):
    def process(self, execution_context, input_list):
        af.get_notification_client().send_event(BaseEvent(key='trained', value='model-1'))
        info = af.workflow_operation.get_workflow_execution(execution_context.job_execution_info.workflow_execution_id)
        print('execution', info.workflow_info.workflow_name, info.status.value)
        print('socket given', os.environ['AIFLOWD_SOCKET'] != '')
        return []


af.init_ai_flow_context()

with af.job_config('sender'):
    af.user_define_operation(processor=Sender())
with af.job_config('receiver'):
    af.user_define_operation(processor=bash.BashProcessor('echo got it'))

af.action_on_event('receiver', 'trained', 'model-1')
"""


def test_a_job_sends_events_with_aiflows_notification_client(daemon: Daemon, tmp_path: Path) -> None:
    """AIFlow's job code, unchanged: the event it sends starts the job waiting for it."""
    client = Client(str(daemon.socket))
    folder = aiflow_workflow(tmp_path / "staging", "notify", "sender:\n  job_type: python\nreceiver:\n  job_type: bash\n", SENDER)
    folder.rename(daemon.workflows / "notify")
    [received] = wait_rows(client, "notify", "receiver", lambda rows: statuses(rows) == ["FINISHED"])
    [sent] = wait_rows(client, "notify", "sender", lambda rows: statuses(rows) == ["FINISHED"])  # it may end after the receiver
    assert received["execution_id"] == sent["execution_id"]
    assert daemon.ctl("job", "logs", "notify", "receiver").stdout == "got it\n"
    assert daemon.ctl("job", "logs", "notify", "sender").stdout == "execution notify RUNNING\nsocket given True\n"
    [event] = [e for e in client.list_events() if e["key"] == "trained"]
    assert (event["value"], event["sender"], event["namespace"]) == ("model-1", "sender", "default")


def test_aiflows_workflow_operation_from_a_notebook(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiflowd.compat import enable

    enable()
    import ai_flow as af
    from ai_flow.api import workflow_operation as ops

    monkeypatch.setenv("AIFLOWD_SOCKET", str(daemon.socket))
    ops.set_client(None)
    client = Client(str(daemon.socket))
    daemon.write_workflow(
        "nb.yaml",
        """
        start_new_workflow_execution_on_events: [{event_key: never}]
        long:
          job_type: bash
          bash_command: sleep 60
        echo:
          job_type: bash
          bash_command: echo hello
          action_on_event: [{event_key: hello}]
        """,
    )
    wait_for(lambda: any(w["workflow"] == "nb" for w in client.list_workflows()), timeout=20)
    assert [w.workflow_name for w in ops.list_workflows()] == ["nb"]
    assert ops.list_workflow_executions("nb") == [], "a workflow with start triggers waits for them"
    started = ops.start_new_workflow_execution("nb")
    assert (started.workflow_info.workflow_name, started.status) == ("nb", af.Status.RUNNING)
    execution_id = started.workflow_execution_id
    wait_for(lambda: ops.get_job_execution("long", execution_id).status == af.Status.RUNNING, timeout=20)

    # held: the rule of 'echo' does not act on its event; resumed: it does
    ops.stop_scheduling_job(execution_id, "echo")
    client.send_event("hello")
    ops.restart_job_execution("long", execution_id)
    wait_for(lambda: [j.status for j in ops.get_job_executions("long", execution_id)] == [af.Status.KILLED, af.Status.RUNNING], timeout=20)
    assert [j.job_name for j in ops.list_job_executions(execution_id)] == ["long", "long"], "the held rule never fired"
    ops.resume_scheduling_job(execution_id, "echo")
    af.get_notification_client().send_event(af_event("hello"))
    wait_for(lambda: ops.get_job_execution("echo", execution_id).status == af.Status.FINISHED, timeout=20)

    stopped = ops.stop_job_execution("long", execution_id)
    assert stopped.job_name == "long"
    [info] = ops.stop_all_workflow_executions("nb")
    assert info.workflow_execution_id == execution_id
    wait_for(lambda: ops.get_workflow_execution(execution_id).status == af.Status.KILLED, timeout=20)
    assert ops.pause_workflow_scheduling("nb").properties == {"paused": True}
    assert ops.get_workflow("nb").properties["paused"] is True  # type: ignore[union-attr]
    ops.resume_workflow_scheduling("nb")
    ops.set_client(None)


def af_event(key: str, value: str = "") -> Any:
    from notification_service.base_notification import BaseEvent

    return BaseEvent(key=key, value=value)


def test_pause_holds_event_rules_as_it_holds_timers(daemon: Daemon) -> None:
    client = Client(str(daemon.socket))
    daemon.write_workflow(
        "held.yaml",
        """
        first:
          job_type: bash
          bash_command: echo first
        on_go:
          job_type: bash
          bash_command: echo go
          action_on_event: [{event_key: go}]
        on_both:
          job_type: bash
          bash_command: echo both
          action_on_events:
            - condition: all
              events: [{event_key: x}, {event_key: y}]
        on_mark:
          job_type: bash
          bash_command: echo mark
          action_on_event: [{event_key: mark}]
        """,
    )
    wait_rows(client, "held", "first", lambda rows: statuses(rows) == ["FINISHED"])
    client.pause_scheduling("held")
    client.send_event("go")
    client.send_event("x")  # not counted toward x-and-y either: the paused workflow does not see it
    client.resume_scheduling("held")
    client.send_event("y")
    client.send_event("mark")
    wait_rows(client, "held", "on_mark", lambda rows: statuses(rows) == ["FINISHED"])
    assert rows_of(client, "held", "on_go") == [] and rows_of(client, "held", "on_both") == []
    client.send_event("x")  # y was seen after the resume: with x, all of them now
    wait_rows(client, "held", "on_both", lambda rows: statuses(rows) == ["FINISHED"])
    client.send_event("go")
    wait_rows(client, "held", "on_go", lambda rows: statuses(rows) == ["FINISHED"])


def test_events_start_and_stop_executions(daemon: Daemon, tmp_path: Path) -> None:
    """The YAML triggers, and AIFlow's stop_workflow_execution_on_events called in a definition."""
    client = Client(str(daemon.socket))
    daemon.write_workflow(
        "triggered.yaml",
        """
        start_new_workflow_execution_on_events: [{event_key: begin}]
        stop_workflow_execution_on_events: [{event_key: halt}]
        long:
          job_type: bash
          bash_command: sleep 60
        """,
    )
    definition = (
        "import ai_flow as af\nfrom ai_flow_plugins.job_plugins.bash import BashProcessor\naf.init_ai_flow_context()\n"
        "with af.job_config('long'):\n    af.user_define_operation(processor=BashProcessor('sleep 60'))\n"
        "both = af.MeetAllEventCondition().add_event('begin', '*').add_event('ready', '*')\n"
        "af.workflow_operation.start_new_workflow_execution_on_events('aiflow', [both])\n"
        "af.workflow_operation.stop_workflow_execution_on_events('aiflow', [af.MeetAnyEventCondition().add_event('halt', '*')])\n"
    )
    folder = aiflow_workflow(tmp_path / "staging", "aiflow", "long:\n  job_type: bash\n", definition)
    folder.rename(daemon.workflows / "aiflow")
    # served, not only listed as still loading: a trigger only sees events that come after
    wait_for(
        lambda: {(w["workflow"], w["status"]) for w in client.list_workflows()} == {("triggered", "active"), ("aiflow", "active")},
        timeout=20,
    )
    assert client.list_executions("triggered") == [] and client.list_executions("aiflow") == []
    # a stop trigger alone stops what the file's arrival started
    daemon.write_workflow(
        "stoppable.yaml", "stop_workflow_execution_on_events: [{event_key: halt}]\nlong:\n  job_type: bash\n  bash_command: sleep 60\n"
    )
    wait_rows(client, "stoppable", "long", lambda rows: statuses(rows) == ["RUNNING"])

    client.send_event("begin")
    wait_rows(client, "triggered", "long", lambda rows: statuses(rows) == ["RUNNING"])
    client.send_event("ready")  # with begin, all of the definition's condition
    wait_rows(client, "aiflow", "long", lambda rows: statuses(rows) == ["RUNNING"])
    client.send_event("halt")
    for workflow in ("triggered", "aiflow", "stoppable"):
        wait_rows(client, workflow, "long", lambda rows: statuses(rows) == ["KILLED"])
        wait_for(lambda workflow=workflow: [e["status"] for e in client.list_executions(workflow)] == ["KILLED"], timeout=20)
    assert os.path.exists(daemon.socket)


def test_the_daemons_socket_is_in_every_jobs_environment_unless_job_env_names_another(tmp_path: Path) -> None:
    from aiflowd.engine import Engine, EnginePaths
    from aiflowd.plugin_interface import PluginRegistry
    from aiflowd.store import Store

    def job_env(settings: dict[str, Any]) -> dict[str, str]:
        engine = Engine(
            PluginRegistry(), Store(":memory:"), EnginePaths(str(tmp_path), str(tmp_path)), settings=settings, control_socket="/run/a.sock"
        )
        try:
            return dict(engine._job_settings()["job_env"])
        finally:
            engine._send.close()  # never served: its inbox is closed here
            engine._receive.close()
            engine.store.close()

    assert job_env({"job_env": {"LANG": "C"}}) == {"AIFLOWD_SOCKET": "/run/a.sock", "LANG": "C"}
    assert job_env({"job_env": {"AIFLOWD_SOCKET": "/elsewhere.sock"}}) == {"AIFLOWD_SOCKET": "/elsewhere.sock"}
