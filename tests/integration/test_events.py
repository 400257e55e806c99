"""Durable events (issue 15): the `wait-for-event` built-in takes an event sent before, while or
after it waits, in memory and distributed; webhooks deliver events over HTTP with a signed
per-run token, a body limit and replay protection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from dashboard_process import dashboard_process, fetch
from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext
from flowcraft_fast.distributed.client import RunNotFound
from flowcraft_fast.distributed.webhooks import MAX_WEBHOOK_BODY, sign, verify
from flowcraft_fast.errors import BlueprintError, FlowcraftError
from flowcraft_fast.nodes.wait_event import wait_for_event_node
from flowcraft_fast.runtime.types import NodeResult

QUEUE = "events"
GATE = asyncio.Event()
"""Set by a test's nodes and the test; made anew per test (an asyncio.Event binds to the
first loop that waits on it, and each test runs on its own loop)."""


@pytest.fixture(autouse=True)
def fresh_gate() -> None:
    global GATE
    GATE = asyncio.Event()


async def first(ctx: NodeContext) -> int:
    if ctx.params.get("hold"):
        await asyncio.wait_for(GATE.wait(), 10)
    return 1


async def echo(ctx: NodeContext) -> dict[str, Any]:
    return {"got": ctx.input}


async def slow_wait(ctx: NodeContext) -> NodeResult:
    """The built-in, with a pause between its read of the context and its park (an event
    sent in the pause must not be lost)."""
    result = await wait_for_event_node(ctx)
    if result.awaiting:
        GATE.set()
        await asyncio.sleep(0.5)
    return result


def blueprint(bp_id: str = "pay", hold: bool = False) -> dict[str, Any]:
    return {
        "id": bp_id,
        "nodes": [
            {"id": "a", "uses": "first", "params": {"hold": hold}},
            {"id": "w", "uses": "wait-for-event", "params": {"event": "paid"}},
            {"id": "b", "uses": "echo"},
        ],
        "edges": [{"source": "a", "target": "w"}, {"source": "w", "target": "b"}],
    }


def runtime(**registry: Any) -> FlowRuntime:
    return FlowRuntime(
        registry={"first": first, "echo": echo, **registry},
        blueprints=[blueprint(), blueprint("held", hold=True)],
    )


# ---------------------------------------------------------------------------- in memory


async def test_in_memory_before_during_after() -> None:
    rt = runtime()
    # before: sent to a run id that has not started
    await rt.send_event("r-before", "paid", {"n": 1})
    before = await rt.run("pay", run_id="r-before")
    assert before.status == "completed" and before.context["b"] == {"got": {"n": 1}}
    # during: sent while the run executes, before the node reads it
    running = asyncio.create_task(rt.run("held", run_id="r-during"))
    await asyncio.sleep(0.05)
    await rt.send_event("r-during", "paid", {"n": 2})
    GATE.set()
    during = await running
    assert during.status == "completed" and during.context["b"] == {"got": {"n": 2}}
    # after: the run parked; the event resumes it
    parked = await rt.run("pay")
    assert parked.status == "awaiting"
    other = await rt.send_event(parked, "shipped", 1)  # nobody waits for it: kept
    assert other is not None and other.status == "awaiting"
    after = await rt.send_event(other, "paid", {"n": 3})
    assert after is not None and after.status == "completed"
    assert after.context["b"] == {"got": {"n": 3}}
    assert not any(k.startswith(("_events.", "_evwait.")) for k in after.context)


async def test_in_memory_event_while_the_node_parks() -> None:
    """Sent after the node read its context, before its run returned awaiting: resumed."""
    rt = runtime(**{"wait-for-event": slow_wait})
    running = asyncio.create_task(rt.run("pay", run_id="r-race"))
    await asyncio.wait_for(GATE.wait(), 5)
    await rt.send_event("r-race", "paid", {"n": 4})
    result = await running
    assert result.status == "completed" and result.context["b"] == {"got": {"n": 4}}


# ---------------------------------------------------------------------------- distributed


@asynccontextmanager
async def worker(url: str, rt: FlowRuntime) -> AsyncIterator[BullMQAdapter]:
    adapter = BullMQAdapter(runtime_options=rt.options, connection=url, queue_name=QUEUE)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=5)


async def test_distributed_after_before_and_errors(redis_url: str) -> None:
    async with worker(redis_url, runtime()):
        client = FlowClient(redis_url, queue_name=QUEUE)
        run_id = await client.start("pay")
        assert (await client.wait(run_id, timeout=10)).status == "awaiting"
        assert await client.send_event(run_id, "paid", {"n": 1}) == "delivered"
        done = await client.wait(run_id, timeout=10)
        assert done.status == "completed" and done.context["b"] == {"got": {"n": 1}}
        assert not any(k.startswith(("_events.", "_evwait.")) for k in done.context)
        with pytest.raises(FlowcraftError, match="has ended"):
            await client.send_event(run_id, "paid", 2)
        with pytest.raises(RunNotFound):
            await client.send_event("no-such-run", "paid", 2)
        with pytest.raises(ValueError, match=r"params\.event"):
            await client.send_event(run_id, "", 2)

        held = await client.start("held")
        assert await client.send_event(held, "paid", {"n": 2}) == "buffered"
        GATE.set()
        done = await client.wait(held, timeout=10)
        assert done.status == "completed" and done.context["b"] == {"got": {"n": 2}}
        # a delivery id is taken once
        again = await client.start("pay")
        assert (await client.wait(again, timeout=10)).status == "awaiting"
        assert await client.send_event(again, "paid", 5, delivery_id="d-1") == "delivered"
        assert await client.send_event(again, "paid", 6, delivery_id="d-1") == "duplicate"
        assert (await client.wait(again, timeout=10)).context["b"] == {"got": 5}


async def test_distributed_event_while_the_node_parks(redis_url: str) -> None:
    """The event arrives after the node read the state and before its park commits: the park
    is refused (the state changed), the node runs again and takes the event."""
    async with worker(redis_url, runtime(**{"wait-for-event": slow_wait})) as adapter:
        client = FlowClient(redis_url, queue_name=QUEUE)
        run_id = await client.start("pay")
        await asyncio.wait_for(GATE.wait(), 10)
        assert await client.send_event(run_id, "paid", {"n": 7}) == "buffered"
        done = await client.wait(run_id, timeout=10)
        assert done.status == "completed" and done.context["b"] == {"got": {"n": 7}}
        assert adapter.worker.stats.requeued == 1


def test_tokens_are_signed() -> None:
    secret = "ab" * 32
    token = sign(secret, "run-1", "paid.v2")
    assert verify(secret, token) == ("run-1", "paid.v2")
    run, name, signature = token.split(".")
    assert verify(secret, f"run-2.{name}.{signature}") is None
    assert verify(secret, f"{run}.{name}.{'0' * len(signature)}") is None
    assert verify("cd" * 32, token) is None
    assert verify(secret, "garbage") is None


async def test_webhooks_over_http(redis_url: str) -> None:
    async with worker(redis_url, runtime()):
        client = FlowClient(redis_url, queue_name=QUEUE)
        run_id = await client.start("pay")
        assert (await client.wait(run_id, timeout=10)).status == "awaiting"
        token = await client.webhook_url_token(run_id, "paid")
        with dashboard_process(redis_url, QUEUE) as base:
            url = f"{base}/webhooks/{token}"
            loop = asyncio.get_running_loop()

            async def post(target: str, **kw: Any) -> tuple[int, Any]:
                return await loop.run_in_executor(None, lambda: fetch(target, "POST", **kw))

            bad = token[:-1] + ("0" if token[-1] != "0" else "1")
            assert (await post(f"{base}/webhooks/{bad}", body={"n": 1}))[0] == 404
            huge = b'"' + b"x" * MAX_WEBHOOK_BODY + b'"'
            assert (await post(url, raw=huge))[0] == 413
            assert (await post(url, raw=b"{not json"))[0] == 400
            code, answer = await post(url, body={"n": 9})
            assert (code, answer["status"]) == (202, "delivered")
            code, answer = await post(url, body={"n": 9})  # the same delivery, replayed
            assert (code, answer["status"]) == (200, "duplicate")
            done = await client.wait(run_id, timeout=10)
            assert done.context["b"] == {"got": {"n": 9}}
            # the run ended: a new delivery is refused
            code, _ = await post(url, body={"n": 10}, **{"X-Delivery-Id": "fresh"})
            assert code == 409


def timed(bp_id: str, timeout: str) -> dict[str, Any]:
    """a -> w (wait-for-event "paid", with a timeout) -> paid | late (on the action timeout)."""
    return {
        "id": bp_id,
        "nodes": [
            {"id": "a", "uses": "first"},
            {"id": "w", "uses": "wait-for-event", "params": {"event": "paid", "timeout": timeout}},
            {"id": "paid", "uses": "echo"},
            {"id": "late", "uses": "echo"},
        ],
        "edges": [
            {"source": "a", "target": "w"},
            {"source": "w", "target": "paid"},
            {"source": "w", "target": "late", "action": "timeout"},
        ],
    }


def timed_runtime() -> FlowRuntime:
    return FlowRuntime(
        registry={"first": first, "echo": echo},
        blueprints=[timed("quick", "300ms"), timed("slow", "30s")],
    )


async def test_in_memory_timeout() -> None:
    rt = timed_runtime()
    late = await rt.run("quick")  # nobody sends: the run waits in process, then times out
    assert late.status == "completed"
    assert "late" in late.context and "paid" not in late.context
    running = asyncio.create_task(rt.run("slow", run_id="r-slow"))
    await asyncio.sleep(0.2)
    await rt.send_event("r-slow", "paid", {"n": 1})  # before the timeout: the event wins
    on_time = await asyncio.wait_for(running, 10)
    assert on_time.context["paid"] == {"got": {"n": 1}} and "late" not in on_time.context
    with pytest.raises(BlueprintError, match="'w': timeout: sleep duration 'soon'"):
        await rt.run(timed("bad", "soon"))
    with pytest.raises(BlueprintError, match=r"needs params\.event"):
        await rt.run({"id": "x", "nodes": [{"id": "w", "uses": "wait-for-event"}], "edges": []})


async def test_distributed_timeout(redis_url: str) -> None:
    async with worker(redis_url, timed_runtime()) as adapter:
        client = FlowClient(redis_url, queue_name=QUEUE)
        late = await client.start("quick")
        assert (await client.wait(late, timeout=10)).status == "awaiting"
        done = await client.wait(late, timeout=10)
        if done.status == "awaiting":  # the wait returned at the park: wait for the end
            await asyncio.sleep(1)
            done = await client.wait(late, timeout=10)
        assert done.status == "completed" and "late" in done.context
        assert "paid" not in done.context
        # the event first: the timeout job is deleted (and would do nothing)
        on_time = await client.start("slow")
        assert (await client.wait(on_time, timeout=10)).status == "awaiting"
        assert await client.send_event(on_time, "paid", {"n": 2}) == "delivered"
        done = await client.wait(on_time, timeout=10)
        assert done.context["paid"] == {"got": {"n": 2}} and "late" not in done.context
        counts = await client.counts()
        assert counts["delayed"] == 0, counts
        assert adapter.worker.stats.rejected == 0
