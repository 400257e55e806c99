"""Prometheus metrics of flowcraft-fastd, kept with prometheus-client.

One worker process (`--processes 1`) serves its own registry on `--metrics-bind`. With
`--processes N` the supervisor serves one endpoint for all: each child writes its metrics to
files in a directory the supervisor made (prometheus-client's multiprocess mode, the directory
named by PROMETHEUS_MULTIPROC_DIR in the child's environment) and the supervisor adds them up
at scrape time, with each child's memory and CPU read from /proc (`ChildrenCollector`).

The adapter's figures are plain integers bumped on the hot path (`BullMQAdapter.metrics()`);
`WorkerMetrics.sync` turns their growth into counter increments every `SYNC_SECONDS`, so a
scrape lags by at most that. Step latencies are observed as each job settles
(`BullMQAdapter.observe_steps`). Every second a worker also asks Redis for the queue's counts:
`flowcraft_up` is 1 only while the worker consumes and that probe succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from .checks import StartupError

__all__ = [
    "MULTIPROC_ENV",
    "ChildrenCollector",
    "MetricsEndpoint",
    "WorkerMetrics",
    "format_bind",
    "mark_process_dead",
    "serve_children",
    "worker_registry",
]

log = logging.getLogger("flowcraft_fast.daemon")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CHILD_ENV = "FLOWCRAFT_METRICS_CHILD"
"""Set by the supervisor for its children: record metrics to the multiprocess directory."""
SYNC_SECONDS = 1.0
LIMITS_EVERY = 5
"""Syncs between two reads of the concurrency groups (one HGETALL plus a pipeline)."""
MAX_GROUPS = 50
"""Concurrency groups exported one by one (busiest first); the totals cover them all."""
STEP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0, float("inf"),
)  # fmt: skip

HELP = {
    "jobs_claimed": "jobs this worker claimed (local continuations included)",
    "jobs_continued": "jobs a commit claimed for this worker as it fired them",
    "jobs_speculated": "jobs run before the commit that claims them was answered",
    "jobs_speculation_dropped": "speculative runs discarded (the commit did not take the job)",
    "jobs_processed": "jobs whose commit this worker settled",
    "jobs_retried": "jobs sent back for a later attempt",
    "runs_failed": "runs this worker ended as failed",
    "jobs_duplicate": "commits refused as duplicates (the node was committed already)",
    "jobs_lease_lost": "commits refused because another worker owned the job by then",
    "jobs_rejected": "jobs failed without running (bad payload, no such run or node)",
    "jobs_parked": "jobs moved to a concurrency group's waiting list",
    "jobs_admitted_by_commit": "jobs of limited nodes a commit took with a slot of their group",
    "stalled_jobs_requeued": "jobs of dead workers returned to the queue by this worker",
    "redis_errors": "Redis round trips that failed (each is retried)",
    "lease_renewals": "lease renewal calls (one per heartbeat for all in-flight jobs)",
    "lease_renewal_errors": "lease renewal calls that failed",
    "leases": "job leases this worker renews",
    "in_flight": "jobs this worker is running now",
}
RECONCILER_KINDS = (
    ("scanned", "scanned_keys"),
    ("stalled", "stalled_runs"),
    ("reconciled", "reconciled_runs"),
    ("failed", "failed_runs"),
)
GAUGE_MODES: dict[str, Literal["livesum", "livemax"]] = {
    "in_flight": "livesum",
    "leases": "livesum",
}


def format_bind(bind: tuple[str, int]) -> str:
    host, port = bind
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MetricsEndpoint:
    """prometheus-client's HTTP server (a thread) serving `registry` at /metrics."""

    def __init__(self, bind: tuple[str, int], registry: CollectorRegistry) -> None:
        self.bind = bind
        try:
            self._server, self._thread = start_http_server(bind[1], bind[0], registry=registry)
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics on {format_bind(bind)}: {exc.strerror or exc}"
            ) from None
        log.info("metrics on http://%s/metrics", format_bind(bind))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class WorkerMetrics:
    """One worker process's metrics. `registry` is None in a supervised child (its values go
    to the multiprocess directory, the supervisor serves them)."""

    def __init__(
        self, adapter: Any, queue: str, registry: CollectorRegistry | None, primary: bool
    ) -> None:
        self.adapter = adapter
        self.queue = queue
        self.primary = primary
        """The process that reads the concurrency groups (child 0, or the only worker)."""
        self._registry = registry
        self._seen: dict[str, float] = {}
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._consuming = False
        self._reachable = False
        self._exported_groups: set[str] = set()
        self._steps: dict[str, Histogram] = {}
        self._outcomes: dict[tuple[str, str], Counter] = {}
        r = registry
        self.up = Gauge(
            "flowcraft_up", "1 while the worker consumes and Redis answers, else 0",
            ["queue"], registry=r, multiprocess_mode="livemin",
        )  # fmt: skip
        self.draining = Gauge(
            "flowcraft_draining", "1 once a stop signal arrived", ["queue"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.queue_jobs = Gauge(
            "flowcraft_queue_jobs", "jobs of the queue per BullMQ state", ["queue", "state"],
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.step_seconds = Histogram(
            "flowcraft_step_duration_seconds",
            "a job's time from its claim to its settled commit or retry",
            ["queue", "blueprint"], registry=r, buckets=STEP_BUCKETS,
        )  # fmt: skip
        self.steps = Counter(
            "flowcraft_steps", "jobs settled by this worker, by outcome (completed, failed, "
            "rejected, retried, duplicate, lost, error)", ["queue", "blueprint", "outcome"],
            registry=r,
        )  # fmt: skip
        self.reconciler_passes = Counter(
            "flowcraft_reconciler_passes", "reconciler passes by result (ok, error)",
            ["queue", "result"], registry=r,
        )  # fmt: skip
        self.reconciler_runs = Counter(
            "flowcraft_reconciler_runs", "runs the reconciler looked at, by what it found "
            "(scanned, stalled, reconciled, failed)", ["queue", "kind"], registry=r,
        )  # fmt: skip
        self.reconciler_seconds = Gauge(
            "flowcraft_reconciler_last_pass_seconds", "duration of the last reconciler pass",
            ["queue"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.reconciler_last = Gauge(
            "flowcraft_reconciler_last_success_timestamp_seconds",
            "when the last reconciler pass succeeded (Unix time)", ["queue"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.limit_groups = Gauge(
            "flowcraft_limit_groups", "concurrency groups the queue knows", ["queue"],
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.limit_waiting_total = Gauge(
            "flowcraft_limit_waiting_jobs", "jobs waiting for a slot, over all concurrency "
            "groups", ["queue"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.limit_group = Gauge(
            "flowcraft_limit_group_jobs", f"jobs holding a slot or waiting for one, per "
            f"concurrency group (the {MAX_GROUPS} busiest; limit is the group's size)",
            ["queue", "group", "kind"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.up.labels(queue).set(0)
        self.draining.labels(queue).set(0)
        observe = getattr(adapter, "observe_steps", None)
        if callable(observe):
            observe(self.observe_step)

    # ------------------------------------------------------------------ hot path

    def observe_step(self, blueprint: str, seconds: float, outcome: str) -> None:
        histogram = self._steps.get(blueprint)
        if histogram is None:
            histogram = self._steps[blueprint] = self.step_seconds.labels(self.queue, blueprint)
        histogram.observe(seconds)
        counter = self._outcomes.get((blueprint, outcome))
        if counter is None:
            counter = self.steps.labels(self.queue, blueprint, outcome)
            self._outcomes[(blueprint, outcome)] = counter
        counter.inc()

    # ------------------------------------------------------------------ state

    def consuming(self, value: bool) -> None:
        self._consuming = value
        self._set_up()

    def draining_now(self) -> None:
        self.draining.labels(self.queue).set(1)
        self.consuming(False)

    def reconciled(self, stats: Any | None, seconds: float) -> None:
        """A reconciler pass ended: its stats (None if it failed) and how long it took."""
        q = self.queue
        self.reconciler_passes.labels(q, "ok" if stats is not None else "error").inc()
        self.reconciler_seconds.labels(q).set(seconds)
        if stats is None:
            return
        self.reconciler_last.labels(q).set(time.time())
        for kind, attr in RECONCILER_KINDS:
            self.reconciler_runs.labels(q, kind).inc(max(0, int(getattr(stats, attr, 0) or 0)))

    # ------------------------------------------------------------------ periodic

    async def run(self) -> None:
        """Sync the adapter's figures and probe Redis every SYNC_SECONDS until cancelled."""
        turn = 0
        while True:
            await self.probe(limits=self.primary and turn % LIMITS_EVERY == 0)
            self.sync()
            turn += 1
            await asyncio.sleep(SYNC_SECONDS)

    async def probe(self, limits: bool) -> None:
        counts_of = getattr(self.adapter, "queue_counts", None)
        if not callable(counts_of):
            self._reachable = True  # an adapter without the probe: consuming is all we know
            self._set_up()
            return
        try:
            counts = await counts_of()
            for state, count in counts.items():
                self.queue_jobs.labels(self.queue, state).set(count)
            if limits:
                self._export_groups(await self.adapter.limit_groups())
            self._reachable = True
        except Exception as exc:  # Redis unreachable: up goes 0, the error is counted
            self._reachable = False
            self._counter("redis_errors_total").labels(self.queue).inc()
            log.debug("metrics probe failed: %s", exc)
        self._set_up()

    def sync(self) -> None:
        """Turn the adapter's counters' growth into increments; set its gauges."""
        figures = _adapter_figures(self.adapter)
        for key, value in figures.items():
            if key.endswith("_total"):
                delta = value - self._seen.get(key, 0.0)
                self._seen[key] = value
                series = self._counter(key).labels(self.queue)  # shown from the start, at 0
                if delta > 0:
                    series.inc(delta)
            else:
                self._gauge(key).labels(self.queue).set(value)

    def _set_up(self) -> None:
        self.up.labels(self.queue).set(1 if self._consuming and self._reachable else 0)

    def _export_groups(self, groups: list[tuple[str, int, int, int]]) -> None:
        q = self.queue
        self.limit_groups.labels(q).set(len(groups))
        self.limit_waiting_total.labels(q).set(sum(g[3] for g in groups))
        busiest = sorted(groups, key=lambda g: (-g[3], -g[2], g[0]))[:MAX_GROUPS]
        exported = set()
        for name, limit, holding, waiting in busiest:
            exported.add(name)
            for kind, value in (("limit", limit), ("holding", holding), ("waiting", waiting)):
                self.limit_group.labels(q, name, kind).set(value)
        for name in self._exported_groups - exported:
            for kind in ("limit", "holding", "waiting"):
                self._drop_group(name, kind)
        self._exported_groups = exported

    def _drop_group(self, name: str, kind: str) -> None:
        if self._registry is None:  # multiprocess mode cannot remove a series: zero it
            self.limit_group.labels(self.queue, name, kind).set(0)
        else:
            with contextlib.suppress(KeyError):
                self.limit_group.remove(self.queue, name, kind)

    def _counter(self, key: str) -> Counter:
        counter = self._counters.get(key)
        if counter is None:
            base = key.removesuffix("_total")
            counter = Counter(
                "flowcraft_" + base, HELP.get(base, base.replace("_", " ")), ["queue"],
                registry=self._registry,
            )  # fmt: skip
            self._counters[key] = counter
        return counter

    def _gauge(self, key: str) -> Gauge:
        gauge = self._gauges.get(key)
        if gauge is None:
            gauge = Gauge(
                "flowcraft_" + key, HELP.get(key, key.replace("_", " ")), ["queue"],
                registry=self._registry, multiprocess_mode=GAUGE_MODES.get(key, "livemax"),
            )  # fmt: skip
            self._gauges[key] = gauge
        return gauge


def _adapter_figures(adapter: Any) -> dict[str, float]:
    """The adapter's numeric figures from its optional `metrics()`; {} without one."""
    method = getattr(adapter, "metrics", None)
    values = method() if callable(method) else {}
    return {
        key: float(value)
        for key, value in (values.items() if isinstance(values, dict) else ())
        if isinstance(value, int | float) and key.replace("_", "").isalnum()
    }


def worker_registry() -> CollectorRegistry:
    """The registry of a single worker process: its metrics plus process figures."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


# ------------------------------------------------------------------ the supervisor's side


class ChildrenCollector(Collector):
    """Each supervised child's resident memory, CPU time and readiness from /proc."""

    def __init__(self, children: Callable[[], Iterable[tuple[int, int | None, bool]]]) -> None:
        self._children = children  # (index, pid or None, ready) per child
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "flowcraft_worker_ready", "1 while the worker child consumes", labels=["worker"]
        )
        rss = GaugeMetricFamily(
            "flowcraft_worker_resident_memory_bytes", "worker child resident memory",
            labels=["worker"],
        )  # fmt: skip
        cpu = CounterMetricFamily(
            "flowcraft_worker_cpu_seconds", "worker child CPU time (user + system)",
            labels=["worker"],
        )  # fmt: skip
        for index, pid, is_ready in self._children():
            label = [str(index)]
            ready.add_metric(label, 1 if is_ready and pid is not None else 0)
            figures = self._proc(pid) if pid is not None else None
            if figures is not None:
                rss.add_metric(label, figures[0])
                cpu.add_metric(label, figures[1])
        yield from (ready, rss, cpu)

    def _proc(self, pid: int) -> tuple[float, float] | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return None  # no /proc, or the child just exited
        utime, stime, rss_pages = int(fields[11]), int(fields[12]), int(fields[21])
        return rss_pages * self._page, (utime + stime) / self._tick


def serve_children(
    bind: tuple[str, int],
    directory: str,
    children: Callable[[], Iterable[tuple[int, int | None, bool]]],
) -> MetricsEndpoint:
    """The supervisor's one endpoint: the children's metrics from `directory` added up, their
    /proc figures, and the supervisor's own process metrics."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(ChildrenCollector(children))
    ProcessCollector(registry=registry)
    return MetricsEndpoint(bind, registry)
