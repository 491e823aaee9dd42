"""The control socket under faults: slow and half-sent requests, bursts, huge logs, few descriptors.

Each test drives a real aiflowd process through raw sockets or the real aiflowctl and
pins a defect of issue 7 that used to end, block or refuse the daemon.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..conftest import cli_env, wait_for
from ..daemon_harness import Daemon


def connect(daemon: Daemon, timeout: float = 30.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(daemon.socket))
    return sock


def answer(sock: socket.socket) -> dict:
    """The next answer line on ``sock``."""
    with sock.makefile("rb") as reader:
        return json.loads(reader.readline())


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_idle_and_half_sent_requests_are_closed(tmp_path: Path) -> None:
    """Issue 7, defect 10: a half-sent request held its connection for ever."""
    daemon = Daemon(tmp_path, config="control_idle_timeout: 2s\ncontrol_request_timeout: 1s\n")
    try:
        daemon.start()
        with connect(daemon) as idle, connect(daemon) as half:
            half.sendall(b'{"id": 1, "method": "sta')
            # Both end on the daemon's side (our own time-out, 30 s, would raise instead).
            assert read_to_end(idle) == b""
            refusal = json.loads(read_to_end(half))
            assert refusal["error"] == {"code": "bad_request", "message": "request not complete within 1s"}
        # A connection that keeps asking stays open; the daemon goes on answering everyone.
        with connect(daemon) as busy:
            for number in range(3):
                busy.sendall(json.dumps({"id": number, "method": "status"}).encode() + b"\n")
                assert answer(busy)["result"]["pid"] == daemon.process.pid
        assert daemon.json("status")["pid"] == daemon.process.pid
    finally:
        daemon.close()


def test_a_burst_of_connections_waits_in_the_backlog(daemon: Daemon) -> None:
    """Issue 7, defect 10: with a backlog of 64, the 65th simultaneous call was told "no aiflowd answers"."""
    assert daemon.process is not None
    count = min(300, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    daemon.process.send_signal(signal.SIGSTOP)  # nothing is accepted: every connection waits in the backlog
    sockets: list[socket.socket] = []
    callers: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            sockets.append(connect(daemon, timeout=0))  # non-blocking: a full backlog would fail with EAGAIN
        for sock in sockets:
            sock.settimeout(30)
            sock.sendall(b'{"id": 1, "method": "status"}\n')
        callers = [
            subprocess.Popen(
                [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(daemon.socket), "--json", "status"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=cli_env(),
            )
            for _ in range(3)
        ]
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    for sock in sockets:
        with sock:
            assert answer(sock)["result"]["pid"] == daemon.process.pid
    for caller in callers:
        out, err = caller.communicate(timeout=60)
        assert caller.returncode == 0, err
        assert json.loads(out)["pid"] == daemon.process.pid


def test_a_slow_daemon_is_one_line_and_exit_3(daemon: Daemon) -> None:
    """Issue 7, defect 5: `aiflowctl status` died with a raw TimeoutError traceback."""
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGSTOP)  # as slow as it gets
    try:
        result = daemon.ctl("--timeout", "0.5", "status", check=False)
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr == f"aiflowctl: aiflowd at {daemon.socket} did not answer within 0.5s (try --timeout)\n"
    assert daemon.ctl("--timeout", "30", "status").returncode == 0


def test_a_large_log_is_sent_in_bounded_chunks(daemon: Daemon) -> None:
    """Issue 7, defect 10: one job.logs request read the whole log into memory (1 GB log: 7 GB RSS)."""
    assert daemon.process is not None
    size = 48 << 20
    daemon.write_workflow("big.yaml", f"b:\n  job_type: bash\n  bash_command: yes xxxxxxx | head -c {size}\n")
    daemon.wait_jobs("big", lambda rows: rows and rows[0]["status"] == "FINISHED")

    def peak() -> int:
        status = Path(f"/proc/{daemon.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024

    before = peak()
    with connect(daemon, timeout=60) as sock:
        sock.sendall(json.dumps({"id": 1, "method": "job.logs", "params": {"workflow": "big", "job": "b", "bytes": size}}).encode() + b"\n")
        received, lines, longest = 0, 0, 0
        with sock.makefile("rb") as reader:
            while True:
                line = reader.readline()
                chunk = json.loads(line)
                longest, lines = max(longest, len(line)), lines + 1
                if not chunk.get("more"):
                    assert chunk == {"id": 1, "result": None}
                    break
                received += len(chunk["result"]["text"])
    assert received == size
    assert longest < 256 * 1024 and lines > size // (256 * 1024)  # chunks, never the whole log in one answer
    assert peak() - before < size // 2, (before, peak())  # the old code held the log several times over
    # The same through aiflowctl, which prints the chunks as they come; bytes are capped.
    out = daemon.ctl("job", "logs", "big", "b", "--bytes", "1000").stdout
    assert out == "xxxxxxx\n" * 125


def test_follow_moves_on_to_each_retry_and_ends(daemon: Daemon, tmp_path: Path) -> None:
    """Issue 7, defect 13: `job logs -f` never returned after a failed attempt with retry_delay 0."""
    count = tmp_path / "count"
    gate = tmp_path / "gate"
    daemon.write_workflow(
        "flaky.yaml",
        f"""
        f:
          job_type: bash
          retries: 2
          bash_command: 'echo attempt >> {count}; n=$(wc -l < {count}); echo "try $n"; while [ ! -e {gate} ]; do sleep 0.02; done; [ $n -ge 3 ]'
        """,
    )
    daemon.wait_jobs("flaky", lambda rows: rows and rows[0]["status"] == "RUNNING")
    follower = subprocess.Popen(
        [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(daemon.socket), "job", "logs", "-f", "flaky", "f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "try 1\n"
        gate.touch()  # every attempt runs to its end: two fail, the third finishes
        rest, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err
    assert rest == "try 2\ntry 3\n"
    assert [r["status"] for r in daemon.jobs("flaky")] == ["FINISHED", "FAILED", "FAILED"]


def test_follow_of_a_job_that_failed_for_good_ends(daemon: Daemon) -> None:
    daemon.write_workflow("fails.yaml", "f:\n  job_type: bash\n  retries: 1\n  bash_command: echo no; exit 1\n")
    daemon.wait_jobs("fails", lambda rows: len(rows) == 2 and all(r["status"] == "FAILED" for r in rows))
    result = subprocess.run(
        [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(daemon.socket), "job", "logs", "-f", "fails", "f"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "no\n")  # the latest attempt's log


def test_running_out_of_descriptors_makes_the_accept_loop_wait(daemon: Daemon) -> None:
    """Issue 7, defect 8: ~1,075 connections under a 1,024 descriptor limit ended the daemon."""
    assert daemon.process is not None
    pid = daemon.process.pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    limit = in_use + 40
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(100):  # far more than the daemon may open
            held.append(connect(daemon))
        wait_for(lambda: "cannot accept a connection now" in daemon.log(), timeout=20)
        assert daemon.process.poll() is None
        wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) >= limit - 1, timeout=20)
    finally:
        for sock in held:
            sock.close()
    # The held connections end; the daemon accepts again and answers as before.
    wait_for(lambda: daemon.ctl("status", check=False).returncode == 0, timeout=30)
    assert daemon.json("status")["pid"] == pid
    assert "accepting connections again" in daemon.log()
