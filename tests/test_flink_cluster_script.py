"""scripts/flink-cluster.sh beside other clusters: own ports, own pid file, never another's cluster.

The cluster tests start real JobManagers and TaskManagers on port blocks of their own
(never the default 8081), each in a work folder below ``tmp_path``; a fixture stops them
all, and checks that no JVM of those folders is left, whatever the test did.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from .conftest import REPO, wait_for

SCRIPT = REPO / "scripts" / "flink-cluster.sh"


def cluster_module() -> ModuleType:
    """scripts/flink_cluster.py, imported (it is a script, not part of the package)."""
    if "flink_cluster" in sys.modules:
        return sys.modules["flink_cluster"]
    spec = importlib.util.spec_from_file_location("flink_cluster", REPO / "scripts" / "flink_cluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["flink_cluster"] = module
    spec.loader.exec_module(module)
    return module


def _outside_ephemeral_ports(size: int) -> range:
    """Bases whose block lies below the kernel's ephemeral ports (or above them, when none fit below).

    A block in that range can be taken between a cluster's stop and its next start by any
    outgoing connection on the machine, which the tests restarting a cluster then trip on.
    """
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - size > 20000:
        return range(20000, low - size, 10)
    return range(high + 10, 65535 - size, 10)


def free_port_block(size: int = 7) -> int:
    """A base port with ``size`` free ports from it, away from Flink's defaults and the ephemeral ports."""
    bases = _outside_ephemeral_ports(size)
    for _ in range(200):
        base = random.choice(bases)
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError("no block of free ports found")


class Clusters:
    """Work folders for clusters, each with its own port block; ``close`` stops every one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdirs: list[Path] = []

    def env(self, workdir: Path, base: int, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_")}
        env.update(AIFLOWD_PYTHON=sys.executable, AIFLOWD_FLINK_WORKDIR=str(workdir), FLINK_PORT_BASE=str(base), **extra)
        return env

    def workdir(self, name: str) -> Path:
        path = self.root / name
        self.workdirs.append(path)
        return path

    def run(self, command: str, workdir: Path, base: int, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), command], env=self.env(workdir, base, **extra), capture_output=True, text=True, timeout=150)

    def close(self) -> None:
        for workdir in self.workdirs:
            subprocess.run([str(SCRIPT), "stop"], env=self.env(workdir, 1), capture_output=True, timeout=60)
        assert jvms_of(self.workdirs) == []


def jvms_of(workdirs: list[Path]) -> list[int]:
    """Live processes started with the config folder of one of these work folders."""
    markers = [str(w / "conf").encode() for w in workdirs]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(m in command for m in markers):
            found.append(int(entry))
    return found


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Clusters]:
    managed = Clusters(tmp_path)
    try:
        yield managed
    finally:
        managed.close()


@pytest.fixture(scope="module")
def jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/flink/WordCount.java, compiled against the distribution's lib/."""
    import pyflink

    lib = Path(pyflink.__file__).parent / "lib"
    out = tmp_path_factory.mktemp("jar")
    javac = shutil.which("javac")
    assert javac, "javac (a JDK 17) is needed to build the test job"
    subprocess.run([javac, "-d", str(out / "classes"), "-cp", f"{lib}/*", str(REPO / "tests" / "flink" / "WordCount.java")], check=True)
    subprocess.run(["jar", "cf", str(out / "wordcount.jar"), "-C", str(out / "classes"), "."], check=True)
    return out / "wordcount.jar"


def run_jar(url: str, jar: Path, out: Path, count: int) -> str:
    """Upload and run the word count on the cluster at ``url``; its job id once FINISHED."""
    with httpx.Client(base_url=url, timeout=30) as client:
        with jar.open("rb") as fh:
            uploaded = client.post("/jars/upload", files={"jarfile": (jar.name, fh, "application/x-java-archive")}).json()
        jar_id = uploaded["filename"].rsplit("/", 1)[-1]
        body = {"entryClass": "org.example.WordCount", "programArgsList": [str(out), str(count)]}
        job_id = str(client.post(f"/jars/{jar_id}/run", json=body).json()["jobid"])
        wait_for(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "FINISHED", timeout=60, interval=0.2)
    return job_id


def job_ids(url: str) -> set[str]:
    return {j["jid"] for j in httpx.get(url + "/jobs/overview", timeout=10).json()["jobs"]}


@pytest.mark.flink
def test_two_clusters_side_by_side_and_a_foreign_one_never_adopted(clusters: Clusters, jar: Path, tmp_path: Path) -> None:
    base_a = free_port_block()
    base_b = free_port_block()
    while abs(base_a - base_b) < 7:
        base_b = free_port_block()
    a, b = clusters.workdir("a"), clusters.workdir("b")
    starting = [
        subprocess.Popen([str(SCRIPT), "start"], env=clusters.env(w, base), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w, base in ((a, base_a), (b, base_b))
    ]
    outputs = [p.communicate(timeout=150) for p in starting]
    assert [p.returncode for p in starting] == [0, 0], outputs
    url_a, url_b = (out.strip() for out, _ in outputs)
    assert (url_a, url_b) == (f"http://127.0.0.1:{base_a}", f"http://127.0.0.1:{base_b}")
    pids_a = [int(line.split()[1]) for line in (a / "cluster.pid").read_text().splitlines()]
    assert len(pids_a) == 2 and sorted(jvms_of([a])) == sorted(pids_a)

    job_a = run_jar(url_a, jar, tmp_path / "out_a", 3)
    job_b = run_jar(url_b, jar, tmp_path / "out_b", 4)
    assert sorted(int(x) for x in (tmp_path / "out_a").read_text().split()) == [1, 2, 3]
    assert sorted(int(x) for x in (tmp_path / "out_b").read_text().split()) == [1, 2, 3, 4]
    assert job_ids(url_a) == {job_a} and job_ids(url_b) == {job_b}
    for url, workdir in ((url_a, a), (url_b, b)):  # each TaskManager registered with its own JobManager, and only it
        token = (workdir / "cluster.token").read_text().strip()
        assert [m["id"] for m in httpx.get(url + "/taskmanagers", timeout=10).json()["taskmanagers"]] == [f"aiflowd-{token}"]

    # A third work folder on a's ports: a's cluster is someone else's to it.
    c = clusters.workdir("c")
    status = clusters.run("status", c, base_a)
    assert status.returncode == 1
    assert status.stdout.startswith(f"port {base_a} is taken by another process") and f"not the cluster of {c}" in status.stdout
    started = clusters.run("start", c, base_a)
    assert started.returncode == 1 and f"port {base_a} (rest) is taken by another process" in started.stderr
    stopped = clusters.run("stop", c, base_a)
    assert (stopped.returncode, stopped.stdout.strip()) == (0, f"no cluster of {c} runs")
    assert clusters.run("status", a, base_a).returncode == 0

    assert clusters.run("status", a, base_a).stdout.startswith(f"running at {url_a}, 8 task slots free")
    stopped = clusters.run("stop", a, base_a)
    assert stopped.returncode == 0 and stopped.stdout.startswith(f"stopped the cluster of {a}")
    assert jvms_of([a]) == [] and not (a / "cluster.pid").exists()
    assert clusters.run("status", a, base_a).returncode == 3
    status_b = clusters.run("status", b, base_b)
    assert status_b.returncode == 0, status_b.stdout + status_b.stderr
    assert job_ids(url_b) == {job_b}
    assert clusters.run("stop", b, base_b).returncode == 0
    assert jvms_of([b]) == []


@pytest.mark.flink
def test_a_jvm_that_dies_ends_the_start_with_its_reason_and_nothing_left(clusters: Clusters) -> None:
    workdir = clusters.workdir("dies")
    result = clusters.run("start", workdir, free_port_block(), AIFLOWD_FLINK_SETTINGS="{high-availability.type: no.such.Factory}")
    assert result.returncode == 1
    first, second = result.stderr.splitlines()[:2]
    assert (
        first
        == "flink-cluster: the jobmanager exited (status 1) while starting: Caused by: java.lang.ClassNotFoundException: no.such.Factory"
    )
    assert second.strip() == f"(its log: {workdir}/log/jobmanager.out)"
    assert jvms_of([workdir]) == [] and not (workdir / "cluster.pid").exists()


@pytest.mark.flink
def test_start_gives_up_at_its_deadline_and_stops_what_it_started(clusters: Clusters) -> None:
    workdir = clusters.workdir("slow")
    result = clusters.run("start", workdir, free_port_block(), AIFLOWD_FLINK_START_TIMEOUT="0")
    assert result.returncode == 1
    assert result.stderr.strip() == f"flink-cluster: the cluster did not offer a task slot within 0 s; see {workdir}/log"
    assert (workdir / "log" / "jobmanager.out").exists()  # it did start one
    assert jvms_of([workdir]) == [] and not (workdir / "cluster.pid").exists()


def test_ports_come_from_one_block_each_settable_alone() -> None:
    module = cluster_module()
    assert module.from_environment({}).ports == {
        "rest": 8081,
        "rpc": 8082,
        "blob": 8083,
        "taskmanager-rpc": 8084,
        "taskmanager-data": 8085,
        "jobmanager-metrics": 8086,
        "taskmanager-metrics": 8087,
    }
    assert module.from_environment({"FLINK_REST_PORT": "9000"}).url == "http://127.0.0.1:9000"
    assert set(module.from_environment({"FLINK_REST_PORT": "9000"}).ports.values()) == set(range(9000, 9007))
    ports = module.from_environment({"FLINK_PORT_BASE": "9100", "FLINK_REST_PORT": "9200", "FLINK_RPC_PORT": "9300"}).ports
    assert (ports["rest"], ports["rpc"], ports["blob"]) == (9200, 9300, 9102)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLINK_REST_PORT": "http"}, "$FLINK_REST_PORT must be a port number (1-65535), got 'http'"),
        ({"FLINK_PORT_BASE": "65530"}, "the taskmanager-metrics port would be 65536 (base 65530 + 6); choose a lower $FLINK_PORT_BASE"),
        ({"FLINK_PORT_BASE": "9000", "FLINK_RPC_PORT": "9000"}, "the rest and rpc ports are both 9000"),
        ({"AIFLOWD_FLINK_START_TIMEOUT": "soon"}, "$AIFLOWD_FLINK_START_TIMEOUT must be a number of seconds, got 'soon'"),
        ({"AIFLOWD_FLINK_SETTINGS": "[1]"}, "$AIFLOWD_FLINK_SETTINGS must be a YAML mapping of Flink settings"),
    ],
)
def test_bad_settings_are_one_clear_line(env: dict[str, str], message: str) -> None:
    module = cluster_module()
    with pytest.raises(module.ClusterError) as info:
        module.from_environment(env)
    assert str(info.value).startswith(message)


def test_status_without_a_cluster_or_anyone_on_the_port(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_")}
    base = free_port_block()
    env.update(AIFLOWD_PYTHON=sys.executable, AIFLOWD_FLINK_WORKDIR=str(tmp_path / "w"), FLINK_PORT_BASE=str(base))
    result = subprocess.run([str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout.strip()) == (3, f"not running (http://127.0.0.1:{base})")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base))
        squatter.listen()
        result = subprocess.run([str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stdout.startswith(f"port {base} is taken by another process (pid {os.getpid()}: ")


def test_start_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_")}
    base = free_port_block()
    env.update(AIFLOWD_PYTHON=sys.executable, AIFLOWD_FLINK_WORKDIR=str(tmp_path / "w"), FLINK_PORT_BASE=str(base))
    with socket.socket() as squatter:  # on the JobManager's RPC port, where another cluster's would be
        squatter.bind(("127.0.0.1", base + 1))
        squatter.listen()
        result = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith(f"flink-cluster: port {base + 1} (rpc) is taken by another process (pid {os.getpid()}: ")
    assert not (tmp_path / "w" / "log").exists()  # nothing was started


def test_an_unknown_cluster_user_is_one_clear_line() -> None:
    module = cluster_module()
    with pytest.raises(module.ClusterError) as info:
        module.from_environment({"AIFLOWD_FLINK_USER": "no-such-user-here"})
    assert str(info.value) == "$AIFLOWD_FLINK_USER names no user of this host: 'no-such-user-here'"


def test_the_distribution_for_another_user_is_linked_once_and_the_original_left_as_it_was(tmp_path: Path) -> None:
    module = cluster_module()
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    (home / "lib").mkdir()
    (home / "python_sources").mkdir()  # not part of what a cluster runs from
    (home / "bin" / "jobmanager.sh").write_text("#!/bin/sh\n")
    (home / "bin" / "jobmanager.sh").chmod(0o755)
    (home / "lib" / "flink-dist.jar").write_text("jar")
    (home / "lib" / "secret.jar").write_text("private")
    (home / "lib" / "secret.jar").chmod(0o600)
    cluster = module.from_environment({"AIFLOWD_FLINK_WORKDIR": str(tmp_path / "w")})
    dist = module.shared_distribution(cluster, home)
    assert sorted(p.name for p in dist.iterdir() if not p.name.startswith(".")) == ["bin", "lib"]
    assert (dist / "lib" / "flink-dist.jar").stat().st_ino == (home / "lib" / "flink-dist.jar").stat().st_ino  # a link
    assert (dist / "lib" / "secret.jar").stat().st_mode & 0o777 == 0o644  # a copy, opened up ...
    assert (home / "lib" / "secret.jar").stat().st_mode & 0o777 == 0o600  # ... the original as it was
    assert (dist / "bin" / "jobmanager.sh").stat().st_mode & 0o111
    assert module.shared_distribution(cluster, home) == dist  # the same source: kept, not made again
    assert (dist / "lib" / "flink-dist.jar").stat().st_ino == (home / "lib" / "flink-dist.jar").stat().st_ino
    # Upgraded in place (pip replaces the files): the copy is made again from the new ones.
    (home / "lib" / "flink-dist.jar").unlink()
    (home / "lib" / "flink-dist.jar").write_text("jar, next release")
    assert module.shared_distribution(cluster, home) == dist
    assert (dist / "lib" / "flink-dist.jar").read_text() == "jar, next release"


@pytest.mark.flink
def test_a_cluster_user_that_cannot_reach_the_work_folder_is_told_so_before_any_jvm_starts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("running a cluster as another user needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        import pwd

        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this host")
    hidden = tmp_path / "private"  # pytest's temporary folders are root's alone (0700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_")}
    env.update(
        AIFLOWD_PYTHON=sys.executable,
        AIFLOWD_FLINK_WORKDIR=str(hidden / "w"),
        FLINK_PORT_BASE=str(free_port_block()),
        AIFLOWD_FLINK_USER="nobody",
    )
    result = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"flink-cluster: user nobody cannot reach {hidden / 'w'} (every folder above it must be open to it: mode 0755)"
    )
    assert not (hidden / "w" / "log" / "jobmanager.out").exists()  # nothing was started
