"""10,000 YAML workflows in the watched folder: time until served, memory, idle CPU.

Also the cost of ``aiflowctl status`` as a whole process, next to ``python -c pass``.
Targets: all served within 5 s and 200 MB RSS; idle: no CPU between events and at most
60 MB RSS (an empty folder); aiflowctl status at most 150 ms (Airflow's CLI takes ~3 s).

Usage: python -m benchmarks.many_workflows [--workflows 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiflowd.watcher import STEP_MS
from benchmarks.daemon_process import BenchDaemon
from benchmarks.measure import median_ms


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        idle = BenchDaemon(root / "idle")
        idle.start()
        time.sleep(2)  # past the start-up
        cpu_before, wakeups_before = idle.cpu_seconds(), idle.wakeups()
        time.sleep(5)
        idle_cpu, idle_wakeups = idle.cpu_seconds() - cpu_before, idle.wakeups() - wakeups_before
        idle_rss = idle.rss_mb()
        ctl = [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(idle.socket), "status"]
        status_ms = median_ms(lambda: subprocess.run(ctl, check=True, capture_output=True))
        bare_ms = median_ms(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
        idle.stop()

        daemon = BenchDaemon(root / "many")
        for i in range(count):
            # Event-triggered: served (loaded, validated, recorded) without starting 10,000 executions.
            (daemon.workflows / f"wf{i:05d}.yaml").write_text(
                "start_new_workflow_execution_on_events:\n  - {event_key: go}\n"
                f"extract:\n  job_type: bash\n  bash_command: echo {i}\n"
                "load:\n  job_type: bash\n  bash_command: echo load\n  action_on_job_status: [{upstream_job: extract}]\n"
            )
        served = daemon.start()
        rss = daemon.rss_mb()
        listed = json.loads(
            subprocess.run(
                [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(daemon.socket), "--json", "status"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        time.sleep(2)
        cpu_before = daemon.cpu_seconds()
        time.sleep(5)
        busy_idle = daemon.cpu_seconds() - cpu_before
        daemon.stop()
    print(f"{count} YAML workflows (2 jobs and a rule each) in the folder")
    print(f"  start to READY=1 with all served : {served:6.2f} s   (target <= 5 s); workflows active: {listed['workflows'].get('active')}")
    print(f"  RSS with them all served         : {rss:6.1f} MB  (target <= 200 MB)")
    print(f"  CPU while idle with them served  : {busy_idle / 5 * 1000:6.2f} ms per second")
    print("empty folder, idle")
    print(
        f"  CPU while idle                   : {idle_cpu / 5 * 1000:6.2f} ms per second, {idle_wakeups / 5:.0f} wakeups/s (target: none;"
        f" watchfiles looks at its stop flag every {STEP_MS} ms)"
    )
    print(f"  RSS                              : {idle_rss:6.1f} MB  (target <= 60 MB)")
    print(f"  aiflowctl status, whole process  : {status_ms:6.1f} ms  (target <= 150 ms; python -c pass: {bare_ms:.1f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=10_000)
    main(parser.parse_args().workflows)
