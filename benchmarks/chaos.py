"""Chaos: SIGKILL a real aiflowd at random moments, then check the history against what ran.

What it measures, and why: aiflowd promises that a crash of the daemon costs nothing
that was decided. Every decision is committed before it is acted upon, running jobs
outlive the daemon and are adopted again at the next start, and a timer's missed slots
fire once (coalesced) after a downtime. This tool tests that promise the hard way, with
real processes only:

1. It writes workflows into a fresh watched folder: chains (``job_2`` starts when
   ``job_1`` is FINISHED, ...), fan-outs (one job starting several) and periodic jobs
   (workflow-level and job-level ``periodic_config`` every few seconds, on a grid fixed
   by ``start_date``). ``--two-timers`` adds a workflow with two timers; ``--escapes``
   one whose job leaves a process behind in a session of its own (``setsid``).
2. Every job appends a line to a ledger when it starts and when it ends: its workflow,
   job, execution ids (from the job's environment) and a marker unique to that run of
   the process, then takes 0.05-1.5 s. Every process of a job carries a token unique to
   this chaos run in its command line.
3. It starts ``aiflowd`` (READY through a ``NOTIFY_SOCKET`` datagram socket, as systemd
   waits), kills it with SIGKILL ``--kills`` times at random (seeded) moments, some of
   them during startup, and starts it again each time.
4. It pauses scheduling, waits until no execution runs (``aiflowctl --json status``),
   stops the daemon with SIGTERM, and compares the ledger with the stored history
   (the daemon's SQLite database, read-only, after the stop).

It prints:

- ``kills``: SIGKILLs sent; ``crashes``: daemon exits nobody asked for (also a failure).
- ``executions``, ``job executions``: what the history holds; ``runs`` what the ledger saw.
- ``lost``: a job execution decided but never run, a record left RUNNING for ever, an
  execution whose first jobs never started, a chain whose next job never started although
  its upstream FINISHED (or ran to its end and was recorded otherwise).
- ``doubled``: a job execution that ran more than once, a job run with no record, a chain
  job that ran more than once in one execution.
- ``orphans``: processes carrying the run's token still alive after the final stop.
- ``ticks``: per timer, the slots that must have fired (every slot while the daemon was
  up, and the latest slot of every downtime: the catch-up) against those that fired;
  missing and doubled slots. A job-level slot that came while the job was still running
  is skipped by design (START does nothing to a running job) and counted apart; so is a
  workflow-level slot that came while an execution was active and that a later slot
  replaced (``on_overlap: queue``, the default, keeps only the latest waiting).
- ``misrecorded``: a job recorded FINISHED whose run never reached its end, or one that
  ran to its end but is recorded FAILED or KILLED.

Exit status 0 when lost, doubled, orphans and crashes are all 0, else 1. Ticks and
misrecorded statuses are printed, slot by slot, without failing the run. A daemon that
will not start three times in a row, or stops answering at the end, aborts the run
(exit 1) with the end of its log; the run's folder (ledger, daemon.log, state,
lives.json) is kept whenever something was found, or with ``--keep``.

Usage: python -m benchmarks.chaos [--kills 50] [--seed 1] [--dir DIR] [--two-timers] [--escapes] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import random
import secrets
import select
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: A job takes this long, at random (seconds).
JOB_SECONDS = (0.05, 1.5)
#: Up to this long between READY and the next SIGKILL (seconds).
MAX_UPTIME = 4.0
#: This share of the kills lands during startup, at most STARTUP_KILL seconds after the start.
STARTUP_KILL_SHARE = 0.2
STARTUP_KILL = 0.8
#: A slot this close before a kill may be lost with the kill (its tick not yet committed).
KILL_MARGIN = 1.0
#: A slot this close before scheduling was paused need not have fired.
PAUSE_MARGIN = 1.0
READY_TIMEOUT = 60.0
SETTLE_TIMEOUT = 60.0
MAX_CRASHES_IN_A_ROW = 3
FINAL = ("FINISHED", "FAILED", "KILLED")


# -- the workflows ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow the tool writes, and what its history must therefore show."""

    name: str
    jobs: tuple[str, ...]
    #: (upstream, downstream): downstream starts when upstream is FINISHED.
    edges: tuple[tuple[str, str], ...] = ()
    #: Seconds between the workflow-level timer's slots (None: no such timer).
    interval: float | None = None
    #: Job-level timers: job -> seconds between slots.
    job_intervals: dict[str, float] = field(default_factory=dict)
    #: Its jobs leave a process behind in a session of its own (``setsid``), as careless jobs do.
    escapes: bool = False

    @property
    def roots(self) -> list[str]:
        governed = {down for _, down in self.edges}
        return [job for job in self.jobs if job not in governed]

    def timers(self) -> list[tuple[str, float]]:
        """(job or '' for the workflow-level timer, interval) of each timer."""
        found = [("", self.interval)] if self.interval is not None else []
        return found + sorted(self.job_intervals.items())


def workflow_specs(two_timers: bool, escapes: bool = False) -> list[WorkflowSpec]:
    """Chains, fan-outs and timers; at most one timer per workflow unless ``two_timers``."""
    specs = [
        WorkflowSpec(
            "chain_long",
            ("job_1", "job_2", "job_3", "job_4"),
            (("job_1", "job_2"), ("job_2", "job_3"), ("job_3", "job_4")),
            interval=3.0,
        ),
        WorkflowSpec("chain_short", ("job_1", "job_2", "job_3"), (("job_1", "job_2"), ("job_2", "job_3")), interval=5.0),
        WorkflowSpec(
            "fan_out",
            ("root", "leaf_1", "leaf_2", "leaf_3", "leaf_4", "tail"),
            (("root", "leaf_1"), ("root", "leaf_2"), ("root", "leaf_3"), ("root", "leaf_4"), ("leaf_1", "tail")),
            interval=4.0,
        ),
        WorkflowSpec("job_timer", ("beat",), job_intervals={"beat": 2.0}),
    ]
    if two_timers:
        specs.append(WorkflowSpec("two_timers", ("a", "b", "c"), (("a", "b"),), interval=3.0, job_intervals={"c": 2.0}))
    if escapes:
        specs.append(WorkflowSpec("escapes", ("leaver",), interval=5.0, escapes=True))
    return specs


def job_command(ledger: Path, token: str, escapes: bool = False) -> str:
    """A job that writes 'start' and 'end' ledger lines around a random 0.05-1.5 s sleep.

    ``exec -a`` gives the sleep the run's token as its name, so that every process of the
    job (the wrapper and bash name it in their arguments) can be found through /proc.
    With ``escapes`` it also leaves a 10-minute sleep behind in a session of its own.
    """
    leave = f"setsid -f bash -c 'exec -a {token} sleep 600' < /dev/null > /dev/null 2>&1; " if escapes else ""
    low, high = (round(s * 1000) for s in JOB_SECONDS)
    out = shlex.quote(str(ledger))
    return (
        'm="$$.$EPOCHREALTIME"; '
        'k="$AIFLOWD_WORKFLOW $AIFLOWD_JOB $AIFLOWD_WORKFLOW_EXECUTION_ID $AIFLOWD_JOB_EXECUTION_ID $m"; '
        f'echo "start $k $EPOCHREALTIME" >> {out}; {leave}'
        f"ms=$((SRANDOM % {high - low + 1} + {low})); printf -v f %03d $((ms % 1000)); "
        f'(exec -a {token} sleep "$((ms / 1000)).$f"); '
        f'echo "end $k $EPOCHREALTIME" >> {out}'
    )


def workflow_text(spec: WorkflowSpec, command: str, anchor: float) -> str:
    start_date = datetime.datetime.fromtimestamp(anchor, datetime.UTC).isoformat()

    def timer(seconds: float) -> dict[str, str]:
        return {"interval": f"{seconds:g}s", "start_date": start_date}

    data: dict[str, Any] = {}
    if spec.interval is not None:
        data["periodic_config"] = timer(spec.interval)
    for job in spec.jobs:
        entry: dict[str, Any] = {"job_type": "bash", "bash_command": command}
        rules = [{"upstream_job": up, "upstream_job_status": "FINISHED", "action": "START"} for up, down in spec.edges if down == job]
        if rules:
            entry["action_on_job_status"] = rules
        if job in spec.job_intervals:
            entry["periodic_config"] = timer(spec.job_intervals[job])
        data[job] = entry
    return yaml.safe_dump(data, sort_keys=False, width=1000)


# -- the daemon ---------------------------------------------------------------------------


@dataclass
class Life:
    """One run of the daemon process, from its start to its end."""

    started_at: float
    ready_at: float | None = None
    ended_at: float | None = None
    end: str = ""  # killed, crashed, stopped
    exit_code: int | None = None


class ChaosDaemon:
    """The aiflowd process under test: started again and again on the same folders."""

    def __init__(self, root: Path, socket_dir: Path) -> None:
        self.root = root
        self.workflows = root / "workflows"
        self.workflows.mkdir(parents=True)
        self.db = root / "state" / "aiflowd.db"
        self.log = root / "daemon.log"
        self.socket = socket_dir / "ctl.sock"
        self.config = root / "aiflowd.yaml"
        self.config.write_text(
            f"workflows_dir: {self.workflows}\nstate_dir: {root / 'state'}\ncontrol_socket: {self.socket}\nstop_grace_period: 1s\n"
        )
        self.notify_path = socket_dir / "notify"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.setblocking(False)
        self.env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.process: subprocess.Popen[bytes] | None = None
        self.pidfd = -1
        self.lives: list[Life] = []

    @property
    def life(self) -> Life:
        return self.lives[-1]

    def start(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.notify.recv(4096)  # nothing a dead daemon said may count for this one
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "aiflowd.cli.aiflowd", "--config", str(self.config)],
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(self.env, NOTIFY_SOCKET=str(self.notify_path)),
            )
        self.pidfd = os.pidfd_open(self.process.pid)
        self.lives.append(Life(time.time()))

    def wait(self, timeout: float, until_ready: bool) -> bool:
        """Wait ``timeout`` s (or until READY=1 when ``until_ready``), noting READY; True if the process ended."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.pidfd, self.notify.fileno()], [], [], left)
            if self.pidfd in readable:
                self._ended("crashed")
                return True
            if self.notify.fileno() in readable:
                with contextlib.suppress(BlockingIOError):
                    if b"READY=1" in self.notify.recv(4096).split(b"\n") and self.life.ready_at is None:
                        self.life.ready_at = time.time()
                        if until_ready:
                            return False
        return False

    def _ended(self, how: str) -> None:
        assert self.process is not None
        self.life.exit_code = self.process.wait()
        self.life.ended_at = self.life.ended_at or time.time()
        self.life.end = self.life.end or how
        os.close(self.pidfd)
        self.pidfd = -1
        self.process = None

    def kill9(self) -> None:
        assert self.process is not None
        self.life.ended_at, self.life.end = time.time(), "killed"
        self.process.send_signal(signal.SIGKILL)
        self._ended("killed")

    def stop(self, timeout: float = 30) -> None:
        assert self.process is not None
        self.life.end = "stopped"
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.life.end = "stop hung; killed"
            self.process.kill()
        self._ended("stopped")

    def ctl(self, *args: str) -> Any:
        """``aiflowctl --json ARGS``'s answer."""
        command = [sys.executable, "-m", "aiflowd.cli.aiflowctl", "--socket", str(self.socket), "--json", *args]
        result = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"aiflowctl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self._ended("killed")
        self.notify.close()


# -- the run ------------------------------------------------------------------------------


@dataclass
class Run:
    """What happened during a chaos run, for the comparison."""

    specs: list[WorkflowSpec]
    anchor: float
    token: str
    ledger: Path
    db: Path
    lives: list[Life]
    kills: int = 0
    paused_at: float = 0.0
    settle: str = ""
    stuck_rows: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[tuple[int, str]] = field(default_factory=list)
    aborted: str = ""


def run_chaos(root: Path, kills: int, seed: int, two_timers: bool, tail: float, escapes: bool = False) -> Run:
    rng = random.Random(seed)
    token = f"aiflowd-chaos-{secrets.token_hex(6)}"
    socket_dir = Path(tempfile.mkdtemp(prefix="aiflowd-chaos-"))  # socket paths must stay short
    daemon = ChaosDaemon(root, socket_dir)
    ledger = root / "ledger"
    ledger.touch()
    specs = workflow_specs(two_timers, escapes)
    anchor = float(int(time.time()))
    for spec in specs:
        (daemon.workflows / f"{spec.name}.yaml").write_text(workflow_text(spec, job_command(ledger, token, spec.escapes), anchor))
    run = Run(specs, anchor, token, ledger, daemon.db, daemon.lives)
    try:
        crashes_in_a_row = 0
        while run.kills < kills:
            daemon.start()
            if rng.random() < STARTUP_KILL_SHARE:
                moment = rng.uniform(0.05, STARTUP_KILL)  # from the start: READY may not have come
            else:
                moment = rng.uniform(0.0, MAX_UPTIME)  # from READY
                if daemon.wait(READY_TIMEOUT, until_ready=True) or daemon.life.ready_at is None:
                    crashes_in_a_row += 1
                    if daemon.process is not None:
                        daemon.kill9()
                        daemon.life.end = "no READY; killed"
                    if crashes_in_a_row >= MAX_CRASHES_IN_A_ROW:
                        run.aborted = f"the daemon did not become ready {crashes_in_a_row} times in a row"
                        return run
                    continue
            if daemon.wait(moment, until_ready=False):
                crashes_in_a_row += 1
                if crashes_in_a_row >= MAX_CRASHES_IN_A_ROW:
                    run.aborted = f"the daemon ended by itself {crashes_in_a_row} times in a row"
                    return run
                continue
            crashes_in_a_row = 0
            daemon.kill9()
            run.kills += 1
            print(f"kill {run.kills}/{kills}: {'serving' if daemon.life.ready_at else 'during startup'}", file=sys.stderr)
        daemon.start()
        if daemon.wait(READY_TIMEOUT, until_ready=True) or daemon.life.ready_at is None:
            run.aborted = "the daemon did not become ready after the last kill"
            return run
        if daemon.wait(tail, until_ready=False):
            run.aborted = "the daemon ended by itself after the last kill"
            return run
        try:
            for spec in specs:
                daemon.ctl("workflow", "pause-scheduling", spec.name)
            run.paused_at = time.time()
            run.settle = settle(daemon, run)
        except RuntimeError as err:
            if daemon.wait(SETTLE_TIMEOUT, until_ready=False):
                run.aborted = f"the daemon stopped answering ({err}) and then ended by itself (exit {daemon.life.exit_code})"
            else:
                run.aborted = f"the daemon stopped answering ({err}) and was still running {SETTLE_TIMEOUT:.0f} s later"
            return run
        daemon.stop()
        run.orphans = orphans(token)
        return run
    finally:
        daemon.close()
        for pid, _ in orphans(token):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(socket_dir, ignore_errors=True)


def settle(daemon: ChaosDaemon, run: Run) -> str:
    """Wait until nothing runs; on a timeout, keep the rows still not final as found."""
    started = time.monotonic()
    status: dict[str, Any] = {}
    while time.monotonic() - started < SETTLE_TIMEOUT:
        status = daemon.ctl("status")
        if status["executions_running"] == 0 and status["jobs_running"] == 0:
            return f"settled {time.monotonic() - started:.1f} s after scheduling was paused"
        time.sleep(0.2)  # a poll of the daemon's own answer; nothing else to wait on
    with read_only(run.db) as db:
        run.stuck_rows = [
            dict(row) for row in db.execute("SELECT * FROM job_executions WHERE status NOT IN ('FINISHED', 'FAILED', 'KILLED')")
        ]
    return (
        f"NOT settled: {status['executions_running']} executions, {status['jobs_running']} jobs still running after {SETTLE_TIMEOUT:.0f} s"
    )


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def orphans(token: str, wait: float = 3.0) -> list[tuple[int, str]]:
    """Live processes whose command line holds ``token`` (given ``wait`` s to finish dying)."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmdline = fh.read()
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    state = fh.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if token.encode() in cmdline and state != b"Z":
                found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # processes being killed need a moment; this polls their end


# -- the comparison -----------------------------------------------------------------------

Key = tuple[str, int, str, int]  # workflow, execution id, job, attempt


@dataclass
class LedgerRun:
    """One run of a job's process, as the job itself wrote it down."""

    key: Key
    marker: str
    started: float
    ended: float | None = None


@dataclass
class Finding:
    kind: str  # lost, doubled, misrecorded
    workflow: str
    execution: int
    job: str
    text: str

    def __str__(self) -> str:
        where = f"{self.workflow} execution {self.execution}" + (f" job {self.job}" if self.job else "")
        return f"{self.kind:<11} {where}: {self.text}"


@dataclass
class TimerFigures:
    workflow: str
    job: str
    interval: float
    expected: int = 0
    fired: int = 0
    #: (slot, whether it was a downtime's catch-up) of the slots that never fired
    missing: list[tuple[float, bool]] = field(default_factory=list)
    doubled: list[float] = field(default_factory=list)
    #: (slot, whether it was a downtime's catch-up) of the slots that came while the job ran
    skipped: list[tuple[float, bool]] = field(default_factory=list)
    off_grid: int = 0


def read_ledger(path: Path) -> tuple[dict[Key, list[LedgerRun]], int]:
    """Runs by key, and the number of lines that could not be read."""
    runs: dict[tuple[Key, str], LedgerRun] = {}
    bad = 0
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        try:
            kind, workflow, job, execution, job_execution, marker, at = parts
            key = (workflow, int(execution), job, int(job_execution.rsplit(".", 1)[1]))
            moment = float(at)
        except (ValueError, IndexError):
            bad += 1
            continue
        if kind == "start":
            runs[(key, marker)] = LedgerRun(key, marker, moment)
        elif kind == "end" and (key, marker) in runs:
            runs[(key, marker)].ended = moment
        else:
            bad += 1
    by_key: dict[Key, list[LedgerRun]] = defaultdict(list)
    for item in runs.values():
        by_key[item.key].append(item)
    return by_key, bad


def slot_of(text: str) -> float | None:
    """The slot time named by a 'periodic <local ISO time>' trigger or reason."""
    if not text.startswith("periodic "):
        return None
    try:
        return datetime.datetime.fromisoformat(text.split(" ", 1)[1]).timestamp()
    except ValueError:
        return None


@dataclass
class Report:
    executions: int
    job_executions: int
    runs: int
    findings: list[Finding]
    timers: list[TimerFigures]
    bad_lines: int

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)


def compare(run: Run) -> Report:
    ledger, bad = read_ledger(run.ledger)
    with read_only(run.db) as db:
        executions = [dict(row) for row in db.execute("SELECT * FROM executions ORDER BY id")]
        rows = [dict(row) for row in db.execute("SELECT * FROM job_executions ORDER BY id")]
    specs = {spec.name: spec for spec in run.specs}
    findings: list[Finding] = []
    for row in run.stuck_rows:
        findings.append(
            Finding("lost", row["workflow"], row["execution_id"], row["job"], f"still {row['status']} when everything else had settled")
        )
    recorded: set[Key] = set()
    for row in rows:
        key = (row["workflow"], row["execution_id"], row["job"], row["attempt"])
        recorded.add(key)
        runs = ledger.get(key, [])
        status, where = row["status"], (row["workflow"], row["execution_id"], row["job"])
        said = f" ({row['message']})" if row["message"] else ""
        if not runs:
            findings.append(
                Finding("lost", *where, f"attempt {row['attempt']} decided ({row['reason']}), recorded {status}{said}, never ran")
            )
        elif len(runs) > 1:
            findings.append(
                Finding(
                    "doubled",
                    *where,
                    f"attempt {row['attempt']} ran {len(runs)} times (process markers {', '.join(r.marker for r in runs)})",
                )
            )
        if status not in FINAL:
            findings.append(Finding("lost", *where, f"attempt {row['attempt']} recorded {status} for ever"))
        elif runs and status == "FINISHED" and not any(r.ended for r in runs):
            findings.append(
                Finding("misrecorded", *where, f"attempt {row['attempt']} recorded FINISHED, but its run never reached its end")
            )
        elif runs and status != "FINISHED" and any(r.ended for r in runs):
            findings.append(Finding("misrecorded", *where, f"attempt {row['attempt']} ran to its end, but is recorded {status}{said}"))
    for key, runs in ledger.items():
        if key not in recorded:
            findings.append(
                Finding("doubled", key[0], key[1], key[2], f"attempt {key[3]} ran {len(runs)} time(s) with no record in the history")
            )
    by_execution: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_execution[row["execution_id"]].append(row)
    for execution in executions:
        findings += check_execution(execution, by_execution[execution["id"]], specs.get(execution["workflow"]), ledger)
    timers = [tick_figures(run, spec, job, interval, executions, rows, ledger) for spec in run.specs for job, interval in spec.timers()]
    return Report(len(executions), len(rows), sum(len(r) for r in ledger.values()), findings, timers, bad)


def check_execution(
    execution: dict[str, Any], rows: list[dict[str, Any]], spec: WorkflowSpec | None, ledger: dict[Key, list[LedgerRun]]
) -> list[Finding]:
    """Lost and doubled jobs inside one execution: first jobs, chains, jobs run twice."""
    name, number = execution["workflow"], execution["id"]
    found: list[Finding] = []
    if execution["status"] not in FINAL:
        found.append(Finding("lost", name, number, "", f"execution ({execution['trigger']}) recorded {execution['status']} for ever"))
    if spec is None:
        return found
    jobs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        jobs[row["job"]].append(row)
    first = [execution["only_job"]] if execution["only_job"] else spec.roots
    for job in first:
        if not jobs[job]:
            found.append(Finding("lost", name, number, job, f"execution ({execution['trigger']}) never decided its first job"))
    for job, job_rows in jobs.items():
        unscheduled = [row for row in job_rows if not row["reason"].startswith("periodic ")]
        if len(unscheduled) > 1:
            found.append(
                Finding(
                    "doubled",
                    name,
                    number,
                    job,
                    f"started {len(unscheduled)} times in one execution ({'; '.join(r['reason'] for r in unscheduled)})",
                )
            )
    for up, down in spec.edges:
        if jobs[down]:
            continue
        if any(row["status"] == "FINISHED" for row in jobs[up]):
            found.append(Finding("lost", name, number, down, f"chain stopped: {up} FINISHED but {down} never started"))
            continue
        for row in jobs[up]:
            if any(r.ended for r in ledger.get((name, number, up, row["attempt"]), [])):
                found.append(
                    Finding(
                        "lost",
                        name,
                        number,
                        down,
                        f"chain stopped: {up} ran to its end but is recorded {row['status']}, so {down} never started",
                    )
                )
    return found


def tick_figures(
    run: Run,
    spec: WorkflowSpec,
    job: str,
    interval: float,
    executions: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    ledger: dict[Key, list[LedgerRun]],
) -> TimerFigures:
    """Slots that must have fired against those that did, for one timer.

    While the daemon was up every slot must fire (but one just before a kill may die with
    it); of each downtime (startup included) the latest slot must fire, once, as the
    catch-up. A job-level slot whose job was running then is skipped by design, and so is
    a workflow-level slot that came while an execution was active (``on_overlap: queue``
    keeps one waiting slot, the latest; those it replaced are skipped).
    """
    figures = TimerFigures(spec.name, job, interval)
    fired: Counter[int] = Counter()
    for text in [e["trigger"] for e in executions if e["workflow"] == spec.name and (e["only_job"] or "") == job] + (
        [r["reason"] for r in rows if r["workflow"] == spec.name and r["job"] == job] if job else []
    ):
        slot = slot_of(text)
        if slot is None:
            continue
        index = round((slot - run.anchor) / interval)
        if abs(run.anchor + index * interval - slot) > 0.01:
            figures.off_grid += 1
        fired[index] += 1
    figures.fired = len(fired)
    figures.doubled = [run.anchor + i * interval for i, n in sorted(fired.items()) if n > 1]
    # (READY, the last moment a slot surely fired) of each life that became ready
    ups = [
        (life.ready_at, math.inf if life.end == "stopped" or life.ended_at is None else life.ended_at - KILL_MARGIN)
        for life in run.lives
        if life.ready_at is not None
    ]
    if job:
        running = [(r.started, r.ended or math.inf) for key, runs in ledger.items() if key[0] == spec.name and key[2] == job for r in runs]
    else:  # on_overlap: queue (the default): a slot waits while any execution is active, and a later one replaces it
        running = [(e["started_at"], e["ended_at"] or math.inf) for e in executions if e["workflow"] == spec.name]

    def busy(at: float) -> bool:
        return any(start - 0.2 <= at <= end + 0.2 for start, end in running)

    must: list[tuple[int, float, bool]] = []  # slot index, when it had to fire, whether as a catch-up
    latest_of_gap: dict[int, int] = {}
    index = 0
    while (slot := run.anchor + index * interval) <= run.paused_at - PAUSE_MARGIN:
        if any(ready < slot < sure for ready, sure in ups):
            must.append((index, slot, False))
        else:
            gap = next((i for i, (ready, _) in enumerate(ups) if ready >= slot), len(ups))
            latest_of_gap[gap] = index
        index += 1
    must += [(i, ups[gap][0] if gap < len(ups) else run.paused_at, True) for gap, i in latest_of_gap.items()]
    for i, due, catch_up in must:
        if fired[i]:
            figures.expected += 1
        elif busy(run.anchor + i * interval) or busy(due):
            figures.skipped.append((run.anchor + i * interval, catch_up))
        else:
            figures.expected += 1
            figures.missing.append((run.anchor + i * interval, catch_up))
    return figures


# -- output -------------------------------------------------------------------------------


def clock(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]


def print_report(run: Run, report: Report, seconds: float) -> None:
    crashes = sum(1 for life in run.lives if life.end == "crashed" or life.end.startswith("no READY"))
    startup_kills = sum(1 for life in run.lives if life.end == "killed" and life.ready_at is None)
    expected = sum(t.expected for t in report.timers)
    fired = sum(t.expected - len(t.missing) for t in report.timers)
    print(f"chaos run of {seconds:.0f} s, {len(run.lives)} daemon starts; {run.settle or run.aborted}")
    print(f"kills           {run.kills} ({startup_kills} during startup)")
    print(f"crashes         {crashes}")
    print(f"executions      {report.executions}")
    print(
        f"job executions  {report.job_executions} (ledger: {report.runs} runs{f', {report.bad_lines} unreadable lines' if report.bad_lines else ''})"
    )
    print(f"lost            {report.count('lost')}")
    print(f"doubled         {report.count('doubled')}")
    print(f"orphans         {len(run.orphans)}")
    missing, doubled = sum(len(t.missing) for t in report.timers), sum(len(t.doubled) for t in report.timers)
    skipped = [s for t in report.timers for s in t.skipped]
    catch_ups = sum(1 for _, catch_up in skipped if catch_up)
    print(
        f"ticks           {fired} of {expected} expected slots fired; missing {missing}, doubled {doubled}, skipped {len(skipped)} (job or execution still running; {catch_ups} of them catch-ups after a downtime)"
    )
    for t in report.timers:
        name = f"{t.workflow}{'.' + t.job if t.job else ''} every {t.interval:g}s"
        extra = f", {t.off_grid} off the grid" if t.off_grid else ""
        print(
            f"  {name:<28} {t.expected - len(t.missing)}/{t.expected}, missing {len(t.missing)}, doubled {len(t.doubled)}, skipped {len(t.skipped)}{extra}"
        )
        for slot, catch_up in t.missing[:10]:
            print(f"    missing slot {clock(slot)}{' (the catch-up of a downtime)' if catch_up else ''}")
        for slot in t.doubled[:10]:
            print(f"    doubled slot {clock(slot)}")
        for slot, catch_up in t.skipped[:10]:
            still = "the job" if t.job else "an execution"
            print(f"    skipped slot {clock(slot)}{' (the catch-up of a downtime)' if catch_up else ''}: {still} was still running")
    print(f"misrecorded     {report.count('misrecorded')}")
    for finding in report.findings[:40]:
        print(f"  {finding}")
    if len(report.findings) > 40:
        print(f"  ... and {len(report.findings) - 40} more")
    for pid, cmdline in run.orphans[:20]:
        print(f"  orphan pid {pid}: {cmdline[:160]}")
    for life in run.lives:
        if life.end == "crashed" or life.end.startswith("no READY"):
            print(f"  crash: a daemon started {clock(life.started_at)} {life.end} (exit {life.exit_code})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs to send (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random kill moments (default 1)")
    parser.add_argument("--dir", help="where the run's folder goes (default: the system's temporary folder)")
    parser.add_argument("--two-timers", action="store_true", help="add a workflow with a workflow-level and a job-level timer")
    parser.add_argument("--escapes", action="store_true", help="add a workflow whose job leaves a setsid process behind")
    parser.add_argument("--tail", type=float, default=4.0, help="seconds served after the last restart before settling")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (it is always kept when something is found)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="aiflowd-chaos-", dir=args.dir))
    started = time.monotonic()
    run = run_chaos(root, args.kills, args.seed, args.two_timers, args.tail, args.escapes)
    # Each life of the daemon (start, READY, end, how), for a look at what the figures say.
    (root / "lives.json").write_text(json.dumps([dataclasses.asdict(life) for life in run.lives], indent=1))
    if run.aborted:
        print(f"chaos: ABORTED: {run.aborted}; the end of the daemon's log ({root / 'daemon.log'}):")
        print("\n".join((root / "daemon.log").read_text(errors="replace").splitlines()[-15:]))
        if run.db.exists():
            print_report(run, compare(run), time.monotonic() - started)
        print(f"the run's folder (ledger, daemon.log, state): {root}")
        return 1
    report = compare(run)
    print_report(run, report, time.monotonic() - started)
    crashes = sum(1 for life in run.lives if life.end == "crashed" or life.end.startswith("no READY"))
    failed = bool(report.count("lost") or report.count("doubled") or run.orphans or crashes)
    if failed or args.keep:
        print(f"the run's folder (ledger, daemon.log, state): {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
