"""The events the original Flowcraft emits beyond a node's start and finish (issue 15):
`context:change`, `batch:start`/`batch:finish`, `workflow:pause`, in memory. The distributed
side of the same events is tests/integration/test_distributed_events.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_helpers import RecordingBus

from flowcraft_fast import create_flow
from flowcraft_fast.runtime import FlowRuntime, NodeContext

pytestmark = pytest.mark.asyncio


async def write_and_delete(ctx: NodeContext) -> str:
    await ctx.context.set("colour", "blue")
    await ctx.context.delete("stale")
    return "done"


async def test_context_changes_name_the_node_the_key_and_the_operation() -> None:
    bus = RecordingBus()
    bp = {"id": "w", "nodes": [{"id": "a", "uses": "w"}], "edges": []}
    rt = FlowRuntime(blueprints=[bp], registry={"w": write_and_delete}, event_bus=bus)
    result = await rt.run("w", {"stale": 1})
    assert result.status == "completed"
    changes = [e["payload"] for e in bus.events if e["type"] == "context:change"]
    assert [(c["sourceNode"], c["key"], c["op"], c.get("value")) for c in changes] == [
        ("a", "colour", "set", "blue"),
        ("a", "stale", "delete", None),
        ("a", "_outputs.a", "set", "done"),
        ("a", "a", "set", "done"),
    ]
    assert all(c["runId"] == result.run_id for c in changes)
    finish = bus.types().index("node:finish")
    assert bus.types()[finish + 1] == "context:change"  # after node:finish, as the original


async def square(ctx: NodeContext) -> int:
    return int(ctx.input) ** 2


async def test_a_batch_announces_its_workers_and_its_results() -> None:
    flow = create_flow("b").batch("sq", square, input_key="items", output_key="squares")
    bus = RecordingBus()
    rt = FlowRuntime(registry=flow.registry, event_bus=bus)
    result = await rt.run(flow.to_blueprint(), {"items": [1, 2, 3]})
    assert result.status == "completed", result.errors
    [start] = [e["payload"] for e in bus.events if e["type"] == "batch:start"]
    [finish] = [e["payload"] for e in bus.events if e["type"] == "batch:finish"]
    assert start["batchId"] == "sq" and start["scatterNodeId"] == "sq_scatter"
    assert start["workerNodeIds"] == ["sq_scatter#0", "sq_scatter#1", "sq_scatter#2"]
    assert finish["batchId"] == "sq" and finish["gatherNodeId"] == "sq_gather"
    assert finish["results"] == [1, 4, 9]
    assert start["runId"] == finish["runId"] == result.run_id


async def test_chunked_batches_announce_each_chunk() -> None:
    flow = create_flow("c").batch("sq", square, input_key="items", chunk_size=2)
    bus = RecordingBus()
    rt = FlowRuntime(registry=flow.registry, event_bus=bus)
    result = await rt.run(flow.to_blueprint(), {"items": [1, 2, 3]})
    assert result.status == "completed", result.errors
    starts = [e["payload"]["workerNodeIds"] for e in bus.events if e["type"] == "batch:start"]
    assert starts == [["sq_scatter#0", "sq_scatter#1"], ["sq_scatter#2"]]
    assert bus.types().count("batch:finish") == 1


async def test_a_run_that_waits_or_is_cancelled_pauses() -> None:
    bus = RecordingBus()
    bp = {"id": "p", "nodes": [{"id": "w", "uses": "wait"}], "edges": []}
    rt = FlowRuntime(blueprints=[bp], event_bus=bus)
    result = await rt.run("p")
    assert result.status == "awaiting"
    assert bus.types()[-2:] == ["workflow:pause", "workflow:finish"]
    assert bus.events[-2]["payload"]["status"] == "awaiting"

    async def slow(ctx: NodeContext) -> Any:
        await asyncio.sleep(30)

    bus.events.clear()
    cancel = asyncio.Event()
    bp = {"id": "s", "nodes": [{"id": "x", "uses": "slow"}], "edges": []}
    rt = FlowRuntime(blueprints=[bp], registry={"slow": slow}, event_bus=bus)
    run = asyncio.create_task(rt.run("s", cancel=cancel))
    await asyncio.sleep(0.05)
    cancel.set()
    result = await run
    assert result.status == "cancelled"
    assert bus.types()[-2:] == ["workflow:pause", "workflow:finish"]


async def test_a_node_pauses_its_own_run_and_is_resumed() -> None:
    """`return await ctx.pause(reason)` parks the run like `wait`; the reason is in the
    awaiting context and in `workflow:pause`; resuming finishes the node with the output
    given then, and the reason leaves the finished run's context."""

    async def approve(ctx: NodeContext) -> Any:
        return await ctx.pause("needs a manager's approval")

    async def after(ctx: NodeContext) -> Any:
        return f"approved: {ctx.input}"

    bus = RecordingBus()
    bp = {
        "id": "ap",
        "nodes": [{"id": "gate", "uses": "approve"}, {"id": "next", "uses": "after"}],
        "edges": [{"source": "gate", "target": "next"}],
    }
    rt = FlowRuntime(blueprints=[bp], registry={"approve": approve, "after": after}, event_bus=bus)
    parked = await rt.run("ap")
    assert parked.status == "awaiting"
    assert parked.context["_paused.gate"] == "needs a manager's approval"
    [pause] = [e["payload"] for e in bus.events if e["type"] == "workflow:pause"]
    assert pause["reasons"] == {"gate": "needs a manager's approval"}
    done = await rt.resume("ap", parked.serialized_context, {"output": "yes"}, "gate")
    assert done.status == "completed", done.errors
    assert done.context["next"] == "approved: yes"
    assert "_paused.gate" not in done.context


async def test_a_pause_reason_must_be_text() -> None:
    async def bad(ctx: NodeContext) -> Any:
        return await ctx.pause(42)  # type: ignore[arg-type]

    bp = {"id": "bad", "nodes": [{"id": "x", "uses": "bad"}], "edges": []}
    result = await FlowRuntime(blueprints=[bp], registry={"bad": bad}).run("bad")
    assert result.status == "failed"
    assert "pause reason must be a string" in result.errors[0].message
