"""The benchmark workloads, shared by the worker subprocess and the client side.

Shapes (nodes per run = steps per run):
- chain10: n0 -> n1 -> ... -> n9, each node returns (input or 0) + 1; the result is 10.
- fan10:   s -> p0..p9 -> j (joinStrategy all); s returns 1, each p returns 2, j sums its input
           mapping, so j = 20. 12 steps.
- fan100:  the same with 100 parallel nodes; j = 200. 102 steps.
"""

from __future__ import annotations

from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    "chain10": {"steps": 10, "expect": 10},
    "fan10": {"steps": 12, "width": 10, "expect": 20},
    "fan100": {"steps": 102, "width": 100, "expect": 200},
}


def chain_blueprint(n: int = 10) -> dict[str, Any]:
    nodes = [{"id": f"n{i}", "uses": "step"} for i in range(n)]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(n - 1)]
    return {"id": f"chain{n}", "nodes": nodes, "edges": edges}


def fan_blueprint(width: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "s", "uses": "step"}]
    nodes += [{"id": f"p{i}", "uses": "step"} for i in range(width)]
    nodes.append({"id": "j", "uses": "sum", "config": {"joinStrategy": "all"}})
    edges = [{"source": "s", "target": f"p{i}"} for i in range(width)]
    edges += [{"source": f"p{i}", "target": "j"} for i in range(width)]
    return {"id": f"fan{width}", "nodes": nodes, "edges": edges}


def blueprints() -> list[dict[str, Any]]:
    return [chain_blueprint(10), fan_blueprint(10), fan_blueprint(100)]


async def step(ctx: Any) -> int:
    return (ctx.input or 0) + 1


async def sum_inputs(ctx: Any) -> int:
    value = ctx.input
    if isinstance(value, dict):
        return sum(int(v) for v in value.values())
    return int(value or 0)


def final_value(shape: str, context: dict[str, Any]) -> Any:
    """The value a finished run of `shape` produced (from a flowcraft result context)."""
    return context.get("n9") if shape == "chain10" else context.get("j")
