"""Run history and time travel in memory (docs/history.md): replay, fork, execute_node, the
history's bound, and nothing recorded when it is off. The distributed side is
tests/integration/test_history_distributed.py."""

from __future__ import annotations

from typing import Any

import pytest

from flowcraft_fast.runtime import FlowRuntime, NodeContext, NodeResult
from flowcraft_fast.runtime.history import HistoryError, HistoryTee

pytestmark = pytest.mark.asyncio

CHAIN = {
    "id": "chain",
    "nodes": [{"id": n, "uses": "step"} for n in "abcd"],
    "edges": [{"source": s, "target": t} for s, t in ("ab", "bc", "cd")],
}


class LiveContext:
    """An event bus that keeps, at every `node:start`, the live context the starting node
    sees (the node puts it in `seen` as it starts; the bus pairs it with the event)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.started: list[str] = []

    def emit(self, event: dict[str, Any]) -> None:
        if event["type"] == "node:start":
            self.started.append(event["payload"]["nodeId"])


def make_step(live: LiveContext, ran: list[str]) -> Any:
    async def step(ctx: NodeContext) -> int:
        live.seen[ctx.node_id] = await ctx.context.to_dict()
        ran.append(ctx.node_id)
        await ctx.context.set(f"seen_{ctx.node_id}", len(ran))
        return int(ctx.input or 0) + 10

    return step


def runtime(history: int = 100) -> tuple[FlowRuntime, LiveContext, list[str]]:
    live, ran = LiveContext(), []
    rt = FlowRuntime(
        blueprints=[CHAIN], registry={"step": make_step(live, ran)}, event_bus=live,
        history=history,
    )  # fmt: skip
    return rt, live, ran


def start_entry_of(rt: FlowRuntime, run_id: str, node_id: str) -> str:
    return next(e.id for e in rt.history(run_id) if e.type == "node:start" and e.node_id == node_id)


async def test_replay_at_three_points_equals_the_live_context_there() -> None:
    rt, live, _ = runtime()
    result = await rt.run("chain", {"_inputs.a": 1, "user": "x"})
    assert result.status == "completed"
    assert live.started == ["a", "b", "c", "d"]
    for node in ("b", "c", "d"):
        replayed = rt.replay(result.run_id, until=start_entry_of(rt, result.run_id, node))
        assert replayed == live.seen[node], node
    assert rt.replay(result.run_id) == result.context  # and after the last entry, the end


async def test_history_records_node_inputs_outputs_and_writes() -> None:
    rt, _, _ = runtime()
    result = await rt.run("chain", {"_inputs.a": 1})
    entries = rt.history(result.run_id)
    assert entries[0].type == "workflow:start"
    assert entries[0].data == {"blueprintId": "chain", "context": {"_inputs.a": 1}}
    b = [e for e in entries if e.node_id == "b"]
    assert [e.type for e in b][:2] == ["node:start", "node:finish"]
    assert b[0].data["input"] == 11
    assert b[1].data["result"] == {"output": 21, "action": None}
    writes = {e.data["key"]: e.data["value"] for e in b if e.type == "context:change"}
    assert writes == {"seen_b": 2, "_inputs.b": 11, "_outputs.b": 21, "b": 21}
    assert [int(e.id) for e in entries] == list(range(1, len(entries) + 1))


async def test_fork_from_a_mid_run_node_completes_with_the_right_result() -> None:
    rt, _, ran = runtime()
    first = await rt.run("chain", {"_inputs.a": 1})
    assert first.context["d"] == 41
    ran.clear()
    fork = await rt.fork(first.run_id, "c", new_run_id="forked")
    assert fork.status == "completed"
    assert fork.run_id == "forked"
    assert ran == ["c", "d"]  # a and b are not run again: their outputs come from the record
    assert fork.context["d"] == 41
    assert fork.context["b"] == 21 and fork.context["seen_b"] == 2
    assert rt.replay("forked")["_inputs.c"] == 21  # the fork has a history of its own


async def test_fork_of_a_node_that_never_ran_is_refused() -> None:
    rt, _, _ = runtime()
    result = await rt.run("chain", {"_inputs.a": 1})
    with pytest.raises(HistoryError, match="never started"):
        await rt.fork(result.run_id, "nope")
    with pytest.raises(HistoryError, match="no history entry"):
        rt.replay(result.run_id, until="999999")


async def test_execute_node_with_an_input_override() -> None:
    async def add(ctx: NodeContext) -> NodeResult:
        await ctx.context.set("touched", True)
        return NodeResult(output=ctx.input["x"] + ctx.input["y"], action="sum")

    async def broken(ctx: NodeContext) -> None:
        raise KeyError("missing thing")

    bp = {
        "id": "one",
        "nodes": [
            {"id": "s", "uses": "add", "inputs": {"x": "a", "y": "b"}},
            {"id": "bad", "uses": "broken", "config": {"fallback": "s"}},
        ],
        "edges": [],
    }
    context = {"_outputs.a": 1, "_outputs.b": 2}
    rt = FlowRuntime(blueprints=[bp], registry={"add": add, "broken": broken})
    assert await rt.execute_node("one", "s", context) == NodeResult(3, "sum")
    override = await rt.execute_node("one", "s", context, input_override={"x": 40, "y": 2})
    assert override == NodeResult(42, "sum")
    assert context == {"_outputs.a": 1, "_outputs.b": 2}  # the caller's context is not touched
    with pytest.raises(KeyError, match="missing thing"):  # its own error, not its fallback's
        await rt.execute_node("one", "bad", context)


async def test_history_is_bounded_per_run() -> None:
    rt, _, _ = runtime(history=5)
    result = await rt.run("chain", {"_inputs.a": 1})
    entries = rt.history(result.run_id)
    assert len(entries) == 5
    assert entries[-1].type == "context:change"  # the newest are kept
    with pytest.raises(HistoryError, match="does not reach back"):
        rt.replay(result.run_id)


async def test_history_runs_are_bounded_too() -> None:
    live, ran = LiveContext(), []
    rt = FlowRuntime(
        blueprints=[CHAIN], registry={"step": make_step(live, ran)}, history=50, history_runs=2
    )
    ids = [(await rt.run("chain", {"_inputs.a": i})).run_id for i in range(3)]
    with pytest.raises(HistoryError):
        rt.history(ids[0])
    assert rt.history(ids[2])


async def test_history_off_records_nothing_and_adds_no_observer() -> None:
    live, ran = LiveContext(), []
    rt = FlowRuntime(blueprints=[CHAIN], registry={"step": make_step(live, ran)})
    assert rt.options.history == 0
    assert rt._history_bus("r") is None  # no bus at all: the run takes its fastest path
    result = await rt.run("chain", {"_inputs.a": 1})
    with pytest.raises(HistoryError, match="records none"):
        rt.history(result.run_id)
    with_bus = FlowRuntime(
        blueprints=[CHAIN], registry={"step": make_step(live, ran)}, event_bus=live
    )
    assert with_bus._history_bus("r") is live
    assert not isinstance(with_bus._history_bus("r"), HistoryTee)
