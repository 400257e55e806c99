"""The daemon's OpenTelemetry SDK set-up, from the standard `OTEL_*` environment variables.

flowcraft-fast itself only speaks the OpenTelemetry API (`flowcraft_fast.tracing`); a library
must not configure the SDK, but the daemon is the application, so it does, when asked:

- `OTEL_TRACES_EXPORTER` names the exporters (comma-separated; `console`, `otlp`, or any
  installed one: they are found by their `opentelemetry_traces_exporter` entry point, as the
  SDK's own auto-configuration finds them); `none` turns tracing off. Unset, tracing is on with
  `otlp` only when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), else off: a worker never exports without being told.
- `OTEL_SDK_DISABLED=true` turns it off whatever else is set.
- The service name and resource come from `OTEL_SERVICE_NAME`/`OTEL_RESOURCE_ATTRIBUTES`
  (the SDK reads them; the default service name here is `flowcraft-fastd`), sampling from
  `OTEL_TRACES_SAMPLER`, batching from `OTEL_BSP_*`.

Asked for but not possible (no `opentelemetry-sdk`, an exporter not installed) is logged once
as a warning and the daemon serves untraced: tracing is never a reason not to work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

log = logging.getLogger("flowcraft_fast.daemon")

SERVICE_NAME = "flowcraft-fastd"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def wanted_exporters(env: Mapping[str, str]) -> list[str]:
    """The exporter names the environment asks for (empty: no tracing)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = env.get("OTEL_TRACES_EXPORTER")
    if named is None:
        return ["otlp"] if any(env.get(v) for v in ENDPOINT_VARIABLES) else []
    names = [n.strip().lower() for n in named.split(",") if n.strip()]
    return [] if "none" in names else names


def configure_tracing(env: Mapping[str, str] | None = None) -> Callable[[], None] | None:
    """Set the global tracer provider as the environment asks; the function that flushes and
    shuts it down at exit, or None when nothing was set up."""
    env = os.environ if env is None else env
    names = wanted_exporters(env)
    if not names:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_KEY
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_* asks for tracing (%s) but opentelemetry-sdk is not installed: not tracing "
            "(pip install 'flowcraft-fast[otel]' opentelemetry-sdk)",
            ", ".join(names),
        )
        return None
    exporters = []
    for name in names:
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            log.warning(
                "OTEL_TRACES_EXPORTER %r: no such exporter installed (for otlp: pip install "
                "opentelemetry-exporter-otlp)",
                name,
            )
            continue
        exporters.append(next(iter(found)).load()())
    if not exporters:
        return None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_KEY: SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting spans to %s", ", ".join(names))
    return provider.shutdown
