"""A small order app shared by the tests of `flowcraft_fast.testing` (in memory and
distributed): fetch -> tax, a run whose second node fails, and one that waits."""

from __future__ import annotations

from flowcraft_fast import NodeContext


async def fetch(ctx: NodeContext) -> dict[str, int]:
    return {"id": 7, "total": 40}


async def tax(ctx: NodeContext) -> float:
    return float(ctx.input["total"]) * 1.25


async def reject(ctx: NodeContext) -> None:
    raise ValueError(f"order {ctx.input['id']} has no customer")


ORDER = {
    "id": "order",
    "nodes": [{"id": "fetch", "uses": "fetch"}, {"id": "tax", "uses": "tax"}],
    "edges": [{"source": "fetch", "target": "tax"}],
}
REJECTED = {
    "id": "rejected",
    "nodes": [{"id": "fetch", "uses": "fetch"}, {"id": "check", "uses": "reject"}],
    "edges": [{"source": "fetch", "target": "check"}],
}
GATED = {
    "id": "gated",
    "nodes": [{"id": "approve", "uses": "wait"}, {"id": "tax", "uses": "tax"}],
    "edges": [{"source": "approve", "target": "tax"}],
}
REGISTRY = {"fetch": fetch, "tax": tax, "reject": reject}
