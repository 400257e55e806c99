"""FlowRuntime behaviour: events, middleware, retries, joins, fallbacks, scale, cancellation."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from runtime_helpers import BASIC, RecordingBus, blueprint

from flowcraft_fast.errors import BlueprintError
from flowcraft_fast.runtime import BaseNode, FlowRuntime, NodeContext, NodeResult
from flowcraft_fast.runtime.runtime import ResumeError

pytestmark = pytest.mark.asyncio


async def test_event_order_for_a_simple_node() -> None:
    bus = RecordingBus()
    rt = FlowRuntime(registry=BASIC, event_bus=bus)
    result = await rt.run(
        blueprint("e", [{"id": "a", "uses": "const", "params": {"value": 1}}], [])
    )
    assert result.status == "completed"
    assert bus.types() == [
        "workflow:start", "node:start", "node:finish", "context:change", "context:change",
        "workflow:finish",
    ]  # fmt: skip
    assert all(e["payload"]["runId"] == result.run_id for e in bus.events)
    assert all(e["payload"]["blueprintId"] == "e" for e in bus.events)
    assert bus.events[2]["payload"]["result"] == {"output": 1, "action": None}
    changes = [e["payload"] for e in bus.events if e["type"] == "context:change"]
    assert [(c["sourceNode"], c["key"], c["op"], c["value"]) for c in changes] == [
        ("a", "_outputs.a", "set", 1),
        ("a", "a", "set", 1),
    ]


async def test_a_failing_event_bus_does_not_break_the_run() -> None:
    class Broken:
        async def emit(self, event: dict[str, Any]) -> None:
            raise RuntimeError("bus down")

    rt = FlowRuntime(registry=BASIC, event_bus=Broken())
    result = await rt.run(
        blueprint("e", [{"id": "a", "uses": "const", "params": {"value": 1}}], [])
    )
    assert result.status == "completed" and result.context["a"] == 1


async def test_middleware_nesting_order_and_short_circuit() -> None:
    log: list[str] = []

    class Around:
        def __init__(self, name: str) -> None:
            self.name = name

        async def around_node(self, ctx: NodeContext, node_id: str, call_next: Any) -> Any:
            log.append(f"before{self.name}")
            result = await call_next()
            log.append(f"after{self.name}")
            return result

    class Hooks:
        def before_node(self, ctx: NodeContext, node_id: str) -> None:
            log.append("before_node")

        def after_node(self, ctx: NodeContext, node_id: str, result: Any, error: Any) -> None:
            log.append(f"after_node:{result.output if result else error}")

    async def work(ctx: NodeContext) -> int:
        log.append("exec")
        return 5

    rt = FlowRuntime(registry={"work": work}, middleware=[Around("1"), Around("2"), Hooks()])
    result = await rt.run(blueprint("m", [{"id": "a", "uses": "work"}], []))
    assert result.context["a"] == 5
    assert log == ["before1", "before2", "before_node", "exec", "after_node:5", "after2", "after1"]

    class ShortCircuit:
        async def around_node(self, ctx: NodeContext, node_id: str, call_next: Any) -> Any:
            return NodeResult(output="cached")

    log.clear()
    rt = FlowRuntime(registry={"work": work}, middleware=[ShortCircuit()])
    result = await rt.run(blueprint("m", [{"id": "a", "uses": "work"}], []))
    assert result.context["a"] == "cached" and log == []


async def test_middleware_that_neither_calls_next_nor_returns_fails_the_node() -> None:
    class Lazy:
        async def around_node(self, ctx: NodeContext, node_id: str, call_next: Any) -> None:
            return None

    rt = FlowRuntime(registry=BASIC, middleware=[Lazy()])
    result = await rt.run(blueprint("m", [{"id": "a", "uses": "const"}], []))
    assert result.status == "failed" and "did not call next()" in result.errors[0].message


async def test_retry_count_and_backoff_growth() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    async def flaky(ctx: NodeContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 4:
            raise ConnectionError(f"try {ctx.attempt}")
        return "ok"

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds * 1000)

    bus = RecordingBus()
    rt = FlowRuntime(
        registry={"flaky": flaky}, event_bus=bus, sleep=fake_sleep, rng=random.Random(7)
    )
    node = {"id": "f", "uses": "flaky", "config": {"maxRetries": 4, "retryDelay": 100}}
    result = await rt.run(blueprint("r", [node], []))
    assert result.status == "completed" and result.context["f"] == "ok"
    assert calls == [1, 2, 3, 4]
    assert bus.types("f") == ["node:start", "node:retry", "node:retry", "node:retry", "node:finish"]
    assert len(sleeps) == 3
    for delay, full in zip(sleeps, [100, 200, 400], strict=True):
        assert full / 2 <= delay <= full


async def test_retries_exhausted_keep_the_original_error() -> None:
    async def broken(ctx: NodeContext) -> None:
        raise KeyError("missing thing")

    rt = FlowRuntime(registry={"broken": broken})
    node = {"id": "b", "uses": "broken", "config": {"maxRetries": 2}}
    result = await rt.run(blueprint("r", [node], []))
    assert result.status == "failed"
    [error] = result.errors
    assert (error.node_id, error.type, error.message) == ("b", "KeyError", "'missing thing'")


async def test_any_join_fires_once() -> None:
    runs: list[Any] = []

    async def record(ctx: NodeContext) -> Any:
        runs.append(ctx.input)
        return ctx.input

    async def wait_ms(ctx: NodeContext) -> Any:
        await asyncio.sleep(ctx.params["ms"] / 1000)
        return ctx.params["ms"]

    nodes = [
        {"id": "s", "uses": "const", "params": {"value": 0}},
        *({"id": f"p{ms}", "uses": "wait_ms", "params": {"ms": ms}} for ms in (1, 20, 40)),
        {"id": "j", "uses": "record", "config": {"joinStrategy": "any"}},
    ]
    edges = [("s", f"p{ms}") for ms in (1, 20, 40)] + [(f"p{ms}", "j") for ms in (1, 20, 40)]
    rt = FlowRuntime(registry={**BASIC, "record": record, "wait_ms": wait_ms})
    result = await rt.run(blueprint("any", nodes, edges))
    assert result.status == "completed"
    assert runs == [1]


async def test_fallback_inherits_edges_and_gets_the_failed_input() -> None:
    seen: list[Any] = []

    async def backup(ctx: NodeContext) -> Any:
        seen.append(ctx.input)
        return f"backup({ctx.input})"

    nodes = [
        {"id": "s", "uses": "const", "params": {"value": "in"}},
        {"id": "f", "uses": "fail", "config": {"fallback": "fb", "maxRetries": 2}},
        {"id": "fb", "uses": "backup"},
        {"id": "n1", "uses": "echo"},
        {"id": "n2", "uses": "echo"},
    ]
    bus = RecordingBus()
    rt = FlowRuntime(registry={**BASIC, "backup": backup}, event_bus=bus)
    result = await rt.run(blueprint("fb", nodes, [("s", "f"), ("f", "n1"), ("f", "n2")]))
    assert result.status == "completed", result.errors
    assert seen == ["in"]
    assert result.context["n1"] == result.context["n2"] == "backup(in)"
    assert result.context["fb"] == result.context["f"] == "backup(in)"
    assert "node:fallback" in bus.types("f")
    assert result.errors == []


async def test_failed_fallback_fails_the_run_with_both_errors() -> None:
    nodes = [
        {"id": "f", "uses": "fail", "params": {"message": "first"}, "config": {"fallback": "fb"}},
        {"id": "fb", "uses": "fail", "params": {"message": "second"}},
    ]
    rt = FlowRuntime(registry=BASIC)
    result = await rt.run(blueprint("fb", nodes, []))
    assert result.status == "failed"
    assert [(e.node_id, e.message) for e in result.errors] == [("f", "first"), ("fb", "second")]


async def test_ten_thousand_node_chain() -> None:
    n = 10_000
    nodes = [{"id": "n0", "uses": "const", "params": {"value": 0}}]
    nodes += [{"id": f"n{i}", "uses": "add"} for i in range(1, n)]
    edges = [(f"n{i - 1}", f"n{i}") for i in range(1, n)]
    rt = FlowRuntime(registry=BASIC)
    result = await rt.run(blueprint("chain", nodes, edges))
    assert result.status == "completed"
    assert result.context[f"n{n - 1}"] == n - 1


async def test_thousand_wide_fan_out_and_in() -> None:
    width = 1_000
    nodes = [{"id": "s", "uses": "const", "params": {"value": 1}}]
    nodes += [{"id": f"w{i}", "uses": "add", "params": {"n": i}} for i in range(width)]
    nodes += [{"id": "j", "uses": "total"}]
    edges = [("s", f"w{i}") for i in range(width)] + [(f"w{i}", "j") for i in range(width)]

    async def total(ctx: NodeContext) -> int:
        return sum(ctx.input.values())

    rt = FlowRuntime(registry={**BASIC, "total": total})
    result = await rt.run(blueprint("fan", nodes, edges))
    assert result.status == "completed"
    assert result.context["j"] == sum(1 + i for i in range(width))


async def test_sliding_window_never_exceeds_concurrency() -> None:
    in_flight = 0
    peak = 0
    started: list[str] = []

    async def work(ctx: NodeContext) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        started.append(ctx.node_id)
        # uneven durations: a sliding window starts the next node as soon as one slot frees
        await asyncio.sleep(0.001 * (ctx.params["i"] % 5))
        in_flight -= 1

    nodes: list[dict[str, Any]] = [{"id": "s", "uses": "const"}]
    nodes += [{"id": f"w{i}", "uses": "work", "params": {"i": i}} for i in range(60)]
    edges = [("s", f"w{i}") for i in range(60)]
    rt = FlowRuntime(registry={**BASIC, "work": work})
    result = await rt.run(blueprint("win", nodes, edges), concurrency=4)
    assert result.status == "completed"
    assert peak == 4
    assert len(started) == 60


async def test_cancellation_mid_run_keeps_partial_context() -> None:
    cancel = asyncio.Event()
    observed: list[bool] = []

    async def long(ctx: NodeContext) -> None:
        cancel.set()
        try:
            await asyncio.sleep(10)
        finally:
            observed.append(ctx.cancelled.is_set())

    nodes = [
        {"id": "a", "uses": "const", "params": {"value": "kept"}},
        {"id": "b", "uses": "long"},
        {"id": "c", "uses": "const"},
    ]
    rt = FlowRuntime(registry={**BASIC, "long": long})
    result = await rt.run(blueprint("c", nodes, [("a", "b"), ("b", "c")]), cancel=cancel)
    assert result.status == "cancelled"
    assert result.context["a"] == "kept"
    assert "c" not in result.context and "b" not in result.context
    assert observed == [True]


async def test_failure_cancels_other_branches_and_fails_once() -> None:
    cancelled: list[str] = []
    bus = RecordingBus()

    async def long(ctx: NodeContext) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(ctx.node_id)
            raise

    nodes = [
        {"id": "s", "uses": "const"},
        {"id": "l1", "uses": "long"},
        {"id": "l2", "uses": "long"},
        {"id": "bad", "uses": "fail"},
    ]
    rt = FlowRuntime(registry={**BASIC, "long": long}, event_bus=bus)
    result = await rt.run(blueprint("f", nodes, [("s", "l1"), ("s", "l2"), ("s", "bad")]))
    assert result.status == "failed"
    assert sorted(cancelled) == ["l1", "l2"]
    assert len(result.errors) == 1
    assert bus.types().count("workflow:finish") == 1


async def test_class_node_lifecycle() -> None:
    log: list[str] = []

    class Flaky(BaseNode):
        async def prep(self, ctx: NodeContext) -> Any:
            log.append("prep")
            return ctx.input

        async def exec(self, prep_result: Any, ctx: NodeContext) -> Any:
            log.append(f"exec{ctx.attempt}")
            if ctx.attempt < 3:
                raise RuntimeError("not yet")
            return self.params["value"]

        async def post(self, exec_result: Any, ctx: NodeContext) -> Any:
            log.append("post")
            return NodeResult(output=exec_result, action="done")

        async def recover(self, error: Exception, ctx: NodeContext) -> None:
            log.append(f"recover:{error}")

    class Gives(BaseNode):
        async def exec(self, prep_result: Any, ctx: NodeContext) -> Any:
            raise RuntimeError("always")

        async def fallback(self, error: Exception, ctx: NodeContext) -> Any:
            return f"fallback after {error}"

        async def recover(self, error: Exception, ctx: NodeContext) -> None:
            raise RuntimeError("recover errors are swallowed")

    nodes = [
        {"id": "k", "uses": "flaky", "params": {"value": 9}, "config": {"maxRetries": 3}},
        {"id": "d", "uses": "echo"},
        {"id": "g", "uses": "gives", "config": {"maxRetries": 2}},
    ]
    edges = [{"source": "k", "target": "d", "action": "done"}]
    rt = FlowRuntime(registry={**BASIC, "flaky": Flaky, "gives": Gives})
    result = await rt.run(blueprint("cls", nodes, edges))
    assert result.status == "completed", result.errors
    assert log == ["prep", "exec1", "exec2", "exec3", "post", "recover:not yet"]
    assert result.context["d"] == 9
    assert result.context["g"] == "fallback after always"


async def test_non_json_output_fails_the_node() -> None:
    async def bad(ctx: NodeContext) -> Any:
        return {"s": {1, 2}}

    rt = FlowRuntime(registry={"bad": bad})
    result = await rt.run(blueprint("j", [{"id": "x", "uses": "bad"}], []))
    assert result.status == "failed"
    assert result.errors[0].type == "TypeError"
    assert "output of node 'x'" in result.errors[0].message


async def test_context_set_of_non_json_value_fails_the_node() -> None:
    async def bad(ctx: NodeContext) -> None:
        await ctx.context.set("key1", object())

    rt = FlowRuntime(registry={"bad": bad})
    result = await rt.run(blueprint("j", [{"id": "x", "uses": "bad"}], []))
    assert result.status == "failed" and "'key1'" in result.errors[0].message


async def test_timeout_cancels_the_attempt_and_is_retried() -> None:
    attempts: list[int] = []
    finished: list[int] = []

    async def slow_once(ctx: NodeContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            await asyncio.sleep(5)
            finished.append(1)
        return "second"

    node = {"id": "t", "uses": "slow", "config": {"timeout": 20, "maxRetries": 2}}
    rt = FlowRuntime(registry={"slow": slow_once})
    result = await rt.run(blueprint("t", [node], []))
    assert result.status == "completed" and result.context["t"] == "second"
    assert attempts == [1, 2] and finished == []

    node = {"id": "t", "uses": "slow", "config": {"timeout": 20}}
    attempts.clear()
    result = await rt.run(blueprint("t2", [node], []))
    assert result.status == "failed"
    assert result.errors[0].type == "TimeoutError"
    assert "timed out after 20 ms" in result.errors[0].message


async def test_dead_path_through_nested_joins() -> None:
    # s routes left; the right branch holds a nested diamond whose join must be skipped,
    # and the outer join must still fire with only the left value.
    nodes = [{"id": n, "uses": "echo"} for n in ["L", "R", "R1", "R2", "RJ", "J", "after"]]
    nodes.append({"id": "s", "uses": "route"})
    edges = [
        {"source": "s", "target": "L", "action": "left"},
        {"source": "s", "target": "R", "action": "right"},
        ("R", "R1"),
        ("R", "R2"),
        ("R1", "RJ"),
        ("R2", "RJ"),
        ("L", "J"),
        ("RJ", "J"),
        ("J", "after"),
    ]
    bus = RecordingBus()

    async def route(ctx: NodeContext) -> NodeResult:
        return NodeResult(output="v", action="left")

    rt = FlowRuntime(registry={**BASIC, "route": route}, event_bus=bus)
    result = await rt.run(blueprint("dp", nodes, edges))
    assert result.status == "completed"
    assert result.context["J"] == {"L": "v"}
    assert result.context["after"] == {"L": "v"}
    for gone in ["R", "R1", "R2", "RJ"]:
        assert gone not in result.context
    skipped = [e["payload"]["nodeId"] for e in bus.events if e["type"] == "node:skipped"]
    assert sorted(skipped) == ["R", "R1", "R2", "RJ"]


async def test_run_raises_blueprint_error_for_invalid_blueprints() -> None:
    rt = FlowRuntime(registry=BASIC)
    with pytest.raises(BlueprintError):
        await rt.run(blueprint("bad", [{"id": "a", "uses": "const"}], [("a", "ghost")]))
    with pytest.raises(BlueprintError):
        await rt.run("not-registered")


async def test_resume_errors() -> None:
    rt = FlowRuntime(registry=BASIC)
    bp = blueprint("w", [{"id": "a", "uses": "const"}, {"id": "w", "uses": "wait"}], [("a", "w")])
    done = await rt.run(blueprint("x", [{"id": "a", "uses": "const"}], []))
    with pytest.raises(ResumeError):
        await rt.resume(bp, done.serialized_context, {})
    waiting = await rt.run(bp)
    assert waiting.status == "awaiting" and waiting.context["_awaitingNodeIds"] == ["w"]
    with pytest.raises(ResumeError):
        await rt.resume(bp, waiting.serialized_context, {}, node_id="a")
    resumed = await rt.resume(bp, waiting.serialized_context, {"output": 3})
    assert resumed.status == "completed" and resumed.context["w"] == 3
    assert resumed.run_id == waiting.run_id
    assert "_awaitingNodeIds" not in resumed.context and "_flowcraft" not in resumed.context


async def test_reference_cycles_are_refused_at_once() -> None:
    """A value that contains itself never reaches the engine's JSON walk: a clear TypeError,
    at once, for the initial context (and a failed node for outputs and context writes: the
    cyclic_output and cyclic_context conformance cases)."""
    from flowcraft_fast import jsoncodec

    looped: dict[str, Any] = {"name": "loop"}
    looped["self"] = [looped]
    rt = FlowRuntime(registry=BASIC)
    bp = blueprint("c", [{"id": "a", "uses": "const", "params": {"value": 1}}], [])
    with pytest.raises(TypeError, match="reference cycle"):
        await asyncio.wait_for(rt.run(bp, {"k": looped}), timeout=5)
    with pytest.raises(TypeError, match="reference cycle"):
        jsoncodec.dumps(looped, what="initial context key 'k'")
    shared = [1, 2]
    result = await rt.run(bp, {"k": {"a": shared, "b": shared}})  # shared, not cyclic: fine
    assert result.status == "completed"


async def test_nodes_waiting_in_the_callers_task_behave_as_tasks_of_their_own() -> None:
    """The in-memory loop runs nodes eagerly, the caller's task first: a node's own
    `asyncio.timeout` still times out only that node, a failure elsewhere stops a waiting node
    without cancelling the caller, and a caller that is cancelled is cancelled."""

    async def own_timeout(ctx: NodeContext) -> Any:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(5)

    async def waits(ctx: NodeContext) -> Any:
        await asyncio.sleep(5)

    async def fails_later(ctx: NodeContext) -> Any:
        await asyncio.sleep(0.05)
        raise ValueError("later")

    rt = FlowRuntime(registry={"own_timeout": own_timeout, "waits": waits, "fails": fails_later})
    timed = await rt.run(blueprint("t", [{"id": "a", "uses": "own_timeout"}], []))
    assert timed.status == "failed" and timed.errors[0].type == "TimeoutError"

    both = blueprint("b", [{"id": "w", "uses": "waits"}, {"id": "f", "uses": "fails"}], [])
    started = asyncio.get_running_loop().time()
    result = await rt.run(both)
    assert result.status == "failed" and result.errors[0].message == "later"
    assert asyncio.get_running_loop().time() - started < 2
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    caller = asyncio.create_task(rt.run(blueprint("c", [{"id": "w", "uses": "waits"}], [])))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
