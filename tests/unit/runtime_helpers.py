"""Small helpers shared by the runtime unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flowcraft_fast.runtime.types import NodeContext


def blueprint(bp_id: str, nodes: Sequence[Any], edges: Sequence[Any]) -> dict[str, Any]:
    """A blueprint mapping; an edge may be written as a (source, target) pair."""
    return {
        "id": bp_id,
        "nodes": nodes,
        "edges": [{"source": e[0], "target": e[1]} if isinstance(e, tuple) else e for e in edges],
    }


class RecordingBus:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def types(self, node_id: str | None = None) -> list[str]:
        return [
            e["type"]
            for e in self.events
            if node_id is None or e["payload"].get("nodeId") == node_id
        ]


async def const(ctx: NodeContext) -> Any:
    return ctx.params.get("value")


async def echo(ctx: NodeContext) -> Any:
    return ctx.input


async def add(ctx: NodeContext) -> Any:
    return (ctx.input or 0) + ctx.params.get("n", 1)


async def fail(ctx: NodeContext) -> Any:
    raise ValueError(ctx.params.get("message", "boom"))


BASIC = {"const": const, "echo": echo, "add": add, "fail": fail}
