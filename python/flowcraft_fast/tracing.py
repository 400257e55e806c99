"""OpenTelemetry tracing (SPEC section 11), through the global API only.

A run is one trace. In memory, `FlowRuntime.run` opens a span for the run and every node attempt
is a child span. Distributed, `FlowClient.start` opens a span for the start and stores its W3C
`traceparent` once in the run's record (start.lua); every claim hands it back with the run
(claim.lua), so each worker's node attempts, retries included, become children of the start
span: one trace per run, and no bytes added to any job. A run that carries no traceparent (its
client did not trace, or the TypeScript client protocol started it) still gets one trace: its
spans hang under a parent derived from the run id (a parent that is never exported).

Cost when nobody traces: `tracer()` (asked once per in-memory run, once per distributed job)
returns None after one dict lookup when the application never imported the OpenTelemetry API
(installed or not), and after a provider check when it did but configured no SDK (the global
provider is the API's proxy or no-op one). Callers test for None and the node fast paths stay as
they are (`executor.direct_impl`): no span, context or attribute dict is made per job.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

TRACER_NAME = "flowcraft_fast"


class StartRequest(Protocol):
    """What `start_spans` reads and writes (`distributed.wire.StartRequest`)."""

    run_id: str
    blueprint_id: str
    version: str
    traceparent: str


# Span attribute names (one vocabulary for both modes).
RUN_ID = "flowcraft.run.id"
BLUEPRINT_ID = "flowcraft.blueprint.id"
BLUEPRINT_VERSION = "flowcraft.blueprint.version"
NODE_ID = "flowcraft.node.id"
ATTEMPT = "flowcraft.node.attempt"
JOB_ID = "flowcraft.job.id"
RUN_STATUS = "flowcraft.run.status"

_provider: object = None
_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """The library's tracer when the application configured a tracer provider, else None.

    Asked per run (per job when distributed). An application that never imported the
    OpenTelemetry API cannot have configured a provider: then this is one dict lookup, and the
    API (~50 ms to import) is never imported by flowcraft-fast. The provider is compared by
    identity, so one set later (or replaced, as tests do) is picked up."""
    global _provider, _tracer
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if provider is _provider:
        return _tracer
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        found = None
    else:
        from . import __version__

        found = provider.get_tracer(TRACER_NAME, __version__)
    _provider, _tracer = provider, found
    return found


class RunTrace:
    """The trace of one run, as one process sees it: where its node attempt spans hang."""

    __slots__ = ("attributes", "parent", "tracer")

    def __init__(self, tracer: Tracer, parent: Context | None, attributes: dict[str, Any]) -> None:
        self.tracer = tracer
        self.parent = parent
        self.attributes = attributes
        """run id, blueprint id and version (and more per job): on every attempt span."""

    @contextmanager
    def attempt(self, node_id: str, attempt: int) -> Iterator[Span]:
        """A span for one attempt of a node, current while it runs (spans the node's own code
        makes are its children); a raised exception is recorded and sets the status ERROR."""
        attributes = dict(self.attributes)
        attributes[NODE_ID] = node_id
        attributes[ATTEMPT] = attempt
        with self.tracer.start_as_current_span(
            f"node {node_id}",
            context=self.parent,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except asyncio.CancelledError:
                span.set_attribute("flowcraft.node.cancelled", True)
                raise
            except Exception as exc:
                record_error(span, exc)
                raise


def record_error(span: Span, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def fail_span(span: Span, description: str) -> None:
    """Status ERROR without an exception (a run that failed, a node that failed without
    running)."""
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))


def run_attributes(run_id: str, blueprint_id: str, version: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {RUN_ID: run_id, BLUEPRINT_ID: blueprint_id}
    if version:
        attributes[BLUEPRINT_VERSION] = version
    return attributes


@contextmanager
def run_span(
    run_id: str, blueprint_id: str, version: str | None, name: str = "run"
) -> Iterator[tuple[Span, RunTrace] | None]:
    """The span of an in-memory run (a child of the caller's current span, if any), and the
    run's trace for its attempts; None when nobody traces."""
    found = tracer()
    if found is None:
        yield None
        return
    from opentelemetry.trace import set_span_in_context

    attributes = run_attributes(run_id, blueprint_id, version)
    with found.start_as_current_span(
        f"{name} {blueprint_id}",
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span, RunTrace(found, set_span_in_context(span), attributes)
        except Exception as exc:
            record_error(span, exc)
            raise


def start_spans(requests: Sequence[StartRequest]) -> list[Span] | None:
    """A `start` span per run of `FlowClient.start_many` (children of the caller's current span),
    each request given its span's W3C traceparent; None when nobody traces. The caller ends
    them (`end_start_span`)."""
    found = tracer()
    if found is None:
        return None
    from opentelemetry.trace import SpanKind, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    spans = []
    for request in requests:
        span = found.start_span(
            f"start {request.blueprint_id}",
            kind=SpanKind.PRODUCER,
            attributes=run_attributes(request.run_id, request.blueprint_id, request.version),
        )
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, set_span_in_context(span))
        request.traceparent = carrier.get("traceparent", "")
        spans.append(span)
    return spans


def end_start_span(span: Span, outcome: str | BaseException) -> None:
    """start.lua's answer ("ok", "exists", ...) on the span, or the error the call raised."""
    if isinstance(outcome, BaseException):
        record_error(span, outcome)
    else:
        span.set_attribute("flowcraft.start.outcome", outcome)
    span.end()


def job_trace(
    traceparent: str | None, run_id: str, blueprint_id: str, version: str, job_id: str
) -> RunTrace | None:
    """The trace a distributed job's attempt joins: its run's stored traceparent, or one
    derived from the run id; None when nobody traces."""
    found = tracer()
    if found is None:
        return None
    attributes = run_attributes(run_id, blueprint_id, version)
    attributes[JOB_ID] = job_id
    return RunTrace(found, parent_context(traceparent, run_id), attributes)


def parent_context(traceparent: str | None, run_id: str) -> Context:
    """The context a run's spans hang under: its W3C traceparent when it is valid, else a
    remote parent whose trace id and span id are derived from the run id (so a run started
    without a trace still makes one trace, whichever workers run it)."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if traceparent:
        context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    digest = hashlib.sha256(run_id.encode()).digest()
    span_context = trace.SpanContext(
        trace_id=int.from_bytes(digest[:16], "big") or 1,
        span_id=int.from_bytes(digest[16:24], "big") or 1,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))
