"""Local continuation: a commit claims the successors it fires for its own worker.

- A chain runs on one worker without its jobs passing through `wait`: every job after the
  start node is claimed by the commit of its predecessor, and BullMQ still sees each job's
  usual fields (`processedOn`, `ats`, `finishedOn`, the completed set).
- A join (several predecessors) is not taken ahead of time: it goes through `wait`.
- A paused queue is respected: the commit pushes the successor to `wait`, where it stays until
  the queue is resumed.
- State versions: a continued job gets the run's state without a re-read when the worker's
  snapshot is current (its snapshot plus the commit's writes), and the fresh state when anyone
  else wrote to it meanwhile (here `RedisContext`, while the predecessor ran).
(That a continued job whose worker dies is taken over by another is shown by
tests/chaos/test_exactly_once.py: the node killed there is a continued one.)
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
from flowcraft_fast.distributed.context import RedisContext
from waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUEUE = "cont"
QP = f"bull:{QUEUE}:"
CHAIN = {
    "id": "chain5",
    "nodes": [{"id": f"n{i}", "uses": "step"} for i in range(5)],
    "edges": [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(4)],
}
FAN = {
    "id": "fan3",
    "nodes": [
        {"id": "s", "uses": "step"},
        *({"id": f"p{i}", "uses": "step"} for i in range(3)),
        {"id": "j", "uses": "total", "config": {"joinStrategy": "all"}},
    ],
    "edges": [
        *({"source": "s", "target": f"p{i}"} for i in range(3)),
        *({"source": f"p{i}", "target": "j"} for i in range(3)),
    ],
}
SEEN = {
    "id": "seen",
    "nodes": [{"id": f"n{i}", "uses": "step"} for i in range(3)],
    "edges": [{"source": "n0", "target": "n1"}, {"source": "n1", "target": "n2"}],
}
GATE: dict[str, asyncio.Event] = {}


async def step(ctx: NodeContext) -> Any:
    if ctx.node_id in GATE:
        await asyncio.wait_for(GATE[ctx.node_id].wait(), 30)
    seen = await ctx.context.get("seen", [])
    await ctx.context.set("seen", [*seen, ctx.node_id, await ctx.context.get("outside")])
    return (ctx.input or 0) + 1


async def total(ctx: NodeContext) -> Any:
    return sum(ctx.input.values())


@asynccontextmanager
async def serving(url: str) -> AsyncIterator[tuple[BullMQAdapter, FlowClient, redis.Redis]]:
    """A worker serving the blueprints on QUEUE, a client of it, and a plain Redis client to
    look with; gates are cleared afterwards."""
    r = redis.Redis.from_url(url, decode_responses=True)
    rt = FlowRuntime(blueprints=[CHAIN, FAN, SEEN], registry={"step": step, "total": total})
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        coordination_store=RedisCoordinationStore(url),
        queue_name=QUEUE,
        concurrency=8,
    )
    await adapter.start()
    try:
        yield adapter, FlowClient(RedisCoordinationStore(url), queue_name=QUEUE), r
    finally:
        GATE.clear()
        await adapter.close(timeout=10)
        r.close()


async def test_a_chain_runs_on_one_worker_without_passing_through_wait(redis_url: str) -> None:
    async with serving(redis_url) as (adapter, client, r):
        for _ in range(3):
            result = await client.wait(await client.start("chain5", {}), timeout=30)
            assert result.status == "completed" and result.context["n4"] == 5, result
        metrics = adapter.metrics()
        assert metrics["jobs_continued_total"] == 3 * 4, metrics  # n1..n4 of each run
        assert metrics["jobs_claimed_total"] == 3 * 5, metrics
        completed = r.zrange(QP + "completed", 0, -1)
        assert len(completed) == 15
        for jid in completed:
            job = r.hgetall(QP + jid)
            assert job["ats"] == "1" and job["atm"] == "1", job
            assert int(job["processedOn"]) <= int(job["finishedOn"]), job
            assert job["returnvalue"] != ""
        assert r.llen(QP + "active") == 0
        assert not list(r.scan_iter(QP + "*:lock"))


async def test_a_join_goes_through_wait(redis_url: str) -> None:
    async with serving(redis_url) as (adapter, client, _):
        result = await client.wait(await client.start("fan3", {}), timeout=30)
        assert result.status == "completed" and result.context["j"] == 6, result
        metrics = adapter.metrics()
        assert metrics["jobs_continued_total"] == 3, metrics  # p0..p2, never j
        assert metrics["jobs_claimed_total"] == 5, metrics


async def test_a_paused_queue_keeps_the_successor_in_wait(redis_url: str) -> None:
    GATE["n1"] = asyncio.Event()
    async with serving(redis_url) as (_, client, r):
        run_id = await client.start("chain5", {})
        await wait_until(lambda: r.hexists(f"workflow:run:{run_id}", "done:0|n0"), 20, "n0")
        r.hset(QP + "meta", "paused", 1)
        GATE["n1"].set()  # n1 commits while the queue is paused
        await wait_until(lambda: r.hexists(f"workflow:run:{run_id}", "done:0|n1"), 20, "n1")
        await wait_until(lambda: r.llen(QP + "wait") == 1, 20, "n2 in wait")
        await asyncio.sleep(0.3)
        assert not r.hexists(f"workflow:run:{run_id}", "done:0|n2")
        assert r.llen(QP + "wait") == 1
        r.hdel(QP + "meta", "paused")
        r.zadd(QP + "marker", {"0": 0})  # what BullMQ's resume does to wake workers
        result = await client.wait(run_id, timeout=30)
        assert result.status == "completed" and result.context["n4"] == 5, result


async def test_continued_jobs_see_every_write_without_rereading_the_state(redis_url: str) -> None:
    GATE["n1"] = asyncio.Event()
    async with serving(redis_url) as (_, client, r):
        # 1. nobody else writes: the state of a continued job is the worker's own
        quiet = await client.start("chain5", {})
        r.config_resetstat()
        GATE["n1"].set()
        result = await client.wait(quiet, timeout=30)
        assert result.status == "completed", result
        assert result.context["seen"] == [
            "n0",
            None,
            "n1",
            None,
            "n2",
            None,
            "n3",
            None,
            "n4",
            None,
        ]
        reads = int(r.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))
        assert reads <= 2, f"{reads} state reads for 4 continued jobs"  # the client's result
        # 2. a write from outside while n1 runs: n2, continued from n1's commit, sees it
        GATE["n1"] = asyncio.Event()
        run_id = await client.start("seen", {})
        await wait_until(lambda: r.hexists(f"workflow:run:{run_id}", "done:0|n0"), 20, "n0")
        await RedisContext(redis_url, run_id).set("outside", "hello")
        GATE["n1"].set()
        result = await client.wait(run_id, timeout=30)
        assert result.status == "completed", result
        # n1 was continued from n0's commit before the write; n2 after it
        assert result.context["seen"] == ["n0", None, "n1", None, "n2", "hello"], result.context
