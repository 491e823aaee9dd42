"""The project's standalone Flink session cluster, one per work folder, safe beside others.

Run through ``scripts/flink-cluster.sh start|stop|status|url`` (which picks the Python with
the ``flink`` extra). Each work folder (``$AIFLOWD_FLINK_WORKDIR``, default ``.flink`` in
the repository) holds one cluster: its config, logs, temporary files, savepoints, a pid
file and a random token. The token is put in the cluster's config, so that the REST
answer on the port can be checked to come from this work folder's JobManager, and in the
TaskManager's resource id, so that the TaskManager can be checked to have registered
with it. ``status`` and ``stop`` act only on processes recorded in the pid file whose
start time still matches (a reused pid is not ours); a cluster on the same port started
by anyone else is reported ("port ... is taken by another process"), never adopted.

Every port the JobManager and TaskManager listen on is set, from a block of seven:

    FLINK_PORT_BASE        first port of the block (default: $FLINK_REST_PORT, else 8081)
    FLINK_REST_PORT        REST API and web UI        (base)
    FLINK_RPC_PORT         JobManager RPC             (base + 1)
    FLINK_BLOB_PORT        blob server                (base + 2)
    FLINK_TM_RPC_PORT      TaskManager RPC            (base + 3)
    FLINK_TM_DATA_PORT     TaskManager data exchange  (base + 4)
    FLINK_JM_METRICS_PORT  JobManager metrics queries (base + 5)
    FLINK_TM_METRICS_PORT  TaskManager metrics queries (base + 6)

``start`` checks that every port is free first, starts the JobManager, starts the
TaskManager once the JobManager holds its RPC port (so that it cannot register with
another cluster's), and waits for a free task slot until a deadline
(``$AIFLOWD_FLINK_START_TIMEOUT`` seconds, default 90). When a JVM exits meanwhile, or
the deadline passes, it stops what it started and says why, quoting the log. It prints
the REST URL on success. ``$AIFLOWD_FLINK_SETTINGS`` (a YAML mapping) adds or overrides
Flink settings.

``$AIFLOWD_FLINK_USER`` runs the JVMs as that user (the script must run as root): a
cluster that shares no folder with whoever submits to it, as a remote one would. That
user may not be able to read the distribution inside the Python environment, so it is
linked (or copied) into ``dist/`` of the work folder, made readable to all; the work
folder's ``conf``, ``log``, ``pid``, ``tmp`` and ``savepoints`` become that user's.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TOKEN_KEY = "aiflowd.cluster-id"  # not "...token": Flink would mask its value as a secret
PID_FILE = "cluster.pid"
ROLES = ("jobmanager", "taskmanager")
STOP_TIMEOUT = 30.0
POLL = 0.2

#: (name, environment variable, offset from the base, Flink setting, the role that binds it)
PORTS = (
    ("rest", "FLINK_REST_PORT", 0, "rest.port", "jobmanager"),
    ("rpc", "FLINK_RPC_PORT", 1, "jobmanager.rpc.port", "jobmanager"),
    ("blob", "FLINK_BLOB_PORT", 2, "blob.server.port", "jobmanager"),
    ("taskmanager-rpc", "FLINK_TM_RPC_PORT", 3, "taskmanager.rpc.port", "taskmanager"),
    ("taskmanager-data", "FLINK_TM_DATA_PORT", 4, "taskmanager.data.port", "taskmanager"),
    ("jobmanager-metrics", "FLINK_JM_METRICS_PORT", 5, "metrics.internal.query-service.port", "jobmanager"),
    ("taskmanager-metrics", "FLINK_TM_METRICS_PORT", 6, "metrics.internal.query-service.port", "taskmanager"),
)


class ClusterError(Exception):
    """A failure the user sees as one line (plus, at most, the log line that explains it)."""


@dataclass
class Cluster:
    """One work folder's cluster: where it lives and which ports it uses."""

    workdir: Path
    ports: dict[str, int]
    start_timeout: float
    extra_settings: dict[str, Any] = field(default_factory=dict)
    #: The user the JVMs run as (``$AIFLOWD_FLINK_USER``); None: the script's own.
    user: str | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ports['rest']}"

    @property
    def pid_file(self) -> Path:
        return self.workdir / PID_FILE

    @property
    def token_file(self) -> Path:
        return self.workdir / "cluster.token"

    def log(self, role: str) -> Path:
        return self.workdir / "log" / f"{role}.out"


def from_environment(env: dict[str, str]) -> Cluster:
    """The cluster the environment describes; ClusterError for a bad port or setting."""

    def number(name: str, value: str) -> int:
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ClusterError(f"${name} must be a port number (1-65535), got {value!r}")
        return int(value)

    base_var = "FLINK_PORT_BASE" if env.get("FLINK_PORT_BASE") else "FLINK_REST_PORT"
    base = number(base_var, env.get(base_var) or "8081")
    ports: dict[str, int] = {}
    for name, var, offset, _, _ in PORTS:
        ports[name] = number(var, env[var]) if env.get(var) else base + offset
        if ports[name] > 65535:
            raise ClusterError(f"the {name} port would be {ports[name]} (base {base} + {offset}); choose a lower ${base_var}")
    taken: dict[int, str] = {}
    for name, port in ports.items():
        if port in taken:
            raise ClusterError(f"the {taken[port]} and {name} ports are both {port}")
        taken[port] = name
    try:
        timeout = float(env.get("AIFLOWD_FLINK_START_TIMEOUT") or 90)
    except ValueError:
        value = env["AIFLOWD_FLINK_START_TIMEOUT"]
        raise ClusterError(f"$AIFLOWD_FLINK_START_TIMEOUT must be a number of seconds, got {value!r}") from None
    extra = yaml.safe_load(env.get("AIFLOWD_FLINK_SETTINGS") or "{}") or {}
    if not isinstance(extra, dict):
        raise ClusterError("$AIFLOWD_FLINK_SETTINGS must be a YAML mapping of Flink settings")
    workdir = Path(env.get("AIFLOWD_FLINK_WORKDIR") or REPO / ".flink").resolve()
    user = env.get("AIFLOWD_FLINK_USER") or None
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise ClusterError(f"$AIFLOWD_FLINK_USER names no user of this host: {user!r}") from None
    return Cluster(workdir, ports, timeout, extra, user)


# --- processes -------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if gone or a zombie): with the pid, its identity."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


@dataclass
class Recorded:
    role: str
    pid: int
    started: int

    def alive(self) -> bool:
        """Still the process this work folder started: same pid, same start time."""
        return start_time(self.pid) == self.started


def read_pids(cluster: Cluster) -> list[Recorded]:
    try:
        lines = cluster.pid_file.read_text().splitlines()
    except FileNotFoundError:
        return []
    recorded = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            recorded.append(Recorded(parts[0], int(parts[1]), int(parts[2])))
    return recorded


def write_pids(cluster: Cluster, recorded: list[Recorded]) -> None:
    temporary = cluster.pid_file.with_suffix(".tmp")
    temporary.write_text("".join(f"{r.role} {r.pid} {r.started}\n" for r in recorded))
    temporary.replace(cluster.pid_file)


def signal_group(pid: int, signum: int) -> None:
    """Signal the process and what it started (each JVM leads a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def end(recorded: list[Recorded], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout``, each process still ours; returns once all are gone."""
    live = [r for r in recorded if r.alive()]
    for r in live:
        signal_group(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(r.alive() for r in live) and time.monotonic() < deadline:
        time.sleep(POLL)
    for r in live:
        if r.alive():
            signal_group(r.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(r.alive() for r in live) and time.monotonic() < deadline:
        time.sleep(0.05)


# --- ports -----------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (any address), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    return inodes


def holds(pid: int, inodes: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
    return False


def holder(port: int) -> str:
    """Who listens on ``port``, as far as this user can see: ' (pid N: command)' or ''."""
    inodes = listening_inodes(port)
    if not inodes:
        return ""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and holds(int(entry), inodes):
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                return f" (pid {entry}: {command[:100]})"
    return ""


# --- REST ------------------------------------------------------------------------------


def get(url: str, timeout: float) -> Any:
    if timeout <= 0:
        raise TimeoutError(url)
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


def rest_token(cluster: Cluster, timeout: float = 2.0) -> str | None:
    """The token in the config of whatever JobManager answers on the REST port (None: no answer)."""
    try:
        entries = get(cluster.url + "/jobmanager/config", timeout)
    except (OSError, ValueError):
        return None
    return next((str(e.get("value")) for e in entries if e.get("key") == TOKEN_KEY), "")


def free_slots(cluster: Cluster, token: str, deadline: float) -> int:
    """Free task slots of our cluster with our TaskManager registered; -1 until so. No call outlasts ``deadline`` (monotonic)."""

    def left() -> float:
        return min(1.0, deadline - time.monotonic())

    try:
        if rest_token(cluster, left()) != token:
            return -1
        managers = get(cluster.url + "/taskmanagers", left()).get("taskmanagers", [])
        if not any(m.get("id") == f"aiflowd-{token}" for m in managers):
            return -1
        return int(get(cluster.url + "/overview", left()).get("slots-available", 0))
    except (OSError, ValueError):
        return -1


# --- start -----------------------------------------------------------------------------


def flink_home() -> Path:
    try:
        import pyflink
    except ImportError:
        raise ClusterError(f"apache-flink is not installed in {sys.executable}; run scripts/setup.sh --flink") from None
    return Path(pyflink.__file__).resolve().parent


def java17() -> str:
    """A JDK 17: Flink's scripts use $JAVA_HOME, else `java` on the PATH, and fail on a newer one."""
    candidates = [os.environ.get("JAVA_HOME", "")]
    java = subprocess.run(["sh", "-c", "command -v java"], capture_output=True, text=True).stdout.strip()
    if java:
        candidates.append(str(Path(java).resolve().parent.parent))
    candidates += sorted(glob.glob("/usr/lib/jvm/*17*"))
    for home in candidates:
        if home and os.access(f"{home}/bin/java", os.X_OK):
            version = subprocess.run([f"{home}/bin/java", "-version"], capture_output=True, text=True).stderr
            if re.search(r'"17\.', version):
                return home
    raise ClusterError("Flink needs Java 17 and none was found (set JAVA_HOME to a JDK 17)")


DIST_PARTS = ("bin", "conf", "lib", "opt", "plugins")


def as_user(cluster: Cluster) -> list[str]:
    """The command prefix that runs a program as the cluster's user (nothing without one)."""
    if cluster.user is None:
        return []
    entry = pwd.getpwnam(cluster.user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]


def shared_distribution(cluster: Cluster, home: Path) -> Path:
    """The distribution as the cluster's user can read it: ``dist/`` of the work folder, made once.

    Hard links where the file system allows (instant, no space), else copies; a marker
    names the source and its jars (name, size, time), so a work folder keeps its copy
    until the distribution changes: moved, or upgraded in place (``pip install -U``).
    """
    dist = cluster.workdir / "dist"
    marker = dist / ".source"
    jars = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in (home / "lib").glob("*.jar"))
    source = "\n".join([str(home), *(f"{name} {size} {mtime}" for name, size, mtime in jars)])
    if marker.exists() and marker.read_text() == source:
        return dist
    shutil.rmtree(dist, ignore_errors=True)
    for part in DIST_PARTS:
        if (home / part).is_dir():
            try:
                shutil.copytree(home / part, dist / part, copy_function=os.link, symlinks=True)
            except OSError:  # another file system: copy
                shutil.rmtree(dist / part, ignore_errors=True)
                shutil.copytree(home / part, dist / part, symlinks=True)
    for path in [dist, *dist.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
        elif path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o004 == 0:
            # A link shares its mode with the original: a copy, opened up, leaves the original as it was.
            path.unlink()
            shutil.copy2(home / path.relative_to(dist), path)
            path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.stat().st_mode & 0o100 else 0))
    marker.write_text(source)
    return dist


def hand_over(cluster: Cluster, home: Path) -> None:
    """Give the cluster's user its folders, and check it can reach them and the distribution."""
    assert cluster.user is not None
    entry = pwd.getpwnam(cluster.user)
    cluster.workdir.chmod(0o755)
    for sub in ("conf", "log", "pid", "tmp", "savepoints"):
        for path in [cluster.workdir / sub, *(cluster.workdir / sub).rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    probe = [*as_user(cluster), "sh", "-c", 'test -w "$1" && test -r "$2"', "-", str(cluster.workdir / "log"), str(home / "lib")]
    if subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True).returncode != 0:
        raise ClusterError(f"user {cluster.user} cannot reach {cluster.workdir} (every folder above it must be open to it: mode 0755)")


def write_config(cluster: Cluster, home: Path, token: str) -> None:
    workdir = cluster.workdir
    for sub in ("conf", "log", "pid", "tmp", "savepoints"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    for pattern in ("log4j*.properties", "logback*.xml"):
        for source in home.glob(f"conf/{pattern}"):
            (workdir / "conf" / source.name).write_bytes(source.read_bytes())
    config = yaml.safe_load((home / "conf" / "config.yaml").read_text())
    settings: dict[str, Any] = {
        "jobmanager.bind-host": HOST,
        "jobmanager.rpc.address": HOST,
        "taskmanager.bind-host": HOST,
        "taskmanager.host": HOST,
        "rest.address": HOST,
        "rest.bind-address": HOST,
        "taskmanager.numberOfTaskSlots": 8,
        "parallelism.default": 1,
        "jobmanager.memory.process.size": "768m",
        "jobmanager.memory.jvm-metaspace.size": "256m",
        "jobmanager.memory.jvm-overhead.min": "64m",
        "jobmanager.memory.off-heap.size": "32m",
        "taskmanager.memory.process.size": "1280m",
        # Every job's classes load in a class loader of their own; 160m of metaspace ran out
        # after about 30 jobs (OutOfMemoryError: Metaspace), a test run submits more.
        "taskmanager.memory.jvm-metaspace.size": "384m",
        "taskmanager.memory.jvm-overhead.min": "64m",
        "taskmanager.memory.framework.heap.size": "64m",
        "taskmanager.memory.framework.off-heap.size": "48m",
        # Python UDF workers talk to the TaskManager over gRPC buffers in direct memory; without
        # room for them a few jobs in, tasks fail with "Cannot reserve ... direct buffer memory".
        "taskmanager.memory.task.off-heap.size": "192m",
        "taskmanager.memory.network.min": "32m",
        "taskmanager.memory.managed.fraction": 0.25,
        # Without it, batch jobs fail on direct memory or hang at this size.
        "taskmanager.memory.framework.off-heap.batch-shuffle.size": "16m",
        "cluster.registration.error-delay": 1000,
        # GET /jobs/<id> is cached this long; 3 s by default would slow every status poll.
        "web.refresh-interval": 500,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "execution.checkpointing.savepoint-dir": f"file://{workdir}/savepoints",
        "io.tmp.dirs": f"{workdir}/tmp",
        "web.tmpdir": f"{workdir}/tmp",
        "web.upload.dir": f"{workdir}/tmp",
        TOKEN_KEY: token,
    }
    for name, _, _, key, role in PORTS:
        if role == "jobmanager":  # the TaskManager's own ports go on its command line
            settings[key] = cluster.ports[name]
    settings.update(cluster.extra_settings)
    for key, value in settings.items():
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    # Keep the shipped JDK 17 --add-opens list; C1 only: the JVMs start faster and these jobs are small.
    opts = config["env"]["java"]["opts"]
    opts["all"] = opts.get("all", "") + " -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    (workdir / "conf" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def why(log: Path) -> str:
    """The line of a JVM's log that says why it ended: the last 'Caused by', else the first error."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    causes = [line for line in lines if line.startswith("Caused by:")]
    if causes:
        return causes[-1]
    errors = [line for line in lines if " ERROR " in line or line.startswith(("[ERROR]", "Error:", "Exception"))]
    return errors[0] if errors else (lines[-1] if lines else "(empty log)")


def start(cluster: Cluster) -> str:
    """Start this work folder's cluster (or find it running); its REST URL."""
    recorded = read_pids(cluster)
    live = [r for r in recorded if r.alive()]
    if live:
        token = cluster.token_file.read_text().strip() if cluster.token_file.exists() else ""
        if {r.role for r in live} == set(ROLES) and free_slots(cluster, token, time.monotonic() + 3.0) >= 0:
            return cluster.url  # already running, and it is ours
        pids = ", ".join(f"{r.role} {r.pid}" for r in live)
        raise ClusterError(f"part of the cluster of {cluster.workdir} runs ({pids}) but it does not answer as a cluster; run stop first")
    older = older_script_jvms(cluster)
    if older:
        raise ClusterError(f"a cluster an older version of this script started runs ({_pids(older)}); run stop first")
    for name, port in cluster.ports.items():
        if not port_free(port):
            raise ClusterError(f"port {port} ({name}) is taken by another process{holder(port)}; choose other ports (FLINK_PORT_BASE)")
    home = flink_home()
    token = secrets.token_hex(8)
    cluster.workdir.mkdir(parents=True, exist_ok=True)
    if cluster.user is not None:
        if os.geteuid() != 0:
            raise ClusterError(f"$AIFLOWD_FLINK_USER ({cluster.user}) needs the script to run as root")
        home = shared_distribution(cluster, home)
    write_config(cluster, home, token)
    if cluster.user is not None:
        hand_over(cluster, home)
    cluster.token_file.write_text(token + "\n")
    env = dict(os.environ)
    env.update(
        JAVA_HOME=java17(),
        FLINK_CONF_DIR=str(cluster.workdir / "conf"),
        FLINK_LOG_DIR=str(cluster.workdir / "log"),
        FLINK_PID_DIR=str(cluster.workdir / "pid"),
        FLINK_IDENT_STRING="aiflowd",
    )
    started: list[tuple[Recorded, subprocess.Popen[bytes]]] = []

    def launch(role: str, args: list[str]) -> None:
        log = cluster.log(role)
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*as_user(cluster), str(home / "bin" / f"{role}.sh"), "start-foreground", *args],
                env=env,
                cwd=cluster.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        begun = start_time(process.pid)
        started.append((Recorded(role, process.pid, begun if begun is not None else -1), process))
        write_pids(cluster, [r for r, _ in started])

    deadline = time.monotonic() + cluster.start_timeout
    done = False
    try:
        launch("jobmanager", [])
        tm_args = [f"-D{key}={cluster.ports[name]}" for name, _, _, key, role in PORTS if role == "taskmanager"]
        tm_args.append(f"-Dtaskmanager.resource-id=aiflowd-{token}")
        rpc_inodes: set[str] = set()
        while True:
            for recorded_process, process in started:
                if process.poll() is not None:
                    log = cluster.log(recorded_process.role)
                    raise ClusterError(
                        f"the {recorded_process.role} exited (status {process.returncode}) while starting: {why(log)}\n  (its log: {log})"
                    )
            if len(started) == 1:
                # The TaskManager registers with whatever answers on the RPC port: only once it is our JobManager.
                rpc_inodes = rpc_inodes or listening_inodes(cluster.ports["rpc"])
                if rpc_inodes and holds(started[0][0].pid, rpc_inodes):
                    launch("taskmanager", tm_args)
                else:
                    rpc_inodes = set()
            elif free_slots(cluster, token, deadline) > 0:
                done = True
                return cluster.url
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"the cluster did not offer a task slot within {cluster.start_timeout:g} s; see {cluster.workdir / 'log'}"
                )
            time.sleep(POLL)
    finally:
        if not done:
            end([r for r, _ in started], 10.0)
            for _, process in started:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=1)
            cluster.pid_file.unlink(missing_ok=True)


# --- stop, status ----------------------------------------------------------------------


def _pids(recorded: list[Recorded]) -> str:
    return ", ".join(f"{r.role} {r.pid}" for r in recorded)


def older_script_jvms(cluster: Cluster) -> list[Recorded]:
    """JVMs of this work folder listed in the pid files of Flink's own scripts, as an older version of this script left them.

    Each must still run with this work folder's config folder on its command line: a pid
    reused by another program is not touched.
    """
    marker = f"--configDir\0{cluster.workdir / 'conf'}\0".encode()
    found = []
    for path in sorted((cluster.workdir / "pid").glob("flink-aiflowd-*.pid")):
        role = "jobmanager" if "standalonesession" in path.name else "taskmanager"
        for word in path.read_text().split():
            begun = start_time(int(word)) if word.isdigit() else None
            try:
                command = Path(f"/proc/{word}/cmdline").read_bytes() + b"\0"
            except OSError:
                continue
            if begun is not None and marker in command:
                found.append(Recorded(role, int(word), begun))
    return found


def stop(cluster: Cluster) -> str:
    recorded = read_pids(cluster)
    live = [r for r in recorded if r.alive()]
    live += [r for r in older_script_jvms(cluster) if r.pid not in {known.pid for known in live}]
    end(live, STOP_TIMEOUT)
    cluster.pid_file.unlink(missing_ok=True)
    if not live:
        return f"no cluster of {cluster.workdir} runs"
    return f"stopped the cluster of {cluster.workdir} ({', '.join(f'{r.role} {r.pid}' for r in live)})"


def status(cluster: Cluster) -> tuple[int, str]:
    """(exit status, line): 0 running and ours, 1 broken or the port is someone else's, 3 not running."""
    live = [r for r in read_pids(cluster) if r.alive()]
    if live:
        pids = ", ".join(f"{r.role} {r.pid}" for r in live)
        token = cluster.token_file.read_text().strip() if cluster.token_file.exists() else ""
        missing = [role for role in ROLES if role not in {r.role for r in live}]
        if missing:
            return 1, f"broken: the {' and '.join(missing)} of {cluster.workdir} is gone ({pids} still run); run stop"
        free = free_slots(cluster, token, time.monotonic() + 3.0)
        if free < 0:
            answer = rest_token(cluster)
            what = "does not answer" if answer is None else "answers for another cluster"
            return 1, f"broken: {cluster.url} {what}, though this work folder's JVMs run ({pids})"
        return 0, f"running at {cluster.url}, {free} task slots free ({pids})"
    older = older_script_jvms(cluster)
    if older:
        return 1, f"a cluster an older version of this script started runs ({_pids(older)}); run stop, then start"
    if not port_free(cluster.ports["rest"]) or rest_token(cluster, 1.0) is not None:
        port = cluster.ports["rest"]
        return 1, f"port {port} is taken by another process{holder(port)}: not the cluster of {cluster.workdir}"
    return 3, f"not running ({cluster.url})"


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command not in ("start", "stop", "status", "url"):
        print("usage: scripts/flink-cluster.sh start|stop|status|url", file=sys.stderr)
        return 2
    # SIGTERM ends a start like Ctrl-C: through the cleanup that stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cluster = from_environment(dict(os.environ))
        if command == "url":
            print(cluster.url)
            return 0
        if command == "status":
            code, line = status(cluster)
            print(line)
            return code
        cluster.workdir.mkdir(parents=True, exist_ok=True)
        with open(cluster.workdir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one start or stop of a work folder at a time
            print(start(cluster) if command == "start" else stop(cluster))
        return 0
    except ClusterError as err:
        print(f"flink-cluster: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
