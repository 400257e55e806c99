"""What flow limits cost when they do not bind (issue 14): chain10 steps/s with no limits, with a
non-binding per-run concurrency limit on every node (`key: context.tenant`, each run its own
tenant, limit 1000), and with a non-binding global one (`key: 'all'`, limit 1,000,000), in the
same run on one private Redis, one worker (in this process), the variants interleaved.

    python benches/limits_overhead.py [--runs 400] [--reps 3]

Prints the median steps/s of each variant and its ratio to the unlimited one (a same-run
ratio: judge it, not the absolute figures, on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime
from flowcraft_fast.devserver import RedisServer

VARIANTS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "per-run": {"concurrency": {"key": "context.tenant", "limit": 1000}},
    "global": {"concurrency": {"key": "'all'", "limit": 1_000_000}},
}


def chain(bp_id: str, config: dict[str, Any] | None) -> dict[str, Any]:
    nodes = [{"id": f"n{i}", "uses": "step"} for i in range(10)]
    if config is not None:
        for n in nodes:
            n["config"] = config
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(9)]
    return {"id": bp_id, "nodes": nodes, "edges": edges}


async def step(ctx: Any) -> int:
    return (ctx.input or 0) + 1


async def one(url: str, variant: str, runs: int) -> float:
    queue = f"lim-{variant}-{time.monotonic_ns()}"
    rt = FlowRuntime(blueprints=[chain(variant, VARIANTS[variant])], registry={"step": step})
    adapter = BullMQAdapter(runtime_options=rt.options, connection=url, queue_name=queue)
    client = FlowClient(url, queue_name=queue)
    await adapter.publish()
    ids = [await client.start(variant, {"tenant": f"t{i}"}) for i in range(runs)]
    started = time.perf_counter()
    await adapter.start()
    try:
        for run_id in ids:
            result = await client.wait(run_id, timeout=300)
            assert result.status == "completed", result
    finally:
        elapsed = time.perf_counter() - started
        await adapter.close(timeout=5)
    return runs * 10 / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.reps):
            for variant in VARIANTS:
                figures[variant].append(await one(server.url, variant, args.runs))
    finally:
        server.close()
    base = statistics.median(figures["none"])
    report = {
        v: {
            "steps_per_s": round(statistics.median(f)),
            "ratio": round(statistics.median(f) / base, 3),
        }
        for v, f in figures.items()
    }
    print(json.dumps({"runs": args.runs, "reps": args.reps, "variants": report}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
