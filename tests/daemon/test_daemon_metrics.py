"""Prometheus metrics scraped from a live flowcraft-fastd (issue 12): a real daemon, the real
adapter, a private Redis. One worker serves its own endpoint; `--processes 2` serves one
endpoint adding up both children, and keeps the counts of a child killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from flowcraft_fast import FlowClient
from flowcraft_fast.devserver import RedisServer, free_port

from .helpers import Samples, clean_env, start_daemon, stop_daemon, total, value, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

QUEUE = "metered"
APP = textwrap.dedent(
    """
    from flowcraft_fast.runtime import FlowRuntime

    async def step(ctx):
        return {"output": 1}

    async def explode(ctx):
        raise ValueError("boom")

    chain = {"id": "chain", "nodes": [{"id": n, "uses": "step"} for n in "abc"],
             "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}
    boom = {"id": "boom", "nodes": [{"id": "x", "uses": "explode"}], "edges": []}
    runtime = FlowRuntime(blueprints={"chain": chain, "boom": boom},
                          registry={"step": step, "explode": explode})
    """
)


async def run_all(url: str, blueprint: str, n: int) -> list[str]:
    client = FlowClient(url, queue_name=QUEUE)
    for _ in range(300):
        try:
            ids = [await client.start(blueprint, {}) for _ in range(n)]
            break
        except Exception:  # not published yet: the daemon is starting
            await asyncio.sleep(0.1)
    results = [await client.wait(run_id, timeout=60) for run_id in ids]
    return [r.status for r in results]


def daemon(tmp_path: Path, url: str, port: int, *extra: str) -> subprocess.Popen[str]:
    (tmp_path / "meteredapp.py").write_text(APP)
    args = ["--app", "meteredapp:runtime", "--redis-url", url, "--queue", QUEUE,
            "--metrics-bind", f"127.0.0.1:{port}", "--reconcile-interval", "0.5",
            "--retry-deadline", "1", *extra]  # fmt: skip
    return start_daemon(args, tmp_path, clean_env())


def test_one_worker_serves_its_metrics(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    port = free_port()
    process = daemon(tmp_path, server.url, port)
    try:
        wait_for(port, lambda s: value(s, "flowcraft_up", queue=QUEUE) == 1, "up")
        assert asyncio.run(run_all(server.url, "chain", 20)) == ["completed"] * 20
        assert asyncio.run(run_all(server.url, "boom", 2)) == ["failed"] * 2

        def settled(s: Samples) -> bool:
            return total(s, "flowcraft_step_duration_seconds_count") == 62

        s = wait_for(port, settled, "62 settled steps")
        count = "flowcraft_step_duration_seconds_count"
        assert value(s, count, queue=QUEUE, blueprint="chain") == 60
        assert value(s, count, queue=QUEUE, blueprint="boom") == 2
        steps = "flowcraft_steps_total"
        assert value(s, steps, queue=QUEUE, blueprint="chain", outcome="completed") == 60
        assert value(s, steps, queue=QUEUE, blueprint="boom", outcome="failed") == 2
        bucket = value(
            s, "flowcraft_step_duration_seconds_bucket", queue=QUEUE, blueprint="chain", le="+Inf"
        )
        assert bucket == 60
        s = wait_for(
            port,
            lambda s: (
                value(s, "flowcraft_jobs_processed_total", queue=QUEUE) == 62
                and value(s, "flowcraft_reconciler_passes_total", queue=QUEUE, result="ok")
                is not None
                and value(s, "flowcraft_queue_jobs", queue=QUEUE, state="failed") == 2
            ),
            "the synced counters, a reconciler pass and the queue's counts",
        )
        assert value(s, "flowcraft_runs_failed_total", queue=QUEUE) == 2
        assert value(s, "flowcraft_queue_jobs", queue=QUEUE, state="wait") == 0
        assert value(s, "flowcraft_queue_jobs", queue=QUEUE, state="active") == 0
        assert value(s, "flowcraft_in_flight", queue=QUEUE) == 0
        assert value(s, "flowcraft_lease_renewals_total", queue=QUEUE) is not None
        assert value(s, "flowcraft_reconciler_runs_total", queue=QUEUE, kind="scanned") is not None
        assert (value(s, "process_resident_memory_bytes") or 0) > 0

        # Redis goes away: up drops to 0 and the failed probes are counted; it comes back: 1.
        server.stop(kill=True)
        s = wait_for(port, lambda s: value(s, "flowcraft_up", queue=QUEUE) == 0, "up 0")
        assert (value(s, "flowcraft_redis_errors_total", queue=QUEUE) or 0) >= 1
        server.start()
        wait_for(port, lambda s: value(s, "flowcraft_up", queue=QUEUE) == 1, "up again")
    finally:
        code, _, err = stop_daemon(process)
    assert code == 0, err


def test_the_supervisor_serves_one_endpoint_for_its_workers(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    port = free_port()
    process = daemon(tmp_path, server.url, port, "--processes", "2", "--concurrency", "4")
    try:

        def both_ready(s: Samples) -> bool:
            ready = [value(s, "flowcraft_worker_ready", worker=w) for w in ("0", "1")]
            return ready == [1, 1] and value(s, "flowcraft_up", queue=QUEUE) == 1

        s = wait_for(port, both_ready, "both workers ready")
        for worker in ("0", "1"):
            assert (value(s, "flowcraft_worker_resident_memory_bytes", worker=worker) or 0) > 0
        assert asyncio.run(run_all(server.url, "chain", 40)) == ["completed"] * 40
        count = "flowcraft_step_duration_seconds_count"
        wait_for(port, lambda s: total(s, count) == 120, "120 steps over both workers")

        # A child killed with SIGKILL: its counts stay in the sum, it is restarted.
        children = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(children) == 2, children
        os.kill(int(children[0]), signal.SIGKILL)
        s = wait_for(port, lambda s: total(s, count) == 120 and both_ready(s), "restarted")
        assert asyncio.run(run_all(server.url, "chain", 10)) == ["completed"] * 10
        wait_for(port, lambda s: total(s, count) == 150, "150 steps after the restart")
    finally:
        code, _, err = stop_daemon(process)
    assert code == 0, err
