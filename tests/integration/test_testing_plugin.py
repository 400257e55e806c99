"""flowcraft_fast.testing distributed, and its pytest plugin as users get it (issue 15).

The fixtures here come from the installed `pytest11` entry point, not from a conftest. The
pytester tests run docs/testing.md's example file, as written, in a pytest of its own (a
subprocess), so the documented example and the entry point are known to work.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.order_app import GATED, ORDER, REGISTRY, REJECTED

from flowcraft_fast import FlowClient, FlowRuntime
from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.testing import EventRecorder, start_worker, wait_with_trace
from flowcraft_fast.testing.pytest_plugin import StartWorker

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


BLUEPRINTS = [ORDER, REJECTED, GATED]


@pytest.mark.redis
async def test_a_distributed_run_started_by_a_client_is_recorded(
    flowcraft_runtime_factory: Callable[..., FlowRuntime],
    flowcraft_worker: StartWorker,
    flowcraft_recorder: EventRecorder,
    flowcraft_redis_url: str,
) -> None:
    await flowcraft_worker(flowcraft_runtime_factory(BLUEPRINTS, registry=REGISTRY))
    client = FlowClient(flowcraft_redis_url)
    run_id = await client.start("order", {})
    result = await client.wait(run_id, timeout=20)
    assert result.status == "completed" and result.context["tax"] == 50.0
    await flowcraft_recorder.wait_for("workflow:finish", run_id=run_id)

    trace = flowcraft_recorder.for_run(run_id)
    assert all(e.run_id == run_id and e.blueprint_id == "order" for e in trace)
    assert [e.node_id for e in trace.of_type("node:finish")] == ["fetch", "tax"]
    assert sorted(str(e.node_id) for e in trace.of_type("job:processed")) == ["fetch", "tax"]
    assert [e.node_id for e in trace.of_type("job:enqueued")] == ["tax"]
    assert trace.names()[-1] == "workflow:finish"
    assert re.search(r"job:processed\s+tax\s+duration=\S+ success=true", str(trace))


@pytest.mark.redis
async def test_a_failed_distributed_run_fails_the_test_with_its_trace(
    flowcraft_runtime_factory: Callable[..., FlowRuntime],
    flowcraft_worker: StartWorker,
) -> None:
    worker = await flowcraft_worker(flowcraft_runtime_factory(BLUEPRINTS, registry=REGISTRY))
    traced = await worker.run("rejected", timeout=20)

    with pytest.raises(AssertionError) as failure:
        traced.assert_ok()
    message = str(failure.value)
    assert f"run {traced.run_id} ended failed" in message
    assert "error at check: ValueError: order 7 has no customer" in message
    assert str(traced.trace) in message
    job_failed = next(line for line in message.splitlines() if "job:failed" in line)
    assert "check" in job_failed and "order 7 has no customer" in job_failed
    assert traced.trace.names()[-1] == "workflow:finish"
    assert traced.trace[-1].payload["status"] == "failed"


@pytest.mark.redis
async def test_an_awaiting_run_and_its_resumption_are_traced(
    flowcraft_runtime_factory: Callable[..., FlowRuntime],
    flowcraft_worker: StartWorker,
) -> None:
    worker = await flowcraft_worker(flowcraft_runtime_factory(BLUEPRINTS, registry=REGISTRY))
    parked = await worker.run("gated", timeout=20)
    parked.assert_status("awaiting")
    assert parked.trace.names()[-1] == "workflow:pause"

    await worker.client.resume(parked.run_id, "approve", output={"total": 8})
    done = await wait_with_trace(worker.client, parked.run_id, worker.recorder, timeout=20)
    assert done.assert_ok().context["tax"] == 10.0
    assert done.trace.names()[-1] == "workflow:finish"  # the whole run: before and after
    assert done.trace.of_type("workflow:pause", "workflow:finish").names() == [
        "workflow:pause",
        "workflow:finish",
    ]
    assert [e.node_id for e in done.trace.of_type("node:start")] == ["approve", "tax"]


@pytest.mark.redis
async def test_a_worker_for_a_runtime_with_its_own_bus_records_once_and_forwards(
    flowcraft_worker: StartWorker,
    flowcraft_recorder: EventRecorder,
) -> None:
    forwarded: list[str] = []

    class Bus:
        async def emit(self, event: dict[str, Any]) -> None:
            forwarded.append(event["type"])

    runtime = FlowRuntime(blueprints=BLUEPRINTS, registry=REGISTRY, event_bus=Bus())
    worker = await flowcraft_worker(runtime, queue_name="own-bus", concurrency=4)
    assert worker.queue_name == "own-bus" and worker.recorder is flowcraft_recorder
    traced = await worker.run("order", timeout=20)
    traced.assert_ok()
    assert forwarded == flowcraft_recorder.names() == traced.trace.names()


@pytest.mark.redis
async def test_start_worker_without_the_fixtures_as_the_docs_show(
    flowcraft_redis_url: str,
) -> None:
    runtime = FlowRuntime(blueprints=BLUEPRINTS, registry=REGISTRY)
    async with await start_worker(runtime, flowcraft_redis_url) as worker:
        (await worker.run("order", {})).assert_ok()
    assert runtime.options.event_bus is None  # the recorder went to the adapter only


@pytest.mark.redis
def test_the_session_server_is_emptied_on_request(flowcraft_redis: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(flowcraft_redis.url)
    try:
        client.set("left-over", "1")
        flowcraft_redis.flush()
        assert client.dbsize() == 0
    finally:
        client.close()


# ---------------------------------------------------------------- the plugin as users get it


def _docs_block(language: str, first_line: str) -> str:
    """The fenced `language` block of docs/testing.md whose first line is `first_line`."""
    for block in re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), re.S):
        if block.startswith(first_line + "\n"):
            return str(block)
    raise AssertionError(f"docs/testing.md has no {language} block starting {first_line!r}")


@pytest.fixture
def documented_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project holding only docs/testing.md's example test and pytest configuration."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makepyprojecttoml(_docs_block("toml", "# pyproject.toml"))
    pytester.makepyfile(test_orders=_docs_block("python", "# test_orders.py"))


@pytest.mark.redis
@pytest.mark.usefixtures("documented_project")
def test_the_documented_example_passes_through_the_entry_point(
    pytester: pytest.Pytester,
) -> None:
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    run.assert_outcomes(passed=2)
    output = run.stdout.str() + run.stderr.str()
    assert "PytestDeprecationWarning" not in output  # the documented configuration works


@pytest.mark.usefixtures("documented_project")
def test_without_a_redis_server_the_redis_tests_are_skipped_saying_why(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = pytester.path / "no-redis-server-here"
    monkeypatch.setenv("FLOWCRAFT_REDIS_SERVER", str(missing))
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    run.assert_outcomes(passed=1, skipped=1)
    run.stdout.fnmatch_lines([f"SKIPPED*flowcraft_redis: FLOWCRAFT_REDIS_SERVER={missing}*"])
