"""OpenTelemetry tracing (issue 12, SPEC section 11): one trace per run, in memory and
distributed, a span per node attempt with the run's attributes, errors recorded on the attempt
that raised, retries in the run's trace; captured with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from tests.otel import InMemorySpanExporter

from flowcraft_fast import FlowRuntime, NodeContext
from flowcraft_fast import tracing as fc_tracing
from flowcraft_fast.distributed.adapter import BullMQAdapter
from flowcraft_fast.distributed.client import FlowClient

pytestmark = pytest.mark.timeout(60)

from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402


def diamond() -> dict[str, Any]:
    """a -> (b, flaky) -> d, and a node `bad` that always fails (in its own blueprint)."""
    return {
        "id": "diamond",
        "metadata": {"version": "v7"},
        "nodes": [
            {"id": "a", "uses": "ok"},
            {"id": "b", "uses": "ok"},
            {"id": "flaky", "uses": "flaky", "config": {"maxRetries": 3, "retryDelay": 0}},
            {"id": "d", "uses": "ok"},
        ],
        "edges": [
            {"source": "a", "target": "b"},
            {"source": "a", "target": "flaky"},
            {"source": "b", "target": "d"},
            {"source": "flaky", "target": "d"},
        ],
    }


FAILING = {
    "id": "failing",
    "nodes": [
        {"id": "first", "uses": "ok"},
        {"id": "bad", "uses": "bad", "config": {"maxRetries": 2, "retryDelay": 0}},
    ],
    "edges": [{"source": "first", "target": "bad"}],
}


def make_runtime() -> FlowRuntime:
    attempts: Counter[str] = Counter()

    async def ok(ctx: NodeContext) -> Any:
        return ctx.node_id

    async def flaky(ctx: NodeContext) -> Any:
        attempts[ctx.run_id] += 1
        if attempts[ctx.run_id] == 1:
            raise ConnectionError("the first attempt always fails")
        return "recovered"

    async def bad(ctx: NodeContext) -> Any:
        raise KeyError("the widget is missing")

    return FlowRuntime(
        blueprints=[diamond(), FAILING],
        registry={"ok": ok, "flaky": flaky, "bad": bad},
    )


def node_spans(exporter: InMemorySpanExporter, run_id: str) -> list[Any]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.name.startswith("node ") and s.attributes.get(fc_tracing.RUN_ID) == run_id
    ]


def attempts_by_node(node: list[Any]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for s in node:
        found.setdefault(s.attributes[fc_tracing.NODE_ID], []).append(
            s.attributes[fc_tracing.ATTEMPT]
        )
    return {k: sorted(v) for k, v in found.items()}


def check_flaky_and_diamond(node: list[Any], run_id: str) -> None:
    assert attempts_by_node(node) == {"a": [1], "b": [1], "flaky": [1, 2], "d": [1]}
    for s in node:
        assert s.attributes[fc_tracing.BLUEPRINT_ID] == "diamond"
        assert s.attributes[fc_tracing.BLUEPRINT_VERSION] == "v7"
        assert s.attributes[fc_tracing.RUN_ID] == run_id
    first, second = sorted(
        (s for s in node if s.attributes[fc_tracing.NODE_ID] == "flaky"),
        key=lambda s: s.attributes[fc_tracing.ATTEMPT],
    )
    assert first.status.status_code is StatusCode.ERROR
    assert "ConnectionError" in (first.status.description or "")
    (event,) = [e for e in first.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ConnectionError"
    assert "the first attempt always fails" in event.attributes["exception.message"]
    assert second.status.status_code is not StatusCode.ERROR
    assert not second.events


async def test_in_memory_run_is_one_trace_with_a_span_per_attempt(
    spans: InMemorySpanExporter,
) -> None:
    rt = make_runtime()
    result = await rt.run("diamond", {}, run_id="mem-1")
    assert result.status == "completed"
    other = await rt.run("diamond", {}, run_id="mem-2")
    assert other.status == "completed"

    finished = spans.get_finished_spans()
    (run_span,) = [s for s in finished if s.name == "run diamond" and s.attributes[
        fc_tracing.RUN_ID] == "mem-1"]  # fmt: skip
    assert run_span.parent is None
    assert run_span.attributes[fc_tracing.RUN_STATUS] == "completed"
    node = node_spans(spans, "mem-1")
    check_flaky_and_diamond(node, "mem-1")
    trace_id = run_span.context.trace_id
    for s in node:
        assert s.context.trace_id == trace_id
        assert s.parent.span_id == run_span.context.span_id
    # the other run is a trace of its own
    assert {s.context.trace_id for s in node_spans(spans, "mem-2")} != {trace_id}
    assert len({s.context.trace_id for s in node_spans(spans, "mem-2")}) == 1


async def test_in_memory_failure_is_recorded_on_the_node_and_the_run(
    spans: InMemorySpanExporter,
) -> None:
    result = await make_runtime().run("failing", {}, run_id="mem-fail")
    assert result.status == "failed"
    node = node_spans(spans, "mem-fail")
    assert attempts_by_node(node) == {"first": [1], "bad": [1, 2]}
    for s in node:
        if s.attributes[fc_tracing.NODE_ID] == "bad":
            assert s.status.status_code is StatusCode.ERROR
            (event,) = s.events
            assert event.attributes["exception.type"] == "KeyError"
            assert "Traceback" in event.attributes["exception.stacktrace"]
    (run_span,) = [s for s in spans.get_finished_spans() if s.name == "run failing"]
    assert run_span.status.status_code is StatusCode.ERROR
    assert "the widget is missing" in (run_span.status.description or "")
    assert run_span.attributes[fc_tracing.RUN_STATUS] == "failed"
    assert {s.context.trace_id for s in node} == {run_span.context.trace_id}


async def test_user_spans_inside_a_node_are_children_of_its_attempt(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry import trace

    async def traced(ctx: NodeContext) -> Any:
        with trace.get_tracer("user-code").start_as_current_span("inside"):
            await asyncio.sleep(0)
        return 1

    rt = FlowRuntime(
        blueprints=[{"id": "one", "nodes": [{"id": "n", "uses": "traced"}], "edges": []}],
        registry={"traced": traced},
    )
    assert (await rt.run("one", {}, run_id="mem-user")).status == "completed"
    (inside,) = [s for s in spans.get_finished_spans() if s.name == "inside"]
    (attempt,) = node_spans(spans, "mem-user")
    assert inside.parent.span_id == attempt.context.span_id


async def test_nothing_is_traced_without_a_configured_provider() -> None:
    # the API may be imported by now (other tests), but no SDK provider is set
    assert fc_tracing.tracer() is None
    result = await make_runtime().run("diamond", {})
    assert result.status == "completed"


async def run_distributed(redis_url: str, queue: str, blueprint: str) -> tuple[str, Any]:
    rt = make_runtime()
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name=queue)
    async with adapter:
        client = FlowClient(redis_url, queue_name=queue)
        run_id = await client.start(blueprint, {})
        result = await client.wait(run_id, timeout=30)
    return run_id, result


async def test_distributed_run_is_one_trace_from_the_client_start(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    run_id, result = await run_distributed(redis_url, "trace-q", "diamond")
    assert result.status == "completed"

    (start,) = [s for s in spans.get_finished_spans() if s.name == "start diamond"]
    assert start.kind is SpanKind.PRODUCER
    assert start.parent is None
    assert start.attributes[fc_tracing.RUN_ID] == run_id
    assert start.attributes["flowcraft.start.outcome"] == "ok"
    node = node_spans(spans, run_id)
    check_flaky_and_diamond(node, run_id)
    for s in node:  # every attempt, retries too: children of the client's start span
        assert s.context.trace_id == start.context.trace_id
        assert s.parent.span_id == start.context.span_id
        assert s.parent.is_remote
        assert s.attributes[fc_tracing.JOB_ID]
    # the traceparent is stored once, in the run's record (not in any job's data)
    meta, _ = await FlowClient(redis_url, queue_name="trace-q").queue.run_info(run_id)
    assert meta["traceparent"].split("-")[1] == format(start.context.trace_id, "032x")


async def test_distributed_failure_is_recorded_on_the_failing_node(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    run_id, result = await run_distributed(redis_url, "trace-fail", "failing")
    assert result.status == "failed"
    node = node_spans(spans, run_id)
    assert attempts_by_node(node) == {"first": [1], "bad": [1, 2]}
    (start,) = [s for s in spans.get_finished_spans() if s.name == "start failing"]
    for s in node:
        assert s.context.trace_id == start.context.trace_id
        if s.attributes[fc_tracing.NODE_ID] == "bad":
            assert s.status.status_code is StatusCode.ERROR
            (event,) = s.events
            assert event.attributes["exception.type"] == "KeyError"


async def test_a_run_started_untraced_still_makes_one_trace(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    """A run whose start carried no traceparent (an untraced client, the TypeScript client
    protocol): its spans share a trace id derived from the run id."""
    from opentelemetry import trace

    rt = make_runtime()
    client = FlowClient(redis_url, queue_name="trace-untraced")
    provider = trace.get_tracer_provider()
    adapter = BullMQAdapter(
        runtime_options=rt.options, connection=redis_url, queue_name="trace-untraced"
    )
    async with adapter:
        trace._TRACER_PROVIDER = None  # the client's process does not trace
        try:
            run_id = await client.start("diamond", {}, run_id="untraced-1")
        finally:
            trace._TRACER_PROVIDER = provider
        result = await client.wait(run_id, timeout=30)
    assert result.status == "completed"
    node = node_spans(spans, run_id)
    check_flaky_and_diamond(node, run_id)
    expected = fc_tracing.parent_context(None, run_id)
    parent = trace.get_current_span(expected).get_span_context()
    assert {s.context.trace_id for s in node} == {parent.trace_id}
    assert not [s for s in spans.get_finished_spans() if s.name.startswith("start ")]
