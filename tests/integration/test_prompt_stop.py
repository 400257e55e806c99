"""Running nodes of a run that ends early (cancelled, or failed on another worker) are stopped
through the queue's stops channel, not only at their worker's next lease renewal.

The workers here renew leases every 200 s (lease 600 s), so within the tests' bounds only the
stops channel can have stopped the nodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext
from waiting import wait_until

LONG_LEASE_MS = 600_000

CANCELLABLE = {
    "id": "long",
    "nodes": [{"id": "wait_long", "uses": "watch"}],
    "edges": [],
}
FAILING = {
    "id": "fail-one",
    "nodes": [
        {"id": "s", "uses": "start"},
        {"id": "watcher", "uses": "watch"},
        {"id": "bad", "uses": "boom"},
    ],
    "edges": [{"source": "s", "target": "watcher"}, {"source": "s", "target": "bad"}],
}


def runtime(stopped: dict[str, bool], entered: dict[str, asyncio.Event]) -> FlowRuntime:
    async def watch(ctx: NodeContext) -> Any:
        entered.setdefault(ctx.run_id, asyncio.Event()).set()
        try:
            await asyncio.wait_for(ctx.cancelled.wait(), 60)
        finally:
            stopped[ctx.run_id] = ctx.cancelled.is_set()
        return "finished"

    async def start(ctx: NodeContext) -> int:
        return 1

    async def boom(ctx: NodeContext) -> None:
        entered_watch = entered.setdefault(ctx.run_id, asyncio.Event())
        await asyncio.wait_for(entered_watch.wait(), 20)  # fail once the sibling is running
        raise ValueError("boom")

    return FlowRuntime(
        blueprints=[CANCELLABLE, FAILING], registry={"watch": watch, "start": start, "boom": boom}
    )


def adapter(rt: FlowRuntime, url: str) -> BullMQAdapter:
    return BullMQAdapter(
        runtime_options=rt.options, connection=url, queue_name="stops", lease_ms=LONG_LEASE_MS
    )


async def test_cancel_stops_a_running_node_at_once(redis_url: str) -> None:
    stopped: dict[str, bool] = {}
    entered: dict[str, asyncio.Event] = {}
    worker = adapter(runtime(stopped, entered), redis_url)
    await worker.start()
    try:
        client = FlowClient(redis_url, queue_name="stops")
        run_id = await client.start("long", {})
        await wait_until(lambda: run_id in entered, 20, "the node to start")
        assert await client.cancel(run_id)
        await wait_until(lambda: run_id in stopped, 20, "the running node to be stopped")
        assert stopped[run_id] is True  # it saw ctx.cancelled
        result = await client.wait(run_id, timeout=10)
        assert result.status == "cancelled"
        assert "wait_long" not in result.context
    finally:
        await worker.close(timeout=5)


async def test_failure_on_one_worker_stops_a_sibling_on_another(redis_url: str) -> None:
    stopped: dict[str, bool] = {}
    entered: dict[str, asyncio.Event] = {}
    rt = runtime(stopped, entered)
    # Two workers (two queue connections and lease keepers); one node each at most, so the
    # failing node and its watching sibling run on different workers.
    first = BullMQAdapter(
        runtime_options=rt.options, connection=redis_url, queue_name="stops",
        lease_ms=LONG_LEASE_MS, concurrency=1,
    )  # fmt: skip
    second = BullMQAdapter(
        runtime_options=rt.options, connection=redis_url, queue_name="stops",
        lease_ms=LONG_LEASE_MS, concurrency=1,
    )  # fmt: skip
    await first.start()
    await second.start()
    try:
        client = FlowClient(redis_url, queue_name="stops")
        run_id = await client.start("fail-one", {})
        result = await client.wait(run_id, timeout=30)
        assert result.status == "failed"
        assert [e.node_id for e in result.errors] == ["bad"]
        await wait_until(lambda: run_id in stopped, 20, "the sibling to be stopped")
        assert stopped[run_id] is True
        assert first.worker.stats.committed + second.worker.stats.committed >= 2
    finally:
        await first.close(timeout=5)
        await second.close(timeout=5)
