"""Many runs at once: `start_many` starts them in one batch, and a client's waits share one
subscriber connection.

Each wait subscribes to its run's status channel on the queue's shared connection, reads, and
waits; the last waiter of a channel unsubscribes. Fifty runs waited on together hold one
connection, every wait returns its own run's result, and no subscription is left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUEUE = "waits"
RUNS = 50
BP = {"id": "one", "nodes": [{"id": "a", "uses": "gated"}], "edges": []}
OPEN = asyncio.Event()


async def gated(ctx: NodeContext) -> Any:
    await asyncio.wait_for(OPEN.wait(), 60)
    return await ctx.context.get("n")


@asynccontextmanager
async def serving(url: str) -> AsyncIterator[tuple[FlowClient, redis.Redis]]:
    """A worker serving BP on QUEUE, a client of it, and a plain Redis client to look with."""
    r = redis.Redis.from_url(url, decode_responses=True)
    rt = FlowRuntime(blueprints=[BP], registry={"gated": gated})
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        coordination_store=RedisCoordinationStore(url),
        queue_name=QUEUE,
        concurrency=64,
    )
    await adapter.start()
    try:
        yield FlowClient(RedisCoordinationStore(url), queue_name=QUEUE), r
    finally:
        OPEN.set()
        await adapter.close(timeout=10)
        r.close()


def pubsub_clients(r: redis.Redis) -> int:
    return sum(1 for c in r.client_list() if int(c.get("sub", 0)) + int(c.get("psub", 0)) > 0)


async def test_fifty_waits_share_one_subscription(redis_url: str) -> None:
    OPEN.clear()
    async with serving(redis_url) as (client, r):
        ids = [await client.start("one", {"n": n}) for n in range(RUNS)]
        before = pubsub_clients(r)  # the worker's stops listener
        waits = [asyncio.ensure_future(client.wait(run_id, timeout=60)) for run_id in ids]
        channels = [f"workflow:status:{run_id}" for run_id in ids]
        await wait_until(
            lambda: all(n == 1 for _, n in r.pubsub_numsub(*channels)), 20, "every wait subscribed"
        )
        assert pubsub_clients(r) == before + 1
        OPEN.set()
        results = await asyncio.gather(*waits)
        assert [res.context["a"] for res in results] == list(range(RUNS))
        assert all(res.status == "completed" for res in results)
        await wait_until(
            lambda: all(n == 0 for _, n in r.pubsub_numsub(*channels)), 20, "unsubscribed"
        )
        # a second round reuses the same connection: no new connection appears
        connections = {c["id"] for c in r.client_list()}
        again = await client.start("one", {"n": 7})
        assert (await client.wait(again, timeout=30)).context["a"] == 7
        assert {c["id"] for c in r.client_list()} <= connections
        OPEN.set()


async def test_start_many_starts_every_run_and_refuses_bad_input(redis_url: str) -> None:
    OPEN.set()
    async with serving(redis_url) as (client, r):
        ids = await client.start_many([("one", {"n": n}) for n in range(RUNS)])
        assert len(set(ids)) == RUNS
        results = await asyncio.gather(*(client.wait(i, timeout=60) for i in ids))
        assert [res.context["a"] for res in results] == list(range(RUNS))

        # a bad context fails alone, at once, naming its index: nothing is started
        before = r.zcard(f"bull:{QUEUE}:completed")
        with pytest.raises(TypeError, match=r"run #1: initial context key 'x'"):
            await client.start_many([("one", {"n": 1}), ("one", {"x": {1, 2}})])
        assert r.llen(f"bull:{QUEUE}:wait") == 0 and r.zcard(f"bull:{QUEUE}:completed") == before

        # an existing id starts nothing and is answered as it is (idempotent); the others start
        started = await client.start_many(
            [
                ("one", {"n": 5}, ids[0]),
                {"blueprint_id": "one", "initial_context": {"n": 6}, "run_id": "fresh-1"},
            ]
        )
        assert started == [ids[0], "fresh-1"]
        assert (await client.wait("fresh-1", timeout=30)).context["a"] == 6
        assert (await client.result(ids[0])).context["a"] == 0
        with pytest.raises(ValueError, match="distinct"):
            await client.start_many([("one", {}, "a"), ("one", {}, "a")])
        with pytest.raises(ValueError, match="run #1: a mapping needs 'blueprint_id'"):
            await client.start_many([("one", {}), {"blueprintId": "one"}])
        with pytest.raises(TypeError, match="run #0: expected"):
            await client.start_many(["one"])  # type: ignore[list-item]
        assert await client.start_many([]) == []
