"""`RedisCoordinationStore`: the Redis connection and key settings a deployment shares.

The TypeScript Flowcraft's store offered counters and locks to its adapter; here every
coordination step (leases, join arrivals, run completion) runs inside the queue's atomic
scripts, so the store only carries the connection and the key layout to the queues built on it.
"""

from __future__ import annotations

from typing import Any

from .. import _core
from .connection import open_connection


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
    ignored when `conn` is a `_core.RedisConnection`, which has its own).
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
    ) -> None:
        if state_ttl_seconds < 1:
            raise ValueError("state_ttl_seconds must be at least 1")
        for name, keep in (
            ("keep_completed_jobs", keep_completed_jobs),
            ("keep_failed_jobs", keep_failed_jobs),
        ):
            if keep < -1:
                raise ValueError(f"{name} must be -1 (keep all) or at least 0, got {keep}")
        self.connection = open_connection(conn, retry_deadline=retry_deadline)
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
        if not name or ":" in name:
            raise ValueError(f"queue name {name!r} must be non-empty and contain no ':'")
        return _core.Queue(
            self.connection,
            name,
            prefix=self.queue_prefix,
            run_prefix=self.key_prefix,
            state_ttl_s=self.state_ttl_seconds,
            keep_completed=self.keep_completed_jobs,
            keep_failed=self.keep_failed_jobs,
            job_events=self.job_events,
        )

    def state_store(self) -> _core.StateStore:
        return _core.StateStore(self.connection, key_prefix=self.key_prefix)

    def __repr__(self) -> str:
        return f"RedisCoordinationStore({self.connection.server!r})"
