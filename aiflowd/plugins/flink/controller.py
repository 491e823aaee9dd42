"""How Flink jobs run: on a cluster through the REST API or the ``flink`` CLI, or locally.

aiflowd chooses each Flink job's id itself, derived from the job execution it belongs to
(which is stored before anything is submitted): the REST run request carries it as
``jobId``, the CLI as ``-D$internal.pipeline.job-id``. A daemon that died between
submitting and recording therefore finds the job again by asking the cluster for that id,
and never submits it twice. Status comes from ``/jobs/<id>/execution-result`` (not cached)
and ``/jobs/<id>``; a failed job's root cause goes into the job's log.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx

from aiflowd.clock import Clock, SystemClock
from aiflowd.controllers.process_group import ProcessGroup
from aiflowd.controllers.subprocess import Command, SubprocessController, SubprocessJobHandle, aiflowd_import_path, job_environment
from aiflowd.model import Status
from aiflowd.plugin_interface import UNREACHABLE, ConditionReporter, Job, JobController, JobHandle, JobRuntimeEnv
from aiflowd.plugins.flink.job import FlinkJob, FlinkPythonJob
from aiflowd.runners.flink_job import JOBS_FILE, derived_job_id

DEFAULT_REST_URL = "http://127.0.0.1:8081"
#: How long a cluster that does not answer may stay so before its jobs are FAILED (``flink.unreachable_timeout``).
DEFAULT_UNREACHABLE_TIMEOUT = 600.0


class FlinkClusterUnreachable(RuntimeError):
    """The cluster did not answer for longer than ``flink.unreachable_timeout``: the job's fate is unknown."""


class FlinkJobUnknown(RuntimeError):
    """The cluster answers but does not know the job (restarted without it, as a standalone one is): its fate is unknown."""


POLL_INTERVAL = 0.2
#: How many poll intervals a stop with savepoint waits for a job's tasks to be deployed.
SAVEPOINT_TRIES = 150
HTTP_TIMEOUT = 30.0
RUNNING_STATES = {"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING", "RECONCILING", "SUSPENDED"}
_JOB_ID = re.compile(r"JobID\s+([0-9a-f]{32})")


def flink_settings(env: JobRuntimeEnv) -> dict[str, Any]:
    return dict(env.settings.get("flink") or {})


def flink_home(env: JobRuntimeEnv) -> str:
    """The Flink distribution: the config's ``flink.flink_home``, else the one inside apache-flink."""
    configured = flink_settings(env).get("flink_home")
    if configured:
        return str(configured)
    spec = importlib.util.find_spec("pyflink")
    if spec is None or spec.origin is None:
        raise RuntimeError("no Flink distribution: install aiflowd's 'flink' extra or set flink.flink_home")
    return os.path.dirname(spec.origin)


def java_home(env: JobRuntimeEnv) -> str:
    """A JDK 17 (Flink's scripts fail on newer ones): the config's, $JAVA_HOME's, PATH's, or a system one."""
    configured = flink_settings(env).get("java_home")
    candidates = [configured, os.environ.get("JAVA_HOME")]
    java = _which("java")
    if java:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(java))))
    if os.path.isdir("/usr/lib/jvm"):
        candidates += sorted(os.path.join("/usr/lib/jvm", d) for d in os.listdir("/usr/lib/jvm") if "17" in d)
    for candidate in candidates:
        if candidate and _is_java17(candidate):
            return str(candidate)
    raise RuntimeError("Flink needs Java 17 and none was found (set flink.java_home or JAVA_HOME to a JDK 17)")


def _which(name: str) -> str | None:
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None


_java17_cache: dict[str, bool] = {}


def _is_java17(home: str) -> bool:
    if home not in _java17_cache:
        java = os.path.join(home, "bin", "java")
        try:
            out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=10).stderr
            _java17_cache[home] = '"17.' in out.splitlines()[0] if out else False
        except (OSError, subprocess.TimeoutExpired, IndexError):
            _java17_cache[home] = False
    return _java17_cache[home]


def flink_job_id(env: JobRuntimeEnv) -> str:
    """The Flink job id of a job execution: the same for the same execution, after any restart."""
    info = env.job_execution_info
    seed = f"{env.settings.get('instance_id', '')}/{info.workflow_name}/{info.job_execution_id}"
    return hashlib.md5(seed.encode()).hexdigest()


def rest_url(env: JobRuntimeEnv) -> str:
    return str(flink_settings(env).get("rest_url", DEFAULT_REST_URL)).rstrip("/")


def unreachable_timeout(env: JobRuntimeEnv) -> float:
    return float(flink_settings(env).get("unreachable_timeout", DEFAULT_UNREACHABLE_TIMEOUT))


class FlinkJobHandle(JobHandle):
    """A job on a Flink cluster, known by the id aiflowd gave it."""

    def __init__(self, job: Job, job_execution: Any, job_id: str, url: str, submit_via: str, log_path: str) -> None:
        super().__init__(job, job_execution)
        self.job_id = job_id
        self.rest_url = url
        self.submit_via = submit_via
        self.log_path = log_path
        self.stopped = False
        self.savepoint_path: str | None = None
        #: Each Flink job's savepoint after a stop with savepoint, in job_ids' order (None: none taken).
        self.savepoint_paths: list[str | None] = []
        self.final: dict[str, Any] | None = None
        #: Every Flink job of this aiflowd job (a Python or SQL program may start several); job_id is the first.
        self.job_ids: list[str] = [job_id]
        self.finals: dict[str, dict[str, Any]] = {}
        #: The last state the cluster's overview gave for each job (its changes go into the log).
        self.states: dict[str, str] = {}
        #: When the cluster stopped answering (epoch seconds), None while it answers.
        self.unreachable_since: float | None = None
        self.unreachable_timeout = DEFAULT_UNREACHABLE_TIMEOUT
        #: Left running across a daemon stop (``flink.on_daemon_stop: keep``), re-adopted at the next start.
        self.keep_on_daemon_stop = True
        #: Set by the engine when the daemon stops and keeps this job: a stop then leaves it running.
        self.kept = False
        #: The job's ``env.report_condition``: where UNREACHABLE (and its end) is told to the daemon.
        self._reporter: ConditionReporter | None = None
        #: The condition last told to the daemon ("?": none yet, so the first answer tells it is well).
        self._told: str | None = "?"

    def report(self, condition: str | None, detail: str, subject: str, since: float | None) -> None:
        """Tell the daemon the job's condition (UNREACHABLE, or None once the cluster answers again)."""
        self._told = condition
        if self._reporter is not None:
            self._reporter(condition, detail, subject, since)


class LocalFlinkController(SubprocessController):
    """``run_mode: local``: a MiniCluster inside the client process, no cluster needed.

    A jar runs with ``flink run -t local``; Python and SQL nodes with the PyFlink runner.
    """

    def command(self, job: Job, env: JobRuntimeEnv) -> Command:
        if isinstance(job, FlinkPythonJob):
            spec = write_pyflink_spec(job, env, "local", flink_job_id(env))
            python = job.python_executable or sys.executable
            extra = dict(job.env)
            extra.update(aiflowd_import_path(python, env.working_dir, extra.get("PYTHONPATH")))
            extra.update({"JAVA_HOME": java_home(env), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
            return Command([python, "-m", "aiflowd.runners.flink_job", spec], extra)
        home = flink_home(env)
        argv = [os.path.join(home, "bin", "flink"), "run", "-t", "local", "-Drest.bind-port=0"]
        argv += _run_options(job)
        extra = dict(_flink_job(job).env)
        extra.update({"JAVA_HOME": java_home(env), "FLINK_LOG_DIR": env.working_dir, "FLINK_IDENT_STRING": "aiflowd"})
        return Command(argv, extra)


PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "runners", "flink_job.py")


def write_pyflink_spec(job: FlinkPythonJob, env: JobRuntimeEnv, mode: str, job_id: str, only_job: int | None = None) -> str:
    """The runner's instructions, in the execution's working folder (the JobManager reads it there for REST with shared files).

    ``mode``: ``local`` (a MiniCluster in the runner's process), ``remote`` (the runner
    submits to ``flink.rest_url`` over REST from the daemon's side) or ``cluster`` (under
    ``flink run -py``, or Flink's Python driver in the JobManager, which chose the cluster).
    ``only_job``: the index of the one Flink job this run of the program submits (the
    JobManager's run request runs one job per program run); None: every job.
    """
    os.makedirs(env.working_dir, exist_ok=True)
    if only_job in (None, 0):  # what an earlier attempt's runner left says nothing about this one
        for name in os.listdir(env.working_dir):
            if (name.startswith("flink-jobs") and name.endswith(".json")) or name == "runner-error.txt":
                os.unlink(os.path.join(env.working_dir, name))
    info = env.job_execution_info
    spec = {
        "mode": mode,
        "job_id": job_id,
        "name": f"{info.workflow_name}.{info.job_name}",
        "parallelism": job.run_settings.get("parallelism", job.parallelism),
        "flink_config": job.run_settings.get("flink_config", {}),
        "python_files": _python_files(job, env),
        "execution_mode": job.execution_mode,
        "execution_mode_given": getattr(job, "execution_mode_given", True),
        "workflow_dir": env.workflow_dir,
        "working_dir": env.working_dir,
        "job_config": {"job_name": job.job_name, "job_type": job.job_type, "properties": job.job_config.properties},
        "job_execution_info": {
            "workflow_name": info.workflow_name,
            "job_name": info.job_name,
            "workflow_execution_id": info.workflow_execution_id,
            "job_execution_id": info.job_execution_id,
            "attempt": info.attempt,
        },
        "nodes": job.nodes,
        "only_job": only_job,
    }
    if mode == "remote":  # the runner submits from the daemon's host over REST (see FlinkRestController.submit)
        spec["rest_url"] = rest_url(env)
        spec["savepoints"] = savepoints_to_restore(job, env)
        spec["allow_non_restored_state"] = bool(job.run_settings.get("allow_non_restored_state"))
    elif mode == "cluster" and only_job is None and env.restore_savepoints:  # flink run -py: one savepoint per job
        spec["savepoints"] = list(env.restore_savepoints)
    path = os.path.join(env.working_dir, "flink-job.json" if not only_job else f"flink-job-{only_job}.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    return path


def savepoints_to_restore(job: FlinkJob, env: JobRuntimeEnv) -> list[str | None]:
    """Each Flink job's savepoint, in the order the program starts them: the one a stop left for each, else ``-s`` for the first."""
    if env.restore_savepoints:
        return list(env.restore_savepoints)
    first = env.restore_savepoint or job.run_settings.get("savepoint_path")
    return [first] if first else []


def _python_files(job: FlinkPythonJob, env: JobRuntimeEnv) -> str:
    """``-pyfs``: the workflow folder (its modules reach the UDF workers) and the files ``-pyfs`` in flink_run_args names."""
    extra = [f if os.path.isabs(f) or "://" in f else os.path.join(env.workflow_dir, f) for f in job.run_settings.get("python_files", [])]
    return ",".join([env.workflow_dir, *extra])


def _python_options(job: FlinkPythonJob, env: JobRuntimeEnv, spec: str) -> list[str]:
    python = job.python_executable or sys.executable
    options = ["-py", RUNNER, "-pyfs", env.workflow_dir, "-pyexec", python, "-pyclientexec", python]
    if job.parallelism:
        options = ["-p", str(job.parallelism), *options]
    return [*job.flink_run_args, *options, spec]


def _run_options(job: Any) -> list[str]:
    options: list[str] = []
    if job.parallelism:
        options += ["-p", str(job.parallelism)]
    options += job.flink_run_args
    if job.entry_class:
        options += ["-c", job.entry_class]
    return [*options, job.jar, *job.args]


class _Overview:
    """A cluster's last ``/jobs/overview``: job id -> state, when it was fetched (or failed), how many calls so far."""

    def __init__(self) -> None:
        self.lock: anyio.Lock | None = None
        self.fetched_at = float("-inf")
        self.states: dict[str, str] = {}
        self.calls = 0
        #: Why the last call failed (the cluster did not answer), None when it answered.
        self.failure: str | None = None


class _SharedClient:
    """An HTTP client the handles tracking jobs on one cluster share, and how many use it now."""

    def __init__(self, url: str) -> None:
        self.client = httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT)
        self.users = 0


#: The shared clients of this event loop, by cluster URL (a client belongs to the loop it was made in).
_CLIENTS: anyio.lowlevel.RunVar[dict[str, _SharedClient]] = anyio.lowlevel.RunVar("aiflowd_flink_clients")


@contextlib.asynccontextmanager
async def _tracking_client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """One HTTP client per cluster for all the jobs tracked there, closed when the last one ends.

    A client each cost about 1.5 MB (its TLS context, made even for plain HTTP) and a new
    connection per job: with 100 jobs tracked, the daemon's memory tripled.
    """
    try:
        clients = _CLIENTS.get()
    except LookupError:
        clients = {}
        _CLIENTS.set(clients)
    shared = clients.get(url)
    if shared is None:
        shared = clients[url] = _SharedClient(url)
    shared.users += 1
    try:
        yield shared.client
    finally:
        shared.users -= 1
        if shared.users == 0:
            if clients.get(url) is shared:
                del clients[url]
            with anyio.CancelScope(shield=True):
                await shared.client.aclose()


class FlinkRestController:
    """The Flink REST API: jar upload (cached by content), run, state, cancel, stop with savepoint."""

    def __init__(self, clock: Clock | None = None) -> None:
        #: When a cluster stopped answering and whether ``flink.unreachable_timeout`` has passed (tests move it).
        self.clock: Clock = clock or SystemClock()
        self._uploaded: dict[tuple[str, str], str] = {}  # (rest url, jar hash) -> jar id
        self._overviews: dict[str, _Overview] = {}  # rest url -> its last job overview
        #: rest url -> held over each Python-driver run request to that cluster (see ``_submit_in_jobmanager``).
        self._driver_turns: dict[str, anyio.Lock] = {}

    async def submit(self, job: Any, env: JobRuntimeEnv, handle: FlinkJobHandle) -> None:
        """A jar through the run request; Python and SQL in the JobManager, or compiled here (``flink.shared_files: false``)."""
        if not isinstance(job, FlinkPythonJob):
            await self._run(job.jar, job.entry_class, job.args, job, env, handle, handle.job_id)
            handle.job_ids = [handle.job_id]
            return
        if flink_settings(env).get("shared_files", True):
            await self._submit_in_jobmanager(job, env, handle)
        else:
            await self._submit_from_here(job, env, handle)

    async def _submit_in_jobmanager(self, job: FlinkPythonJob, env: JobRuntimeEnv, handle: FlinkJobHandle) -> None:
        """The runner under Flink's Python driver, in the JobManager, which reads the spec and the workflow folder.

        The run request runs one job per program run, so a program that starts several
        Flink jobs is run once per job: the first run counts them (in the working folder),
        each further run submits the next one.

        One run request at a time per cluster: the JobManager runs the Python driver of
        concurrent requests against shared state, and all but one fail ("No jobs included
        in application", "Failed to execute sql"). A request ends once its job is
        submitted, so the wait is the other programs' compile, not their run.
        """
        jar = _python_driver_jar(env)
        turn = self._driver_turns.setdefault(handle.rest_url, anyio.Lock())
        index = 0
        while True:
            spec = write_pyflink_spec(job, env, "cluster", handle.job_id, only_job=index)
            job_id = derived_job_id(handle.job_id, index)
            saved = savepoints_to_restore(job, env)
            savepoint = saved[index] if index < len(saved) else None
            args = ["-py", RUNNER, "-pyfs", _python_files(job, env), spec]
            async with turn:
                await self._run(jar, PYTHON_DRIVER, args, job, env, handle, job_id, savepoint)
            ids = _json_list(os.path.join(env.working_dir, f"flink-jobs-{index}.json")) or [job_id]
            handle.job_ids = ids
            index += 1
            if index >= len(ids):
                return

    async def _submit_from_here(self, job: FlinkPythonJob, env: JobRuntimeEnv, handle: FlinkJobHandle) -> None:
        """Compile the program in a child process of the daemon; Flink's REST client there submits every job.

        The runner (mode ``remote``) sets ``execution.target: remote`` and the cluster's
        address: the job graphs, jars and the workflow folder's modules (``python.files``)
        travel over REST, so the cluster reads no file of the daemon's. The runner writes
        the ids of the jobs it started to ``flink-jobs.json``; a failed run cancels those
        it had submitted, so a failed submission leaves nothing running.
        """
        spec = write_pyflink_spec(job, env, "remote", handle.job_id)
        python = job.python_executable or sys.executable
        extra = dict(job.env)
        extra.update(aiflowd_import_path(python, env.working_dir, extra.get("PYTHONPATH")))
        extra.update({"JAVA_HOME": java_home(env), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        saved = job.run_settings.get("parallelism", job.parallelism)
        _note(
            env.log_path,
            f"submitting to {handle.rest_url} from the daemon's host: job id {handle.job_id}"
            + (f", parallelism {saved}" if saved else "")
            + (f", from savepoint {env.restore_savepoint}" if env.restore_savepoint else ""),
        )
        # The daemon's own interpreter runs the runner's file: the aiflowd it belongs to, whatever else is installed.
        runner = [RUNNER] if python == sys.executable else ["-m", "aiflowd.runners.flink_job"]
        code = await _run_process([python, *runner, spec], extra, env, "submit")
        ids = _json_list(os.path.join(env.working_dir, JOBS_FILE))
        if code == 0 and ids:
            handle.job_ids = ids
            return
        if ids:
            handle.job_ids = ids
            await self.cancel(handle)
            _note(env.log_path, f"cancelled the Flink jobs this failed submission had started: {', '.join(ids)}")
        cause = _read(os.path.join(env.working_dir, "runner-error.txt"))
        raise RuntimeError(f"the job's program failed to submit (exit status {code}): {_cause_line(cause) or 'see the job log'}")

    async def _run(
        self,
        jar: str,
        entry_class: str | None,
        args: list[str],
        job: Any,
        env: JobRuntimeEnv,
        handle: FlinkJobHandle,
        job_id: str,
        savepoint: str | None = None,
    ) -> None:
        """One run request; ``savepoint``: the job's own (a program's later job), else the first job's."""
        given = job.run_settings  # flink_run_args, translated at load time
        body: dict[str, Any] = {"entryClass": given.get("entry_class", entry_class), "programArgsList": args, "jobId": job_id}
        parallelism = given.get("parallelism", job.parallelism)
        if parallelism:
            body["parallelism"] = parallelism
        if savepoint is None and job_id == handle.job_id:
            savepoint = env.restore_savepoint or given.get("savepoint_path")
        if savepoint:
            body["savepointPath"] = savepoint
        if given.get("allow_non_restored_state"):
            body["allowNonRestoredState"] = True
        if given.get("flink_config"):
            body["flinkConfiguration"] = dict(given["flink_config"])
        _note(
            env.log_path,
            f"submitting to {handle.rest_url}: jar {os.path.basename(jar)}, job id {job_id}, args {args}"
            + (f", parallelism {parallelism}" if parallelism else "")
            + (f", from savepoint {savepoint}" if savepoint else ""),
        )
        async with httpx.AsyncClient(base_url=handle.rest_url, timeout=HTTP_TIMEOUT) as client:
            for attempt in (1, 2):
                jar_id = await self._jar_id(client, jar, handle.rest_url, fresh=attempt == 2)
                answer = await client.post(f"/jars/{jar_id}/run", json=body)
                if answer.status_code == 404 and attempt == 1:
                    continue  # the cluster forgot the jar (restarted): upload it again
                if answer.status_code < 400:
                    return
                # A Python program's own output goes to the JobManager's log: the runner
                # leaves its traceback in the working folder for the job's log instead.
                cause = _read(os.path.join(env.working_dir, "runner-error.txt"))
                _note(env.log_path, f"the job's Python program failed in the JobManager:\n{cause}" if cause else answer.text)
                raise RuntimeError(f"the cluster refused the job: {_cause_line(cause) or _errors(answer)}")

    async def _jar_id(self, client: httpx.AsyncClient, jar: str, url: str, fresh: bool) -> str:
        """The cluster's id for this jar's content, uploading it only when the cluster lacks it."""
        digest = await anyio.to_thread.run_sync(_sha256, jar)
        key = (url, digest)
        if not fresh and key in self._uploaded:
            return self._uploaded[key]
        name = f"{digest[:16]}-{os.path.basename(jar)}"
        if not fresh:
            listing = await client.get("/jars")
            listing.raise_for_status()
            for entry in listing.json().get("files", []):
                if entry.get("name") == name:
                    self._uploaded[key] = entry["id"]
                    return str(entry["id"])
        with open(jar, "rb") as fh:
            answer = await client.post("/jars/upload", files={"jarfile": (name, fh, "application/x-java-archive")})
        if answer.status_code >= 400:
            raise RuntimeError(f"jar upload failed: HTTP {answer.status_code}: {_errors(answer)}")
        jar_id = os.path.basename(answer.json()["filename"])
        self._uploaded[key] = jar_id
        return jar_id

    async def result(self, handle: FlinkJobHandle, blocking: bool) -> dict[str, Any] | None:
        """The final result of every Flink job of the handle (``/execution-result`` is not cached, unlike ``/jobs/<id>``).

        Ended when all have ended: failed if one failed, else cancelled if one was. A
        cluster that does not answer is asked again: the jobs may well still run there.
        """
        async with _tracking_client(handle.rest_url) as client:
            while handle.final is None:
                try:
                    states = await self._overview(client, handle.rest_url)
                    for job_id in [j for j in handle.job_ids if j not in handle.finals]:
                        state = states.get(job_id)
                        if state is not None and state != handle.states.get(job_id):
                            handle.states[job_id] = state
                            _note(handle.log_path, f"Flink job {job_id}: {state}")
                        if state in RUNNING_STATES:
                            continue  # the overview says enough: no call for this job
                        answer = await client.get(f"/jobs/{job_id}/execution-result")
                        if answer.status_code == 404:
                            handle.finals[job_id] = {
                                "application-status": "UNKNOWN",
                                "aiflowd-reason": f"the Flink cluster at {handle.rest_url} does not know Flink job {job_id}"
                                " (was it restarted without its jobs?)",
                            }
                            _note(handle.log_path, f"the cluster does not know Flink job {job_id} (was it restarted?)")
                        elif answer.status_code == 200 and answer.json().get("status", {}).get("id") == "COMPLETED":
                            final = answer.json().get("job-execution-result", {})
                            handle.finals[job_id] = final
                            _note(handle.log_path, f"Flink job {job_id} ended: {final.get('application-status', 'UNKNOWN')}")
                            cause = final.get("failure-cause")
                            if cause:
                                _note(handle.log_path, f"Flink job {job_id} failed:\n{cause.get('stack-trace', cause)}")
                                await _note_exceptions(client, handle.log_path, job_id)
                except httpx.TransportError as err:
                    now = self.clock.now()
                    if handle.unreachable_since is None:
                        handle.unreachable_since = now
                        _note(
                            handle.log_path,
                            f"UNREACHABLE since {_when(now)}: the Flink cluster at {handle.rest_url} does not answer ({err});"
                            f" asking again for up to {handle.unreachable_timeout:g}s",
                        )
                        handle.report(UNREACHABLE, f"the Flink cluster at {handle.rest_url} does not answer", handle.rest_url, now)
                    elif now - handle.unreachable_since >= handle.unreachable_timeout:
                        reason = (
                            f"the Flink cluster at {handle.rest_url} did not answer for {handle.unreachable_timeout:g}s"
                            f" (UNREACHABLE since {_when(handle.unreachable_since)})"
                        )
                        _note(handle.log_path, f"FAILED: {reason}")
                        handle.final = {"application-status": "FAILED", "aiflowd-reason": reason}
                        break
                    if not blocking:
                        return None
                    await anyio.sleep(1.0)
                    continue
                if handle.unreachable_since is not None:
                    _note(
                        handle.log_path,
                        f"the Flink cluster answers again (UNREACHABLE since {_when(handle.unreachable_since)}); job re-adopted",
                    )
                    handle.unreachable_since = None
                if handle._told is not None:  # it answers (a daemon restarted meanwhile may still show it silent)
                    handle.report(None, "", handle.rest_url, None)
                if all(j in handle.finals for j in handle.job_ids):
                    handle.final = _combined([handle.finals[j] for j in handle.job_ids])
                    break
                if not blocking:
                    return None
                await anyio.sleep(POLL_INTERVAL)
        return handle.final

    async def _overview(self, client: httpx.AsyncClient, url: str) -> dict[str, str]:
        """Every job's state on the cluster, from one ``/jobs/overview`` call per poll interval shared by all handles."""
        overview = self._overviews.setdefault(url, _Overview())
        if overview.lock is None:
            overview.lock = anyio.Lock()
        async with overview.lock:
            if time.monotonic() - overview.fetched_at >= POLL_INTERVAL:
                overview.calls += 1
                overview.failure = None
                try:
                    answer = await client.get("/jobs/overview")
                except httpx.TransportError as err:
                    # The handles waiting for the lock take this answer too: a cluster that
                    # does not answer (each try may take HTTP_TIMEOUT) is asked once per interval.
                    overview.failure, overview.fetched_at = f"{type(err).__name__}: {err}", time.monotonic()
                    raise
                try:
                    jobs = answer.json().get("jobs", []) if answer.status_code == 200 else []
                except ValueError:
                    jobs = []
                overview.states = {str(j.get("jid")): str(j.get("state")) for j in jobs}
                overview.fetched_at = time.monotonic()
            if overview.failure is not None:
                raise httpx.TransportError(overview.failure)
            return overview.states

    async def cancel(self, handle: FlinkJobHandle) -> None:
        async with httpx.AsyncClient(base_url=handle.rest_url, timeout=HTTP_TIMEOUT) as client:
            for job_id in handle.job_ids:
                await client.patch(f"/jobs/{job_id}", params={"mode": "cancel"})

    async def stop_with_savepoint(self, handle: FlinkJobHandle, directory: str | None) -> None:
        """Stop each job with a savepoint, each recorded for its job; a restart resumes each job from its own."""
        first = handle.savepoint_path
        found: dict[str, str] = {}
        for job_id in reversed(handle.job_ids):
            handle.savepoint_path = None
            await self._stop_one(handle, job_id, directory)
            if handle.savepoint_path:
                found[job_id] = handle.savepoint_path
        handle.savepoint_paths = [found.get(job_id) for job_id in handle.job_ids]
        handle.savepoint_path = found.get(handle.job_id, first)

    async def _stop_one(self, handle: FlinkJobHandle, job_id: str, directory: str | None) -> None:
        async with httpx.AsyncClient(base_url=handle.rest_url, timeout=HTTP_TIMEOUT) as client:
            given = handle.job.stop_settings if isinstance(handle.job, FlinkJob) else {}
            request: dict[str, Any] = {"targetDirectory": given.get("target_directory", directory), "drain": given.get("drain", False)}
            if "format_type" in given:
                request["formatType"] = given["format_type"]
            for _ in range(SAVEPOINT_TRIES):
                if await self._await_tasks_running(client, job_id):
                    break
            answer = await client.post(f"/jobs/{job_id}/stop", json=request)
            if answer.status_code >= 400:
                _note(handle.log_path, f"stop with savepoint refused ({_errors(answer)}); cancelling")
                await client.patch(f"/jobs/{job_id}", params={"mode": "cancel"})
                return
            trigger = answer.json()["request-id"]
            while True:  # an unfinished savepoint is "unknown", never "failed": keep asking
                state = (await client.get(f"/jobs/{job_id}/savepoints/{trigger}")).json()
                if state.get("status", {}).get("id") == "COMPLETED":
                    operation = state.get("operation", {})
                    if "location" in operation:
                        handle.savepoint_path = operation["location"]
                        _note(handle.log_path, f"stopped with savepoint {handle.savepoint_path}")
                    else:
                        failure = operation.get("failure-cause", {}).get("stack-trace", "")[:500]
                        _note(handle.log_path, f"savepoint failed ({failure}); cancelling")
                        await client.patch(f"/jobs/{job_id}", params={"mode": "cancel"})
                    return
                await anyio.sleep(POLL_INTERVAL)

    async def _await_tasks_running(self, client: httpx.AsyncClient, job_id: str) -> bool:
        """Whether every task of the job runs (a savepoint of a job still deploying fails); waits a poll interval if not."""
        try:
            answer = await client.get(f"/jobs/{job_id}")
            info = answer.json() if answer.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return True  # the stop request says what is wrong
        if info.get("state") != "RUNNING" or all(v.get("status") == "RUNNING" for v in info.get("vertices", [])):
            return True
        await anyio.sleep(POLL_INTERVAL)
        return False

    async def known(self, url: str, job_id: str) -> bool | None:
        """Whether the cluster knows the job; None when it does not answer."""
        try:
            async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT) as client:
                answer = await client.get(f"/jobs/{job_id}")
        except httpx.HTTPError:
            return None
        return answer.status_code != 404


class FlinkCliController:
    """The ``flink`` CLI: ``flink run -d``, ``flink cancel``, ``flink stop``; no client outlives its call."""

    async def submit(self, job: Any, env: JobRuntimeEnv, job_id: str) -> list[str]:
        """Run ``flink run -d``; the ids of the Flink jobs it started (a Python program may start several)."""
        argv = [os.path.join(flink_home(env), "bin", "flink"), "run", "-d", f"-D$internal.pipeline.job-id={job_id}"]
        if env.restore_savepoint and not (isinstance(job, FlinkPythonJob) and env.restore_savepoints):
            argv += ["-s", env.restore_savepoint]  # a program's several savepoints go to the runner instead, one per job
        if isinstance(job, FlinkPythonJob):
            argv += _target_options(job, env) + _python_options(job, env, write_pyflink_spec(job, env, "cluster", job_id))
        else:
            argv += _target_options(job, env) + _run_options(job)
        code = await self._run(argv, job, env, "submit")
        # The client prints "Job has been submitted with JobID <id>" (attached or detached,
        # on either stream): the id must be the one aiflowd chose.
        if code != 0 or job_id not in _JOB_ID.findall(_read(env.log_path)):
            raise RuntimeError(f"flink run failed (exit status {code}); its output is in the job's log")
        return _json_list(os.path.join(env.working_dir, JOBS_FILE)) or [job_id]

    async def stop(self, handle: FlinkJobHandle, job: Any, env: JobRuntimeEnv, mode: str) -> None:
        flink = os.path.join(flink_home(env), "bin", "flink")
        found: dict[str, str] = {}
        for job_id in reversed(handle.job_ids):  # the first job last: its savepoint is the last one logged
            before = len(_read(handle.log_path))
            if mode == "stop":
                argv = [flink, "stop", *_target_options(job, env), *job.flink_stop_args]
                if job.savepoint_dir:
                    argv += ["--savepointPath", job.savepoint_dir]
                argv.append(job_id)
            else:
                argv = [flink, "cancel", *_target_options(job, env), job_id]
            await self._run(argv, job, env, "stop")
            said = re.findall(r"Savepoint completed\. Path: (\S+)", _read(handle.log_path)[before:])
            if said:
                found[job_id] = said[-1]
        if found:
            handle.savepoint_paths = [found.get(job_id) for job_id in handle.job_ids]
            handle.savepoint_path = found.get(handle.job_id, handle.savepoint_path)

    async def _run(self, argv: list[str], job: Any, env: JobRuntimeEnv, what: str) -> int | None:
        extra = dict(job.env) if job is not None else {}
        extra.update({"JAVA_HOME": java_home(env), "FLINK_LOG_DIR": env.working_dir, "FLINK_IDENT_STRING": "aiflowd"})
        conf_dir = flink_settings(env).get("conf_dir")
        if conf_dir:
            extra["FLINK_CONF_DIR"] = str(conf_dir)
        return await _run_process(argv, extra, env, what)


async def _run_process(argv: list[str], extra: dict[str, str], env: JobRuntimeEnv, what: str) -> int | None:
    """Run a client program to its end, its output in the job's log; it never outlives the call."""
    os.makedirs(env.working_dir, exist_ok=True)
    group = ProcessGroup.spawn(
        argv,
        env=job_environment(env, extra),
        cwd=env.working_dir,
        log_path=env.log_path,
        status_path=os.path.join(env.working_dir, f"flink-{what}.status"),
    )
    try:
        return await group.wait()
    finally:
        with anyio.CancelScope(shield=True):
            await group.terminate(5.0)


class FlinkJobController(JobController):
    """Runs Flink jobs: locally, or on a cluster through the REST API or the CLI."""

    def __init__(self) -> None:
        self.local = LocalFlinkController()
        self.rest = FlinkRestController()
        self.cli = FlinkCliController()

    async def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        env = job_runtime_env
        flink_job = _flink_job(job)
        if flink_job.run_mode == "local":
            return await self.local.submit_job(job, env)
        os.makedirs(env.log_dir, exist_ok=True)
        job_id = flink_job_id(env)
        via = "cli" if flink_job.submit_via == "cli" or flink_job.target else "rest"
        handle = FlinkJobHandle(job, env.job_execution_info, job_id, rest_url(env), via, env.log_path)
        handle.unreachable_timeout = unreachable_timeout(env)
        handle.keep_on_daemon_stop = flink_settings(env).get("on_daemon_stop", "keep") == "keep"
        handle._reporter = env.report_condition
        if via == "cli":
            handle.job_ids = await self.cli.submit(job, env, job_id)
        else:
            await self.rest.submit(job, env, handle)
        restored = f" from savepoint {env.restore_savepoint}" if env.restore_savepoint else ""
        more = f" and {len(handle.job_ids) - 1} more ({', '.join(handle.job_ids[1:])})" if len(handle.job_ids) > 1 else ""
        _note(env.log_path, f"submitted Flink job {job_id}{more} to {handle.rest_url} via {via}{restored}")
        _note(env.log_path, f"Flink web UI: {handle.rest_url}/#/job/running/{job_id}/overview")
        return handle

    async def get_result(self, job_handle: JobHandle, blocking: bool = True) -> object:
        if isinstance(job_handle, SubprocessJobHandle):
            return await self.local.get_result(job_handle, blocking)
        final = await self.rest.result(_flink_handle(job_handle), blocking)
        return None if final is None else {"SUCCEEDED": 0, "FAILED": 1}.get(final.get("application-status", ""))

    async def get_job_status(self, job_handle: JobHandle) -> Status:
        if isinstance(job_handle, SubprocessJobHandle):
            return await self.local.get_job_status(job_handle)
        handle = _flink_handle(job_handle)
        final = await self.rest.result(handle, blocking=False)
        if final is None:
            return Status.RUNNING
        if "aiflowd-reason" in final and final.get("application-status") == "UNKNOWN" and not handle.stopped:
            raise FlinkJobUnknown(final["aiflowd-reason"])
        if "aiflowd-reason" in final and final.get("application-status") != "UNKNOWN":
            raise FlinkClusterUnreachable(final["aiflowd-reason"])
        if handle.stopped:
            return Status.KILLED
        return {"SUCCEEDED": Status.FINISHED, "CANCELED": Status.KILLED}.get(final.get("application-status", ""), Status.FAILED)

    def stop_timeout(self, job_runtime_env: JobRuntimeEnv) -> float:
        """A savepoint of large state takes time: ``flink.stop_timeout`` (default 300 s)."""
        return float(flink_settings(job_runtime_env).get("stop_timeout", 300.0))

    async def stop_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> None:
        if isinstance(job_handle, SubprocessJobHandle):
            return await self.local.stop_job(job_handle, job_runtime_env)
        handle = _flink_handle(job_handle)
        if handle.kept:
            _note(
                handle.log_path, f"aiflowd stops; Flink job {handle.job_id} keeps running on {handle.rest_url} (flink.on_daemon_stop: keep)"
            )
            return
        if await self.rest.result(handle, blocking=False) is not None:
            return
        handle.stopped = True
        job = handle.job
        mode = getattr(job, "stop_mode", "cancel")
        if handle.submit_via == "cli" and job is not None:
            await self.cli.stop(handle, job, job_runtime_env, mode)
        elif mode == "stop":
            await self.rest.stop_with_savepoint(handle, getattr(job, "savepoint_dir", None))
        else:
            await self.rest.cancel(handle)
        await self.rest.result(handle, blocking=True)

    async def cleanup_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> None:
        if isinstance(job_handle, SubprocessJobHandle):
            await self.local.cleanup_job(job_handle, job_runtime_env)

    async def reattach(self, handle_record: dict[str, Any], job_runtime_env: JobRuntimeEnv) -> JobHandle | None:
        """A cluster job by its id (recorded, or derived again); a local one by its process."""
        if "pid" in handle_record:
            return await self.local.reattach(handle_record, job_runtime_env)
        env = job_runtime_env
        job_id = str(handle_record.get("job_id") or flink_job_id(env))
        url = str(handle_record.get("rest_url") or rest_url(env))
        known = await self.rest.known(url, job_id)
        if known is False:
            if "job_id" not in handle_record:
                return await self.local.reattach(handle_record, env)  # a local job, or one never submitted
            known = True  # recorded as submitted: polling will say what became of it
        if known is None and "job_id" not in handle_record:
            local = await self.local.reattach(handle_record, env)
            if local is not None:
                return local
        # Known, or the cluster does not answer now: keep the job and keep asking.
        via = str(handle_record.get("submit_via", "rest"))
        handle = FlinkJobHandle(None, env.job_execution_info, job_id, url, via, env.log_path)  # type: ignore[arg-type]
        handle.unreachable_timeout = unreachable_timeout(env)
        handle.keep_on_daemon_stop = flink_settings(env).get("on_daemon_stop", "keep") == "keep"
        handle._reporter = env.report_condition
        handle.stopped = bool(handle_record.get("stopped", False))
        handle.job_ids = [str(j) for j in handle_record.get("job_ids") or [job_id]]
        handle.savepoint_path = handle_record.get("savepoint_path")
        handle.savepoint_paths = list(handle_record.get("savepoint_paths") or [])
        return handle


def _python_driver_jar(env: JobRuntimeEnv) -> str:
    opt = os.path.join(flink_home(env), "opt")
    jars = sorted(f for f in os.listdir(opt) if f.startswith("flink-python") and f.endswith(".jar")) if os.path.isdir(opt) else []
    if not jars:
        raise RuntimeError(f"no flink-python jar in {opt}: Python and SQL jobs need it to run through REST")
    return os.path.join(opt, jars[-1])


def _target_options(job: Any, env: JobRuntimeEnv) -> list[str]:
    if job.target:  # YARN or Kubernetes application mode: the cluster comes from the user's flink_run_args
        return ["-t", job.target]
    url = httpx.URL(rest_url(env))
    return ["-t", "remote", f"-Drest.address={url.host}", f"-Drest.port={url.port or 8081}"]


def _flink_job(job: Job) -> FlinkJob:
    if not isinstance(job, FlinkJob):
        raise TypeError(f"expected a FlinkJob, got {type(job).__name__}")
    return job


def _flink_handle(job_handle: JobHandle) -> FlinkJobHandle:
    if not isinstance(job_handle, FlinkJobHandle):
        raise TypeError(f"expected a FlinkJobHandle, got {type(job_handle).__name__}")
    return job_handle


def _errors(answer: httpx.Response) -> str:
    try:
        errors = answer.json().get("errors", [])
        return "; ".join(str(e).splitlines()[0] for e in errors)[:1000] or answer.text[:1000]
    except ValueError:
        return answer.text[:1000]


_EXCEPTION_LINE = re.compile(r"^(?::\s)?([\w.$]+(?:Exception|Error)): (.+)$")


def _cause_line(traceback_text: str) -> str | None:
    """The line that says what went wrong in a Python (or Py4J-wrapped Java) traceback."""
    found = [m for line in traceback_text.splitlines() if (m := _EXCEPTION_LINE.match(line.strip()))]
    useful = [m for m in found if not m.group(1).endswith("Py4JJavaError")]
    chosen = useful[0] if useful else (found[-1] if found else None)
    return None if chosen is None else f"{chosen.group(1).rsplit('.', 1)[-1]}: {chosen.group(2)}"


async def _note_exceptions(client: httpx.AsyncClient, log_path: str, job_id: str) -> None:
    """The failed job's root exception and exception history, from ``/jobs/<id>/exceptions``, into the job's log."""
    try:
        answer = await client.get(f"/jobs/{job_id}/exceptions", params={"maxExceptions": 10})
        info = answer.json() if answer.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return
    entries = (info.get("exceptionHistory") or {}).get("entries") or []
    root = str(info.get("root-exception") or (entries[0].get("stacktrace") if entries else "") or "").strip()
    if root:
        causes = [line.strip()[len("Caused by: ") :] for line in root.splitlines() if line.strip().startswith("Caused by: ")]
        _note(log_path, f"root exception of Flink job {job_id}: {causes[-1] if causes else root.splitlines()[0]}")
    if entries:
        lines = [f"exception history of Flink job {job_id} ({len(entries)}, newest first):"]
        for entry in entries:
            when = _when(float(entry.get("timestamp", 0)) / 1000)
            where = " in ".join(str(x) for x in (entry.get("taskName"), entry.get("endpoint") or entry.get("location")) if x)
            lines.append(f"  {when} {entry.get('exceptionName', '?')}{' (' + where + ')' if where else ''}")
        _note(log_path, "\n".join(lines))


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _combined(finals: list[dict[str, Any]]) -> dict[str, Any]:
    """One result for several jobs: the first failed, else unknown, else cancelled one; else the first."""
    for status in ("FAILED", "UNKNOWN", "CANCELED"):
        for final in finals:
            if final.get("application-status") == status:
                return final
    return finals[0]


def _json_list(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _note(log_path: str, message: str) -> None:
    try:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(f"aiflowd: {message}\n")
    except OSError:
        pass
