"""Distributed runs emit the adapter-level events of SPEC section 3 to the runtime's bus."""

from __future__ import annotations

from typing import Any

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext

BP = {
    "id": "ev",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "c", "uses": "one"}],
    "edges": [{"source": "a", "target": "c"}],
}
FAILS = {
    "id": "ev-fail",
    "nodes": [{"id": "x", "uses": "boom"}],
    "edges": [],
}


class Bus:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of(self, run_id: str, kind: str) -> list[dict[str, Any]]:
        return [
            e["payload"]
            for e in self.events
            if e["type"] == kind and e["payload"].get("runId") == run_id
        ]


async def one(ctx: NodeContext) -> int:
    return 1


async def boom(ctx: NodeContext) -> None:
    raise ValueError("kaput")


async def test_job_and_workflow_events(redis_url: str) -> None:
    bus = Bus()
    rt = FlowRuntime(
        blueprints=[BP, FAILS],
        registry={"one": one, "boom": boom},
        event_bus=bus,
    )
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="ev")
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name="ev")
        ok = await client.start("ev", {})
        assert (await client.wait(ok, timeout=10)).status == "completed"
        bad = await client.start("ev-fail", {})
        assert (await client.wait(bad, timeout=10)).status == "failed"
    finally:
        await adapter.close()

    processed = bus.of(ok, "job:processed")
    assert sorted(p["nodeId"] for p in processed) == ["a", "c"]
    assert all(p["success"] and p["blueprintId"] == "ev" for p in processed)
    assert [p["nodeId"] for p in bus.of(ok, "job:enqueued")] == ["c"]
    assert [p["status"] for p in bus.of(ok, "workflow:finish")] == ["completed"]
    assert [p["nodeId"] for p in bus.of(ok, "node:start")] == ["a", "c"]  # from the executor

    failed = bus.of(bad, "job:failed")
    assert [(p["nodeId"], p["error"]) for p in failed] == [("x", "kaput")]
    assert [p["status"] for p in bus.of(bad, "workflow:finish")] == ["failed"]


async def square(ctx: NodeContext) -> int:
    return int(ctx.input) ** 2


async def test_context_batch_and_pause_events_distributed(redis_url: str) -> None:
    """The events issue 15 added, from workers: each node's context writes, a batch's start
    and finish, and a run that parks on a wait node pausing."""
    from flowcraft_fast import create_flow

    flow = create_flow("evb").batch("sq", square, input_key="items", output_key="squares")
    parked = {"id": "evw", "nodes": [{"id": "w", "uses": "wait"}], "edges": []}
    bus = Bus()
    rt = FlowRuntime(blueprints=[flow.to_blueprint(), parked], registry=flow.registry,
                     event_bus=bus)  # fmt: skip
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="evb")
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name="evb")
        run = await client.start("evb", {"items": [1, 2, 3]})
        result = await client.wait(run, timeout=20)
        assert result.status == "completed" and result.context["squares"] == [1, 4, 9]
        waits = await client.start("evw", {})
        assert (await client.wait(waits, timeout=20)).status == "awaiting"
    finally:
        await adapter.close()

    [start] = bus.of(run, "batch:start")
    assert start["batchId"] == "sq" and start["scatterNodeId"] == "sq_scatter"
    assert start["workerNodeIds"] == ["sq_scatter#0", "sq_scatter#1", "sq_scatter#2"]
    [finish] = bus.of(run, "batch:finish")
    assert finish["gatherNodeId"] == "sq_gather" and finish["results"] == [1, 4, 9]
    changes = {(c["sourceNode"], c["key"]) for c in bus.of(run, "context:change")}
    assert ("sq_gather", "squares") in changes and ("sq_scatter#1", "sq_scatter#1") in changes
    assert [p["status"] for p in bus.of(waits, "workflow:pause")] == ["awaiting"]


async def test_a_node_pauses_its_own_run_distributed(redis_url: str) -> None:
    async def approve(ctx: NodeContext) -> Any:
        return await ctx.pause("needs a manager's approval")

    async def after(ctx: NodeContext) -> Any:
        return f"approved: {ctx.input}"

    bp = {
        "id": "evp",
        "nodes": [{"id": "gate", "uses": "approve"}, {"id": "next", "uses": "after"}],
        "edges": [{"source": "gate", "target": "next"}],
    }
    bus = Bus()
    rt = FlowRuntime(blueprints=[bp], registry={"approve": approve, "after": after},
                     event_bus=bus)  # fmt: skip
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="evp")
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name="evp")
        run = await client.start("evp", {})
        parked = await client.wait(run, timeout=20)
        assert parked.status == "awaiting"
        await client.resume(run, "gate", output="yes")
        done = await client.wait(run, timeout=20)
    finally:
        await adapter.close()
    assert done.status == "completed" and done.context["next"] == "approved: yes"
    assert "_paused.gate" not in done.context
    [pause] = bus.of(run, "workflow:pause")  # emitted by the worker after its commit
    assert pause["reasons"] == {"gate": "needs a manager's approval"}
