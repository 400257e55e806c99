"""`RedisCoordinationStore`: the Redis connection and key settings a deployment shares.

The TypeScript Flowcraft's store offered counters and locks to its adapter; here every
coordination step (leases, join arrivals, run completion) runs inside the queue's atomic
scripts, so the store only carries the connection and the key layout to the queues built on it.
"""

from __future__ import annotations

from typing import Any

from .. import _core
from ..errors import FlowcraftError
from .connection import open_connection
from .partitions import PARTITIONS_KEY, Layout, check_partitions, check_prefixes


def default_queue_prefix(key_prefix: str) -> str:
    """BullMQ's `bull`, behind the run key prefix when there is one (`tenant-a:bull`)."""
    return f"{key_prefix}bull"


class RedisCoordinationStore:
    """Connection + key layout for run coordination.

    `conn` is a URL, a redis-py client or a `_core.RedisConnection`. `key_prefix` is put in
    front of the run keys (`workflow:state:<runId>` ...); `queue_prefix` is BullMQ's prefix,
    by default `bull`, or `<key_prefix>bull` when `key_prefix` is set, so that a key prefix
    alone makes a separate deployment (its own queues too; docs/security.md).
    `state_ttl_seconds` is how long a run's keys live after it ends. `keep_completed_jobs` /
    `keep_failed_jobs` are how many finished jobs BullMQ's `completed` / `failed` sets keep
    (-1: all); the oldest beyond that are deleted in batches, once a tenth of the limit more
    (at least 1, at most 100) has gathered, so a set briefly holds up to that many extra.
    `retry_deadline` is how many seconds each call retries when Redis answers LOADING or BUSY
    or the connection fails (0: no retries; default $FLOWCRAFT_REDIS_RETRY_DEADLINE, else 30;
    ignored when `conn` is a `_core.RedisConnection`, which has its own). `wait_replicas` > 0
    makes every script call (start, claim, commit...) wait for that many replicas (Redis
    WAIT, at most `wait_timeout` seconds): with Sentinel, a failover then loses no
    acknowledged step (docs/scale-out.md has its measured cost).
    """

    def __init__(
        self,
        conn: str | Any,
        *,
        key_prefix: str = "",
        queue_prefix: str | None = None,
        state_ttl_seconds: int = 86_400,
        keep_completed_jobs: int = 1_000,
        keep_failed_jobs: int = 5_000,
        job_events: bool = False,
        retry_deadline: float | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        if state_ttl_seconds < 1:
            raise ValueError("state_ttl_seconds must be at least 1")
        for name, keep in (
            ("keep_completed_jobs", keep_completed_jobs),
            ("keep_failed_jobs", keep_failed_jobs),
        ):
            if keep < -1:
                raise ValueError(f"{name} must be -1 (keep all) or at least 0, got {keep}")
        self.connection = open_connection(
            conn,
            retry_deadline=retry_deadline,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        )
        self.key_prefix = key_prefix
        if queue_prefix is None:
            queue_prefix = default_queue_prefix(key_prefix)
        self.queue_prefix = queue_prefix
        self.state_ttl_seconds = state_ttl_seconds
        self.keep_completed_jobs = keep_completed_jobs
        self.keep_failed_jobs = keep_failed_jobs
        self.job_events = job_events
        """Write BullMQ's events stream (`bull:<queue>:events`, read by `QueueEvents`) on every
        job transition. Off by default: nothing in flowcraft-fast reads it, and it costs a
        stream entry per step."""

    def queue(self, name: str) -> _core.Queue:
        """The queue `name` in the single-partition layout of a single Redis (SPEC section 5);
        `layout` and `partition_queues` give the queues of a partitioned or cluster layout."""
        if not name or ":" in name:
            raise ValueError(f"queue name {name!r} must be non-empty and contain no ':'")
        return self._queue(name, self.key_prefix)

    def _queue(self, name: str, run_prefix: str) -> _core.Queue:
        return _core.Queue(
            self.connection,
            name,
            prefix=self.queue_prefix,
            run_prefix=run_prefix,
            state_ttl_s=self.state_ttl_seconds,
            keep_completed=self.keep_completed_jobs,
            keep_failed=self.keep_failed_jobs,
            job_events=self.job_events,
        )

    def state_store(self, run_prefix: str | None = None) -> _core.StateStore:
        """Run state access; `run_prefix` is a partition's run key prefix (`Layout.run_prefix`),
        by default the deployment's key prefix."""
        prefix = self.key_prefix if run_prefix is None else run_prefix
        return _core.StateStore(self.connection, key_prefix=prefix)

    async def layout(self, queue: str, partitions: int | None = None) -> Layout:
        """The key layout of `queue` (partitions.py), found on the connection.

        A worker passes its partition count: published when the queue has none, and refused
        when the queue was published with another. A client passes None and reads it: 1 when
        none is published yet (`Layout.published` False: ask again later, a worker may
        publish another count).
        """
        self.queue(queue)  # checks the name
        key = f"{self.queue_prefix}:{queue}:{PARTITIONS_KEY}"
        topology = await self.connection.topology()
        cluster = topology == "cluster"
        if partitions is None:
            raw = await self.connection.get(key)
        else:
            check_partitions(partitions)
            raw = await self.connection.set_if_absent(key, str(partitions))
        try:
            count = check_partitions(int(raw or 1), f"the partition count in {key}")
        except ValueError as exc:
            raise FlowcraftError(f"{exc} (read {raw!r})") from None
        if partitions is not None and count != partitions:
            raise FlowcraftError(
                f"queue {queue!r} is published with {count} partition(s) ({key}), not "
                f"{partitions}: every worker of a queue must use the same count. Drain the "
                f"queue and delete {key} to change it."
            )
        layout = Layout(queue, count, tagged=count > 1 or cluster, published=raw is not None)
        check_prefixes(layout, self.key_prefix, self.queue_prefix)
        return layout

    def partition_queues(self, layout: Layout) -> list[_core.Queue]:
        """One `_core.Queue` per partition of `layout`, in order."""
        return [
            self._queue(layout.queue_name(i), layout.run_prefix(i, self.key_prefix))
            for i in range(layout.count)
        ]

    def __repr__(self) -> str:
        return f"RedisCoordinationStore({self.connection.server!r})"
