"""Jobs whose worker died: the stall limit fails only the node, a named worker gets its previous
incarnation's jobs back at once, and an evicting server pauses claiming (issue 9).

A dead worker is played by a raw `Queue.claim` whose lease is never renewed (a killed process
renews nothing either); the kill -9 versions are in tests/daemon/test_daemon_recovery.py and
tests/chaos/. Every wait is bounded; nothing depends on speed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext
from flowcraft_fast.distributed.store import RedisCoordinationStore
from waiting import wait_until

pytestmark = pytest.mark.timeout(60)

FLOW = {
    "id": "flow",
    "nodes": [
        {"id": "b", "uses": "one", "config": {"fallback": "c"}},
        {"id": "c", "uses": "rescue"},
    ],
    "edges": [],
}
PLAIN = {"id": "plain", "nodes": [{"id": "a", "uses": "one"}], "edges": []}


async def one(ctx: NodeContext) -> int:
    return 1


async def rescue(ctx: NodeContext) -> str:
    return "rescued"


def runtime() -> FlowRuntime:
    return FlowRuntime(blueprints=[FLOW, PLAIN], registry={"one": one, "rescue": rescue})


@asynccontextmanager
async def serving(url: str, **options: Any) -> AsyncIterator[BullMQAdapter]:
    adapter = BullMQAdapter(
        runtime_options=runtime().options, connection=url, queue_name="q", **options
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=2)


async def stall(url: str, times: int, *, lease_ms: int = 100) -> str:
    """Claim the next job as a worker that dies, `times` times over (each time its lease lapses
    and a stalled-jobs pass returns it); the job's id."""
    queue = RedisCoordinationStore(url).queue("q")
    r = redis.Redis.from_url(url)
    jid = ""
    for _ in range(times):
        _, _, jobs, _ = await queue.claim(1, lease_ms, "dead")
        assert len(jobs) == 1
        jid = jobs[0].id

        lock = f"bull:q:{jid}:lock"
        await wait_until(lambda lock=lock: not r.exists(lock), 5, "the lease to lapse")
        assert await queue.requeue_stalled(0) == [jid]
    return jid


@pytest.mark.parametrize("limit", [1, 2])
async def test_a_job_past_the_stall_limit_fails_its_node_and_the_fallback_runs(
    redis_url: str, limit: int
) -> None:
    """Past the limit the node fails with StalledJobError without running (a node that kills
    its workers must not kill more); the failure takes the engine's path: the fallback runs."""
    client = FlowClient(redis_url, queue_name="q")
    async with serving(redis_url):  # publishes the blueprints
        pass
    run_id = await client.start("flow", {})
    jid = await stall(redis_url, limit + 1)
    assert int(redis.Redis.from_url(redis_url).hget(f"bull:q:{jid}", "stc") or 0) == limit + 1
    async with serving(redis_url, max_stalled_count=limit):
        result = await client.wait(run_id, timeout=15)
    assert result.status == "completed", result.errors
    assert result.context["c"] == "rescued"
    assert result.context["b"] == "rescued"  # the fallback stands in: b never ran again


async def test_a_job_past_the_stall_limit_without_fallback_fails_the_run_naming_the_node(
    redis_url: str,
) -> None:
    client = FlowClient(redis_url, queue_name="q")
    async with serving(redis_url):
        pass
    run_id = await client.start("plain", {})
    await stall(redis_url, 2)
    async with serving(redis_url, max_stalled_count=1):
        result = await client.wait(run_id, timeout=15)
    assert result.status == "failed"
    assert [(e.node_id, e.type) for e in result.errors] == [("a", "StalledJobError")]
    assert "stalled 2 times" in result.errors[0].message


async def test_under_the_limit_a_stalled_job_runs_again(redis_url: str) -> None:
    client = FlowClient(redis_url, queue_name="q")
    async with serving(redis_url):
        pass
    run_id = await client.start("plain", {})
    await stall(redis_url, 1)
    async with serving(redis_url, max_stalled_count=1):
        result = await client.wait(run_id, timeout=15)
    assert result.status == "completed"
    assert result.context["a"] == 1


async def test_a_named_worker_releases_its_previous_incarnations_leases_at_start(
    redis_url: str,
) -> None:
    """A restarted worker with a stable name gets back, at once, the jobs its previous
    incarnation held (their 60 s leases have not lapsed); another worker's leases stay."""
    client = FlowClient(redis_url, queue_name="q")
    async with serving(redis_url):
        pass
    mine, theirs = await client.start("plain", {}), await client.start("plain", {})
    queue = RedisCoordinationStore(redis_url).queue("q")
    _, _, held, _ = await queue.claim(1, 60_000, "w1@0123456789abcdef")  # the dead incarnation
    _, _, other, _ = await queue.claim(1, 60_000, "w2@fedcba9876543210")  # a live worker elsewhere
    assert {held[0].run_id, other[0].run_id} == {mine, theirs}
    mine = held[0].run_id
    async with serving(redis_url, worker_name="w1"):
        result = await client.wait(mine, timeout=15)
        assert result.status == "completed"
        r = redis.Redis.from_url(redis_url)
        assert r.exists(f"bull:q:{other[0].id}:lock")  # not ours: left alone
        assert (await client.status(other[0].run_id)) == "running"


async def test_an_evicting_policy_set_later_pauses_claiming_until_fixed(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = FlowClient(redis_url, queue_name="q")
    r = redis.Redis.from_url(redis_url)
    caplog.set_level(logging.WARNING, logger="flowcraft_fast.worker")
    try:
        async with serving(redis_url, stalled_interval_seconds=0.2) as adapter:
            r.config_set("maxmemory-policy", "allkeys-lru")

            await wait_until(
                lambda: not adapter.worker._safe.is_set(),
                10,
                "the worker to notice the evicting policy",
            )
            run_id = await client.start("plain", {})
            assert await client.status(run_id) == "running"
            assert r.llen("bull:q:wait") == 1  # not claimed
            r.config_set("maxmemory-policy", "noeviction")
            result = await client.wait(run_id, timeout=15)
            assert result.status == "completed"
    finally:
        r.config_set("maxmemory-policy", "noeviction")
    messages = [rec.getMessage() for rec in caplog.records]
    assert sum("not claiming jobs" in m and "allkeys-lru" in m for m in messages) == 1
    assert sum("safe again" in m for m in messages) == 1
