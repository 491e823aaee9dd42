"""Faults of the watched folder's contents, against a real daemon (issue 7, defects 4, 5, 6, 11).

Odd entries (names that are not UTF-8, link loops, links to nothing or out of the folder,
FIFOs) are one problem line each and never read or followed; slow definitions delay
neither READY nor other workflows; a definition's writes into its own folder do not
reload it; an empty moment of an in-place save does not touch the running job.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import wait_for
from ..daemon_harness import Daemon

SECRET = "TOPSECRET: [never quoted"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path)
    try:
        yield running
    finally:
        running.close()


def listed(daemon: Daemon) -> dict[str, dict]:
    return {row["workflow"]: row for row in daemon.json("workflow", "list", "--all")}


def statuses(rows: list[dict]) -> list[tuple[str, str]]:
    return sorted((row["job"], row["status"]) for row in rows)


def alive(daemon: Daemon) -> bool:
    assert daemon.process is not None
    return daemon.process.poll() is None


def compilers_under(folder: Path) -> list[int]:
    """Pids of workflow compiler helpers working in a workflow folder under ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if b"aiflowd.runners.compile_workflow" in cmdline and cwd.startswith(str(folder)):
            found.append(int(pid))
    return found


def test_a_name_that_is_not_utf8_is_one_problem_line_and_the_daemon_lives(daemon: Daemon) -> None:
    folder = os.fsencode(daemon.workflows)
    with open(folder + b"/bad\xff.yaml", "w") as fh:
        fh.write("a:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.start()  # used to stop a starting daemon
    row = listed(daemon)["bad\\xff"]
    assert (row["status"], row["problems"]) == ("invalid", 1)
    assert daemon.json("workflow", "show", "bad\\xff")["problems"] == [
        f"{daemon.workflows}/bad\\xff.yaml: the name is not valid UTF-8 or holds control characters: rename it"
    ]

    os.mkdir(folder + b"/dir\xfe")  # used to kill a running daemon (WatchfilesRustInternalError)
    with open(folder + b"/dir\xfe/x.yaml", "w") as fh:
        fh.write("x")
    wait_for(lambda: "dir\\xfe" in listed(daemon), timeout=20)
    assert alive(daemon)
    daemon.write_workflow("good.yaml", "g:\n  job_type: bash\n  bash_command: echo good\n")
    daemon.wait_jobs("good", lambda rows: statuses(rows) == [("g", "FINISHED")])

    os.unlink(folder + b"/bad\xff.yaml")
    wait_for(lambda: listed(daemon)["bad\\xff"]["status"] == "retired", timeout=20)
    assert alive(daemon) and daemon.stop() == 0


def test_links_loops_and_fifos_are_one_problem_line_each_never_followed(daemon: Daemon, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "elsewhere").mkdir(parents=True)
    (outside / "secret.yaml").write_text(SECRET + "\n")
    (outside / "elsewhere" / "elsewhere.yaml").write_text("e:\n  job_type: bash\n  bash_command: 'true'\n")
    w = daemon.workflows
    (w / "secret.yaml").symlink_to(outside / "secret.yaml")
    (w / "loop.yaml").symlink_to("loop.yaml")
    (w / "ping").symlink_to("pong")
    (w / "pong").symlink_to("ping")
    (w / "dangling.yaml").symlink_to("nowhere.yaml")
    (w / "elsewhere").symlink_to(outside / "elsewhere")
    os.mkfifo(w / "pipe.yaml")  # used to hang the start before READY, deaf to SIGTERM
    (w / "inner").mkdir()
    (w / "inner" / "inner.yaml").symlink_to(outside / "secret.yaml")
    daemon.write_workflow("good.yaml", "g:\n  job_type: bash\n  bash_command: echo good\n")
    expected = {
        "secret": f"{w}/secret.yaml: not read: a link out of {w} (to {outside}/secret.yaml)",
        "loop": f"{w}/loop.yaml: not read: a symbolic link loop: not followed",
        "ping": f"{w}/ping: not read: a symbolic link loop: not followed",
        "pong": f"{w}/pong: not read: a symbolic link loop: not followed",
        "dangling": f"{w}/dangling.yaml: not read: a symbolic link to nowhere.yaml, which does not exist",
        "elsewhere": f"{w}/elsewhere: not read: a link out of {w} (to {outside}/elsewhere)",
        "pipe": f"{w}/pipe.yaml: not read: a named pipe (FIFO), not a regular file",
        "inner": f"{w}/inner/inner.yaml: not read: a link out of {w}/inner (to {outside}/secret.yaml)",
    }

    daemon.start()
    daemon.wait_jobs("good", lambda rows: statuses(rows) == [("g", "FINISHED")])

    def problems() -> dict[str, list[str]]:
        return {name: daemon.json("workflow", "show", name)["problems"] for name in expected}

    assert problems() == {name: [line] for name, line in expected.items()}
    assert all(listed(daemon)[name]["status"] == "invalid" for name in expected)

    daemon.process.send_signal(signal.SIGHUP)  # a rescan: used to end the daemon on the loop
    wait_for(lambda: daemon.notifications.count("STATUS=reloaded"), timeout=20)
    assert alive(daemon)
    assert problems() == {name: [line] for name, line in expected.items()}

    validate = daemon.ctl("--config", str(daemon.config), "validate", str(w), check=False)
    assert validate.returncode == 1
    lines = validate.stdout.splitlines()
    assert len(lines) == len(expected)  # one line each
    assert all(sum(line.startswith(problem.split(": ")[0] + ":") for line in lines) == 1 for problem in expected.values())
    assert SECRET not in daemon.ctl("workflow", "list").stdout + validate.stdout + validate.stderr + daemon.log()
    assert daemon.stop(timeout=20) == 0


def test_a_fifo_inside_a_folder_workflow_does_not_block_the_watcher(daemon: Daemon) -> None:
    daemon.start()
    daemon.write_workflow("feed/feed.yaml", "f:\n  job_type: bash\n  bash_command: echo fed\n")
    daemon.wait_jobs("feed", lambda rows: statuses(rows) == [("f", "FINISHED")])
    os.mkfifo(daemon.workflows / "feed" / "queue")  # its hash used to block the watcher for ever
    daemon.write_workflow("after.yaml", "a:\n  job_type: bash\n  bash_command: echo after\n")
    daemon.wait_jobs("after", lambda rows: statuses(rows) == [("a", "FINISHED")])
    assert daemon.json("workflow", "show", "feed")["problems"] == []
    assert daemon.stop(timeout=20) == 0


SLOW_DEFINITION = """
import os
while not os.path.exists({release!r}):  # slow until the test says otherwise
    os.sched_yield()
"""


def test_slow_definitions_delay_neither_ready_nor_other_workflows(daemon: Daemon, tmp_path: Path) -> None:
    release = tmp_path / "release"
    daemon.write_config("compile_timeout: 60s\nmax_parallel_loads: 3\n")
    for name in ("slow1", "slow2", "slow3"):
        daemon.write_workflow(f"{name}/{name}.yaml", f"s:\n  job_type: bash\n  bash_command: echo {name}\n")
        daemon.write_workflow(f"{name}/{name}.py", SLOW_DEFINITION.format(release=str(release)))
    daemon.write_workflow("quick.yaml", "q:\n  job_type: bash\n  bash_command: echo quick\n")

    daemon.start()  # READY while the three definitions still compile: it used to wait for all
    daemon.wait_jobs("quick", lambda rows: statuses(rows) == [("q", "FINISHED")])
    rows = listed(daemon)
    assert [rows[name]["status"] for name in ("slow1", "slow2", "slow3")] == ["loading"] * 3
    wait_for(lambda: len(compilers_under(daemon.workflows)) == 3, timeout=20)  # in parallel, not one after another

    # A change while slow1 loads: no second load beside the first, and the latest content wins.
    daemon.write_workflow("slow1/slow1.yaml", "s:\n  job_type: bash\n  bash_command: echo slow1 again\n")
    daemon.write_workflow("more.yaml", "m:\n  job_type: bash\n  bash_command: echo more\n")
    daemon.wait_jobs("more", lambda rows: statuses(rows) == [("m", "FINISHED")])  # served while slow ones load
    assert len(compilers_under(daemon.workflows / "slow1")) == 1
    release.touch()
    for name in ("slow1", "slow2", "slow3"):
        daemon.wait_jobs(name, lambda rows: statuses(rows) == [("s", "FINISHED")], timeout=60)
    assert daemon.ctl("job", "logs", "slow1", "s").stdout == "slow1 again\n"
    assert len(daemon.json("workflow", "list-executions", "slow1")) == 1

    # Restarted while they compile again: still known, loading, and not started as new.
    assert daemon.stop() == 0
    release.unlink()
    daemon.start()
    assert listed(daemon)["slow2"]["status"] == "loading"
    release.touch()
    wait_for(lambda: all(listed(daemon)[name]["status"] == "active" for name in ("slow1", "slow2", "slow3")), timeout=60)
    daemon.write_workflow("marker.yaml", "m:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.wait_jobs("marker", lambda rows: statuses(rows) == [("m", "FINISHED")])
    assert [len(daemon.json("workflow", "list-executions", name)) for name in ("slow1", "slow2", "slow3")] == [1, 1, 1]


def test_a_definition_writing_into_its_own_folder_does_not_reload_it(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    staging = tmp_path / "writer"
    staging.mkdir()
    (staging / "writer.yaml").write_text("w:\n  job_type: bash\n  bash_command: echo one\n")
    (staging / "writer.py").write_text("with open('compiled.txt', 'a') as fh:\n    fh.write('compiled\\n')\n")
    os.rename(staging, daemon.workflows / "writer")  # the whole workflow at once
    daemon.wait_jobs("writer", lambda rows: statuses(rows) == [("w", "FINISHED")])

    # A later change by the user still reloads (and compiles once more).
    (daemon.workflows / "writer" / "writer.yaml").write_text("w:\n  job_type: bash\n  bash_command: echo two\n")
    daemon.wait_jobs("writer", lambda rows: len(rows) == 2 and all(row["status"] == "FINISHED" for row in rows))
    assert daemon.ctl("job", "logs", "writer", "w").stdout == "two\n"
    daemon.write_workflow("marker.yaml", "m:\n  job_type: bash\n  bash_command: 'true'\n")
    daemon.wait_jobs("marker", lambda rows: statuses(rows) == [("m", "FINISHED")])
    # It used to compile and start an execution again for every write of its own.
    assert (daemon.workflows / "writer" / "compiled.txt").read_text() == "compiled\n" * 2
    assert len(daemon.json("workflow", "list-executions", "writer")) == 2


def test_an_empty_moment_of_an_in_place_save_neither_stops_nor_restarts_the_job(daemon: Daemon) -> None:
    daemon.start()
    text = "serve:\n  job_type: bash\n  bash_command: sleep 30\n"
    path = daemon.write_workflow("svc.yaml", text)
    daemon.wait_jobs("svc", lambda rows: statuses(rows) == [("serve", "RUNNING")])
    version = daemon.json("workflow", "show", "svc")["version"]

    with open(path, "w") as fh:  # the save truncates first ...
        fh.flush()
        os.fsync(fh.fileno())
        wait_for(lambda: daemon.json("workflow", "show", "svc")["problems"], timeout=20)
        show = daemon.json("workflow", "show", "svc")
        assert show["problems"] == [
            f"{path}:1:1: no jobs: a workflow needs at least one, like 'job_1: {{job_type: bash, bash_command: echo hello}}'"
        ]
        assert (show["status"], show["version"]) == ("active", version)
        fh.write(text)  # ... then writes the same content again
    wait_for(lambda: daemon.json("workflow", "show", "svc")["problems"] == [], timeout=20)
    rows = daemon.jobs("svc")
    assert statuses(rows) == [("serve", "RUNNING")]
    assert len(daemon.json("workflow", "list-executions", "svc")) == 1
    assert daemon.json("workflow", "show", "svc")["version"] == version


def test_a_slow_definition_with_an_open_execution_is_loaded_before_the_restart_takes_it_over(daemon: Daemon, tmp_path: Path) -> None:
    release = tmp_path / "release"
    release.touch()
    daemon.write_config("compile_timeout: 60s\n")
    staging = tmp_path / "svc"
    staging.mkdir()
    (staging / "svc.yaml").write_text("s:\n  job_type: bash\n  bash_command: sleep 60\n")
    (staging / "svc.py").write_text(SLOW_DEFINITION.format(release=str(release)))
    daemon.start()
    os.rename(staging, daemon.workflows / "svc")
    [running] = daemon.wait_jobs("svc", lambda rows: statuses(rows) == [("s", "RUNNING")])
    daemon.kill9()

    release.unlink()
    daemon.start(wait=False)
    wait_for(lambda: compilers_under(daemon.workflows / "svc"), timeout=20)
    assert daemon.notifications is not None and daemon.notifications.count("READY=1") == 0  # its running job needs its version
    release.touch()
    daemon.wait_ready()
    rows = daemon.jobs("svc")
    assert [(row["job_execution_id"], row["status"]) for row in rows] == [
        (running["job_execution_id"], "RUNNING")
    ]  # taken over, not killed
    assert daemon.stop() == 0


async def test_the_start_waits_for_no_definition_even_one_still_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """READY came only after nearly every compile when definitions outnumbered the load
    threads: those still queued for a thread were not yet "compiling", so the start waited
    for them. A folder holding a definition is known to compile before it is looked at."""
    import anyio

    from aiflowd.daemon import folder as folder_module
    from aiflowd.engine import Engine, EnginePaths
    from aiflowd.plugin_interface import PluginRegistry
    from aiflowd.store import Store
    from aiflowd.workflows.loader import LoaderSettings, WorkflowLoader

    from ..conftest import write

    monkeypatch.setattr(folder_module, "LOAD_THREADS", 1)  # one definition compiles, the others queue
    gate = tmp_path / "gate"
    workflows = tmp_path / "workflows"
    for name in ("d1", "d2", "d3"):
        write(workflows / name / f"{name}.yaml", "job_1:\n  job_type: bash\n")
        write(
            workflows / name / f"{name}.py",
            f"""
            import os, time
            from aiflowd import BashProcessor, job_config, user_define_operation
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.01)
            with job_config("job_1"):
                user_define_operation(processor=BashProcessor("true"))
            """,
        )
    write(workflows / "plain.yaml", "job_1:\n  job_type: bash\n  bash_command: 'true'\n")
    registry = PluginRegistry()
    assert registry.load_builtin() == []
    loader = WorkflowLoader(registry, LoaderSettings(compile_timeout=60))
    store = Store(":memory:")
    engine = Engine(registry, store, EnginePaths(str(tmp_path / "state"), str(tmp_path / "logs")))
    folder = folder_module.WorkflowFolder(str(workflows), loader, engine)
    try:
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(30):
                initial, loading = await folder.scan(tg, 1)
            assert [os.path.basename(path) for path, _ in initial] == ["plain.yaml"]
            assert loading == {"d1", "d2", "d3"}
            gate.touch()  # let the compiles finish, so that nothing is left running
            with anyio.fail_after(60):
                while folder.loading:
                    await anyio.sleep(0.05)  # the compiles report through the folder, not an event we hold
            tg.cancel_scope.cancel()
    finally:
        gate.touch()
        engine._send.close()  # never served: its inbox is closed here
        engine._receive.close()
        store.close()
