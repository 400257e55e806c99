"""A run's memory budget (docs/distributed.md, "Memory per run"): what a finished chain10 run
keeps in Redis for --state-ttl, measured with MEMORY USAGE. The bound is the documented ~2.5 kB
with headroom for allocator differences between Redis versions (6.2 and 7.x); a change that
makes every run keep more state fails here instead of going unnoticed."""

from __future__ import annotations

import redis

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext

CHAIN10 = {
    "id": "chain10",
    "nodes": [{"id": f"n{i}", "uses": "step"} for i in range(10)],
    "edges": [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(9)],
}
BUDGET_BYTES = 4_000


async def step(ctx: NodeContext) -> int:
    return int(ctx.input or 0) + 1


async def test_a_finished_chain10_run_keeps_four_keys_within_its_budget(redis_url: str) -> None:
    rt = FlowRuntime(blueprints=[CHAIN10], registry={"step": step})
    client = FlowClient(redis_url, queue_name="mem")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    async with BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="mem"):
        run_id = await client.start("chain10", {})
        result = await client.wait(run_id, timeout=30)
    assert result.status == "completed"
    keys = sorted(k for k in r.scan_iter(f"workflow:*:{run_id}"))
    assert [k.split(":")[1] for k in keys] == ["joins", "run", "state", "status"]
    sizes = {k: r.memory_usage(k) or 0 for k in keys}
    assert sum(sizes.values()) <= BUDGET_BYTES, sizes
    assert all(0 < r.ttl(k) <= 86_400 for k in keys)  # kept for --state-ttl, then gone
