"""A redis-py `Sentinel(...).master_for(name)` client as `conn` (issue 11): the worker and the
client follow the primary its sentinels name, through a failover, without a restart."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio.sentinel

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext
from flowcraft_fast.devserver import RedisSentinelGroup
from flowcraft_fast.distributed.connection import url_from_redis_py

pytestmark = pytest.mark.sentinel

CHAIN = {
    "id": "chain",
    "nodes": [{"id": "a", "uses": "inc"}, {"id": "b", "uses": "inc"}],
    "edges": [{"source": "a", "target": "b"}],
}


async def inc(ctx: NodeContext) -> int:
    return (ctx.input or 0) + 1


async def test_a_redis_py_sentinel_client_follows_a_failover(
    redis_sentinels: RedisSentinelGroup,
) -> None:
    sentinels = redis.asyncio.sentinel.Sentinel(
        [("127.0.0.1", port) for port in redis_sentinels.sentinel_ports]
    )
    primary = sentinels.master_for(redis_sentinels.master_name)
    url, _ = url_from_redis_py(primary)
    assert url.startswith("redis+sentinel://127.0.0.1:")
    assert url.endswith(f"/{redis_sentinels.master_name}/0")
    rt = FlowRuntime(registry={"inc": inc}, blueprints=[CHAIN])
    adapter = BullMQAdapter(runtime_options=rt.options, connection=primary, queue_name="s")
    await adapter.start()
    try:
        client = FlowClient(primary, queue_name="s")
        first = await client.start("chain")
        assert (await client.wait(first, timeout=20)).context["b"] == 2
        old = redis_sentinels.kill_primary()
        new = await asyncio.to_thread(redis_sentinels.wait_for_failover, old)
        assert new != old
        second = await client.start("chain")
        assert (await client.wait(second, timeout=30)).context["b"] == 2
        assert (await client.result(first)).context["b"] == 2  # replicated before the kill
    finally:
        await adapter.close(timeout=5)
        await primary.aclose()
