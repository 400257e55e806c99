"""flowcraft_fast.testing in memory (issue 15): `run_with_trace` and its trace, the
AssertionError a run that did not complete raises, `EventRecorder` and its filters, and the
in-memory fixtures of the pytest plugin. The distributed side and the plugin as users load
it are tests/integration/test_testing_plugin.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from tests.order_app import ORDER, REGISTRY, REJECTED

from flowcraft_fast import BlueprintError, FlowRuntime
from flowcraft_fast.testing import (
    EventRecorder,
    RecordedEvent,
    Trace,
    resume_with_trace,
    run_with_trace,
)


def runtime(**kwargs: Any) -> FlowRuntime:
    return FlowRuntime(blueprints=[ORDER, REJECTED], registry=REGISTRY, **kwargs)


def lifecycle(trace: Trace) -> list[tuple[str, str | None]]:
    """(type, node) of the run- and node-level events, without context writes and edges."""
    kinds = ("workflow:start", "node:start", "node:finish", "node:error", "workflow:finish")
    return [(e.type, e.node_id) for e in trace.of_type(*kinds)]


async def test_the_trace_of_a_run_is_in_order_and_renders_one_line_per_event() -> None:
    traced = await run_with_trace(runtime(), "order", {"customer": "ada"})

    result = traced.assert_ok()
    assert result.context["tax"] == 50.0 and traced.status == "completed"
    assert lifecycle(traced.trace) == [
        ("workflow:start", None),
        ("node:start", "fetch"),
        ("node:finish", "fetch"),
        ("node:start", "tax"),
        ("node:finish", "tax"),
        ("workflow:finish", None),
    ]
    assert all(e.run_id == traced.run_id for e in traced.trace)
    names = traced.trace.names()
    assert names[0] == "workflow:start" and names[-1] == "workflow:finish"

    rendered = str(traced.trace)
    header, *lines = rendered.splitlines()
    assert header == f"run {traced.run_id} (blueprint order), {len(traced.trace)} events:"
    assert len(lines) == len(traced.trace)
    for index, (line, event) in enumerate(zip(lines, traced.trace, strict=True)):
        assert re.match(rf"\s+{index}\s+{event.type}\b", line), line
    finish = next(line for line in lines if "node:finish" in line and " tax " in line)
    assert 'result={"output":50.0,"action":null}' in finish
    assert traced.run_id not in "\n".join(lines)  # said once, in the header


async def test_a_failing_node_fails_the_test_with_the_rendered_trace() -> None:
    traced = await run_with_trace(runtime(), "rejected")

    with pytest.raises(AssertionError) as failure:
        traced.assert_ok()
    message = str(failure.value)
    assert message.startswith("expected the run to end completed\n")
    assert f"run {traced.run_id} ended failed" in message
    assert "error at check: ValueError: order 7 has no customer" in message
    assert str(traced.trace) in message  # the whole trace, every line
    error_line = next(line for line in message.splitlines() if "node:error" in line)
    assert "check" in error_line and "order 7 has no customer" in error_line
    assert traced.assert_status("failed") is traced.result


async def test_the_users_runtime_is_unchanged_and_its_bus_still_hears_the_run() -> None:
    heard: list[str] = []

    class AsyncBus:
        async def emit(self, event: dict[str, Any]) -> None:
            heard.append(event["type"])

    bus = AsyncBus()
    rt = runtime(event_bus=bus)
    options = rt.options
    traced = await run_with_trace(rt, "order", run_id="my-run")

    assert traced.run_id == "my-run"
    assert heard == traced.trace.names()
    assert rt.options is options and rt.options.event_bus is bus
    assert rt.options.dependencies["runtime"] is rt


async def test_a_subflows_events_are_in_the_trace_under_the_subflow_node() -> None:
    outer = {
        "id": "outer",
        "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "order"}}],
        "edges": [],
    }
    rt = runtime()
    rt.register_blueprint(outer)
    traced = await run_with_trace(rt, "outer")

    assert traced.assert_ok().context["sub"] == 50.0
    child = f"{traced.run_id}/sub"
    assert [e.node_id for e in traced.trace.for_run(child).of_type("node:start")] == [
        "fetch",
        "tax",
    ]
    assert traced.trace.for_run(traced.run_id, subflows=False).of_type("node:start").names() == [
        "node:start"
    ]
    assert re.search(r"node:start\s+sub/tax\s", str(traced.trace))


async def test_resume_with_trace_traces_the_resumed_part() -> None:
    gated = {
        "id": "gated",
        "nodes": [{"id": "approve", "uses": "wait"}, {"id": "tax", "uses": "tax"}],
        "edges": [{"source": "approve", "target": "tax"}],
    }
    rt = runtime()
    parked = await run_with_trace(rt, gated)
    parked.assert_status("awaiting")
    assert parked.trace.names()[-2:] == ["workflow:pause", "workflow:finish"]

    resumed = await resume_with_trace(
        rt, gated, parked.result.serialized_context, {"output": {"total": 8}}
    )
    assert resumed.assert_ok().context["tax"] == 10.0
    assert resumed.run_id == parked.run_id
    assert resumed.trace.names()[0] == "workflow:resume"
    assert [e.node_id for e in resumed.trace.of_type("node:start")] == ["tax"]


async def test_an_invalid_blueprint_raises_with_the_trace_as_a_note() -> None:
    with pytest.raises(BlueprintError) as raised:
        await run_with_trace(runtime(), {"id": "empty", "nodes": [], "edges": []})
    assert any("no events recorded" in note for note in raised.value.__notes__)


async def test_the_recorder_filters_by_node_run_and_type() -> None:
    recorder = EventRecorder()
    rt = runtime(event_bus=recorder)
    first = await rt.run("order")
    second = await rt.run("rejected")

    assert len(recorder) == len(recorder.events) > 0
    assert recorder.names() == [e.type for e in recorder.events]
    assert recorder.names(first.run_id) == recorder.for_run(first.run_id).names()
    assert recorder.names(first.run_id) + recorder.names(second.run_id) == recorder.names()

    tax_events = recorder.for_node("tax")
    assert {e.node_id for e in tax_events} == {"tax"}
    assert tax_events.names()[:2] == ["node:start", "node:finish"]
    assert "context:change" in tax_events.names()  # its writes, by sourceNode
    assert {e.run_id for e in recorder.for_node("fetch")} == {first.run_id, second.run_id}

    errors = recorder.of_type("node:error")
    assert [(e.node_id, e.run_id) for e in errors] == [("check", second.run_id)]
    assert errors[0].payload["error"]["type"] == "ValueError"
    assert recorder.of_type("workflow:finish", "workflow:start").names() == [
        "workflow:start",
        "workflow:finish",
        "workflow:start",
        "workflow:finish",
    ]
    assert "recorded events (blueprint order, rejected)" in str(recorder)

    recorder.clear()
    assert recorder.events == [] and recorder.names() == []
    assert str(recorder).startswith("recorded events: no events recorded")


async def test_wrap_records_then_forwards_and_never_records_twice() -> None:
    recorder = EventRecorder()
    forwarded: list[dict[str, Any]] = []

    class Bus:
        def emit(self, event: dict[str, Any]) -> None:
            forwarded.append(event)

    bus = recorder.wrap(Bus())
    assert recorder.wrap(None) is recorder and recorder.wrap(recorder) is recorder
    assert recorder.wrap(bus) is bus
    await runtime(event_bus=bus).run("order")
    assert [e["type"] for e in forwarded] == recorder.names()


def test_a_recorded_payload_is_a_snapshot() -> None:
    payload: dict[str, Any] = {"runId": "r", "nodeId": "a", "result": {"output": [1]}}
    event = RecordedEvent.from_emitted({"type": "node:finish", "payload": payload})
    payload["result"]["output"].append(2)
    assert event.payload["result"] == {"output": [1]}
    assert (event.run_id, event.node_id, event.blueprint_id) == ("r", "a", None)
    odd = RecordedEvent.from_emitted({"type": "custom"})
    assert odd.payload == {} and odd.node_id is None


def test_long_payload_values_are_shortened_on_their_line() -> None:
    event = RecordedEvent.from_emitted(
        {"type": "node:start", "payload": {"runId": "r", "nodeId": "a", "input": "x" * 500}}
    )
    line = Trace([event], "r").render().splitlines()[1]
    assert line.endswith("…") and len(line) < 120


async def test_wait_for_returns_an_event_recorded_later_or_fails_saying_what_came() -> None:
    recorder = EventRecorder()

    async def later() -> None:
        await asyncio.sleep(0.05)
        recorder.emit({"type": "workflow:finish", "payload": {"runId": "r1", "status": "done"}})

    task = asyncio.create_task(later())
    event = await recorder.wait_for("workflow:finish", run_id="r1", timeout=5)
    await task
    assert event.payload["status"] == "done"
    assert await recorder.wait_for("workflow:finish", timeout=0) is event  # already there

    with pytest.raises(AssertionError, match=r"no node:error event of run 'r1' within"):
        await recorder.wait_for("node:error", run_id="r1", timeout=0.05)


async def test_the_plugins_in_memory_fixtures(
    flowcraft_runtime_factory: Callable[..., FlowRuntime],
    flowcraft_recorder: EventRecorder,
) -> None:
    """The fixtures come from the installed `pytest11` entry point (no conftest names them)."""
    rt = flowcraft_runtime_factory([ORDER], registry=REGISTRY)
    traced = await run_with_trace(rt, "order")
    traced.assert_ok()
    assert flowcraft_recorder.names() == traced.trace.names()
