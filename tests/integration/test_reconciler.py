"""The reconciler against a real Redis: lost jobs are re-enqueued from recorded decisions,
live ones are left alone, finished runs are never touched, two reconcilers never double up."""

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
    create_bullmq_reconciler,
)
from flowcraft_fast.distributed.jobs import job_id

pytestmark = pytest.mark.timeout(60)

CHAIN = {
    "id": "chain",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "b", "uses": "plus"}],
    "edges": [{"source": "a", "target": "b"}],
}
FAN = {
    "id": "fan",
    "nodes": [
        {"id": "s", "uses": "one"},
        {"id": "x", "uses": "plus"},
        {"id": "y", "uses": "plus"},
        {"id": "j", "uses": "gather"},
    ],
    "edges": [
        {"source": "s", "target": "x"},
        {"source": "s", "target": "y"},
        {"source": "x", "target": "j"},
        {"source": "y", "target": "j"},
    ],
}


async def one(ctx: NodeContext) -> int:
    return 1


async def plus(ctx: NodeContext) -> int:
    return int(ctx.input) + 1


async def gather(ctx: NodeContext) -> Any:
    return ctx.input


def runtime(**overrides: Any) -> FlowRuntime:
    registry = {"one": one, "plus": plus, "gather": gather, **overrides}
    return FlowRuntime(blueprints=[CHAIN, FAN], registry=registry)


@asynccontextmanager
async def serving(rt: FlowRuntime, url: str, queue: str) -> AsyncIterator[BullMQAdapter]:
    adapter = BullMQAdapter(runtime_options=rt.options, connection=url, queue_name=queue)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=2)


def lose_job(url: str, queue: str, jid: str) -> None:
    """What a lost job looks like: gone from every list and its hash deleted."""
    r = redis.Redis.from_url(url)
    for name in ("wait", "active"):
        r.lrem(f"bull:{queue}:{name}", 0, jid)
    r.delete(f"bull:{queue}:{jid}", f"bull:{queue}:{jid}:lock")


async def test_lost_start_job_is_reenqueued_and_the_run_completes(redis_url: str) -> None:
    rt = runtime()
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="q")
    await adapter.publish()
    client = FlowClient(redis_url, queue_name="q")
    run_id = await client.start("chain", {})
    lose_job(redis_url, "q", job_id(run_id, "a", ()))

    reconciler = create_bullmq_reconciler(
        adapter=adapter, redis=redis_url, stalled_threshold_seconds=0
    )
    stats = await reconciler.run()
    assert (stats.scanned_keys, stats.stalled_runs, stats.reconciled_runs) == (1, 1, 1)
    assert stats.failed_runs == 0
    # A second pass finds the job queued (live): nothing more is enqueued.
    again = await reconciler.run()
    assert again.reconciled_runs == 0
    assert await adapter.reconcile(run_id) == set()

    async with serving(rt, redis_url, "q"):
        result = await client.wait(run_id, timeout=10)
    assert result.status == "completed"
    assert result.context["b"] == 2


async def test_threshold_spares_runs_with_recent_progress(redis_url: str) -> None:
    rt = runtime()
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="q")
    await adapter.publish()
    client = FlowClient(redis_url, queue_name="q")
    run_id = await client.start("chain", {})
    lose_job(redis_url, "q", job_id(run_id, "a", ()))
    stats = await create_bullmq_reconciler(adapter=adapter, stalled_threshold_seconds=300).run()
    assert stats.stalled_runs == 0
    assert stats.reconciled_runs == 0


async def test_two_reconcilers_at_once_enqueue_once(redis_url: str) -> None:
    rt = runtime()
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="q")
    await adapter.publish()
    client = FlowClient(redis_url, queue_name="q")
    runs = [await client.start("chain", {}) for _ in range(20)]
    for run_id in runs:
        lose_job(redis_url, "q", job_id(run_id, "a", ()))
    first = create_bullmq_reconciler(adapter=adapter, stalled_threshold_seconds=0)
    second = create_bullmq_reconciler(adapter=adapter, redis=redis_url, stalled_threshold_seconds=0)
    s1, s2 = await asyncio.gather(first.run(), second.run())
    assert s1.reconciled_runs + s2.reconciled_runs == 20
    r = redis.Redis.from_url(redis_url)
    assert r.llen("bull:q:wait") == 20  # one job per run, never two
    async with serving(rt, redis_url, "q"):
        results = [await client.wait(run_id, timeout=10) for run_id in runs]
    assert all(res.status == "completed" and res.context["b"] == 2 for res in results)


async def test_lost_join_job_gets_its_input_rebuilt_from_the_arrivals(redis_url: str) -> None:
    entered = asyncio.Event()

    async def stuck(ctx: NodeContext) -> Any:
        entered.set()
        await asyncio.sleep(60)

    client = FlowClient(redis_url, queue_name="q")
    async with serving(runtime(gather=stuck), redis_url, "q"):
        run_id = await client.start("fan", {})
        await asyncio.wait_for(entered.wait(), 10)
    lose_job(redis_url, "q", job_id(run_id, "j", ()))  # its worker is gone and so is its job

    rt = runtime()
    async with serving(rt, redis_url, "q") as adapter:
        assert await adapter.reconcile(run_id) == {"j"}
        result = await client.wait(run_id, timeout=10)
    assert result.status == "completed"
    assert result.context["j"] == {"x": 2, "y": 2}


async def test_finished_runs_are_never_touched(redis_url: str) -> None:
    rt = runtime()
    client = FlowClient(redis_url, queue_name="q")
    async with serving(rt, redis_url, "q") as adapter:
        run_id = await client.start("chain", {})
        assert (await client.wait(run_id, timeout=10)).status == "completed"
        r = redis.Redis.from_url(redis_url)
        before = r.hgetall(f"workflow:run:{run_id}")
        stats = await create_bullmq_reconciler(adapter=adapter, stalled_threshold_seconds=0).run()
        assert await adapter.reconcile(run_id) == set()
        assert r.hgetall(f"workflow:run:{run_id}") == before
    assert stats.reconciled_runs == 0


# --------------------------------------------------------------------------- the survey


def _job_states(r: redis.Redis, queue: str, jid: str) -> dict[str, Any]:
    """Ways to leave a run's only fired job, each applied to its own run."""
    key = f"bull:{queue}:{jid}"
    return {
        "queued": lambda: None,
        "delayed": lambda: (r.lrem(f"bull:{queue}:wait", 0, jid),
                            r.zadd(f"bull:{queue}:delayed", {jid: 1})),
        "active, leased": lambda: (r.lmove(f"bull:{queue}:wait", f"bull:{queue}:active"),
                                   r.set(f"{key}:lock", "t")),
        "active, lease expired": lambda: r.lmove(f"bull:{queue}:wait", f"bull:{queue}:active"),
        "completed, node not done": lambda: (r.lrem(f"bull:{queue}:wait", 0, jid),
                                             r.hset(key, "finishedOn", 1),
                                             r.zadd(f"bull:{queue}:completed", {jid: 1})),
        "failed": lambda: (r.lrem(f"bull:{queue}:wait", 0, jid),
                           r.hset(key, mapping={"finishedOn": 1, "failedReason": "x"}),
                           r.zadd(f"bull:{queue}:failed", {jid: 1})),
        "hash deleted": lambda: (r.lrem(f"bull:{queue}:wait", 0, jid), r.delete(key)),
    }  # fmt: skip


async def test_survey_and_reconcile_agree(redis_url: str) -> None:
    """The "has a pending job" rule exists twice: in the survey (Rust, survey.rs) that picks the
    runs to repair, and in reconcile.lua (`job_pending`) that re-enqueues atomically. For every
    state a fired node's job can be in, both must decide the same."""
    rt = runtime()
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="q")
    await adapter.publish()
    client = FlowClient(redis_url, queue_name="q")
    r = redis.Redis.from_url(redis_url)
    names = list(_job_states(r, "q", "x"))
    runs = {name: await client.start("chain", {}) for name in names}
    for name, run_id in runs.items():
        _job_states(r, "q", job_id(run_id, "a", ()))[name]()
    survey_said: set[str] = set()
    cursor: str | None = ""
    while cursor is not None:
        cursor, _, _, repair = await adapter.queue.survey_page(0, cursor, 3)
        survey_said.update(repair)
    reconcile_did = {run_id for run_id in runs.values() if await adapter.reconcile(run_id)}
    assert survey_said == reconcile_did
    flagged = sorted(name for name, run_id in runs.items() if run_id in survey_said)
    assert flagged == ["completed, node not done", "failed", "hash deleted"]


async def test_survey_pages_by_score_without_skipping_or_repeating(redis_url: str) -> None:
    """Pages end on millisecond boundaries and the cursor is a score: runs stamped in the same
    millisecond (more of them than a page holds) are each examined exactly once, and so are
    runs the pass repairs (stamped after its cutoff) and runs it forgets (ended)."""
    rt = runtime()
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="q")
    await adapter.publish()
    client = FlowClient(redis_url, queue_name="q")
    r = redis.Redis.from_url(redis_url)
    runs = await client.start_many([("chain", {})] * 40)
    index = "bull:q:flowcraft:runs"
    # 15 runs in one millisecond, then pairs, then singles
    for i, run_id in enumerate(runs):
        r.zadd(index, {run_id: 1000 if i < 15 else 2000 + i // 2 if i < 31 else 3000 + i})
    for run_id in runs[10:20]:  # some lost (to repair), across the boundaries
        lose_job(redis_url, "q", job_id(run_id, "a", ()))
    for run_id in runs[30:34]:  # some ended: the pass drops them from the index
        r.hset(f"workflow:run:{run_id}", "status", "completed")
    reconciler = create_bullmq_reconciler(adapter=adapter, stalled_threshold_seconds=0,
                                          scan_count=4)  # fmt: skip
    stats = await reconciler.run()
    assert (stats.scanned_keys, stats.reconciled_runs, stats.forgotten_runs) == (40, 10, 4)
    assert stats.failed_runs == 0
    assert r.zcard(index) == 36
    assert r.llen("bull:q:wait") == 40


async def test_scan_mode_finds_runs_the_index_lost(redis_url: str) -> None:
    """mode="scan" walks the runs' keys (the original's way): a live run missing from the index
    is put back in it; ended runs are dropped; a lost job of an indexed run is re-enqueued."""
    rt = runtime()
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="q")
    await adapter.publish()
    client = FlowClient(redis_url, queue_name="q")
    r = redis.Redis.from_url(redis_url)
    runs = await client.start_many([("chain", {"k": 1})] * 30)
    index = "bull:q:flowcraft:runs"
    r.zrem(index, runs[0])
    lose_job(redis_url, "q", job_id(runs[1], "a", ()))
    r.hset(f"workflow:run:{runs[2]}", "status", "failed")
    reconciler = create_bullmq_reconciler(adapter=adapter, stalled_threshold_seconds=0,
                                          scan_count=5, mode="scan")  # fmt: skip
    stats = await reconciler.run()
    assert stats.scanned_keys >= 30  # SCAN may return a key twice, never skips one
    assert (stats.reconciled_runs, stats.forgotten_runs, stats.failed_runs) == (1, 1, 0)
    assert r.zscore(index, runs[0]) is not None
    assert r.zscore(index, runs[2]) is None
    assert r.llen("bull:q:wait") == 30
    with pytest.raises(ValueError, match="mode"):
        create_bullmq_reconciler(adapter=adapter, mode="walk")  # type: ignore[arg-type]
