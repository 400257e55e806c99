"""Speculative continuation (docs/distributed.md): a run's only outstanding job runs its
certain successors before its commit is answered, their commits pipelined behind it.

- A quiet chain: every node runs once, all its steps ride in one commit round trip, nothing
  is dropped, and BullMQ sees every job completed as usual.
- A prediction that fails is discarded and the job runs again on the real state: a write from
  outside while the parent runs (the successor then sees it), and a run that ended while the
  parent ran (nothing ahead of it is committed, nothing is left locked).
- Not speculated: successors with several predecessors (joins), start nodes reached by a cycle,
  and anything while history is on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
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

QUEUE = "spec"
QP = f"bull:{QUEUE}:"
CHAIN = {
    "id": "chain8",
    "nodes": [{"id": f"n{i}", "uses": "step"} for i in range(8)],
    "edges": [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(7)],
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
GATE: dict[str, asyncio.Event] = {}
RAN: Counter[str] = Counter()
RUNNING = {"now": 0, "most": 0}


async def step(ctx: NodeContext) -> Any:
    RAN[f"{ctx.run_id}:{ctx.node_id}"] += 1
    if ctx.node_id in GATE:
        await asyncio.wait_for(GATE[ctx.node_id].wait(), 30)
    seen = await ctx.context.get("seen", [])
    await ctx.context.set("seen", [*seen, ctx.node_id, await ctx.context.get("outside")])
    return (ctx.input or 0) + 1


async def slow(ctx: NodeContext) -> Any:
    RUNNING["now"] += 1
    RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
    try:
        await asyncio.sleep(0.002)
    finally:
        RUNNING["now"] -= 1
    return (ctx.input or 0) + 1


async def total(ctx: NodeContext) -> Any:
    return sum(ctx.input.values())


@asynccontextmanager
async def serving(
    url: str, **adapter_options: Any
) -> AsyncIterator[tuple[BullMQAdapter, FlowClient, redis.Redis]]:
    r = redis.Redis.from_url(url, decode_responses=True)
    slow_chain = {**CHAIN, "id": "slow8", "nodes": [{**n, "uses": "slow"} for n in CHAIN["nodes"]]}
    rt = FlowRuntime(
        blueprints=[CHAIN, FAN, slow_chain],
        registry={"step": step, "total": total, "slow": slow},
    )
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        coordination_store=RedisCoordinationStore(url),
        queue_name=QUEUE,
        concurrency=8,
        **adapter_options,
    )
    await adapter.start()
    try:
        yield adapter, FlowClient(RedisCoordinationStore(url), queue_name=QUEUE), r
    finally:
        GATE.clear()
        await adapter.close(timeout=10)
        r.close()


def ran(run_id: str, prefix: str = "n") -> dict[str, int]:
    return {k.split(":", 1)[1]: v for k, v in RAN.items() if k.startswith(f"{run_id}:{prefix}")}


async def test_a_quiet_chain_commits_its_speculated_steps_in_one_round_trip(
    redis_url: str,
) -> None:
    async with serving(redis_url) as (adapter, client, r):
        worker = adapter.workers[0]
        run_id = await client.start("chain8", {})
        result = await client.wait(run_id, timeout=30)
        assert result.status == "completed" and result.context["n7"] == 8, result
        assert ran(run_id) == {f"n{i}": 1 for i in range(8)}  # each node ran once
        # n0 was claimed as its run's only job: n1..n7 ran ahead of its commit, and all eight
        # commits went in one round trip
        assert worker.stats.speculated == 7, worker.stats
        assert worker.stats.speculation_dropped == 0, worker.stats
        assert worker.stats.commit_batches == 1, worker.stats
        metrics = adapter.metrics()
        assert metrics["jobs_continued_total"] == 7, metrics
        assert metrics["jobs_claimed_total"] == 8, metrics
        completed = r.zrange(QP + "completed", 0, -1)
        assert len(completed) == 8
        for jid in completed:  # BullMQ sees ordinary completed jobs
            job = r.hgetall(QP + jid)
            assert job["ats"] == "1" and job["atm"] == "1" and job["finishedOn"], job
        assert r.llen(QP + "active") == 0
        assert not list(r.scan_iter(QP + "*:lock"))


def job_hashes(r: redis.Redis, run_id: str) -> dict[str, dict[str, str]]:
    """The run's jobs as BullMQ stores them, by node, without the times (they differ)."""
    out = {}
    for jid in r.zrange(QP + "completed", 0, -1):
        job = r.hgetall(QP + jid)
        if job and f'"runId":"{run_id}"' in job["data"]:
            node = job["data"].split('"nodeId":"', 1)[1].split('"', 1)[0]
            out[node] = {
                k: v for k, v in job.items() if k not in ("timestamp", "processedOn", "finishedOn")
            }
            assert {"timestamp", "processedOn", "finishedOn"} <= job.keys(), job
    return out


async def test_a_chain_committed_in_one_script_call_leaves_the_jobs_a_usual_commit_leaves(
    redis_url: str,
) -> None:
    """A speculative chain's commits go in ONE script call (`follows`): commit.lua creates each
    speculated job as it finishes it, with no lock and no trip through `active`. BullMQ must
    see the same jobs as when each is taken and committed on its own (speculation off)."""
    async with serving(redis_url) as (adapter, client, r):
        r.config_resetstat()
        fused = await client.start("chain8", {})
        result = await client.wait(fused, timeout=30)
        assert result.status == "completed" and result.context["n7"] == 8, result
        stats = r.info("commandstats")
        # n1..n7 never went through `active`: the start pushed n0 to wait, and n0 alone was
        # taken out of active as it finished
        calls = {c: stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("lpush", "lrem")}
        assert calls == {"lpush": 1, "lrem": 1}, calls
        assert adapter.workers[0].stats.speculation_dropped == 0
    async with serving(redis_url, speculate=False) as (adapter, client, r):
        plain = await client.start("chain8", {})
        result = await client.wait(plain, timeout=30)
        assert result.status == "completed" and result.context["n7"] == 8, result
        assert adapter.workers[0].stats.speculated == 0
    got, want = job_hashes(r, fused), job_hashes(r, plain)
    assert sorted(got) == sorted(want) == [f"n{i}" for i in range(8)], (got, want)
    for node in want:
        expected = {k: v.replace(plain, fused) for k, v in want[node].items()}
        assert got[node] == expected, node


async def test_a_write_from_outside_drops_the_speculation_and_the_job_sees_it(
    redis_url: str,
) -> None:
    GATE["n1"] = asyncio.Event()
    async with serving(redis_url) as (adapter, client, r):
        worker = adapter.workers[0]
        run_id = await client.start("chain8", {})
        await wait_until(lambda: r.hexists(f"workflow:run:{run_id}", "done:0|n0"), 20, "n0")
        await RedisContext(redis_url, run_id).set("outside", "hello")
        GATE["n1"].set()  # n1 finishes on its old snapshot; n2.. ran ahead on it too
        result = await client.wait(run_id, timeout=30)
        assert result.status == "completed" and result.context["n7"] == 8, result
        seen = result.context["seen"]
        assert seen[:4] == ["n0", None, "n1", None], seen
        assert seen[4:] == [x for i in range(2, 8) for x in (f"n{i}", "hello")], seen
        assert worker.stats.speculation_dropped >= 1, worker.stats
        counts = ran(run_id)
        assert counts["n0"] == counts["n1"] == 1, counts
        assert counts["n2"] == 2, counts  # ran ahead (discarded), then on the real state


async def test_a_run_that_ended_meanwhile_commits_nothing_speculated(redis_url: str) -> None:
    GATE["n1"] = asyncio.Event()
    async with serving(redis_url) as (adapter, client, r):
        worker = adapter.workers[0]
        run_id = await client.start("chain8", {})
        meta_key = f"workflow:run:{run_id}"
        await wait_until(lambda: r.hexists(meta_key, "done:0|n0"), 20, "n0")
        # the run ends before its announcement reaches the worker (a cancel in flight): n1
        # finishes, n2..n7 run ahead of n1's commit, which finds the run ended
        r.hset(meta_key, "status", "cancelled")
        GATE["n1"].set()
        await wait_until(lambda: worker.in_flight == 0, 20, "the worker to settle")
        meta = r.hgetall(meta_key)
        assert [k for k in meta if k.startswith("done:")] == ["done:0|n0"], meta
        assert worker.stats.speculated == 7, worker.stats  # n1 (confirmed), n2..n7
        assert worker.stats.speculation_dropped == 6, worker.stats  # n2, and behind it n3..n7
        assert worker.stats.committed == 1 and worker.stats.lost == 0, worker.stats
        assert r.llen(QP + "active") == 0
        assert not list(r.scan_iter(QP + "*:lock"))
        assert r.zcard(QP + "completed") == 1 and r.zcard(QP + "failed") == 1  # n0; n1


async def test_joins_and_runs_with_history_are_not_speculated(redis_url: str) -> None:
    async with serving(redis_url) as (adapter, client, _):
        worker = adapter.workers[0]
        result = await client.wait(await client.start("fan3", {}), timeout=30)
        assert result.status == "completed" and result.context["j"] == 6, result
        # s (the run's only job) ran p0..p2 ahead; j has three predecessors: through wait
        assert worker.stats.speculated == 3, worker.stats
        assert worker.stats.continued == 3 and worker.stats.claims >= 2, worker.stats
    async with serving(redis_url, history=100) as (adapter, client, _):
        worker = adapter.workers[0]
        assert not worker.speculate
        result = await client.wait(await client.start("chain8", {}), timeout=30)
        assert result.status == "completed", result
        assert worker.stats.speculated == 0, worker.stats


async def test_the_worker_never_holds_more_runs_than_its_concurrency(redis_url: str) -> None:
    """Speculative jobs run on their parent's slot, and claims on the wire at once (the claim
    loop's, a commit batch's) share the free slots: with 8 slots and 100 chains started at
    once, no more than 8 runs ever have jobs in this worker (each launch is checked), and at
    most 8 nodes that await run at once."""
    RUNNING.update(now=0, most=0)
    async with serving(redis_url) as (adapter, client, _):
        worker = adapter.workers[0]
        most_runs = 0
        launch = worker._launch

        def checked(*args: Any, **kwargs: Any) -> None:
            nonlocal most_runs
            launch(*args, **kwargs)
            most_runs = max(most_runs, len({f.run_id for f in worker._in_flight.values()}))

        worker._launch = checked  # type: ignore[method-assign]
        for shape in ("chain8", "slow8"):
            ids = await asyncio.gather(*(client.start(shape, {}) for _ in range(50)))
            results = await asyncio.gather(*(client.wait(i, timeout=60) for i in ids))
            assert all(r.status == "completed" and r.context["n7"] == 8 for r in results)
        assert worker.stats.speculated > 0, worker.stats
        assert 1 <= most_runs <= worker.concurrency == 8, most_runs
        assert 1 <= RUNNING["most"] <= 8, RUNNING
