"""A newcomer's first commands, run as they type them: --version, init, the quick start
with a real daemon, systemd-units, and aiflowctl's errors when something is not there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiflowd

from .conftest import cli_env, wait_for
from .daemon_harness import kill_jobs_under


def run(tool: str, *args: str, cwd: Path, env: dict[str, str] | None = None, stdout: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"aiflowd.cli.{tool}", *args],
        cwd=cwd,
        env=env or cli_env(),
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path: a control socket's path may not pass 108 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="aiflowd-nc-"))
    yield folder
    kill_jobs_under(str(folder))
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("tool", ["aiflowd", "aiflowctl"])
def test_version(tool: str, tmp_path: Path) -> None:
    result = run(tool, "--version", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"{tool} {aiflowd.__version__}\n")


def test_init_writes_a_starter_folder_and_never_overwrites(tmp_path: Path) -> None:
    result = run("aiflowd", "init", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("next: cd demo && aiflowd ")
    config = (tmp_path / "demo" / "aiflowd.yaml").read_text()
    assert "workflows_dir: workflows " in config and "state_dir: .aiflowd " in config
    assert sorted(p.name for p in (tmp_path / "demo" / "workflows").iterdir()) == ["hello.yaml"]
    valid = run("aiflowctl", "validate", "workflows", cwd=tmp_path / "demo")
    assert (valid.returncode, valid.stdout) == (0, "1 workflow(s) valid\n")
    again = run("aiflowd", "init", "demo", cwd=tmp_path)
    assert (
        again.returncode == 1
        and again.stderr == f"aiflowd: {Path('demo/aiflowd.yaml')} exists; init writes only new files (remove it, or init another folder)\n"
    )


def test_init_examples_copies_those_that_need_no_flink(tmp_path: Path) -> None:
    result = run("aiflowd", "init", "--examples", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in (tmp_path / "workflows").iterdir()}
    assert {"hello.yaml", "bash_demo", "bash_demo_yaml.yaml", "python_demo", "dataedge_demo", "event_demo", "periodic_demo.yaml"} <= names
    assert not any(name.startswith("flink") for name in names)
    valid = run("aiflowctl", "validate", "workflows", cwd=tmp_path)  # the copies stand on their own
    assert (valid.returncode, valid.stdout) == (0, f"{len(names)} workflow(s) valid\n"), valid.stdout + valid.stderr
    assert result.stdout.splitlines()[1].startswith("next: aiflowd ")  # already there: no cd


def test_quick_start_serves_the_hello_workflow(short_tmp: Path) -> None:
    """`aiflowd init demo && cd demo && aiflowd`, then `aiflowctl status` from the same folder."""
    assert run("aiflowd", "init", "demo", cwd=short_tmp).returncode == 0
    demo = short_tmp / "demo"
    with open(short_tmp / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "aiflowd.cli.aiflowd"], cwd=demo, env=cli_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def finished() -> bool:
            assert daemon.poll() is None, (short_tmp / "daemon.log").read_text()
            result = run("aiflowctl", "job", "list-executions", "hello", "--json", cwd=demo)
            return result.returncode == 0 and [r["status"] for r in json.loads(result.stdout)] == ["FINISHED", "FINISHED"]

        wait_for(finished, timeout=30, interval=0.05)
        status = run("aiflowctl", "status", cwd=demo)
        assert status.returncode == 0 and "workflows: 1 " in status.stdout and str(demo / "workflows") in status.stdout, status.stdout
        logs = run("aiflowctl", "job", "logs", "hello", "hello", cwd=demo)
        assert logs.stdout == "Hello from aiflowd\n"
        shown = run("aiflowctl", "workflow", "show", "hello", "--json", "--timeout", "10", cwd=demo)
        assert json.loads(shown.stdout)["workflow"] == "hello"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def _fake_prefix(root: Path) -> Path:
    """An environment with an executable bin/aiflowd (systemd-analyze checks that it exists)."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "aiflowd").write_text("#!/bin/sh\n")
    (root / "bin" / "aiflowd").chmod(0o755)
    return root


def test_systemd_units_for_chosen_paths(tmp_path: Path) -> None:
    prefix = _fake_prefix(tmp_path / "opt env")
    result = run(
        "aiflowd",
        "systemd-units",
        "--user",
        "flows",
        "--config",
        "/srv/flows/aiflowd.yaml",
        "--prefix",
        str(prefix),
        "--socket",
        "/run/flows.sock",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    service, socket = result.stdout.split("# ---- aiflowd.socket\n")
    assert f'ExecStart="{prefix}/bin/aiflowd" --config /srv/flows/aiflowd.yaml\n' in service
    assert "\nUser=flows\nGroup=flows\n" in service and "/opt/aiflowd" not in service
    assert "\nListenStream=/run/flows.sock\nSocketUser=flows\nSocketGroup=flows\n" in socket
    bad = run("aiflowd", "systemd-units", "--user", "no body", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr == "aiflowd: --user 'no body' is not a user name systemd accepts\n"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    prefix = _fake_prefix(tmp_path / "env")
    result = run("aiflowd", "systemd-units", "--prefix", str(prefix), "--output", str(tmp_path / "units"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    units = [str(tmp_path / "units" / name) for name in ("aiflowd.service", "aiflowd.socket")]
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")


def _unreachable_env() -> dict[str, str]:
    env = cli_env()
    env.pop("AIFLOWD_SOCKET", None)
    return env


@pytest.mark.parametrize(
    ("args", "extra_env", "local_config", "source"),
    [
        (["--socket", "{tmp}/a.sock"], {}, False, "--socket"),
        ([], {"AIFLOWD_SOCKET": "{tmp}/a.sock"}, False, "$AIFLOWD_SOCKET"),
        (["--config", "{tmp}/c.yaml"], {}, False, "--config {tmp}/c.yaml"),
        ([], {}, True, "./aiflowd.yaml"),
        ([], {}, False, "the default (no --socket, $AIFLOWD_SOCKET, --config or ./aiflowd.yaml given)"),
    ],
)
def test_no_daemon_says_where_it_looked(
    args: list[str], extra_env: dict[str, str], local_config: bool, source: str, tmp_path: Path
) -> None:
    (tmp_path / "c.yaml").write_text("control_socket: a.sock\n")
    if local_config:
        (tmp_path / "aiflowd.yaml").write_text("control_socket: a.sock\n")
    env = _unreachable_env() | {k: v.format(tmp=tmp_path) for k, v in extra_env.items()}
    result = run("aiflowctl", "status", *(a.format(tmp=tmp_path) for a in args), cwd=tmp_path, env=env)
    socket = tmp_path / ("a.sock" if args or extra_env or local_config else ".aiflowd/aiflowd.sock")
    assert result.returncode == 3
    assert result.stderr == (
        f"aiflowctl: no aiflowd answers at {socket} (No such file or directory); the path came from {source.format(tmp=tmp_path)}; "
        "point aiflowctl elsewhere with --socket PATH, $AIFLOWD_SOCKET or --config FILE\n"
    )


def test_global_options_after_the_command_and_json_errors(tmp_path: Path) -> None:
    result = run("aiflowctl", "workflow", "show", "X", "--json", "--socket", str(tmp_path / "s.sock"), cwd=tmp_path, env=_unreachable_env())
    assert result.returncode == 3
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "unreachable" and error["message"].startswith(f"no aiflowd answers at {tmp_path / 's.sock'} ")
    assert result.stderr.count("\n") == 1
    before = run("aiflowctl", "--json", "--socket", str(tmp_path / "s.sock"), "workflow", "show", "X", cwd=tmp_path, env=_unreachable_env())
    assert (before.returncode, before.stdout) == (3, result.stdout)
    usage = run("aiflowctl", "workflow", "shwo", "X", "--json", cwd=tmp_path)
    assert usage.returncode == 2 and json.loads(usage.stdout.splitlines()[0])["error"]["code"] == "usage"
    bad_timeout = run("aiflowctl", "status", "--timeout", "0", cwd=tmp_path)
    assert bad_timeout.returncode == 2 and "must be more than 0 seconds" in bad_timeout.stderr


def test_plugins_without_a_daemon_lists_the_installed_ones(tmp_path: Path) -> None:
    result = run("aiflowctl", "plugins", cwd=tmp_path, env=_unreachable_env())
    assert result.returncode == 0, result.stderr
    assert (
        result.stderr
        == f"aiflowctl: no daemon answers at {tmp_path / '.aiflowd/aiflowd.sock'}: these are the plugins installed here, as a daemon would load them\n"
    )
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["JOB_TYPE", "bash", "flink", "python"]
    as_json = run("aiflowctl", "plugins", "--json", cwd=tmp_path, env=_unreachable_env())
    assert {row["job_type"]: row["module"] for row in json.loads(as_json.stdout)}["bash"] == "aiflowd.plugins.bash"


@pytest.mark.parametrize(
    ("tool", "args"),
    [("aiflowctl", ["plugins"]), ("aiflowctl", ["--help"]), ("aiflowctl", ["validate", "."]), ("aiflowd", ["systemd-units"])],
)
def test_a_reader_that_leaves_is_not_an_error(tool: str, args: list[str], tmp_path: Path) -> None:
    """As `... | head -1` once head has gone: the pipe's read end is closed before the tool writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run(tool, *args, cwd=tmp_path, env=_unreachable_env(), stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode in (0, 1)  # validate of an empty folder says so and fails; the others succeed
