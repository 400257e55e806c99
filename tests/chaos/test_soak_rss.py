"""Flat memory (issue 9): one `flowcraft-fastd` worker runs 100,000 x $FLOWCRAFT_CHAOS_SCALE
chain10 steps (1,000,000 at scale 10); its RSS must not grow after the warm-up.

The daemon is the real one (`python -m flowcraft_fast.daemon`, one process, its reconciler and
stalled checks on); the test is its client, keeping `IN_FLIGHT` runs going and checking every
result. RSS is read from /proc at ten marks (10%, 20% ... 100% of the steps) after a warm-up of
2% that is not counted; the curve is written to `soak_rss.json` in the test's tmp dir and
printed. Asserted: growth from the 10% mark to the highest later mark stays below
`GROWTH_BOUND_MB`. The leak this guards against (one float per job kept forever) grew RSS by
~4 MB per 100,000 steps; after the fix a 1,000,000-step run grew by 0.2 MB
(`python benches/soak_rss.py`, benches/results-soak.json).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis
from chaos_tools import scaled

from flowcraft_fast import FlowClient

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(3600)]

STEPS_PER_RUN = 10
IN_FLIGHT = 200
MARKS = tuple(i / 10 for i in range(1, 11))
GROWTH_BOUND_MB = 2.5
QUEUE = "soak"

APP = textwrap.dedent(
    """
    from flowcraft_fast.runtime import FlowRuntime

    async def inc(ctx):
        return (ctx.input or 0) + 1

    NODES = [{"id": f"n{i}", "uses": "inc"} for i in range(10)]
    EDGES = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(9)]
    runtime = FlowRuntime(
        blueprints={"chain10": {"id": "chain10", "nodes": NODES, "edges": EDGES}},
        registry={"inc": inc},
    )
    """
)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def _run_batch(client: FlowClient, runs: int) -> None:
    ids = await client.start_many([("chain10", {}) for _ in range(runs)])
    results = await asyncio.gather(*(client.wait(rid, timeout=120) for rid in ids))
    for result in results:
        assert result.status == "completed", result.errors
        assert result.context.get("n9") == STEPS_PER_RUN, result.context


async def test_worker_rss_stays_flat_over_many_steps(
    redis_url: str, tmp_path: Path, record_property: Any
) -> None:
    (tmp_path / "soakapp.py").write_text(APP)
    args = ["--app", "soakapp:runtime", "--redis-url", redis_url, "--queue", QUEUE,
            "--concurrency", "64", "--reconcile-interval", "30"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCRAFT_", "NOTIFY_"))}
    env.pop("PYTHONPATH", None)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "flowcraft_fast.daemon", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "daemon.log", "w"),  # noqa: SIM115 (closed with the process)
    )
    admin = redis.Redis.from_url(redis_url)
    total_runs = scaled(100_000) // STEPS_PER_RUN
    curve: list[dict[str, float]] = []
    try:
        for _ in range(600):
            if admin.hexists(f"bull:{QUEUE}:flowcraft:blueprints", "chain10"):
                break
            assert daemon.poll() is None, "the daemon exited before it was ready"
            await asyncio.sleep(0.1)
        client = FlowClient(redis_url, queue_name=QUEUE)
        await _run_batch(client, max(1, total_runs // 50))  # warm-up, not counted
        warm_mb = _rss_mb(daemon.pid)
        done, marks = 0, list(MARKS)
        while done < total_runs:
            batch = min(IN_FLIGHT, total_runs - done)
            await _run_batch(client, batch)
            done += batch
            while marks and done >= marks[0] * total_runs:
                point = {"at": marks.pop(0), "steps": done * STEPS_PER_RUN}
                point["rss_mb"] = round(_rss_mb(daemon.pid), 2)
                curve.append(point)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
        admin.close()
    assert code == 0, (tmp_path / "daemon.log").read_text()[-2000:]
    report = {"steps": total_runs * STEPS_PER_RUN, "warm_mb": round(warm_mb, 2), "curve": curve}
    (tmp_path / "soak_rss.json").write_text(json.dumps(report, indent=2) + "\n")
    record_property("soak_rss", json.dumps(report))
    print(
        f"\nworker RSS after warm-up {warm_mb:.1f} MB; "
        + ", ".join(f"{p['steps']:,.0f}: {p['rss_mb']:.1f}" for p in curve)
    )
    growth = max(p["rss_mb"] for p in curve) - curve[0]["rss_mb"]
    assert growth < GROWTH_BOUND_MB, (
        f"worker RSS grew {growth:.1f} MB after the 10% mark "
        f"(bound {GROWTH_BOUND_MB} MB): {curve}; pid {os.getpid()}"
    )
