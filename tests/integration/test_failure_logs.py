"""A node that raises, seen by an operator: the worker logs every failed attempt (WARNING when
it is retried, ERROR when the run fails) with run id, node id, attempt and the traceback, and
the job hash keeps the tracebacks in BullMQ's `stacktrace` field (what bull-board shows)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis

from flowcraft_fast import FlowRuntime, NodeContext
from flowcraft_fast.daemon.logs import JsonFormatter, TextFormatter
from flowcraft_fast.distributed.adapter import BullMQAdapter
from flowcraft_fast.distributed.client import FlowClient
from flowcraft_fast.distributed.jobs import job_id
from flowcraft_fast.distributed.node_job import STACK_ENTRY_CHARS, stack_entry

pytestmark = pytest.mark.timeout(60)

WORKER_LOGGER = "flowcraft_fast.worker"


def raise_the_inner_error(depth: int) -> None:
    if depth:
        raise_the_inner_error(depth - 1)
    raise KeyError("the widget is missing")


async def explodes(ctx: NodeContext) -> Any:
    raise_the_inner_error(2)


def runtime(max_retries: int) -> FlowRuntime:
    return FlowRuntime(
        blueprints=[
            {
                "id": "explodes",
                "nodes": [
                    {
                        "id": "x",
                        "uses": "explodes",
                        "config": {"maxRetries": max_retries, "retryDelay": 0},
                    }
                ],
                "edges": [],
            }
        ],
        registry={"explodes": explodes},
    )


async def run_to_failure(redis_url: str, queue: str, max_retries: int) -> str:
    rt = runtime(max_retries)
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name=queue)
    async with adapter:
        client = FlowClient(redis_url, queue_name=queue)
        run_id = await client.start("explodes", {})
        result = await client.wait(run_id, timeout=30)
    assert result.status == "failed"
    assert result.errors[0].type == "KeyError"
    return run_id


def failure_records(caplog: pytest.LogCaptureFixture, run_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == WORKER_LOGGER and getattr(r, "run_id", None) == run_id
    ]


async def test_each_failed_attempt_is_logged_with_its_traceback(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=WORKER_LOGGER)
    run_id = await run_to_failure(redis_url, "logs-retry", max_retries=3)

    records = failure_records(caplog, run_id)
    assert [(r.levelno, getattr(r, "attempt", None)) for r in records] == [
        (logging.WARNING, 1),
        (logging.WARNING, 2),
        (logging.ERROR, 3),
    ]
    for record in records:
        assert getattr(record, "node_id", None) == "x"
        assert getattr(record, "job_id", None) == job_id(run_id, "x", ())
        assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "retrying in" in records[0].getMessage()
    assert "the run fails" in records[-1].getMessage()

    text = TextFormatter().format(records[-1])
    assert f"run {run_id}: node x attempt 3 failed" in text
    assert f"run_id={run_id}" in text and "node_id=x" in text and "attempt=3" in text
    assert "Traceback (most recent call last)" in text
    assert "in raise_the_inner_error" in text and "KeyError: 'the widget is missing'" in text

    entry = json.loads(JsonFormatter().format(records[0]))
    assert entry["level"] == "warning"
    assert (entry["run_id"], entry["node_id"], entry["attempt"]) == (run_id, "x", 1)
    assert "in raise_the_inner_error" in entry["exc_info"]
    assert "KeyError" in entry["exc_info"]


async def test_the_job_hash_keeps_the_tracebacks_as_bullmq_does(redis_url: str) -> None:
    queue = "logs-stack"
    run_id = await run_to_failure(redis_url, queue, max_retries=2)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    job = r.hgetall(f"bull:{queue}:{job_id(run_id, 'x', ())}")
    stack = json.loads(job["stacktrace"])
    assert isinstance(stack, list) and len(stack) == 2  # one per failed attempt, newest last
    for trace in stack:
        assert isinstance(trace, str)
        assert "KeyError" in trace and "raise_the_inner_error" in trace
        assert "Traceback (most recent call last)" in trace
    assert "the widget is missing" in job["failedReason"]


async def test_a_single_attempt_failure_stores_its_traceback(redis_url: str) -> None:
    queue = "logs-once"
    run_id = await run_to_failure(redis_url, queue, max_retries=1)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    stack = json.loads(r.hget(f"bull:{queue}:{job_id(run_id, 'x', ())}", "stacktrace") or "")
    assert len(stack) == 1 and "in explodes" in stack[0] and "KeyError" in stack[0]


def test_stack_entries_are_bounded() -> None:
    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise ValueError("x" * 20_000)

    try:
        deep(50)
    except ValueError as exc:
        entry = stack_entry([exc])
    assert len(entry) <= STACK_ENTRY_CHARS
    assert entry.startswith("Traceback (most recent call last)")
    assert "characters cut" in entry and entry.endswith("x" * 100)
    assert stack_entry([], "StalledJobError: gone") == "StalledJobError: gone"
