"""Start options (issue 14, SPEC section 10): run priority, idempotent run ids, singleton keys.

Real worker (`BullMQAdapter` in this process), real Redis. A run's priority rides on every job
of the run (BullMQ's `prioritized` zset and `priority` job field, lower first, after `wait`);
the order in which nodes run is recorded by the nodes themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUEUE = "prio"
QP = f"bull:{QUEUE}:"
CHAIN = {
    "id": "chain",
    "nodes": [{"id": "x", "uses": "rec"}, {"id": "y", "uses": "rec"}],
    "edges": [{"source": "x", "target": "y"}],
}
GATE = {"id": "gate", "nodes": [{"id": "g", "uses": "hold"}], "edges": []}
FAN = {
    "id": "fan",
    "nodes": [
        {"id": "x", "uses": "rec_hold"},
        {"id": "y1", "uses": "rec"},
        {"id": "y2", "uses": "rec"},
    ],
    "edges": [{"source": "x", "target": "y1"}, {"source": "x", "target": "y2"}],
}

ORDER: list[str] = []
HELD: dict[str, asyncio.Event] = {}
"""`hold` nodes wait for HELD["release"], made afresh by each test (a loop of its own)."""


async def rec(ctx: NodeContext) -> str:
    ORDER.append(f"{await ctx.context.get('name')}.{ctx.node_id}")
    return "ok"


async def hold(ctx: NodeContext) -> str:
    await HELD["release"].wait()
    return "released"


async def rec_hold(ctx: NodeContext) -> str:
    await rec(ctx)
    return await hold(ctx)


@asynccontextmanager
async def serving(url: str, concurrency: int) -> AsyncIterator[BullMQAdapter]:
    rt = FlowRuntime(
        blueprints=[CHAIN, GATE, FAN], registry={"rec": rec, "hold": hold, "rec_hold": rec_hold}
    )
    adapter = BullMQAdapter(
        runtime_options=rt.options, connection=url, queue_name=QUEUE, concurrency=concurrency
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=5)


async def test_runs_are_served_by_priority_and_their_jobs_keep_it(redis_url: str) -> None:
    ORDER.clear()
    async with serving(redis_url, 1) as adapter:  # publishes the blueprints
        await adapter.close(timeout=5)
    client = FlowClient(redis_url, queue_name=QUEUE)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ids = {}
    for name, priority in (("low", 9), ("plain", 0), ("high", 1), ("mid", 5)):
        ids[name] = await client.start("chain", {"name": name}, priority=priority)
    # queued as BullMQ queues them: no priority on wait, the others in prioritized (lower first)
    assert r.lrange(QP + "wait", 0, -1) == [f"{ids['plain']}.0.{_digest('x')}"]
    assert [m.split(".")[0] for m in r.zrange(QP + "prioritized", 0, -1)] == [
        ids["high"], ids["mid"], ids["low"]
    ]  # fmt: skip
    assert r.hget(f"{QP}{ids['high']}.0.{_digest('x')}", "priority") == "1"
    assert r.hget(f"workflow:run:{ids['high']}", "priority") == "1"
    async with serving(redis_url, 1):
        for run_id in ids.values():
            assert (await client.wait(run_id, timeout=30)).status == "completed"
    # one slot: each run's x, then its y (continued on the same worker), runs in priority order
    assert [f"{n}.{node}" for n in ("plain", "high", "mid", "low") for node in "xy"] == ORDER
    r.close()


async def test_a_successor_queued_behind_other_work_keeps_its_runs_priority(
    redis_url: str,
) -> None:
    """One slot. Fan run F (priority 5) holds it in x while run C (priority 1) is started. When
    x commits, y1 continues on the slot x frees and y2 goes back to the queue: into
    `prioritized` with F's priority 5, so C (1) runs before it. Queued without its run's
    priority, y2 would land on `wait` and run before C."""
    ORDER.clear()
    HELD["release"] = asyncio.Event()
    client = FlowClient(redis_url, queue_name=QUEUE)
    async with serving(redis_url, 1):
        fan = await client.start("fan", {"name": "F"}, priority=5)
        while ORDER != ["F.x"]:
            await asyncio.sleep(0.01)
        chain = await client.start("chain", {"name": "C"}, priority=1)
        HELD["release"].set()
        for run_id in (fan, chain):
            assert (await client.wait(run_id, timeout=30)).status == "completed"
    assert ORDER == ["F.x", "F.y1", "C.x", "C.y", "F.y2"]


async def test_start_is_idempotent_by_run_id(redis_url: str) -> None:
    ORDER.clear()
    client = FlowClient(redis_url, queue_name=QUEUE)
    async with serving(redis_url, 4):
        run_id = await client.start("chain", {"name": "once"}, run_id="same-id")
        assert await client.start("chain", {"name": "twice"}, run_id="same-id") == "same-id"
        assert (await client.wait(run_id, timeout=30)).status == "completed"
        assert await client.start("chain", {"name": "thrice"}, run_id="same-id") == "same-id"
        many = await client.start_many(
            [("chain", {"name": "again"}, "same-id"), ("chain", {"name": "new"}, "other-id")]
        )
        assert many == ["same-id", "other-id"]
        assert (await client.wait("other-id", timeout=30)).status == "completed"
    assert sorted(ORDER) == ["new.x", "new.y", "once.x", "once.y"]


async def test_a_singleton_key_gives_the_live_runs_id_until_it_ends(redis_url: str) -> None:
    HELD["release"] = asyncio.Event()
    client = FlowClient(redis_url, queue_name=QUEUE)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    async with serving(redis_url, 4):
        first = await client.start("gate", {}, singleton_key="nightly")
        assert await client.start("gate", {}, singleton_key="nightly") == first
        # another key, or none, starts its own run
        other = await client.start("gate", {}, singleton_key="hourly")
        assert other != first
        both = await client.start_many(
            [
                {"blueprint_id": "gate", "singleton_key": "weekly"},
                {"blueprint_id": "gate", "singleton_key": "weekly"},
            ]
        )
        assert both[0] == both[1] and both[0] not in (first, other)
        assert r.hget(f"{QP}flowcraft:runs:singletons", "nightly") == first
        HELD["release"].set()
        for run_id in (first, other, both[0]):
            assert (await client.wait(run_id, timeout=30)).status == "completed"
        assert not r.hexists(f"{QP}flowcraft:runs:singletons", "nightly")  # freed at the end
        HELD["release"] = asyncio.Event()
        again = await client.start("gate", {}, singleton_key="nightly")
        assert again != first
        # a key naming a run whose keys are gone (expired, flushed) is taken over
        r.delete(f"workflow:run:{again}")
        taken = await client.start("gate", {}, singleton_key="nightly")
        assert taken != again
        HELD["release"].set()
        assert (await client.wait(taken, timeout=30)).status == "completed"
    r.close()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"priority": -1}, "priority must be 0 \\(none\\) .. 2,097,152, not -1"),
        ({"priority": 2_097_153}, "priority must be 0"),
        ({"priority": 1.5}, "priority must be an int"),
        ({"priority": True}, "priority must be an int"),
        ({"singleton_key": ""}, "singleton_key must be 1-512 characters"),
        ({"singleton_key": "k" * 513}, "singleton_key must be 1-512 characters"),
        ({"singleton_key": 7}, "singleton_key must be a string"),
    ],
)
async def test_bad_start_options_are_refused_before_anything_is_sent(
    redis_url: str, kwargs: dict[str, object], error: str
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    with pytest.raises((ValueError, TypeError), match=error):
        await client.start("chain", {}, **kwargs)  # type: ignore[arg-type]


def _digest(node_id: str) -> str:
    from flowcraft_fast.distributed.jobs import job_id

    return job_id("r", node_id, ()).split(".")[-1]
