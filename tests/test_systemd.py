"""The systemd units verify, and the daemon speaks sd_notify and the watchdog protocol."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, wait_for
from .daemon_harness import Daemon


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    aiflowd = Path(sys.executable).parent / "aiflowd"
    for unit in ("aiflowd.service", "aiflowd.socket"):
        text = (REPO / "systemd" / unit).read_text().replace("/opt/aiflowd/.venv/bin/aiflowd", str(aiflowd))
        (tmp_path / unit).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "aiflowd.service"), str(tmp_path / "aiflowd.socket")],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_service_has_room_for_descriptors_and_a_slow_start() -> None:
    settings = dict(
        line.split("=", 1)
        for line in (REPO / "systemd" / "aiflowd.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert int(settings["LimitNOFILE"]) >= 65536  # systemd's default 1024 is reached by a burst of aiflowctl calls
    assert int(settings["TimeoutStartSec"]) > 90  # beyond the default: READY=1 follows the initial scan


def test_ready_watchdog_and_stopping_notifications(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.start(extra_env={"WATCHDOG_USEC": "200000"})  # ping every 0.1 s
        assert daemon.notifications is not None
        ready = next(m for m in daemon.notifications.messages if "READY=1" in m)
        assert "STATUS=serving 0 workflows" in ready
        wait_for(lambda: daemon.notifications.count("WATCHDOG=1") >= 3)
        assert daemon.stop() == 0
        assert daemon.notifications.count("STOPPING=1") == 1
    finally:
        daemon.close()
