"""`BullMQAdapter`: serve a runtime's blueprints from a BullMQ-layout Redis queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from .. import _core
from ..runtime.runtime import RuntimeOptions
from .frontier import reconcile_run
from .partitions import Layout, check_partitions, parse_partition_set, summed
from .safety import check_server
from .store import RedisCoordinationStore
from .worker import DEFAULT_LEASE_MS, DEFAULT_STALLED_INTERVAL_S, StepObserver, Worker


class BullMQAdapter:
    """Runs nodes of distributed runs: `await start()` begins consuming, `await close()` drains.

    `runtime_options` is `FlowRuntime(...).options`, so in-memory and distributed runs share the
    registry, blueprints, middleware and event bus. `connection` is used when no
    `coordination_store` is given.

    `partitions` spreads the queue over that many partitions (partitions.py; every worker of a
    queue must give the same count, published in Redis for clients); `partition_set` (e.g.
    "0,2,4" or [0, 2, 4]) restricts this adapter to some of them, by default all. One `Worker`
    runs per partition served, each with its share of `concurrency` (rounded up).

    `history` (default: the runtime's, `FlowRuntime(history=N)`) records each run's last N
    history entries in a Redis Stream per run (docs/history.md); 0: off.

    `speculate=False` turns speculative continuation off (docs/distributed.md): a run's only
    job then never runs its successors before its commit is answered (one commit round trip
    per step of a sequential chain instead of one for the whole chain).
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
        partitions: int = 1,
        partition_set: str | Iterable[int] | None = None,
        history: int | None = None,
        speculate: bool = True,
    ) -> None:
        if coordination_store is None:
            if connection is None:
                raise ValueError("BullMQAdapter needs a coordination_store or a connection")
            coordination_store = RedisCoordinationStore(connection)
        self.store = coordination_store
        self.queue_name = queue_name
        self.partitions = check_partitions(partitions)
        self.partition_set = parse_partition_set(partition_set, partitions)
        self._worker_args: dict[str, Any] = dict(
            lease_ms=lease_ms,
            stalled_interval_s=stalled_interval_seconds,
            max_stalls=max_stalled_count,
            logger=logger,
            queue_name=queue_name,
            name=worker_name,
            renew_ms=renew_ms,
            speculate=speculate,
            server_check=lambda: check_server(coordination_store.connection),
        )
        self._options = runtime_options
        self.history = runtime_options.history if history is None else history
        if self.history < 0:
            raise ValueError(f"history must be 0 (off) or a number of entries, not {history}")
        self._concurrency = concurrency
        # the layout a single Redis would give; `start` finds the real one (a cluster tags it)
        self.layout = Layout(queue_name, partitions, tagged=partitions > 1)
        self.workers = self._make_workers(self.layout)
        """One worker per partition served, in `partition_set` order."""
        self._started = False

    def _make_workers(self, layout: Layout) -> list[Worker]:
        share = -(-self._concurrency // len(self.partition_set))
        queues = self.store.partition_queues(layout)
        return [
            Worker(
                self._options,
                queues[p],
                concurrency=share,
                history=_core.History(queues[p], self.history) if self.history else None,
                **self._worker_args,
            )
            for p in self.partition_set
        ]

    @property
    def worker(self) -> Worker:
        """The worker of the first partition served (the only one with one partition)."""
        return self.workers[0]

    @property
    def queue(self) -> _core.Queue:
        """The queue of the first partition served (the whole queue with one partition)."""
        return self.worker.queue

    async def _resolve(self) -> None:
        """Find the queue's layout on the connection (publishing the partition count); on a
        cluster the workers are made again for the tagged layout (nothing has started yet)."""
        layout = await self.store.layout(self.queue_name, self.partitions)
        if (layout.count, layout.tagged) != (self.layout.count, self.layout.tagged):
            observer = self.worker.step_observer
            self.workers = self._make_workers(layout)
            for worker in self.workers:
                worker.step_observer = observer
        self.layout = layout

    async def start(self) -> None:
        """Publish the blueprints and start consuming in background tasks; returns at once."""
        if self._started:
            return
        await self.store.connection.ping()
        await check_server(self.store.connection)  # refuses an evicting Redis
        await self.publish()  # every partition's, the served ones included
        await asyncio.gather(*(worker.start(publish=False) for worker in self.workers))
        self._started = True

    async def publish(self) -> None:
        """Publish the blueprints on the queue without consuming (`start` does it too), so
        clients can start runs that a worker will serve later."""
        await self._resolve()
        # every partition, not only the served ones: a client reads partition 0's
        queues = self.store.partition_queues(self.layout)
        await asyncio.gather(*(self.worker.publish_to(queue) for queue in queues))

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop claiming, let in-flight nodes finish and commit (within `timeout`), stop."""
        if not self._started:
            return
        await asyncio.gather(*(worker.close(timeout) for worker in self.workers))
        self._started = False

    async def reconcile(self, run_id: str) -> set[str]:
        """Re-enqueue the nodes of a live run whose jobs were lost; returns their node ids.

        The frontier comes from the run's recorded decisions: nodes that were fired and have
        not finished. Nodes whose job is queued, delayed or under a live lease are left alone.
        """
        p = self.layout.of(run_id)
        queue = self.store.partition_queues(self.layout)[p]
        states = self.store.state_store(self.layout.run_prefix(p, self.store.key_prefix))
        return await reconcile_run(self.worker.options, queue, states, run_id)

    def metrics(self) -> dict[str, float]:
        """This process's counters (names ending in `_total`) and gauges, read without I/O;
        the daemon exports them with prometheus-client (`daemon/metrics.py`)."""
        totals: dict[str, float] = {}
        for worker in self.workers:
            s = worker.stats
            tracked, renewals, renewal_errors = worker.queue.lease_stats()
            for name, value in (
                ("jobs_claimed_total", s.claimed),
                ("jobs_continued_total", s.continued),
                ("jobs_speculated_total", s.speculated),
                ("jobs_speculation_dropped_total", s.speculation_dropped),
                ("jobs_processed_total", s.committed),
                ("jobs_retried_total", s.retried),
                ("runs_failed_total", s.failed_runs),
                ("jobs_duplicate_total", s.duplicates),
                ("jobs_lease_lost_total", s.lost),
                ("jobs_rejected_total", s.rejected),
                ("jobs_parked_total", s.parked),
                ("jobs_admitted_by_commit_total", s.admitted_by_commit),
                ("stalled_jobs_requeued_total", s.stalled_requeued),
                ("redis_errors_total", s.redis_errors),
                ("lease_renewals_total", renewals),
                ("lease_renewal_errors_total", renewal_errors),
                ("leases", tracked),
                ("in_flight", worker.in_flight),
            ):
                totals[name] = totals.get(name, 0) + value
        return totals

    def observe_steps(self, observer: StepObserver | None) -> None:
        """Call `observer(blueprint_id, seconds, outcome)` for every job this worker settles
        (see `Worker.step_observer`); None stops it."""
        for worker in self.workers:
            worker.step_observer = observer

    async def queue_counts(self) -> dict[str, int]:
        """Jobs of the queue per BullMQ state (wait, active, delayed, prioritized, completed,
        failed, ...), summed over the partitions served: one round trip each."""
        return summed(await asyncio.gather(*(w.queue.counts() for w in self.workers)))

    async def limit_groups(self) -> list[tuple[str, int, int, int]]:
        """The queue's concurrency groups: (name, limit, holding, waiting); with partitions,
        each partition's (limits hold per partition: docs/scale-out.md)."""
        per = await asyncio.gather(*(worker.queue.limit_stats() for worker in self.workers))
        return [group for groups in per for group in groups]

    async def __aenter__(self) -> BullMQAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
