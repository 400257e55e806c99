"""An OpenTelemetry SDK tracer provider for tests, set as the global one and taken away after.

flowcraft-fast only uses the global API (SPEC section 11), so a test installs the SDK's provider
globally; the API lets that happen once per process, so the fixture resets the API's globals
afterwards (as OpenTelemetry's own test utilities do) and the other tests run untraced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

trace = pytest.importorskip("opentelemetry.trace", reason="the otel extra is not installed")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is missing")

from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.util._once import Once  # noqa: E402


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def captured_spans() -> Iterator[InMemorySpanExporter]:
    """Every span ended while the test runs, kept in memory (`spans.get_finished_spans()`):
    the `spans` fixture (tests/conftest.py)."""
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_globals()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_globals()
