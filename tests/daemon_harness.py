"""A real aiflowd process on a temporary folder, driven only through the real aiflowctl.

The harness binds a datagram socket as ``NOTIFY_SOCKET`` and waits for ``READY=1``
(no sleeps); it records every notification, so tests can check what systemd would see.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiflowd.controllers.process_group import wrappers

from .conftest import cli_env, wait_for


@dataclass
class Notifications:
    """Messages the daemon sent to its NOTIFY_SOCKET, gathered by a thread."""

    path: str
    messages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.closed = False
        self.thread = threading.Thread(target=self._gather, daemon=True)
        self.thread.start()

    def _gather(self) -> None:
        while not self.closed:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def count(self, state: str) -> int:
        return sum(1 for message in list(self.messages) if state in message.split("\n"))

    def close(self) -> None:
        self.closed = True
        self.thread.join()
        self.sock.close()


class Daemon:
    """One aiflowd process with its own folders; restartable; cleaned up by ``close``."""

    def __init__(self, root: Path, config: str = "") -> None:
        self.root = root
        self.workflows = root / "workflows"
        self.workflows.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        # Socket paths are limited to 108 bytes: keep them short, and outside the test's
        # private folder so that other users may reach them when a test wants that.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="aiflowd-"))
        os.chmod(self.socket_dir, 0o755)
        self.socket = self.socket_dir / "ctl.sock"
        self.config = root / "aiflowd.yaml"
        self.write_config(config)
        self.process: subprocess.Popen[bytes] | None = None
        self.notifications: Notifications | None = None
        self.output = root / "daemon.log"

    def write_config(self, extra: str = "") -> None:
        base = f"""
        workflows_dir: {self.workflows}
        state_dir: {self.state}
        control_socket: {self.socket}
        stop_grace_period: 1s
        """
        extra = textwrap.dedent(extra)
        overridden = {line.split(":", 1)[0] for line in extra.splitlines() if line and not line.startswith(" ")}
        kept = [line for line in textwrap.dedent(base).splitlines() if line.split(":", 1)[0] not in overridden]
        self.config.write_text("\n".join(kept) + "\n" + extra)

    def start(self, wait: bool = True, extra_env: dict[str, str] | None = None) -> Daemon:
        # A second start would lose track of the first process, which then outlives the test.
        assert self.process is None or self.process.poll() is not None, "this daemon runs already: stop() it first"
        self.notifications = Notifications(str(self.socket_dir / f"notify-{len(os.listdir(self.socket_dir))}"))
        env = cli_env(NOTIFY_SOCKET=self.notifications.path, **(extra_env or {}))
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(self.config)],
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        assert self.notifications is not None
        wait_for(lambda: self.notifications.count("READY=1") or self._died(), timeout=30)
        assert self.process is not None and self.process.poll() is None, self.log()

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def log(self) -> str:
        return self.output.read_text() if self.output.exists() else ""

    def ctl(self, *args: str, check: bool = True, user: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(self.socket), *args]
        if user is not None:
            command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
        result = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=60, cwd="/")
        if check and result.returncode != 0:
            raise AssertionError(f"aiflowctl {' '.join(args)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ctl("--json", *args).stdout)

    def jobs(self, workflow: str, job: str | None = None) -> list[dict[str, Any]]:
        return self.json("job", "list-executions", workflow, *([job] if job else []))

    def wait_jobs(self, workflow: str, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
        """Poll the job executions (through aiflowctl) until ``predicate(rows)`` holds."""
        result: list[list[dict[str, Any]]] = []

        def check() -> bool:
            rows = self.jobs(workflow) if self.known(workflow) else []
            result[:] = [rows]
            return bool(predicate(rows))

        wait_for(check, timeout=timeout, interval=0.05)
        return result[0]

    def known(self, workflow: str) -> bool:
        return any(row["workflow"] == workflow for row in self.json("workflow", "list", "--all"))

    def write_workflow(self, name: str, text: str) -> Path:
        path = self.workflows / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.notifications is not None:
            self.notifications.close()
        kill_jobs_under(str(self.root))
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def kill_jobs_under(root: str) -> None:
    """Kill the process group of any job whose wrapper names a file under ``root`` (after kill -9 tests)."""
    for pid, _ in wrappers(root.encode()):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
