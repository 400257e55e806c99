"""The built-in nodes: wait, sleep, subflow, batch-scatter/gather, loop-controller."""

from __future__ import annotations

from typing import Any

import pytest
from runtime_helpers import BASIC, blueprint

from flowcraft_fast.builder import create_flow
from flowcraft_fast.errors import BlueprintError
from flowcraft_fast.runtime import FlowRuntime, NodeContext

pytestmark = pytest.mark.asyncio


def _loop(condition: str, max_iterations: int = 10) -> dict[str, Any]:
    return blueprint(
        "loop",
        [
            {"id": "init", "uses": "const", "params": {"value": 0}},
            {
                "id": "L",
                "uses": "loop-controller",
                "params": {"condition": condition, "maxIterations": max_iterations},
                "config": {"joinStrategy": "any"},
            },
            {"id": "body", "uses": "bump"},
            {"id": "done", "uses": "echo"},
        ],
        [
            ("init", "L"),
            {"source": "L", "target": "body", "action": "continue"},
            ("body", "L"),
            {"source": "L", "target": "done", "action": "break"},
        ],
    )


async def bump(ctx: NodeContext) -> int:
    value = (await ctx.context.get("n") or 0) + 1
    await ctx.context.set("n", value)
    return int(ctx.input) + 10


async def test_loop_passes_values_through_iterations() -> None:
    rt = FlowRuntime(registry={**BASIC, "bump": bump})
    result = await rt.run(_loop("not (n >= 4)"))
    assert result.status == "completed", result.errors
    assert result.context["n"] == 4
    assert result.context["done"] == 40


async def test_loop_with_zero_iterations() -> None:
    rt = FlowRuntime(registry={**BASIC, "bump": bump})
    result = await rt.run(_loop("false"))
    assert result.status == "completed"
    assert "n" not in result.context and result.context["done"] == 0


async def test_loop_exceeding_max_iterations_fails_naming_the_loop() -> None:
    rt = FlowRuntime(registry={**BASIC, "bump": bump})
    result = await rt.run(_loop("true", max_iterations=3))
    assert result.status == "failed"
    assert result.context["n"] == 3
    [error] = result.errors
    assert error.node_id == "L" and "loop 'L' exceeded maxIterations (3)" in error.message


async def test_loop_condition_is_checked_at_load() -> None:
    rt = FlowRuntime(registry=BASIC)
    with pytest.raises(BlueprintError):
        await rt.run(_loop("__import__('os')"))


async def test_builder_loop_and_batch_shapes_run() -> None:
    async def start(ctx: NodeContext) -> list[int]:
        return [1, 2, 3]

    async def square(ctx: NodeContext) -> int:
        return int(ctx.input) ** 2

    async def count(ctx: NodeContext) -> int:
        value = (await ctx.context.get("k") or 0) + 1
        await ctx.context.set("k", value)
        return value

    async def report(ctx: NodeContext) -> Any:
        return {"squares": await ctx.context.get("squares"), "k": await ctx.context.get("k")}

    flow = (
        create_flow("both")
        .node("start", start)
        .batch("sq", square, input_key="start", output_key="squares", chunk_size=2)
        .node("count", count)
        .loop("again", start_node_id="count", end_node_id="count", condition="not (k >= 2)")
        .node("report", report)
        .edge("start", "sq")
        .edge("sq", "again")
        .edge("again", "report")
    )
    rt = FlowRuntime(registry=flow.registry)
    result = await rt.run(flow.to_blueprint())
    assert result.status == "completed", result.errors
    assert result.context["report"] == {"squares": [1, 4, 9], "k": 2}
    assert not any(k.startswith("_batch.") for k in result.context)


async def test_empty_batch_gathers_an_empty_list() -> None:
    flow = create_flow("empty").batch("b", "double", input_key="items", output_key="out")

    async def double(ctx: NodeContext) -> int:
        return int(ctx.input) * 2

    rt = FlowRuntime(registry={"double": double})
    result = await rt.run(flow.to_blueprint(), {"items": []})
    assert result.status == "completed" and result.context["out"] == []
    result = await rt.run(flow.to_blueprint(), {"items": [1, 2, 3]})
    assert result.context["out"] == [2, 4, 6]


async def test_batch_worker_failure_fails_the_run() -> None:
    flow = create_flow("bf").batch("b", "fail", input_key="items")
    rt = FlowRuntime(registry=BASIC)
    result = await rt.run(flow.to_blueprint(), {"items": [1]})
    assert result.status == "failed" and result.errors[0].node_id == "b_scatter#0"


async def test_wait_resume_routes_by_action() -> None:
    bp = blueprint(
        "hitl",
        [
            {"id": "w", "uses": "wait"},
            {"id": "yes", "uses": "echo"},
            {"id": "no", "uses": "echo"},
            {"id": "side", "uses": "const", "params": {"value": 1}},
        ],
        [
            {"source": "w", "target": "yes", "action": "approve"},
            {"source": "w", "target": "no", "action": "reject"},
        ],
    )
    rt = FlowRuntime(registry=BASIC)
    waiting = await rt.run(bp)
    assert waiting.status == "awaiting"
    assert waiting.context["side"] == 1  # independent branches finish before the run awaits
    result = await rt.resume(bp, waiting.serialized_context, {"output": "r", "action": "reject"})
    assert result.status == "completed"
    assert result.context["no"] == "r" and "yes" not in result.context


async def test_sleep_passes_input_and_rejects_bad_durations() -> None:
    nodes = [
        {"id": "s", "uses": "const", "params": {"value": 3}},
        {"id": "z", "uses": "sleep", "params": {"duration": "0s"}},
    ]
    rt = FlowRuntime(registry=BASIC)
    result = await rt.run(blueprint("sl", nodes, [("s", "z")]))
    assert result.context["z"] == 3
    nodes[1]["params"] = {"duration": "soon"}
    result = await rt.run(blueprint("sl2", nodes, [("s", "z")]))
    assert result.status == "failed" and "'soon'" in result.errors[0].message


CHILD = blueprint(
    "child",
    [
        {"id": "c1", "uses": "add", "params": {"n": 1}},
        {"id": "c2", "uses": "add", "params": {"n": 2}},
    ],
    [("c1", "c2")],
)


async def test_subflow_inputs_and_outputs_mappings() -> None:
    child = blueprint("child2", [{"id": "g", "uses": "getx"}], [])

    async def getx(ctx: NodeContext) -> Any:
        return (await ctx.context.get("x")) * 3

    nodes = [
        {"id": "p", "uses": "const", "params": {"value": 5}},
        {
            "id": "sf",
            "uses": "subflow",
            "params": {"blueprintId": "child2", "inputs": {"x": "p"}, "outputs": {"res": "g"}},
        },
    ]
    rt = FlowRuntime(blueprints=[child], registry={**BASIC, "getx": getx})
    result = await rt.run(blueprint("parent", nodes, [("p", "sf")]))
    assert result.status == "completed", result.errors
    assert result.context["res"] == 15 and result.context["sf"] == {"res": 15}


async def test_subflow_child_failure_fails_the_node() -> None:
    child = blueprint("bad_child", [{"id": "x", "uses": "fail", "params": {"message": "deep"}}], [])
    rt = FlowRuntime(blueprints={"bad_child": child}, registry=BASIC)
    bp = blueprint(
        "parent", [{"id": "sf", "uses": "subflow", "params": {"blueprintId": "bad_child"}}], []
    )
    result = await rt.run(bp)
    assert result.status == "failed"
    assert result.errors[0].node_id == "sf" and "deep" in result.errors[0].message


async def test_awaiting_subflow_resumes_through_the_parent() -> None:
    child = blueprint(
        "waiting_child",
        [{"id": "w", "uses": "wait"}, {"id": "after", "uses": "add", "params": {"n": 1}}],
        [("w", "after")],
    )
    rt = FlowRuntime(blueprints=[child], registry=BASIC)
    bp = blueprint(
        "parent",
        [
            {"id": "sf", "uses": "subflow", "params": {"blueprintId": "waiting_child"}},
            {"id": "next", "uses": "echo"},
        ],
        [("sf", "next")],
    )
    waiting = await rt.run(bp)
    assert waiting.status == "awaiting" and waiting.context["_awaitingNodeIds"] == ["sf"]
    result = await rt.resume(bp, waiting.serialized_context, {"output": 41})
    assert result.status == "completed", result.errors
    assert result.context["next"] == 42
