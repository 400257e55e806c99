"""The reconciler: find runs that stopped making progress and re-enqueue their lost nodes.

A run is stalled when it is neither finished nor awaiting-only progress and its last recorded
progress (every commit, start and resume stamps the queue's index of unfinished runs) is older
than `stalled_threshold_seconds`; `OBJECT IDLETIME` plays no part. A pass surveys the index a
page at a time in Rust (survey.rs: a score cursor, never an offset; two pipelined round trips
per page; an O(1) "has a pending job" check per fired node), so healthy runs never reach
Python; only runs that need repair do, and their frontier is rebuilt from the run's recorded
decisions and re-enqueued in one atomic script per run (safe with several reconcilers at once).
Finished runs are never touched; the ones still in the index leave it.

`mode="scan"` finds runs by their keys instead (SCAN over the run records, the TypeScript
original's way), for runs the index does not know (a live run missing from it is put back).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from .. import _core
from ..errors import FlowcraftError
from .adapter import BullMQAdapter
from .frontier import reconcile_run
from .store import RedisCoordinationStore


@dataclass(slots=True)
class ReconciliationStats:
    """What one pass did (Flowcraft's statistics)."""

    scanned_keys: int = 0
    """Runs examined (entries of the unfinished-runs index, or state keys in the SCAN mode)."""
    stalled_runs: int = 0
    """Live runs without progress for longer than the threshold and with a fired node that has
    no pending job (the runs the pass tried to repair)."""
    reconciled_runs: int = 0
    """Stalled runs for which at least one node was re-enqueued."""
    failed_runs: int = 0
    """Stalled runs the pass could not repair (an error was logged)."""
    forgotten_runs: int = 0
    """Ended or expired runs the pass removed from the index."""


Mode = Literal["index", "scan"]


class BullMQReconciler:
    def __init__(
        self,
        *,
        adapter: BullMQAdapter,
        redis: Any = None,
        stalled_threshold_seconds: float = 300,
        key_prefix: str | None = None,
        scan_count: int = 200,
        mode: Mode = "index",
        logger: logging.Logger | None = None,
    ) -> None:
        if stalled_threshold_seconds < 0:
            raise ValueError("stalled_threshold_seconds must be >= 0")
        if scan_count < 1:
            raise ValueError("scan_count must be >= 1")
        if mode not in ("index", "scan"):
            raise ValueError(f"mode must be 'index' or 'scan', not {mode!r}")
        expected = f"{adapter.store.key_prefix}workflow:state:"
        if key_prefix is not None and key_prefix != expected:
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
        self.store = store
        self.threshold_ms = int(stalled_threshold_seconds * 1000)
        self.scan_count = scan_count
        self.mode = mode
        self.log = logger or logging.getLogger("flowcraft_fast.reconciler")

    async def run(self) -> ReconciliationStats:
        """One pass: survey the runs a page at a time; repair the ones that need it (each
        repair is its own atomic script; the repairs of a page run concurrently)."""
        stats = ReconciliationStats()
        layout = self.adapter.layout  # known once the adapter started
        queues = self.store.partition_queues(layout)
        for p in self.adapter.partition_set:  # each shard's own partitions, one at a time
            states = self.store.state_store(layout.run_prefix(p, self.store.key_prefix))
            await self._pass(queues[p], states, stats)
        return stats

    async def _pass(
        self, queue: _core.Queue, states: _core.StateStore, stats: ReconciliationStats
    ) -> None:
        survey = queue.survey_page if self.mode == "index" else queue.survey_keys
        cursor: str | None = ""  # opaque: where the survey is, and the pass's cutoff
        while cursor is not None:
            cursor, examined, forgotten, repair = await survey(
                self.threshold_ms, cursor, self.scan_count
            )
            stats.scanned_keys += examined
            stats.forgotten_runs += forgotten
            stats.stalled_runs += len(repair)
            await asyncio.gather(*(self._repair(queue, states, run_id, stats) for run_id in repair))

    async def _repair(
        self,
        queue: _core.Queue,
        states: _core.StateStore,
        run_id: str,
        stats: ReconciliationStats,
    ) -> None:
        try:
            enqueued = await reconcile_run(self.adapter.worker.options, queue, states, run_id)
        except (FlowcraftError, ValueError, ConnectionError) as exc:
            stats.failed_runs += 1
            self.log.error("reconciling run %s failed: %s", run_id, exc)
            return
        if enqueued:
            stats.reconciled_runs += 1
            self.log.warning(
                "run %s was stalled: re-enqueued %s", run_id, ", ".join(sorted(enqueued))
            )


def create_bullmq_reconciler(
    *,
    adapter: BullMQAdapter,
    redis: Any = None,
    stalled_threshold_seconds: float = 300,
    key_prefix: str | None = None,
    scan_count: int = 200,
    mode: Mode = "index",
) -> BullMQReconciler:
    """A reconciler for the runs of `adapter`'s queue; `await reconciler.run()` does one pass.

    `key_prefix` (the run state keys' prefix, `<store key_prefix>workflow:state:`) is the
    adapter's by default; a different one is refused."""
    return BullMQReconciler(
        adapter=adapter,
        redis=redis,
        stalled_threshold_seconds=stalled_threshold_seconds,
        key_prefix=key_prefix,
        scan_count=scan_count,
        mode=mode,
    )
