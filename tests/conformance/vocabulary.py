"""The node vocabulary of the conformance cases (shared/conformance/README.md), as a registry.

Every node adds 1 to a ledger for (run_id, node_id) once per attempt. The ledger is pluggable:
any object with `record(run_id, node_id)` and `counts(run_id) -> dict` (either may be async),
handed to the nodes through `dependencies["ledger"]`, so the distributed tests can plug in a
Redis-backed ledger that survives worker restarts.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from flowcraft_fast.errors import WorkflowCancelled
from flowcraft_fast.runtime.types import NodeContext, NodeResult


class Ledger(Protocol):
    def record(self, run_id: str, node_id: str) -> Any: ...

    def counts(self, run_id: str) -> Any: ...


class MemoryLedger:
    """A ledger in this process's memory (for in-memory runs)."""

    def __init__(self) -> None:
        self._counts: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def record(self, run_id: str, node_id: str) -> None:
        self._counts[run_id][node_id] += 1

    def counts(self, run_id: str) -> dict[str, int]:
        return dict(self._counts.get(run_id, {}))


async def ledger_counts(ledger: Ledger, run_id: str) -> dict[str, int]:
    counts = ledger.counts(run_id)
    if inspect.isawaitable(counts):
        counts = await counts
    return dict(counts)


Node = Callable[[NodeContext], Awaitable[Any]]


def _counted(fn: Node) -> Node:
    async def node(ctx: NodeContext) -> Any:
        ledger = ctx.dependencies.get("ledger")
        if ledger is not None:
            recorded = ledger.record(ctx.run_id, ctx.node_id)
            if inspect.isawaitable(recorded):
                await recorded
        return await fn(ctx)

    node.__name__ = node.__qualname__ = fn.__name__
    return node


async def const(ctx: NodeContext) -> Any:
    return ctx.params.get("value")


async def echo(ctx: NodeContext) -> Any:
    return ctx.input


async def add(ctx: NodeContext) -> Any:
    return (ctx.input or 0) + ctx.params["n"]


async def sum_(ctx: NodeContext) -> Any:
    if isinstance(ctx.input, Mapping):
        return sum(ctx.input.values())
    return ctx.input


async def set_(ctx: NodeContext) -> Any:
    value = ctx.params.get("value")
    await ctx.context.set(ctx.params["key"], value)
    return value


async def get(ctx: NodeContext) -> Any:
    return await ctx.context.get(ctx.params["key"])


async def incr(ctx: NodeContext) -> Any:
    key = ctx.params["key"]
    value = (await ctx.context.get(key) or 0) + 1
    await ctx.context.set(key, value)
    return value


async def route(ctx: NodeContext) -> NodeResult:
    return NodeResult(output=ctx.input, action=ctx.params["action"])


async def fail(ctx: NodeContext) -> Any:
    raise ValueError(ctx.params.get("message", "fail"))


async def flaky(ctx: NodeContext) -> Any:
    if ctx.attempt <= ctx.params.get("failures", 0):
        raise RuntimeError(f"flaky attempt {ctx.attempt}")
    return ctx.params.get("value")


async def slow(ctx: NodeContext) -> Any:
    try:
        await asyncio.wait_for(ctx.cancelled.wait(), ctx.params.get("ms", 0) / 1000.0)
    except TimeoutError:
        return ctx.input
    raise WorkflowCancelled(f"node '{ctx.node_id}' cancelled")


async def double(ctx: NodeContext) -> Any:
    return ctx.input * 2


async def cyclic(ctx: NodeContext) -> Any:
    """Not in the shared vocabulary: a value with a reference cycle, written to the context
    (`params.where == "context"`) or returned as the output."""
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    if ctx.params.get("where") == "context":
        await ctx.context.set("cyclic", value)
        return None
    return value


VOCABULARY: dict[str, Node] = {
    "const": const,
    "echo": echo,
    "add": add,
    "sum": sum_,
    "set": set_,
    "get": get,
    "incr": incr,
    "route": route,
    "fail": fail,
    "flaky": flaky,
    "slow": slow,
    "double": double,
    "cyclic": cyclic,
}


def make_registry() -> dict[str, Node]:
    """uses key -> counted node implementation."""
    return {key: _counted(fn) for key, fn in VOCABULARY.items()}
