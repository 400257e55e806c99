"""What run history costs (issue 15, docs/history.md): the same chain10 with history off and
on, in memory (`FlowRuntime.run`, sequential runs) and distributed (one worker in this process,
one private Redis, runs started ahead then drained), the variants interleaved in one run.

    python benches/history_overhead.py [--memory-runs 2000] [--runs 400] [--reps 3]

Prints the median runs/s (in memory) and steps/s (distributed) of each variant and its ratio to
history off (a same-run ratio: judge it, not the absolute figures, on a shared machine); writes
benches/results-history.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import time
from typing import Any

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime
from flowcraft_fast.devserver import RedisServer

HISTORY = {"off": 0, "on": 1000}
"""Entries kept per run when on (a chain10 run records 50: it is never trimmed)."""
CHAIN = {
    "id": "chain10",
    "nodes": [{"id": f"n{i}", "uses": "step"} for i in range(10)],
    "edges": [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(9)],
}


async def step(ctx: Any) -> int:
    return (ctx.input or 0) + 1


async def in_memory(variant: str, runs: int) -> float:
    rt = FlowRuntime(blueprints=[CHAIN], registry={"step": step}, history=HISTORY[variant])
    started = time.perf_counter()
    for _ in range(runs):
        result = await rt.run("chain10", {})
        assert result.status == "completed", result
    return runs / (time.perf_counter() - started)


async def distributed(url: str, variant: str, runs: int) -> float:
    queue = f"hist-{variant}-{time.monotonic_ns()}"
    n = HISTORY[variant]
    rt = FlowRuntime(blueprints=[CHAIN], registry={"step": step}, history=n)
    adapter = BullMQAdapter(runtime_options=rt.options, connection=url, queue_name=queue)
    client = FlowClient(url, queue_name=queue, history=n)
    await adapter.publish()
    ids = await client.start_many([("chain10", {}) for _ in range(runs)])
    started = time.perf_counter()
    await adapter.start()
    try:
        for run_id in ids:
            result = await client.wait(run_id, timeout=300)
            assert result.status == "completed", result
    finally:
        elapsed = time.perf_counter() - started
        await adapter.close(timeout=5)
    if n:  # the history is there, whole
        assert (
            len(await client.history(ids[-1])) == 50
        )  # start + 10 x (start, finish, 3 writes) - n0 input
    return runs * 10 / elapsed


def report(figures: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    base = statistics.median(figures["off"])
    return {
        v: {"per_s": round(statistics.median(f)), "ratio": round(statistics.median(f) / base, 3)}
        for v, f in figures.items()
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory-runs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).with_name("results-history.json"))
    )
    args = parser.parse_args()
    memory: dict[str, list[float]] = {v: [] for v in HISTORY}
    dist: dict[str, list[float]] = {v: [] for v in HISTORY}
    server = RedisServer().start()
    try:
        for _ in range(args.reps):
            for variant in HISTORY:
                memory[variant].append(await in_memory(variant, args.memory_runs))
                dist[variant].append(await distributed(server.url, variant, args.runs))
    finally:
        server.close()
    out = {
        "reps": args.reps,
        "memory_chain10_runs_per_s": {"runs": args.memory_runs, **report(memory)},
        "distributed_chain10_steps_per_s": {"runs": args.runs, **report(dist)},
    }
    text = json.dumps(out, indent=2)
    pathlib.Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    asyncio.run(main())
