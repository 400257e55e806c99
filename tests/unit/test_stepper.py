"""`flowcraft_fast.testing.Stepper`: a workflow run in memory one node at a time."""

from __future__ import annotations

from typing import Any

import pytest

from flowcraft_fast import FlowRuntime, NodeContext
from flowcraft_fast.errors import BlueprintError
from flowcraft_fast.testing import Stepper


async def inc(ctx: NodeContext) -> int:
    await ctx.context.set(f"seen.{ctx.node_id}", ctx.input)
    return (ctx.input or 0) + 1


async def boom(ctx: NodeContext) -> None:
    raise ValueError("no stock")


CHAIN: dict[str, Any] = {
    "id": "chain",
    "nodes": [{"id": n, "uses": "inc"} for n in ("a", "b", "c")],
    "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}],
}
BROKEN: dict[str, Any] = {
    "id": "broken",
    "nodes": [{"id": "a", "uses": "inc"}, {"id": "x", "uses": "boom"}],
    "edges": [{"source": "a", "target": "x"}],
}


def runtime() -> FlowRuntime:
    return FlowRuntime(registry={"inc": inc, "boom": boom}, blueprints=[CHAIN, BROKEN])


async def test_one_node_per_step_with_the_context_between() -> None:
    async with Stepper(runtime(), "chain", {"start": True}) as stepper:
        assert stepper.context == {"start": True}
        first = await stepper.next()
        assert first is not None and (first.node_id, first.output) == ("a", 1)
        assert stepper.context["a"] == 1 and "b" not in stepper.context
        second = await stepper.next()
        assert second is not None and (second.node_id, second.input, second.output) == ("b", 1, 2)
        assert stepper.context["seen.b"] == 1 and "c" not in stepper.context
        assert [e.type for e in second.events][:1] == ["node:start"]
        assert stepper.result is None
        third = await stepper.next()
        assert third is not None and third.node_id == "c"
        assert await stepper.next() is None
        assert stepper.result is not None and stepper.result.status == "completed"
        assert stepper.context["c"] == 3
        assert "workflow:finish" in stepper.trace.names()


async def test_an_error_step_and_finish() -> None:
    async with Stepper(runtime(), "broken") as stepper:
        await stepper.next()
        failed = await stepper.next()
        assert failed is not None and failed.node_id == "x"
        assert failed.error == {"message": "no stock", "type": "ValueError"}
        result = await stepper.finish()
        assert result.status == "failed"


async def test_finish_at_once_and_an_invalid_blueprint() -> None:
    async with Stepper(runtime(), "chain") as stepper:
        assert (await stepper.finish()).context["c"] == 3
    stepper = Stepper(runtime(), {"id": "bad", "nodes": [], "edges": []})
    with pytest.raises(BlueprintError):
        await stepper.next()


async def test_closing_midway_cancels_the_run() -> None:
    stepper = Stepper(runtime(), "chain")
    await stepper.next()
    await stepper.close()
    assert stepper.result is None
