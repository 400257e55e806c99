"""Diagnostic: where a sequential chain10 run spends its time in ours.

    python benches/diag_call_latency.py [RUNS]

Runs the adapter IN this process (unlike the benchmarks), wraps its native queue to time every
awaited call (claim, wait_for_work, commit ...), runs RUNS chain10 runs one after the other, and
prints per run: calls, median microseconds per call, and milliseconds spent awaiting each kind.
A synchronous redis-py PING loop gives the bare round-trip time on the same box for comparison.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from workloads import blueprints, step, sum_inputs

from flowcraft_fast import FlowRuntime
from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.adapter import BullMQAdapter
from flowcraft_fast.distributed.client import FlowClient


class TimedQueue:
    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.times: dict[str, list[float]] = defaultdict(list)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if not (asyncio.isfuture(result) or asyncio.iscoroutine(result)):
                return result

            async def timed() -> Any:
                t0 = time.perf_counter()
                value = await result
                self.times[name].append(time.perf_counter() - t0)
                return value

            return timed()

        return call


async def main(url: str, runs: int) -> None:
    rt = FlowRuntime(blueprints=blueprints(), registry={"step": step, "sum": sum_inputs})
    adapter = BullMQAdapter(runtime_options=rt.options, connection=url, queue_name="diag")
    timed = TimedQueue(adapter.worker.queue)
    adapter.worker.queue = timed  # type: ignore[assignment]
    await adapter.start()
    try:
        client = FlowClient(url, queue_name="diag")
        for _ in range(5):  # warm-up
            await client.wait(await client.start("chain10", {}), timeout=30)
        timed.times.clear()
        t0 = time.perf_counter()
        for _ in range(runs):
            await client.wait(await client.start("chain10", {}), timeout=30)
        per_run = (time.perf_counter() - t0) / runs
    finally:
        await adapter.close()
    print(f"in-process sequential chain10: {per_run * 1e3:.2f} ms per run ({runs} runs)")
    for name, samples in sorted(timed.times.items()):
        print(
            f"  {name:16s} {len(samples) / runs:5.1f} calls/run  "
            f"median {statistics.median(samples) * 1e6:6.0f} us  "
            f"awaited {sum(samples) / runs * 1e3:6.2f} ms/run"
        )
    with redis.Redis.from_url(url) as r:
        t0 = time.perf_counter()
        for _ in range(1000):
            r.ping()
        print(f"  sync redis-py PING: {(time.perf_counter() - t0) * 1e3:.0f} us per call")


if __name__ == "__main__":
    with RedisServer() as srv:
        asyncio.run(main(srv.url, int(sys.argv[1]) if len(sys.argv) > 1 else 20))
