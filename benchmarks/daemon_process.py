"""A real aiflowd process for the daemon benchmarks: started on a folder, ready when it says so."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class BenchDaemon:
    def __init__(self, root: Path, extra_config: str = "") -> None:
        self.root = root
        self.workflows = root / "workflows"
        self.workflows.mkdir(parents=True, exist_ok=True)
        self.short = Path(tempfile.mkdtemp(prefix="aiflowd-bench-"))
        self.socket = self.short / "ctl.sock"
        self.config = root / "aiflowd.yaml"
        self.config.write_text(
            f"workflows_dir: {self.workflows}\nstate_dir: {root / 'state'}\ncontrol_socket: {self.socket}\n{extra_config}"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600) -> float:
        """Start and wait for READY=1; the seconds it took."""
        notify = self.short / "notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(notify))
            sock.settimeout(timeout)
            env = dict(os.environ, NOTIFY_SOCKET=str(notify), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
            started = time.perf_counter()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(self.config)],
                stdout=open(self.root / "daemon.log", "ab"),
                stderr=subprocess.STDOUT,
                env=env,
            )
            while b"READY=1" not in sock.recv(4096):
                pass
            return time.perf_counter() - started

    def rss_mb(self) -> float:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """CPU time of all the daemon's threads, in nanosecond resolution (schedstat)."""
        assert self.process is not None
        total = 0
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            with open(f"/proc/{self.process.pid}/task/{task}/schedstat") as fh:
                total += int(fh.read().split()[0])
        return total / 1e9

    def wakeups(self) -> int:
        assert self.process is not None
        count = 0
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            with open(f"/proc/{self.process.pid}/task/{task}/status") as fh:
                count += sum(int(line.split()[1]) for line in fh if line.startswith("voluntary_ctxt_switches"))
        return count

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        shutil.rmtree(self.short, ignore_errors=True)
