"""`BullMQAdapter`: serve a runtime's blueprints from a BullMQ-layout Redis queue."""

from __future__ import annotations

import logging
from typing import Any

from ..runtime.runtime import RuntimeOptions
from .frontier import reconcile_run
from .safety import check_server
from .store import RedisCoordinationStore
from .worker import DEFAULT_LEASE_MS, DEFAULT_STALLED_INTERVAL_S, StepObserver, Worker


class BullMQAdapter:
    """Runs nodes of distributed runs: `await start()` begins consuming, `await close()` drains.

    `runtime_options` is `FlowRuntime(...).options`, so in-memory and distributed runs share the
    registry, blueprints, middleware and event bus. `connection` is used when no
    `coordination_store` is given.
    """

    def __init__(
        self,
        *,
        runtime_options: RuntimeOptions,
        coordination_store: RedisCoordinationStore | None = None,
        connection: Any = None,
        queue_name: str = "flowcraft-queue",
        concurrency: int = 64,
        lease_ms: int = DEFAULT_LEASE_MS,
        stalled_interval_seconds: float = DEFAULT_STALLED_INTERVAL_S,
        max_stalled_count: int = 1,
        logger: logging.Logger | None = None,
        worker_name: str | None = None,
        renew_ms: int = 0,
    ) -> None:
        if coordination_store is None:
            if connection is None:
                raise ValueError("BullMQAdapter needs a coordination_store or a connection")
            coordination_store = RedisCoordinationStore(connection)
        self.store = coordination_store
        self.queue_name = queue_name
        self.queue = coordination_store.queue(queue_name)
        self.worker = Worker(
            runtime_options,
            self.queue,
            concurrency=concurrency,
            lease_ms=lease_ms,
            stalled_interval_s=stalled_interval_seconds,
            max_stalls=max_stalled_count,
            logger=logger,
            queue_name=queue_name,
            name=worker_name,
            renew_ms=renew_ms,
            server_check=lambda: check_server(coordination_store.connection),
        )
        self._started = False

    async def start(self) -> None:
        """Publish the blueprints and start consuming in background tasks; returns at once."""
        if self._started:
            return
        await self.store.connection.ping()
        await check_server(self.store.connection)  # refuses an evicting Redis
        await self.worker.start()
        self._started = True

    async def publish(self) -> None:
        """Publish the blueprints on the queue without consuming (`start` does it too), so
        clients can start runs that a worker will serve later."""
        await self.worker.publish()

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop claiming, let in-flight nodes finish and commit (within `timeout`), stop."""
        if not self._started:
            return
        await self.worker.close(timeout)
        self._started = False

    async def reconcile(self, run_id: str) -> set[str]:
        """Re-enqueue the nodes of a live run whose jobs were lost; returns their node ids.

        The frontier comes from the run's recorded decisions: nodes that were fired and have
        not finished. Nodes whose job is queued, delayed or under a live lease are left alone.
        """
        return await reconcile_run(self.worker.options, self.queue, self.store, run_id)

    def metrics(self) -> dict[str, float]:
        """This process's counters (names ending in `_total`) and gauges, read without I/O;
        the daemon exports them with prometheus-client (`daemon/metrics.py`)."""
        s = self.worker.stats
        tracked, renewals, renewal_errors = self.queue.lease_stats()
        return {
            "jobs_claimed_total": s.claimed,
            "jobs_continued_total": s.continued,
            "jobs_processed_total": s.committed,
            "jobs_retried_total": s.retried,
            "runs_failed_total": s.failed_runs,
            "jobs_duplicate_total": s.duplicates,
            "jobs_lease_lost_total": s.lost,
            "jobs_rejected_total": s.rejected,
            "jobs_parked_total": s.parked,
            "jobs_admitted_by_commit_total": s.admitted_by_commit,
            "stalled_jobs_requeued_total": s.stalled_requeued,
            "redis_errors_total": s.redis_errors,
            "lease_renewals_total": renewals,
            "lease_renewal_errors_total": renewal_errors,
            "leases": tracked,
            "in_flight": self.worker.in_flight,
        }

    def observe_steps(self, observer: StepObserver | None) -> None:
        """Call `observer(blueprint_id, seconds, outcome)` for every job this worker settles
        (see `Worker.step_observer`); None stops it."""
        self.worker.step_observer = observer

    async def queue_counts(self) -> dict[str, int]:
        """Jobs of the queue per BullMQ state (wait, active, delayed, prioritized, completed,
        failed, ...): one round trip."""
        return await self.queue.counts()

    async def limit_groups(self) -> list[tuple[str, int, int, int]]:
        """The queue's concurrency groups: (name, limit, holding, waiting)."""
        return await self.queue.limit_stats()

    async def __aenter__(self) -> BullMQAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
