"""Wire compatibility with the real `bullmq` Python package (SPEC section 5).

Our queue keeps BullMQ's Redis layout, so:
- a job added by `bullmq.Queue.add` is processed by our worker;
- `bullmq.Queue.getJobCounts` / `getJob` / `Job.getState` see our jobs in the right states, with
  the right name, data, options, return values, failure reasons and attempt counts;
- a run's state hash holds plain JSON per field (readable by the TypeScript Flowcraft);
- our job ids are never all digits and never contain ':' (BullMQ's rules for custom ids).

Every wait is bounded; adapters and bullmq queues are closed in `finally` blocks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import bullmq
import pytest
import redis

from flowcraft_fast import FlowRuntime, NodeContext
from flowcraft_fast.distributed.adapter import BullMQAdapter
from flowcraft_fast.distributed.client import FlowClient
from flowcraft_fast.distributed.jobs import JOB_NAME, job_id

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

WAIT_S = 15.0


# ---------------------------------------------------------------------------- helpers


def blueprint(bp_id: str, nodes: list[dict[str, Any]], edges: list[tuple[str, str]]) -> dict:
    return {
        "id": bp_id,
        "nodes": nodes,
        "edges": [{"source": s, "target": t} for s, t in edges],
    }


async def produce(ctx: NodeContext) -> Any:
    """Node a: reads the initial context, returns a structured output."""
    x = await ctx.context.get("x")
    return {"value": x * 10, "label": "from-a"}


async def consume(ctx: NodeContext) -> Any:
    """Node b: computes from a's output (its input along the edge)."""
    return ctx.input["value"] + 1


async def boom(ctx: NodeContext) -> Any:
    raise ValueError("boom")


REGISTRY: dict[str, Any] = {"produce": produce, "consume": consume, "boom": boom}

CHAIN = blueprint(
    "chain",
    [{"id": "a", "uses": "produce"}, {"id": "b", "uses": "consume"}],
    [("a", "b")],
)


def runtime(*bps: dict, registry: dict[str, Any] | None = None) -> FlowRuntime:
    return FlowRuntime(blueprints=list(bps), registry={**REGISTRY, **(registry or {})})


@asynccontextmanager
async def adapter_running(
    rt: FlowRuntime, redis_url: str, queue: str, **kwargs: Any
) -> AsyncIterator[BullMQAdapter]:
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        connection=redis_url,
        queue_name=queue,
        concurrency=8,
        **kwargs,
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=10)


async def publish_blueprints(rt: FlowRuntime, redis_url: str, queue: str) -> None:
    """A worker that was up once (it published its blueprints) and is down now: runs started
    afterwards sit in the queue untouched until an adapter starts."""
    async with adapter_running(rt, redis_url, queue):
        pass


@asynccontextmanager
async def bull_queue(name: str, redis_url: str) -> AsyncIterator[Any]:
    q = bullmq.Queue(name, {"connection": redis_url})
    try:
        yield q
    finally:
        await q.close()


async def eventually(
    probe: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_S
) -> Any:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last probe: {last!r}")


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


# ---------------------------------------------------------------------------- 1. bullmq -> us


async def test_job_added_by_bullmq_is_processed_by_our_worker(redis_url: str) -> None:
    queue = "q-bull-add"
    rt = runtime(CHAIN)
    await publish_blueprints(rt, redis_url, queue)
    client = FlowClient(redis_url, queue_name=queue)
    r = redis.Redis.from_url(redis_url)
    try:
        run_id = await client.start("chain", {"x": 4})
        # Replace our own start job with the same job added through bullmq.
        ours = job_id(run_id, "a", ())
        assert r.lrange(f"bull:{queue}:wait", 0, -1) == [ours.encode()]
        assert r.lrem(f"bull:{queue}:wait", 0, ours) == 1
        assert r.delete(f"bull:{queue}:{ours}") == 1

        async with bull_queue(queue, redis_url) as bq:
            added = await bq.add(
                "executeNode", {"runId": run_id, "blueprintId": "chain", "nodeId": "a"}
            )
            assert added.id and added.id != ours
            assert await bq.getJobState(added.id) == "waiting"

            async with adapter_running(rt, redis_url, queue):
                result = await client.wait(run_id, timeout=WAIT_S)

            assert result.status == "completed", result.errors
            assert result.context["a"] == {"value": 40, "label": "from-a"}
            assert result.context["b"] == 41

            job = await bq.getJob(added.id)
            assert job is not None
            assert await job.getState() == "completed"
            assert job.name == "executeNode"
            assert job.attemptsMade == 1
            assert job.returnvalue == {"value": 40, "label": "from-a"}
            assert job.finishedOn and job.processedOn
            # b's job was created by our commit and is completed too, with b's output.
            b_job = await bq.getJob(job_id(run_id, "b", ()))
            assert b_job is not None and b_job.returnvalue == 41
            counts = nonzero(await bq.getJobCounts())
            assert counts == {"completed": 2}
    finally:
        r.close()


async def _replace_start_job_with_bullmq_job(
    redis_url: str, queue: str, client: FlowClient, bq: Any, data: dict | None, opts: dict
) -> tuple[str, str]:
    """Start a chain run (no worker up), swap our start job for one added by bullmq."""
    run_id = await client.start("chain", {"x": 4})
    ours = job_id(run_id, "a", ())
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.lrem(f"bull:{queue}:wait", 0, ours) == 1
        assert r.delete(f"bull:{queue}:{ours}") == 1
    finally:
        r.close()
    payload = {"runId": run_id, "blueprintId": "chain", "nodeId": "a"} if data is None else data
    added = await bq.add("executeNode", payload, opts)
    return run_id, added.id


async def test_delayed_job_added_by_bullmq_is_promoted_and_processed(redis_url: str) -> None:
    queue = "q-bull-delay"
    rt = runtime(CHAIN)
    await publish_blueprints(rt, redis_url, queue)
    client = FlowClient(redis_url, queue_name=queue)
    async with bull_queue(queue, redis_url) as bq:
        run_id, jid = await _replace_start_job_with_bullmq_job(
            redis_url, queue, client, bq, None, {"delay": 300}
        )
        assert await bq.getJobState(jid) == "delayed"
        async with adapter_running(rt, redis_url, queue):
            result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "completed", result.errors
        assert result.context["b"] == 41
        job = await bq.getJob(jid)
        assert await job.getState() == "completed"
        assert job.returnvalue == {"value": 40, "label": "from-a"}


async def test_malformed_job_added_by_bullmq_goes_to_failed_and_worker_goes_on(
    redis_url: str,
) -> None:
    queue = "q-bull-bad"
    rt = runtime(CHAIN)
    client = FlowClient(redis_url, queue_name=queue)
    async with bull_queue(queue, redis_url) as bq, adapter_running(rt, redis_url, queue):
        bad = await bq.add("executeNode", {"hello": "not a flowcraft job"})

        async def failed() -> bool:
            return await bq.getJobState(bad.id) == "failed"

        await eventually(failed, "the malformed job to be failed")
        job = await bq.getJob(bad.id)
        assert "runId" in job.failedReason
        assert job.attemptsMade == 1
        # The worker is still serving: a normal run completes afterwards.
        run_id = await client.start("chain", {"x": 1})
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "completed", result.errors
        assert result.context["b"] == 11


async def test_prioritized_job_added_by_bullmq_is_processed(redis_url: str) -> None:
    queue = "q-bull-prio"
    rt = runtime(CHAIN)
    await publish_blueprints(rt, redis_url, queue)
    client = FlowClient(redis_url, queue_name=queue)
    async with bull_queue(queue, redis_url) as bq:
        run_id, jid = await _replace_start_job_with_bullmq_job(
            redis_url, queue, client, bq, None, {"priority": 5}
        )
        assert await bq.getJobState(jid) == "prioritized"
        async with adapter_running(rt, redis_url, queue):
            result = await client.wait(run_id, timeout=3)
        assert result.status == "completed"


# ---------------------------------------------------------------------------- 2. us -> bullmq


async def test_bullmq_sees_our_waiting_job(redis_url: str) -> None:
    queue = "q-waiting"
    bp = blueprint(
        "waits",
        [
            {"id": "a", "uses": "produce", "config": {"maxRetries": 2}},
            {"id": "b", "uses": "consume"},
        ],
        [("a", "b")],
    )
    rt = runtime(bp)
    await publish_blueprints(rt, redis_url, queue)
    client = FlowClient(redis_url, queue_name=queue)
    run_id = await client.start("waits", {"x": 1})
    jid = job_id(run_id, "a", ())
    async with bull_queue(queue, redis_url) as bq:
        counts = await bq.getJobCounts()
        assert counts["waiting"] == 1
        assert nonzero(counts) == {"waiting": 1}
        assert await bq.getWaitingCount() == 1
        job = await bq.getJob(jid)
        assert job is not None
        assert job.id == jid
        assert job.name == JOB_NAME == "executeNode"
        assert job.data["runId"] == run_id
        assert job.data["nodeId"] == "a"
        assert job.data["blueprintId"] == "waits"
        assert job.opts["attempts"] == 2
        assert job.attemptsMade == 0
        assert job.timestamp > 0
        assert await job.getState() == "waiting"
        waiting = await bq.getWaiting()
        assert [j.id for j in waiting] == [jid]


async def test_bullmq_sees_our_completed_jobs(redis_url: str) -> None:
    queue = "q-completed"
    bp = blueprint(
        "three",
        [
            {"id": "a", "uses": "produce"},
            {"id": "b", "uses": "consume"},
            {"id": "c", "uses": "consume"},
        ],
        [("a", "b"), ("a", "c")],
    )
    rt = runtime(bp)
    client = FlowClient(redis_url, queue_name=queue)
    async with bull_queue(queue, redis_url) as bq:
        async with adapter_running(rt, redis_url, queue):
            run_id = await client.start("three", {"x": 2})
            result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "completed", result.errors
        counts = await bq.getJobCounts()
        assert nonzero(counts) == {"completed": 3}
        for node in ("a", "b", "c"):
            job = await bq.getJob(job_id(run_id, node, ()))
            assert job is not None, node
            assert await job.getState() == "completed"
            assert job.data["nodeId"] == node
            assert job.attemptsMade == 1
            assert job.returnvalue == result.context[node]
        assert (await bq.getJob(job_id(run_id, "a", ()))).returnvalue == {
            "value": 20,
            "label": "from-a",
        }
        assert result.context["b"] == result.context["c"] == 21
        completed = await bq.getCompleted()
        assert sorted(j.id for j in completed) == sorted(
            job_id(run_id, n, 0) for n in ("a", "b", "c")
        )


async def test_bullmq_sees_our_failed_job(redis_url: str) -> None:
    queue = "q-failed"
    bp = blueprint(
        "fails",
        [{"id": "a", "uses": "boom", "config": {"maxRetries": 1}}],
        [],
    )
    rt = runtime(bp)
    client = FlowClient(redis_url, queue_name=queue)
    async with bull_queue(queue, redis_url) as bq:
        async with adapter_running(rt, redis_url, queue):
            run_id = await client.start("fails")
            result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "failed"
        jid = job_id(run_id, "a", ())
        job = await bq.getJob(jid)
        assert job is not None
        assert await job.getState() == "failed"
        assert "boom" in job.failedReason
        assert not job.failedReason.startswith('"'), "failedReason is raw text, not JSON"
        assert job.attemptsMade == 1
        assert job.finishedOn
        assert isinstance(job.stacktrace, list)
        assert len(job.stacktrace) == 1 and "in boom" in job.stacktrace[0], job.stacktrace
        assert nonzero(await bq.getJobCounts()) == {"failed": 1}
        assert [j.id for j in await bq.getFailed()] == [jid]


async def test_bullmq_sees_our_delayed_retry(redis_url: str) -> None:
    queue = "q-delayed"
    attempts: list[int] = []

    async def flaky(ctx: NodeContext) -> Any:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")
        return "ok"

    bp = blueprint(
        "retries",
        [{"id": "a", "uses": "flaky", "config": {"maxRetries": 3, "retryDelay": 60000}}],
        [],
    )
    rt = runtime(bp, registry={"flaky": flaky})
    client = FlowClient(redis_url, queue_name=queue)
    async with bull_queue(queue, redis_url) as bq, adapter_running(rt, redis_url, queue):
        run_id = await client.start("retries")
        jid = job_id(run_id, "a", ())

        async def delayed() -> bool:
            return (await bq.getJobCounts("delayed"))["delayed"] == 1

        await eventually(delayed, "the failed attempt to be delayed")
        counts = await bq.getJobCounts()
        assert nonzero(counts) == {"delayed": 1}
        job = await bq.getJob(jid)
        assert job is not None
        assert await job.getState() == "delayed"
        assert job.attemptsMade == 1
        assert "first attempt fails" in job.failedReason
        # backoff: retryDelay 60 s with equal jitter -> due 30..60 s from now
        assert 30_000 <= job.delay <= 60_000
        assert [j.id for j in await bq.getDelayed()] == [jid]
        assert attempts == [1]
        assert await client.status(run_id) == "running"


async def test_bullmq_sees_our_active_job(redis_url: str) -> None:
    queue = "q-active"
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(ctx: NodeContext) -> Any:
        entered.set()
        # Slow: it runs until the test has looked at it (bounded, never forever).
        await asyncio.wait_for(release.wait(), timeout=WAIT_S)
        return "slow-done"

    bp = blueprint("slow", [{"id": "a", "uses": "slow"}], [])
    rt = runtime(bp, registry={"slow": slow})
    client = FlowClient(redis_url, queue_name=queue)
    async with bull_queue(queue, redis_url) as bq:
        async with adapter_running(rt, redis_url, queue):
            run_id = await client.start("slow")
            jid = job_id(run_id, "a", ())
            await asyncio.wait_for(entered.wait(), timeout=WAIT_S)
            try:
                job = await bq.getJob(jid)
                assert job is not None
                assert await job.getState() == "active"
                assert job.attemptsStarted == 1
                assert job.processedOn
                assert nonzero(await bq.getJobCounts()) == {"active": 1}
                assert [j.id for j in await bq.getActive()] == [jid]
            finally:
                release.set()
            result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "completed"
        job = await bq.getJob(jid)
        assert await job.getState() == "completed"
        assert job.returnvalue == "slow-done"


# ---------------------------------------------------------------------------- 3. run state


async def test_run_state_hash_is_plain_json_per_field(redis_url: str) -> None:
    queue = "q-state"

    async def rich(ctx: NodeContext) -> Any:
        await ctx.context.set("nothing", None)
        await ctx.context.set("unicode", "ünïcødé ✓ 🚀")
        await ctx.context.set("nested", {"list": [1, 2.5, None, True], "deep": {"k": "v"}})
        return {"total": 12, "tags": ["x", "y"]}

    bp = blueprint(
        "state",
        [{"id": "a", "uses": "rich"}, {"id": "b", "uses": "consume2"}],
        [("a", "b")],
    )

    async def consume2(ctx: NodeContext) -> Any:
        return ctx.input["total"] * 2

    rt = runtime(bp, registry={"rich": rich, "consume2": consume2})
    client = FlowClient(redis_url, queue_name=queue)
    r = redis.Redis.from_url(redis_url)
    try:
        async with adapter_running(rt, redis_url, queue):
            run_id = await client.start("state", {"x": 1, "name": "start", "flag": False})
            result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "completed", result.errors
        raw = r.hgetall(f"workflow:state:{run_id}")
        assert raw, "the run state hash is missing"
        decoded = {k.decode(): json.loads(v.decode()) for k, v in raw.items()}
        assert decoded == result.context
        assert decoded["a"] == {"total": 12, "tags": ["x", "y"]}
        assert decoded["b"] == 24
        assert decoded["nothing"] is None and raw[b"nothing"] == b"null"
        assert decoded["unicode"] == "ünïcødé ✓ 🚀"
        assert decoded["nested"] == {"list": [1, 2.5, None, True], "deep": {"k": "v"}}
        assert decoded["x"] == 1 and decoded["name"] == "start" and decoded["flag"] is False
        status = json.loads(r.get(f"workflow:status:{run_id}"))
        assert status["status"] == "completed"
    finally:
        r.close()


# ---------------------------------------------------------------------------- 4. job ids


@pytest.mark.parametrize("run_id", [None, "123456", "7"])
async def test_our_job_ids_are_never_all_digits_nor_contain_colons(
    redis_url: str, run_id: str | None
) -> None:
    queue = "q-ids"
    # Node ids that would be bad job ids themselves: digits and colons.
    bp = blueprint(
        "ids",
        [
            {"id": "1", "uses": "produce"},
            {"id": "a:b", "uses": "consume"},
            {"id": "42", "uses": "consume"},
        ],
        [("1", "a:b"), ("1", "42")],
    )
    rt = runtime(bp)
    client = FlowClient(redis_url, queue_name=queue)
    r = redis.Redis.from_url(redis_url)
    try:
        async with bull_queue(queue, redis_url) as bq:
            async with adapter_running(rt, redis_url, queue):
                rid = await client.start("ids", {"x": 3}, run_id=run_id)
                result = await client.wait(rid, timeout=WAIT_S)
            assert result.status == "completed", result.errors
            ids = [m.decode() for m in r.zrange(f"bull:{queue}:completed", 0, -1)]
            assert sorted(ids) == sorted(job_id(rid, n, 0) for n in ("1", "a:b", "42"))
            nodes = []
            for jid in ids:
                assert not jid.isdigit(), jid
                assert ":" not in jid, jid
                job = await bq.getJob(jid)
                assert job is not None and job.id == jid
                assert await job.getState() == "completed"
                nodes.append(job.data["nodeId"])
            assert sorted(nodes) == ["1", "42", "a:b"]
            # Every job hash of the queue is one of ours: no stray keys from id mix-ups.
            prefix = f"bull:{queue}:"
            job_hashes = {
                k.decode()[len(prefix) :]
                for k in r.scan_iter(match=f"{prefix}*")
                if r.type(k) == b"hash" and r.hexists(k, "data")
            }
            assert job_hashes == set(ids)
    finally:
        r.close()


# ------------------------------------------------ 4. a BullMQ tool retrying a flowcraft job


async def test_a_bullmq_retry_of_a_committed_or_ended_job_is_refused_with_a_reason(
    redis_url: str,
) -> None:
    """bull-board's "retry" moves a job back to wait. A completed node's job must not run its
    node a second time (nor end `completed` with a null result while nothing ran), and a job of
    a failed run must not run in a run that ended: each fails at once, with the reason."""
    queue = "q-bull-retry"
    rt = runtime(CHAIN)
    client = FlowClient(redis_url, queue_name=queue)
    async with bull_queue(queue, redis_url) as bq, adapter_running(rt, redis_url, queue):
        run_id = await client.start("chain", {"x": 1})
        assert (await client.wait(run_id, timeout=WAIT_S)).status == "completed"
        done = job_id(run_id, "a", ())
        job = await bq.getJob(done)
        assert job is not None and await job.getState() == "completed"
        await job.retry("completed")

        async def failed() -> Any:
            return await bq.getJobState(done) == "failed"

        await eventually(failed, "the retried job to be refused")
        refused = await bq.getJob(done)
        assert "already ran and committed as this job" in refused.failedReason
        assert (await client.result(run_id)).context["b"] == 11  # the run is as it was
        assert await client.status(run_id) == "completed"

    doomed = blueprint("doomed-retry", [{"id": "a", "uses": "boom"}], [])
    rt = runtime(doomed)
    async with bull_queue(queue, redis_url) as bq, adapter_running(rt, redis_url, queue):
        run_id = await client.start("doomed-retry", {})
        assert (await client.wait(run_id, timeout=WAIT_S)).status == "failed"
        jid = job_id(run_id, "a", ())
        job = await bq.getJob(jid)
        assert job is not None and await job.getState() == "failed"
        await job.retry("failed")

        async def refused_again() -> Any:
            j = await bq.getJob(jid)
            return await j.getState() == "failed" and "already ended" in (j.failedReason or "")

        await eventually(refused_again, "the retried job of the failed run to be refused")
        assert "run " + run_id + " already ended (failed)" in (await bq.getJob(jid)).failedReason
        assert await client.status(run_id) == "failed"
