"""One reconciler pass over many unfinished runs (issue 9): 20,000 x $FLOWCRAFT_CHAOS_SCALE
(100,000 at scale 5) healthy but idle runs, 1% of them with their start job lost.

The pass must examine every run once, re-enqueue exactly the lost ones and touch nothing else
(the wait list gains one job per lost run), and a second pass must find nothing to do; the SCAN
mode must agree. Redis PING latency during the pass is recorded (record_property), not asserted:
the machines are shared and noisy. benches/reconcile_pass.py measures the speed against the
TypeScript reconciler.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from chaos_tools import scaled

from flowcraft_fast import (
    BullMQAdapter,
    FlowClient,
    FlowRuntime,
    NodeContext,
    create_bullmq_reconciler,
)
from flowcraft_fast.distributed.jobs import job_id

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(900)]

CHAIN = {
    "id": "chain",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "b", "uses": "one"}],
    "edges": [{"source": "a", "target": "b"}],
}


async def one(ctx: NodeContext) -> int:
    return 1


class Pinger(threading.Thread):
    """PING every millisecond on a connection of its own until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.r = redis.Redis.from_url(url)
        self.latencies: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            t0 = time.perf_counter()
            self.r.ping()
            self.latencies.append(time.perf_counter() - t0)
            time.sleep(0.001)

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join(10)
        lat = sorted(self.latencies) or [0.0]
        return {
            "pings": len(lat),
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        }


async def test_one_pass_over_many_idle_runs(redis_url: str, record_property: Any) -> None:
    runs_n = scaled(20_000, minimum=1_000)
    rt = FlowRuntime(blueprints=[CHAIN], registry={"one": one})
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="rq")
    await adapter.publish()  # no worker consumes: every run stays idle
    client = FlowClient(redis_url, queue_name="rq")
    runs: list[str] = []
    for at in range(0, runs_n, 500):
        runs += await client.start_many(
            [("chain", {"n": i}) for i in range(at, min(runs_n, at + 500))]
        )
    r = redis.Redis.from_url(redis_url)
    lost = runs[::100]  # 1%: start job deleted (hash and wait-list entry)
    pipe = r.pipeline(transaction=False)
    for run_id in lost:
        jid = job_id(run_id, "a", ())
        pipe.lrem("bull:rq:wait", 0, jid)
        pipe.delete(f"bull:rq:{jid}")
    pipe.execute()
    assert r.llen("bull:rq:wait") == runs_n - len(lost)

    reconciler = create_bullmq_reconciler(adapter=adapter, stalled_threshold_seconds=0)
    pinger = Pinger(redis_url)
    pinger.start()
    t0 = time.perf_counter()
    stats = await reconciler.run()
    elapsed = time.perf_counter() - t0
    ping = pinger.stop()
    record_property("runs", runs_n)
    record_property("runs_per_s", round(runs_n / elapsed))
    record_property("ping_during_pass", ping)
    print(f"{runs_n} runs in {elapsed:.2f} s ({runs_n / elapsed:,.0f}/s); PING {ping}")

    assert (stats.scanned_keys, stats.reconciled_runs, stats.failed_runs) == (runs_n, len(lost), 0)
    assert stats.forgotten_runs == 0
    assert r.llen("bull:rq:wait") == runs_n  # one job per run again, never two
    assert r.zcard("bull:rq:flowcraft:runs") == runs_n

    again = await reconciler.run()
    assert (again.scanned_keys, again.reconciled_runs) == (runs_n, 0)
    scan = await create_bullmq_reconciler(
        adapter=adapter, stalled_threshold_seconds=0, mode="scan"
    ).run()
    assert scan.scanned_keys >= runs_n  # SCAN may return a key twice, never skips one
    assert (scan.reconciled_runs, scan.failed_runs) == (0, 0)
    assert r.llen("bull:rq:wait") == runs_n
