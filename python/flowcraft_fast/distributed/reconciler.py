"""The reconciler: find runs that stopped making progress and re-enqueue their lost nodes.

A run is stalled when it is neither finished nor awaiting-only progress and its last recorded
progress (every commit, start and resume stamps the queue's index of unfinished runs) is older
than `stalled_threshold_seconds`; `OBJECT IDLETIME` plays no part. Reconciling rebuilds the
frontier from the run's recorded decisions (nodes fired but not done), leaves nodes whose job
is still queued or leased alone, and is safe with several reconcilers at once (each run is
repaired in one atomic script). Finished runs are never touched.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ..errors import FlowcraftError
from ..runtime.vocabulary import LIVE_STATUSES as LIVE
from .adapter import BullMQAdapter
from .frontier import reconcile_run
from .store import RedisCoordinationStore


@dataclass(slots=True)
class ReconciliationStats:
    """What one pass did (Flowcraft's statistics)."""

    scanned_keys: int = 0
    """Entries of the unfinished-runs index examined."""
    stalled_runs: int = 0
    """Runs without progress for longer than the threshold."""
    reconciled_runs: int = 0
    """Stalled runs for which at least one node was re-enqueued."""
    failed_runs: int = 0
    """Stalled runs the pass could not repair (an error was logged)."""


class BullMQReconciler:
    def __init__(
        self,
        *,
        adapter: BullMQAdapter,
        redis: Any = None,
        stalled_threshold_seconds: float = 300,
        key_prefix: str = "workflow:state:",
        scan_count: int = 100,
        logger: logging.Logger | None = None,
    ) -> None:
        if stalled_threshold_seconds < 0:
            raise ValueError("stalled_threshold_seconds must be >= 0")
        if scan_count < 1:
            raise ValueError("scan_count must be >= 1")
        expected = f"{adapter.store.key_prefix}workflow:state:"
        if key_prefix != expected:
            raise ValueError(
                f"key_prefix {key_prefix!r} does not match the adapter's run keys ({expected!r})"
            )
        self.adapter = adapter
        # A connection of its own keeps scans off the worker's connection.
        store = adapter.store
        if redis is not None:
            store = RedisCoordinationStore(
                redis,
                key_prefix=adapter.store.key_prefix,
                queue_prefix=adapter.store.queue_prefix,
                state_ttl_seconds=adapter.store.state_ttl_seconds,
            )
        self.queue = store.queue(adapter.queue_name)
        self.threshold_ms = int(stalled_threshold_seconds * 1000)
        self.scan_count = scan_count
        self.log = logger or logging.getLogger("flowcraft_fast.reconciler")

    async def run(self) -> ReconciliationStats:
        """One pass over the runs without progress for the threshold, a page at a time; the
        runs of a page are examined concurrently (each repair is its own atomic script)."""
        stats = ReconciliationStats()
        seen: set[str] = set()
        offset = 0  # position in the index, oldest progress first
        while True:
            page = await self.queue.stalled_runs(self.threshold_ms, offset, self.scan_count)
            if not page:
                return stats
            fresh = [run_id for run_id, _ in page if run_id not in seen]
            seen.update(fresh)
            outcomes = await asyncio.gather(*(self._examine(run_id, stats) for run_id in fresh))
            # Forgotten runs left the index and reconciled ones moved to its end (their progress
            # stamp changed): the entries after this page moved up by that many places.
            offset += len(page) - sum(1 for left in outcomes if left)

    async def _examine(self, run_id: str, stats: ReconciliationStats) -> bool:
        """Repair one run if it needs it; True when it left its place in the index."""
        stats.scanned_keys += 1
        meta, _ = await self.queue.run_info(run_id)
        if meta.get("status") not in LIVE:
            await self.queue.forget_run(run_id)  # ended or expired: nothing to repair
            return True
        stats.stalled_runs += 1
        adapter = self.adapter
        try:
            enqueued = await reconcile_run(
                adapter.worker.options, adapter.queue, adapter.store, run_id, meta
            )
        except (FlowcraftError, ValueError, ConnectionError) as exc:
            stats.failed_runs += 1
            self.log.error("reconciling run %s failed: %s", run_id, exc)
            return False
        if not enqueued:
            return False
        stats.reconciled_runs += 1
        self.log.warning("run %s was stalled: re-enqueued %s", run_id, ", ".join(sorted(enqueued)))
        return True


def create_bullmq_reconciler(
    *,
    adapter: BullMQAdapter,
    redis: Any = None,
    stalled_threshold_seconds: float = 300,
    key_prefix: str = "workflow:state:",
    scan_count: int = 100,
) -> BullMQReconciler:
    """A reconciler for the runs of `adapter`'s queue; `await reconciler.run()` does one pass."""
    return BullMQReconciler(
        adapter=adapter,
        redis=redis,
        stalled_threshold_seconds=stalled_threshold_seconds,
        key_prefix=key_prefix,
        scan_count=scan_count,
    )
