"""Alerts: the hooks that tell operators a job failed, will be retried, or finished.

A hook is a command (run as its own process group, with a time limit, its output in the
daemon's log) or a webhook (a JSON POST, retried with a growing pause). The daemon config
and a workflow may each give ``on_failure``, ``on_retry`` and ``on_success``; both fire.

The engine tells ``Alerts.job_ended`` once per job execution it records as ended, from its
loop: that call only queues. A few workers (``max_concurrent_hooks``) deliver what is
queued beside the loop, so a slow receiver, a hanging command or a refused connection
never holds the engine or a job; one hook hears of one job's ends in the order they
came. Each failure is one log line, counted (``aiflowctl status``); a full queue drops new
deliveries with a line and a count, never silently.
Deliveries live in memory: at shutdown the queue gets a bounded time to drain, and what
is left is named in the log.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from aiflowd.model import Hook, Status, parse_duration
from aiflowd.supervision import Backoff
from aiflowd.workflows.errors import suggest

if TYPE_CHECKING:
    from aiflowd.engine import JobRun

log = structlog.get_logger("aiflowd.alerts")

#: The moments a hook may be given for, as they are written in a config or a workflow.
HOOK_EVENTS = ("on_failure", "on_retry", "on_success")
COMMAND_KEYS = ("command", "timeout")
WEBHOOK_KEYS = ("webhook", "timeout", "retries", "backoff", "headers")
DEFAULT_COMMAND_TIMEOUT = 60.0
DEFAULT_WEBHOOK_TIMEOUT = 10.0
DEFAULT_WEBHOOK_RETRIES = 3
DEFAULT_WEBHOOK_BACKOFF = 1.0
#: The longest pause between two attempts of a webhook.
BACKOFF_MAX = 60.0
DEFAULT_MAX_CONCURRENT = 4
#: Deliveries waiting for a worker beyond this many are dropped (logged and counted).
MAX_PENDING = 1000
#: How much of the job's log a webhook carries, and of a command's output the daemon's log.
LOG_TAIL_BYTES = 4096
LOG_TAIL_LINES = 20
OUTPUT_SHOWN = 2000

#: ``problem(path, message)``: how a parser reports a bad value at a key path.
Report = Callable[[tuple[Any, ...], str], None]


# -- reading hooks from a config or a workflow ---------------------------------------------


def parse_hooks(value: Any, path: tuple[Any, ...], problem: Report, cwd: str | None = None) -> tuple[Hook, ...]:
    """The hooks at ``path``: a command string, a mapping, or a list of them; problems reported.

    ``cwd`` is where commands run (the workflow's folder, or the config file's).
    """
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    hooks = []
    for i, item in enumerate(items):
        where = (*path, i) if isinstance(value, list) else path
        hook = _parse_hook(item, where, problem, cwd)
        if hook is not None:
            hooks.append(hook)
    return tuple(hooks)


def _parse_hook(item: Any, path: tuple[Any, ...], problem: Report, cwd: str | None) -> Hook | None:
    if isinstance(item, str) and item.strip():
        return Hook(command=item, timeout=DEFAULT_COMMAND_TIMEOUT, cwd=cwd)
    example = "a command string, {command: ..., timeout: 10s} or {webhook: URL, timeout: 5s, retries: 3}"
    if not isinstance(item, dict):
        problem(path, f"must be {example}; got {item!r}")
        return None
    if ("command" in item) == ("webhook" in item):
        problem(path, f"give exactly one of 'command' and 'webhook' ({example})")
        return None
    allowed = COMMAND_KEYS if "command" in item else WEBHOOK_KEYS
    ok = True
    for key in item:
        if key not in allowed:
            other = "a webhook" if key in WEBHOOK_KEYS else "a command" if key in COMMAND_KEYS else ""
            problem((*path, key), f"unknown key ({f'a key of {other} hook' if other else suggest(str(key), allowed)})")
            ok = False

    def duration(key: str, default: float, positive: bool) -> float:
        nonlocal ok
        if key not in item:
            return default
        try:
            seconds = parse_duration(item[key])
        except ValueError as err:
            problem((*path, key), str(err))
            ok = False
            return default
        if positive and seconds <= 0:
            problem((*path, key), f"must be longer than 0, got {item[key]!r}")
            ok = False
        return seconds

    if "command" in item:
        command = item["command"]
        timeout = duration("timeout", DEFAULT_COMMAND_TIMEOUT, True)
        if isinstance(command, list) and command and all(isinstance(a, str) for a in command):
            command = tuple(command)
        elif not (isinstance(command, str) and command.strip()):
            problem((*path, "command"), f"must be a command line (run by sh) or a list of arguments; got {command!r}")
            return None
        return Hook(command=command, timeout=timeout, cwd=cwd) if ok else None
    url = item["webhook"]
    parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        problem((*path, "webhook"), f"must be an http:// or https:// URL with a host; got {url!r}")
        ok = False
    timeout = duration("timeout", DEFAULT_WEBHOOK_TIMEOUT, True)
    backoff = duration("backoff", DEFAULT_WEBHOOK_BACKOFF, False)
    retries = item.get("retries", DEFAULT_WEBHOOK_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        problem((*path, "retries"), f"must be a whole number >= 0, got {retries!r}")
        ok = False
    headers = item.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in headers.items()):
        problem((*path, "headers"), "must be a mapping of header names to values")
        ok = False
    if not ok:
        return None
    return Hook(
        webhook=url,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        headers=tuple((k, str(v)) for k, v in headers.items()),
    )


def describe(hook: Hook) -> str:
    """A hook as a log line names it: a webhook by scheme, host and port only (its path may hold a token)."""
    if hook.webhook is not None:
        parsed = urllib.parse.urlsplit(hook.webhook)
        return f"webhook {parsed.scheme}://{parsed.netloc.rpartition('@')[2]}/…"
    command = hook.command if isinstance(hook.command, str) else " ".join(hook.command or ())
    return f"command {command[:80]!r}"


# -- what a hook is told ---------------------------------------------------------------------


@dataclass(frozen=True)
class JobFacts:
    """What a hook learns of the job execution that ended: the same facts for commands and webhooks."""

    hook: str
    workflow: str
    job: str
    execution: int
    job_execution: str
    attempt: int
    status: str
    exit_code: int | None
    log: str
    reason: str
    message: str | None
    started_at: float | None
    ended_at: float | None

    @classmethod
    def of(cls, hook: str, run: JobRun) -> JobFacts:
        return cls(
            hook=hook,
            workflow=run.execution.workflow,
            job=run.job,
            execution=run.execution.id,
            job_execution=run.env.job_execution_info.job_execution_id,
            attempt=run.attempt,
            status=run.status.value,
            exit_code=run.exit_code,
            log=run.env.log_path,
            reason=run.reason,
            message=run.message,
            started_at=run.started_at,
            ended_at=run.ended_at,
        )

    def environment(self) -> dict[str, str]:
        """The ``AIFLOWD_*`` variables a command hook gets."""
        return {
            "AIFLOWD_HOOK": self.hook,
            "AIFLOWD_WORKFLOW": self.workflow,
            "AIFLOWD_JOB": self.job,
            "AIFLOWD_EXECUTION": str(self.execution),
            "AIFLOWD_JOB_EXECUTION_ID": self.job_execution,
            "AIFLOWD_ATTEMPT": str(self.attempt),
            "AIFLOWD_STATUS": self.status,
            "AIFLOWD_EXIT_CODE": "" if self.exit_code is None else str(self.exit_code),
            "AIFLOWD_LOG": self.log,
            "AIFLOWD_REASON": self.reason,
            "AIFLOWD_MESSAGE": self.message or "",
        }

    def body(self, log_tail: str) -> dict[str, Any]:
        """A webhook's JSON: the facts, the log's tail, and a ``text`` chat receivers show as is."""
        exit_code = "" if self.exit_code is None else f", exit {self.exit_code}"
        said = f": {self.message}" if self.message else ""
        where = f"execution {self.execution}, attempt {self.attempt}" + ("; it will be retried" if self.hook == "on_retry" else "")
        text = f"aiflowd: job {self.workflow}.{self.job} {self.status}{exit_code} ({where}){said}"
        return {**dataclasses.asdict(self), "log_tail": log_tail, "text": text}


def log_tail(path: str, max_bytes: int = LOG_TAIL_BYTES, max_lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a job's log ('' when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-max_lines:])


# -- delivery --------------------------------------------------------------------------------


class HookFailed(Exception):
    """A hook did not do its part; the message is the one line the log shows."""


@dataclass
class AlertCounts:
    """What became of the deliveries since the daemon started."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass
class Alerts:
    """Queues the hooks of each ended job execution, and delivers them with a few workers."""

    #: The daemon config's hooks, by moment (``on_failure``, ...); a reload replaces them.
    hooks: Mapping[str, tuple[Hook, ...]] = field(default_factory=dict)
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    max_pending: int = MAX_PENDING
    #: What command hooks get besides their ``AIFLOWD_*`` facts (the control socket, for aiflowctl).
    environment: dict[str, str] = field(default_factory=dict)
    counts: AlertCounts = field(default_factory=AlertCounts)

    def __post_init__(self) -> None:
        self._queue: collections.deque[tuple[Hook, JobFacts]] = collections.deque()
        self._ready = anyio.Semaphore(0)
        self._busy = 0
        self._idle = anyio.Event()
        self._idle.set()
        #: The webhooks' HTTP client while ``serve`` runs: made at the first webhook (its TLS
        #: setup costs about 0.1s of CPU), its connections kept for the next POST.
        self._client: Any = None
        self._client_made = anyio.Lock()
        self._serving = False
        #: A lock per (hook, workflow, job) being delivered: workers run side by side, but never two of one key.
        self._in_order: dict[tuple[Hook, str, str], anyio.Lock] = {}

    @property
    def pending(self) -> int:
        """Deliveries queued or under way."""
        return len(self._queue) + self._busy

    def snapshot(self) -> dict[str, int]:
        return {"sent": self.counts.sent, "failed": self.counts.failed, "dropped": self.counts.dropped, "pending": self.pending}

    def job_ended(self, run: JobRun, retrying: bool) -> None:
        """Queue the hooks the end of ``run`` calls for.

        None for KILLED, a stop someone asked for, unless the daemon stopped it itself
        because it lost track of it in a restart (``run.lost``): that is a failure.
        """
        if run.status == Status.FINISHED:
            moment = "on_success"
        elif run.status == Status.FAILED or (run.status == Status.KILLED and run.lost):
            moment = "on_retry" if retrying else "on_failure"
        else:
            return
        workflow_hooks = run.execution.loaded.workflow.hooks.get(moment, ())
        chosen = [*self.hooks.get(moment, ()), *workflow_hooks]
        if not chosen:
            return
        facts = JobFacts.of(moment, run)
        for hook in chosen:
            self.queue(hook, facts)

    def queue(self, hook: Hook, facts: JobFacts) -> bool:
        """Queue one delivery; False (logged, counted) when ``max_pending`` wait already."""
        if len(self._queue) >= self.max_pending:
            self.counts.dropped += 1
            log.warning(
                "hook dropped: too many waiting",
                hook=facts.hook,
                target=describe(hook),
                workflow=facts.workflow,
                job=facts.job,
                execution=facts.execution,
                waiting=len(self._queue),
            )
            return False
        self._queue.append((hook, facts))
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._ready.release()
        return True

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued hooks with ``max_concurrent`` workers until cancelled."""
        self._serving = True
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(max(1, self.max_concurrent)):
                    tg.start_soon(self._worker)
                task_status.started()
        finally:
            self._serving = False
            client, self._client = self._client, None
            if client is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await client.aclose()

    async def drain(self, limit: float) -> None:
        """Wait up to ``limit`` seconds for what is queued to be delivered; name what is left."""
        with anyio.move_on_after(limit):
            await self._idle.wait()
        if self.pending:
            log.warning("hooks not delivered: aiflowd stops", left=self.pending)

    async def _worker(self) -> None:
        while True:
            await self._ready.acquire()
            if not self._queue:
                continue
            hook, facts = self._queue.popleft()
            self._busy += 1
            key = (hook, facts.workflow, facts.job)
            lock = self._in_order.setdefault(key, anyio.Lock())  # taken before any other task runs: in queue order
            try:
                async with lock:  # one receiver hears of one job's ends in the order they came
                    await self.deliver(hook, facts)
            finally:
                if not lock.locked() and not lock.statistics().tasks_waiting:
                    self._in_order.pop(key, None)
                self._busy -= 1
                if not self._queue and not self._busy:
                    self._idle.set()

    async def deliver(self, hook: Hook, facts: JobFacts) -> bool:
        """Run one hook to its end; a failure is one log line and a count, never raised."""
        context = {"hook": facts.hook, "target": describe(hook), "workflow": facts.workflow, "job": facts.job, "execution": facts.execution}
        try:
            if hook.webhook is not None:
                said = await self._post(hook, facts)
            else:
                said = await self._run(hook, facts)
        except HookFailed as err:
            self.counts.failed += 1
            log.warning(f"hook failed: {err}", **context)
            return False
        except Exception as err:  # a bug here fails this delivery only
            self.counts.failed += 1
            log.exception("hook failed", error=f"{type(err).__name__}: {err}", **context)
            return False
        self.counts.sent += 1
        log.info("hook delivered", **context, **({"output": said} if said else {}))
        return True

    async def _run(self, hook: Hook, facts: JobFacts) -> str:
        """Run a command hook to its end or its time limit; its output (tail)."""
        from aiflowd.controllers.process_group import HelperCancel, helper_environment, run_helper

        env = helper_environment()
        env.update(self.environment)
        env.update(facts.environment())
        argv = ["/bin/sh", "-c", hook.command] if isinstance(hook.command, str) else list(hook.command or ())
        cwd = hook.cwd if hook.cwd and os.path.isdir(hook.cwd) else None
        cancel = HelperCancel()

        def run() -> Any:
            try:
                return run_helper(argv, env=env, cwd=cwd, timeout=hook.timeout, keep_output=OUTPUT_SHOWN, cancel=cancel)
            finally:
                cancel.close()  # here, once the helper is gone: the thread may outlive a cancelled caller

        try:
            result = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except OSError as err:
            raise HookFailed(f"cannot start it: {err.strerror or err}") from err
        except anyio.get_cancelled_exc_class():
            cancel.cancel()  # the helper and all it started are killed
            raise
        output = result.output.decode("utf-8", "replace").strip()
        last = output.splitlines()[-1] if output else ""
        if result.timed_out:
            raise HookFailed(f"no end within {hook.timeout:g}s: killed" + (f"; it printed: {last}" if last else ""))
        if result.returncode != 0:
            raise HookFailed(f"exit status {result.returncode}" + (f"; it printed: {last}" if last else ""))
        return output

    async def _shared_client(self) -> Any:
        import httpx

        async with self._client_made:
            if self._client is None:  # made in a thread: its TLS setup would hold the loop
                self._client = await anyio.to_thread.run_sync(partial(httpx.AsyncClient, follow_redirects=False))
            return self._client

    async def _post(self, hook: Hook, facts: JobFacts) -> str:
        """POST the facts, retried with a doubling pause; gives up at once on a 4xx that a retry cannot change."""
        import httpx

        assert hook.webhook is not None
        body = facts.body(await anyio.to_thread.run_sync(log_tail, facts.log))
        headers = {"User-Agent": "aiflowd", **dict(hook.headers)}
        attempts = 1 + hook.retries
        pauses = Backoff(hook.backoff, BACKOFF_MAX)
        problem = ""
        async with contextlib.AsyncExitStack() as stack:
            if self._serving:
                client = await self._shared_client()
            else:  # one delivery on its own (a test): a client of its own
                client = await stack.enter_async_context(httpx.AsyncClient(follow_redirects=False))
            for attempt in range(1, attempts + 1):
                try:
                    with anyio.fail_after(hook.timeout):
                        answer = await client.post(hook.webhook, json=body, headers=headers, timeout=hook.timeout)
                except TimeoutError:
                    problem = f"no answer within {hook.timeout:g}s"
                except httpx.HTTPError as err:
                    problem = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                else:
                    if answer.is_success:
                        return ""
                    problem = f"answered {answer.status_code} {answer.reason_phrase}".rstrip()
                    if 400 <= answer.status_code < 500 and answer.status_code not in (408, 429):
                        raise HookFailed(f"{problem}; not retried")
                if attempt < attempts:
                    log.info(
                        "webhook attempt failed; trying again",
                        hook=facts.hook,
                        target=describe(hook),
                        attempt=attempt,
                        pause=pauses.next,
                        error=problem,
                    )
                    await pauses.wait()
        raise HookFailed(f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}: {problem}")
