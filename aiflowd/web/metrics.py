"""The daemon's metrics in Prometheus' text format, through ``prometheus_client``.

Counters are fed by hooks the daemon already has (the engine's ``on_job_change``, the
control server's method table, the watcher's callback, the store's commit, the loader):
``Daemon`` wraps those at startup when HTTP is on, so the engine carries no metrics code.
Gauges that describe the present (queue depth, jobs running, workflows by status) are
read from the engine when scraped: the scrape runs in the daemon's loop, like the engine,
so it reads a consistent state without a lock.

Each daemon has its own ``CollectorRegistry`` (never the library's global one), so that
tests running several daemons in one process do not see each other's numbers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from aiflowd.model import Status
from aiflowd.plugin_interface import UNREACHABLE

if TYPE_CHECKING:
    from aiflowd.engine import Engine, JobRun

#: The Content-Type of the text format ``generate_latest`` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Job durations: from a second to a day.
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """Every metric of one daemon, and the hooks that feed them."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: half the scrape, and nothing Prometheus needs
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        # Per workflow: kept rendered (see ``Rendered``), so 10,000 workflows stay cheap to scrape.
        by_workflow = ("workflow", "job_type")
        self.jobs_started = Rendered("aiflowd_jobs_started", "Job executions that started running", "counter", by_workflow)
        self.jobs_finished = Rendered("aiflowd_jobs_finished", "Job executions that ended FINISHED", "counter", by_workflow)
        self.jobs_failed = Rendered("aiflowd_jobs_failed", "Job executions that ended FAILED", "counter", by_workflow)
        self.jobs_killed = Rendered("aiflowd_jobs_killed", "Job executions that ended KILLED", "counter", by_workflow)
        self.job_duration = Histogram(
            "aiflowd_job_duration_seconds",
            "How long job executions ran, from running to their end",
            ["job_type"],  # not by workflow: 12 series per workflow would make a scrape of 10,000 slow
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        # Per workflow the last load only, kept rendered; the distribution over all loads in
        # one histogram without labels.
        self.last_load = Rendered(
            "aiflowd_workflow_last_load_seconds",
            "How long the last load of each workflow took (compiling included)",
            "gauge",
            ("workflow",),
        )
        self.load_seconds = Histogram(
            "aiflowd_workflow_load_seconds",
            "How long loading a workflow definition took (compiling a Python one included)",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.control_requests = Counter(
            "aiflowd_control_requests", "Control requests answered, by method and outcome", ["method", "outcome"], registry=r
        )
        self.watcher_events = Counter("aiflowd_watcher_events", "Changes the folder watcher reported", registry=r)
        self.commit_seconds = Histogram(
            "aiflowd_store_commit_seconds",
            "How long a commit of the state store took",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1),
            registry=r,
        )
        self.http_requests = Counter("aiflowd_http_requests", "HTTP requests answered, by page", ["page"], registry=r)
        self._engine: Engine | None = None

    def watch_engine(self, engine: Engine) -> None:
        """Read the present (queue depth, running jobs, workflows) from ``engine`` at each scrape."""
        self._engine = engine
        self.registry.register(_EngineCollector(engine))

    # -- hooks -----------------------------------------------------------------------

    def job_changed(self, run: JobRun) -> None:
        """The engine's ``on_job_change``: a job execution was created, started running or ended."""
        labels = (run.execution.workflow, run.job_type)
        if run.status == Status.RUNNING:
            self.jobs_started.inc(labels)
        elif run.status.is_final:
            counter = {Status.FINISHED: self.jobs_finished, Status.FAILED: self.jobs_failed}.get(run.status, self.jobs_killed)
            counter.inc(labels)
            if run.started_at is not None and run.ended_at is not None:
                self.job_duration.labels(run.job_type).observe(max(0.0, run.ended_at - run.started_at))

    def workflow_loaded(self, workflow: str, seconds: float) -> None:
        self.last_load.set((workflow,), seconds)
        self.load_seconds.observe(seconds)

    def control_request(self, method: str, outcome: str) -> None:
        self.control_requests.labels(method, outcome).inc()

    def timed(self, fn: Callable[..., Any], observe: Callable[[float, Any], None]) -> Callable[..., Any]:
        """``fn`` calling ``observe(seconds, result)`` after each call (a raise is observed with None)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:
                observe(time.perf_counter() - began, result)

        return call

    def scrape(self) -> bytes:
        rendered = (self.jobs_started, self.jobs_finished, self.jobs_failed, self.jobs_killed, self.last_load)
        return generate_latest(self.registry) + b"".join(family.render() for family in rendered)


class Rendered:
    """A metric family whose sample lines are rendered when a value changes, not at each scrape.

    prometheus_client formats every sample at every scrape (about 7 µs each on a small
    machine): with a few series for each of 10,000 workflows, that alone would pass the
    50 ms a scrape may take. These values change when a job starts or ends or a workflow
    loads, so the line is written then (one line: microseconds) and a scrape joins them.
    The lines are what ``generate_latest`` writes for a counter or a gauge (checked by the
    tests with the library's own parser).
    """

    def __init__(self, name: str, documentation: str, kind: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.kind, self.labelnames = name, kind, labelnames
        self.sample = name + "_total" if kind == "counter" else name
        help_text = documentation.replace("\\", "\\\\").replace("\n", "\\n")
        self.header = f"# HELP {self.sample} {help_text}\n# TYPE {self.sample} {kind}\n"
        self.values: dict[tuple[str, ...], float] = {}
        self.lines: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()  # loads are timed in the loader's threads

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        with self._lock:
            self._set(labels, self.values.get(labels, 0.0) + amount)

    def set(self, labels: tuple[str, ...], value: float) -> None:
        with self._lock:
            self._set(labels, value)

    def _set(self, labels: tuple[str, ...], value: float) -> None:
        value = float(value)
        self.values[labels] = value
        pairs = ",".join(f'{key}="{_escape(label)}"' for key, label in zip(self.labelnames, labels, strict=True))
        self.lines[labels] = f"{self.sample}{{{pairs}}} {value!r}\n"

    def get(self, labels: tuple[str, ...]) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> bytes:
        with self._lock:
            lines = "".join(self.lines.values())
        return (self.header + lines).encode() if lines else b""


def _escape(label: str) -> str:
    """A label value as the text format writes it: backslash, newline and quote escaped."""
    return label.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _EngineCollector(Collector):
    """Gauges read from the engine at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        engine = self.engine
        queued, running = 0, 0
        unreachable: dict[str, float] = {}  # subject (a cluster's URL) -> since when, the earliest
        for execution in engine.executions.values():
            for run in execution.running.values():
                if run.status == Status.INIT:
                    queued += 1
                else:
                    running += 1
                if run.condition == UNREACHABLE and run.condition_since is not None:
                    subject = run.condition_subject or ""
                    unreachable[subject] = min(unreachable.get(subject, run.condition_since), run.condition_since)
        yield GaugeMetricFamily("aiflowd_job_queue_depth", "Job executions waiting for a slot or to start", value=queued)
        yield GaugeMetricFamily("aiflowd_jobs_running", "Job executions running now", value=running)
        yield GaugeMetricFamily("aiflowd_executions_running", "Workflow executions open now", value=len(engine.executions))
        workflows = GaugeMetricFamily("aiflowd_workflows", "Workflows served, by status", labels=["status"])
        counts: dict[str, int] = {}
        for entry in engine.workflows.values():
            counts[entry.status] = counts.get(entry.status, 0) + 1
        for status, count in sorted(counts.items()):
            workflows.add_metric([status], count)
        yield workflows
        gone = GaugeMetricFamily(
            "aiflowd_unreachable_seconds",
            "How long a cluster that running jobs are on (a Flink cluster's REST URL) has not answered; absent while it answers",
            labels=["cluster"],
        )
        now = engine.clock.now()
        for subject, since in sorted(unreachable.items()):
            gone.add_metric([subject], round(max(0.0, now - since), 3))
        yield gone
        yield GaugeMetricFamily("aiflowd_store_degraded", "1 while the state store refuses writes", value=1 if engine.store_problem else 0)
        yield CounterMetricFamily("aiflowd_errors_contained", "Exceptions the engine contained and survived", value=engine.contained_errors)
        yield CounterMetricFamily(
            "aiflowd_starts_skipped",
            "Execution starts not made because executions were active (on_overlap: skip, max_active_executions)",
            value=engine.skipped_starts,
        )
        if engine.alerts is not None:
            hooks = CounterMetricFamily(
                "aiflowd_hooks", "Hook deliveries (on_failure, on_retry, on_success) by outcome", labels=["outcome"]
            )
            counts_of = engine.alerts.counts
            for outcome, count in (("sent", counts_of.sent), ("failed", counts_of.failed), ("dropped", counts_of.dropped)):
                hooks.add_metric([outcome], count)
            yield hooks
