"""flowcraft-fastd configures the OpenTelemetry SDK from the standard OTEL_* variables (issue
12): a real daemon process exports the spans of the runs it serves (the SDK's console exporter,
to its stdout), and without OTEL_* it traces nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from flowcraft_fast import FlowClient
from flowcraft_fast.daemon.otel import wanted_exporters

from .helpers import clean_env, start_daemon, stop_daemon, write_app

pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is missing")
pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


def test_which_exporters_the_environment_asks_for() -> None:
    assert wanted_exporters({}) == []
    assert wanted_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert wanted_exporters({"OTEL_TRACES_EXPORTER": "console, otlp"}) == ["console", "otlp"]
    assert wanted_exporters({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert wanted_exporters({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) == []


def _spans(stdout: str) -> list[dict[str, object]]:
    """The console exporter's output: one indented JSON object per span."""
    decoder = json.JSONDecoder()
    spans, i = [], stdout.find("{")
    while i != -1:
        span, end = decoder.raw_decode(stdout, i)
        spans.append(span)
        i = stdout.find("{", end)
    return spans


async def _serve_one_run(redis_url: str, tmp_path: Path, env: dict[str, str]) -> tuple[str, str]:
    app = write_app(tmp_path)
    args = ["--app", app, "--redis-url", redis_url, "--queue", "traced", "--reconcile-interval",
            "0"]  # fmt: skip
    daemon = start_daemon(args, tmp_path, env)
    try:
        client = FlowClient(redis_url, queue_name="traced")
        for _ in range(300):
            try:
                run_id = await client.start("tiny", {})
                break
            except Exception:  # not published yet: the daemon is starting
                assert daemon.poll() is None, daemon.communicate()[1]
                await asyncio.sleep(0.1)
        assert (await client.wait(run_id, timeout=30)).status == "completed"
    finally:
        code, out, err = stop_daemon(daemon)
    assert code == 0, err
    return run_id, out


async def test_the_daemon_exports_node_spans_when_otel_asks(redis_url: str, tmp_path: Path) -> None:
    env = clean_env(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="fc-worker-test")
    run_id, out = await _serve_one_run(redis_url, tmp_path, env)
    spans = [s for s in _spans(out) if s.get("name") == "node a"]
    assert len(spans) == 1, out
    span = spans[0]
    attributes = span["attributes"]
    assert isinstance(attributes, dict)
    assert attributes["flowcraft.run.id"] == run_id
    assert attributes["flowcraft.node.id"] == "a" and attributes["flowcraft.node.attempt"] == 1
    resource = span["resource"]
    assert isinstance(resource, dict)
    assert resource["attributes"]["service.name"] == "fc-worker-test"


async def test_the_daemon_traces_nothing_without_otel(redis_url: str, tmp_path: Path) -> None:
    _, out = await _serve_one_run(redis_url, tmp_path, clean_env())
    assert _spans(out) == []
