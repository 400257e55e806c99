"""Run history and time travel distributed (docs/history.md): the history is a Redis Stream per
run written by the workers in batches; replay and fork through `FlowClient`. The in-memory side
is tests/unit/test_history.py."""

from __future__ import annotations

from typing import Any

import redis

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext
from flowcraft_fast.runtime.history import HistoryEntry

CHAIN = {
    "id": "hchain",
    "nodes": [{"id": n, "uses": "step"} for n in "abcd"],
    "edges": [{"source": s, "target": t} for s, t in ("ab", "bc", "cd")],
}

SEEN: dict[tuple[str, str], dict[str, Any]] = {}
"""(run id, node id) -> the live context the node saw as it started."""
RAN: list[tuple[str, str]] = []


async def step(ctx: NodeContext) -> int:
    SEEN[(ctx.run_id, ctx.node_id)] = await ctx.context.to_dict()
    RAN.append((ctx.run_id, ctx.node_id))
    await ctx.context.set(f"seen_{ctx.node_id}", ctx.node_id.upper())
    return int(ctx.input or 0) + 10


def adapter_for(redis_url: str, history: int, queue: str) -> BullMQAdapter:
    rt = FlowRuntime(blueprints=[CHAIN], registry={"step": step}, history=history)
    return BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name=queue)


def start_of(entries: list[HistoryEntry], node_id: str) -> str:
    return next(e.id for e in entries if e.type == "node:start" and e.node_id == node_id)


async def test_replay_at_three_points_and_a_fork_from_a_mid_run_node(redis_url: str) -> None:
    adapter = adapter_for(redis_url, 1000, "hq")
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name="hq", history=1000)
        run_id = await client.start("hchain", {"_inputs.a": 1, "user": "x"})
        result = await client.wait(run_id, timeout=10)
        assert result.status == "completed" and result.context["d"] == 41
        entries = await client.history(run_id)
        assert entries[0].type == "workflow:start"
        for node in ("b", "c", "d"):
            replayed = await client.replay(run_id, until=start_of(entries, node))
            assert replayed == SEEN[(run_id, node)], node
        assert await client.replay(run_id) == result.context

        forked = await client.fork(run_id, "c")
        fork_result = await client.wait(forked, timeout=10)
        assert fork_result.status == "completed"
        assert [n for r, n in RAN if r == forked] == ["c", "d"]
        assert fork_result.context["d"] == 41 and fork_result.context["seen_b"] == "B"
        assert (await client.replay(forked))["_inputs.c"] == 21
    finally:
        await adapter.close()


async def test_history_is_bounded_and_expires(redis_url: str) -> None:
    adapter = adapter_for(redis_url, 5, "hb")
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name="hb", history=5)
        run_id = await client.start("hchain", {"_inputs.a": 1})
        assert (await client.wait(run_id, timeout=10)).status == "completed"
        assert len(await client.history(run_id)) == 5
    finally:
        await adapter.close()
    r = redis.Redis.from_url(redis_url)
    try:
        key = f"workflow:history:{run_id}"
        assert r.xlen(key) == 5
        assert 0 < r.ttl(key) <= 86_400  # the store's state_ttl, as the run's other keys
    finally:
        r.close()


async def test_history_off_writes_no_key(redis_url: str) -> None:
    adapter = adapter_for(redis_url, 0, "hoff")
    assert all(worker.history is None for worker in adapter.workers)
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name="hoff")
        run_id = await client.start("hchain", {"_inputs.a": 1})
        assert (await client.wait(run_id, timeout=10)).status == "completed"
        assert await client.history(run_id) == []
    finally:
        await adapter.close()
    r = redis.Redis.from_url(redis_url)
    try:
        assert list(r.scan_iter(match="*history*")) == []
    finally:
        r.close()
