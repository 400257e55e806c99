"""Retention of finished jobs: BullMQ's `completed` set keeps about `keep_completed_jobs`.

The commit script trims in batches (once a tenth of the limit more has gathered, at least one):
the set never holds more than `keep + slack - 1` after a commit, the oldest jobs go first and
their job hashes go with them, and `-1` keeps everything.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from flowcraft_fast import (
    BullMQAdapter,
    FlowClient,
    FlowRuntime,
    NodeContext,
    RedisCoordinationStore,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUEUE = "keep"
CHAIN = {
    "id": "chain3",
    "nodes": [{"id": f"n{i}", "uses": "step"} for i in range(3)],
    "edges": [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(2)],
}


async def step(ctx: NodeContext) -> Any:
    return (ctx.input or 0) + 1


async def run_chains(url: str, keep: int, runs: int) -> list[str]:
    rt = FlowRuntime(blueprints=[CHAIN], registry={"step": step})
    store = RedisCoordinationStore(url, keep_completed_jobs=keep)
    adapter = BullMQAdapter(
        runtime_options=rt.options, coordination_store=store, queue_name=QUEUE, concurrency=4
    )
    await adapter.start()
    try:
        client = FlowClient(store, queue_name=QUEUE)
        ids = []
        for _ in range(runs):
            run_id = await client.start("chain3", {})
            result = await client.wait(run_id, timeout=30)
            assert result.status == "completed", result
            assert result.context["n2"] == 3
            ids.append(run_id)
        return ids
    finally:
        await adapter.close(timeout=10)


@pytest.mark.parametrize(("keep", "slack"), [(0, 1), (5, 1), (30, 3)])
async def test_completed_set_is_trimmed_in_batches_with_its_job_hashes(
    redis_url: str, keep: int, slack: int
) -> None:
    await run_chains(redis_url, keep, 12)  # 36 jobs
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        completed = r.zrange(f"bull:{QUEUE}:completed", 0, -1)
        assert len(completed) <= keep + slack - 1
        assert len(completed) >= min(keep, 36)
        job_hashes = [
            k
            for k in r.scan_iter(f"bull:{QUEUE}:*")
            if k.count(":") == 2
            and k.split(":")[2]
            not in {
                "wait",
                "active",
                "completed",
                "failed",
                "delayed",
                "marker",
                "meta",
                "events",
                "prioritized",
                "pc",
                "id",
                "stalled-check",
                "stalled",
                "paused",
            }
        ]
        # every job hash left belongs to a job the completed set still lists
        assert sorted(k.split(":")[2] for k in job_hashes) == sorted(completed)
    finally:
        r.close()


async def test_minus_one_keeps_every_job(redis_url: str) -> None:
    await run_chains(redis_url, -1, 5)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert r.zcard(f"bull:{QUEUE}:completed") == 15
    finally:
        r.close()


def test_a_keep_below_minus_one_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_completed_jobs must be -1"):
        RedisCoordinationStore("redis://127.0.0.1:1", keep_completed_jobs=-2)
