"""Runs started by the TypeScript Flowcraft's client protocol complete on our workers (issue 10;
SPEC section 5), driven by the real packages from npm.

`tests/interop/ts_client.mjs` (Node, the pinned flowcraft 2.10.1, @flowcraft/bullmq-adapter
1.7.1, bullmq 5.81.5, ioredis 5.11.1, installed by benches/tspeer.py into benches/ts when npm is
present) starts runs the way a TypeScript producer does, waits on `workflow:status:<runId>` and
reads the state back through the TypeScript RedisContext. Our worker adopts each run on its
first claim (adopt.lua) and finishes it with the status payload the TypeScript side reads.
Without node/npm the test is skipped with the reason printed; CI on this machine has both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowcraft_fast import BullMQAdapter, FlowRuntime, NodeContext

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))
import tspeer  # noqa: E402

pytestmark = pytest.mark.timeout(600)

FAN = {
    "id": "ts-fan",
    "metadata": {"version": "3"},
    "nodes": [
        {"id": "a", "uses": "double"},
        {"id": "b", "uses": "double"},
        {"id": "j", "uses": "total", "config": {"joinStrategy": "all"}},
    ],
    "edges": [{"source": "a", "target": "j"}, {"source": "b", "target": "j"}],
}
CHAIN = {
    "id": "ts-chain",
    "nodes": [{"id": "s", "uses": "double"}, {"id": "t", "uses": "double"}],
    "edges": [{"source": "s", "target": "t"}],
}


async def double(ctx: NodeContext) -> int:
    base = ctx.input if isinstance(ctx.input, int) else await ctx.context.get("x")
    return int(base) * 2 + 1


async def total(ctx: NodeContext) -> int:
    return sum(int(v) for v in ctx.input.values())


def node_client(url: str, queue: str, blueprint: dict[str, Any], runs: int) -> list[Any]:
    where = tspeer.ensure_installed()
    if where is None:
        if os.environ.get("CI"):  # .ci/run installs Node.js: there, a missing peer is a failure
            pytest.fail("node/npm or the npm packages are missing in CI")
        pytest.skip("node/npm not available: the TypeScript client cannot be driven")
    script = (Path(__file__).with_name("ts_client.mjs")).read_text()
    env = dict(os.environ, REDIS_URL=url, QUEUE=queue, BLUEPRINT=json.dumps(blueprint),
               RUNS=str(runs), TIMEOUT_MS="60000")  # fmt: skip
    done = subprocess.run(
        ["node", "--input-type=module"], input=script, cwd=where, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("blueprint", [CHAIN, FAN], ids=["chain", "fan-in"])
async def test_runs_started_by_the_typescript_client_complete_on_our_workers(
    redis_url: str, blueprint: dict[str, Any]
) -> None:
    rt = FlowRuntime(blueprints=[blueprint], registry={"double": double, "total": total})
    # two workers, so the start jobs of one run are claimed concurrently: adopted once
    adapters = [
        BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="tsq")
        for _ in range(2)
    ]
    for adapter in adapters:
        await adapter.start()
    try:
        import asyncio

        results = await asyncio.to_thread(node_client, redis_url, "tsq", blueprint, 5)
    finally:
        for adapter in adapters:
            await adapter.close(timeout=5)
    assert len(results) == 5
    for run in results:
        x, status, context = run["x"], run["status"], run["context"]
        assert status is not None, f"run {run['runId']} never finished"
        assert status["status"] == "completed", status
        if blueprint is CHAIN:
            want = {"s": 2 * x + 1, "t": 2 * (2 * x + 1) + 1}
        else:
            want = {"a": 2 * x + 1, "b": 2 * x + 1, "j": 2 * (2 * x + 1)}
        for key, value in want.items():
            assert context[key] == value, (key, context)
            assert context[f"_outputs.{key}"] == value
        # the payload the TypeScript side reads: the final context, also serialized
        payload = status["payload"]
        assert payload["status"] == "completed"
        assert payload["context"] == context
        assert json.loads(payload["serializedContext"]) == context
        assert context["blueprintId"] == blueprint["id"]
