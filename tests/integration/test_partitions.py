"""Partitions of a queue (issue 11, SPEC section 9; partitions.py): the layout's names, the
published count, runs routed to their partition, singleton keys across partitions, and
workers restricted to some partitions, on a single Redis; the slot function against a real
cluster's CLUSTER KEYSLOT."""

from __future__ import annotations

import asyncio

import pytest
import redis

from flowcraft_fast import FlowRuntime
from flowcraft_fast.devserver import RedisCluster, redis_command
from flowcraft_fast.distributed.adapter import BullMQAdapter
from flowcraft_fast.distributed.client import FlowClient
from flowcraft_fast.distributed.partitions import (
    SLOTS,
    Layout,
    key_slot,
    parse_partition_set,
    partition_of,
    partition_tag,
)
from flowcraft_fast.errors import FlowcraftError

QUEUE = "parts"


async def inc(ctx: object) -> int:
    return 1


BLUEPRINT = {
    "id": "two",
    "nodes": [{"id": "a", "uses": "inc"}, {"id": "b", "uses": "inc"}],
    "edges": [{"source": "a", "target": "b"}],
}


def adapter(url: str, partitions: int, partition_set: str | None = None) -> BullMQAdapter:
    rt = FlowRuntime(registry={"inc": inc}, blueprints={"two": BLUEPRINT})
    return BullMQAdapter(
        runtime_options=rt.options,
        connection=url,
        queue_name=QUEUE,
        partitions=partitions,
        partition_set=partition_set,
        concurrency=8,
    )


def test_layout_names() -> None:
    single = Layout("flows", 1, tagged=False)
    assert single.queue_name(0) == "flows" and single.run_prefix(0, "t:") == "t:"
    tagged = Layout("flows", 6, tagged=True)
    names = tagged.names()
    assert len(set(names)) == 6 and all(n.startswith("{flows.") for n in names)
    for p, name in enumerate(names):
        assert p * SLOTS // 6 <= key_slot(name) < (p + 1) * SLOTS // 6
        assert tagged.run_prefix(p, "t:") == f"t:{name}:"
        # every key of the partition hashes to its slot
        assert key_slot(f"bull:{name}:wait") == key_slot(f"t:{name}:workflow:state:r1")
    assert partition_tag("flows", 0, 1) == "flows.0"
    with pytest.raises(ValueError, match="must not contain"):
        Layout("{flows}", 2, tagged=True)


def test_partition_of_and_sets() -> None:
    assert partition_of("anything", 1) == 0
    spread = {partition_of(f"run-{i}", 6) for i in range(200)}
    assert spread == set(range(6))
    assert parse_partition_set(None, 3) == [0, 1, 2]
    assert parse_partition_set("0-2,5", 6) == [0, 1, 2, 5]
    assert parse_partition_set([4, 1], 6) == [1, 4]
    with pytest.raises(ValueError, match=r"outside 0\.\.5"):
        parse_partition_set("6", 6)
    with pytest.raises(ValueError, match="numbers or ranges"):
        parse_partition_set("a", 6)


@pytest.mark.cluster
def test_key_slot_matches_the_cluster(redis_cluster: RedisCluster) -> None:
    port = redis_cluster.nodes[0].port
    for key in ["foo", "bull:{flows.3}:wait", "{}x", "a{b}c{d}", "{user1000}.following", "é"]:
        assert key_slot(key) == int(redis_command(port, "CLUSTER", "KEYSLOT", key)), key


async def test_partitioned_queue_on_a_single_redis(redis_url: str) -> None:
    """4 partitions on one Redis: the count is published, runs land in their partition's
    keys and complete; a worker with another count is refused; a client without a flag reads
    the count."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = adapter(redis_url, 4)
    await worker.start()
    try:
        assert r.get(f"bull:{QUEUE}:flowcraft:partitions") == "4"
        client = FlowClient(redis_url, queue_name=QUEUE)
        ids = await client.start_many([("two", {}) for _ in range(40)])
        results = await asyncio.gather(*(client.wait(i, timeout=20) for i in ids))
        assert {res.status for res in results} == {"completed"}
        layout = client.layout
        assert layout is not None and layout.count == 4 and layout.tagged
        for run_id in ids:
            name = layout.queue_name(layout.of(run_id))
            assert r.exists(f"{name}:workflow:state:{run_id}")
            assert not r.exists(f"workflow:state:{run_id}")
        assert {layout.of(i) for i in ids} == set(range(4))
        assert (await client.counts())["completed"] == 80
        with pytest.raises(FlowcraftError, match="published with 4 partition"):
            await adapter(redis_url, 2).start()
        # each partition is an ordinary BullMQ queue: the bullmq package counts its jobs
        import bullmq

        seen = 0
        for p in range(4):
            bq = bullmq.Queue(layout.queue_name(p), {"connection": redis_url})
            try:
                counts = await bq.getJobCounts()
            finally:
                await bq.close()
            assert counts["completed"] == 2 * sum(1 for i in ids if layout.of(i) == p)
            seen += counts["completed"]
        assert seen == 80
        ctx = await client.context(ids[0])
        assert await ctx.get("b") == 1
    finally:
        await worker.close()
        r.close()


async def test_singleton_keys_hold_across_partitions(redis_url: str) -> None:
    worker = adapter(redis_url, 4)
    client = FlowClient(redis_url, queue_name=QUEUE)
    await worker.publish()  # no worker consumes: the runs stay live
    first = await client.start("two", {}, singleton_key="nightly")
    for _ in range(8):  # any new id would fall in a random partition without the routing
        assert await client.start("two", {}, singleton_key="nightly") == first
    layout = client.layout
    assert layout is not None
    wrong = next(f"r{i}" for i in range(100) if layout.of(f"r{i}") != layout.of(first))
    with pytest.raises(ValueError, match="singleton key 'nightly' in partition"):
        await client.start("two", {}, run_id=wrong, singleton_key="nightly")


async def test_workers_restricted_to_partition_sets(redis_url: str) -> None:
    """Two workers serving 0-1 and 2-3 of 4 partitions between them run every run; each
    claims only from its own partitions."""
    low, high = adapter(redis_url, 4, "0-1"), adapter(redis_url, 4, "2,3")
    await low.start()
    await high.start()
    try:
        client = FlowClient(redis_url, queue_name=QUEUE)
        ids = await client.start_many([("two", {}) for _ in range(40)])
        results = await asyncio.gather(*(client.wait(i, timeout=20) for i in ids))
        assert {res.status for res in results} == {"completed"}
        assert client.layout is not None
        by_part = [sum(1 for i in ids if client.layout.of(i) == p) for p in range(4)]
        assert low.metrics()["jobs_processed_total"] == 2 * (by_part[0] + by_part[1])
        assert high.metrics()["jobs_processed_total"] == 2 * (by_part[2] + by_part[3])
        assert [w.queue.key_base for w in low.workers] == [
            f"bull:{client.layout.queue_name(p)}:" for p in (0, 1)
        ]
    finally:
        await low.close()
        await high.close()


@pytest.mark.cluster
async def test_an_evicting_node_of_a_cluster_is_refused(
    cluster_url: str, redis_cluster: RedisCluster
) -> None:
    """The start-up check asks every node: one evicting master is enough to refuse."""
    from flowcraft_fast.distributed.safety import UnsafeRedisError

    port = redis_cluster.nodes[2].port
    redis_command(port, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(UnsafeRedisError, match=f"127.0.0.1:{port}=allkeys-lru"):
            await adapter(cluster_url, 3).start()
    finally:
        redis_command(port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
