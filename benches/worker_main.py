"""One benchmark worker process: `python benches/worker_main.py KIND URL QUEUE CONCURRENCY`.

KIND is `ours` (flowcraft-fast's BullMQAdapter), `bullmq` (the bullmq Python package), `arq`, or
`baseline` (the SPEC §8 "minimal batched Redis loop": chain10 only, see `run_baseline`).
The process prints `READY {...}` once it consumes, then obeys lines on stdin:
`stats` -> prints `STATS {json}`; `stop` (or EOF) -> closes the worker, prints `BYE {json}`, exits.
The client (the benchmark process) enqueues the work and waits for it; this process only works.

Peers signal a finished run by `LPUSH bench:<queue>:done "<run>:<value>"` from the run's last
step (one extra command per run, not per step): they have no run-result API like ours.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import SHAPES, blueprints, step, sum_inputs

# Same retention as ours (keep_completed=1000): peers keep the last 1000 completed jobs.
BULLMQ_JOB_OPTS: dict[str, Any] = {"removeOnComplete": 1000, "removeOnFail": 5000}


def done_key(queue: str) -> str:
    return f"bench:{queue}:done"


class CountingQueue:
    """Wraps flowcraft's native queue and counts calls per method: each call is one round trip
    (the native methods each send one pipeline), so these are the worker's round trips."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr
        calls = self.calls

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return attr(*args, **kwargs)

        self.__dict__[name] = counted
        return counted


async def run_ours(url: str, queue: str, concurrency: int) -> tuple[Any, Any]:
    from flowcraft_fast import FlowRuntime
    from flowcraft_fast.distributed.adapter import BullMQAdapter

    rt = FlowRuntime(blueprints=blueprints(), registry={"step": step, "sum": sum_inputs})
    adapter = BullMQAdapter(
        runtime_options=rt.options, connection=url, queue_name=queue, concurrency=concurrency,
        speculate=os.environ.get("FLOWCRAFT_BENCH_SPECULATE", "1") != "0",
    )  # fmt: skip
    counting = CountingQueue(adapter.worker.queue)
    adapter.worker.queue = counting  # type: ignore[assignment]
    await adapter.start()

    def stats() -> dict[str, Any]:
        s = adapter.worker.stats
        return {
            "calls": dict(counting.calls),
            "claimed": s.claimed,
            "committed": s.committed,
            "claims": s.claims,
            "commit_batches": s.commit_batches,
            "retried": s.retried,
            "lost": s.lost,
            "duplicates": s.duplicates,
        }

    async def close() -> None:
        await adapter.close(timeout=10)

    return stats, close


async def run_bullmq(url: str, queue: str, concurrency: int) -> tuple[Any, Any]:
    import redis.asyncio as aioredis
    from bullmq import FlowProducer, Queue, Worker

    r = aioredis.from_url(url)
    q = Queue(queue, {"connection": url})
    fp = FlowProducer({"connection": url})
    done = done_key(queue)
    counts: Counter[str] = Counter()

    async def process(job: Any, token: str) -> Any:
        d = job.data
        shape = d["shape"]
        counts["processed"] += 1
        if shape == "chain10":
            k, v = int(d["k"]), int(d["v"]) + 1
            if k < 9:
                await q.add("step", {"shape": shape, "run": d["run"], "k": k + 1, "v": v},
                            BULLMQ_JOB_OPTS)  # fmt: skip
            else:
                await r.lpush(done, f"{d['run']}:{v}")
            return v
        role = d["role"]
        if role == "s":  # the start node fans out: a flow of `width` children under parent j
            v = 1
            base = {"shape": shape, "run": d["run"]}
            await fp.add({
                "name": "j", "queueName": queue, "data": {**base, "role": "j"},
                "opts": BULLMQ_JOB_OPTS,
                "children": [
                    {"name": "p", "queueName": queue, "data": {**base, "role": "p", "v": v},
                     "opts": BULLMQ_JOB_OPTS}
                    for _ in range(SHAPES[shape]["width"])
                ],
            })  # fmt: skip
            return v
        if role == "p":
            return int(d["v"]) + 1
        values = await job.getChildrenValues()  # role j: the fan-in
        total = sum(int(v) for v in values.values())
        await r.lpush(done, f"{d['run']}:{total}")
        return total

    worker = Worker(queue, process, {"connection": url, "concurrency": concurrency})

    def stats() -> dict[str, Any]:
        return {"processed": counts["processed"]}

    async def close() -> None:
        await worker.close()
        await fp.close()
        await q.close()
        await r.aclose()

    return stats, close


async def run_arq(url: str, queue: str, concurrency: int) -> tuple[Any, Any]:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    done = done_key(queue)
    counts: Counter[str] = Counter()

    async def arq_step(ctx: dict[str, Any], run: str, k: int, v: int) -> int:
        counts["processed"] += 1
        v += 1
        if k < 9:
            await ctx["redis"].enqueue_job("step", run, k + 1, v, _queue_name=queue)
        else:
            await ctx["redis"].lpush(done, f"{run}:{v}")
        return v

    worker = Worker(
        functions=[func(arq_step, name="step", keep_result=0)],  # type: ignore[list-item]
        queue_name=queue,
        redis_settings=RedisSettings.from_dsn(url),
        max_jobs=concurrency,
        poll_delay=0.01,  # arq's default 0.5 s poll would dominate; 10 ms as in performance.md
        keep_result=0,
        handle_signals=False,
        log_results=False,
    )
    task = asyncio.get_running_loop().create_task(worker.async_run())

    def stats() -> dict[str, Any]:
        return {"processed": counts["processed"]}

    async def close() -> None:
        await worker.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return stats, close


# --------------------------------------------------------------------------- baseline
# The SPEC §8 reference: "a minimal batched Redis loop doing the least Redis work a step needs".
# A job is the string "<run>|<k>|<v>" in the list bench:<queue>:bl:wait. Claiming moves up to N
# jobs to bench:<queue>:bl:active (one script call, LMOVE each: the reliable-queue pattern, so a
# claimed job is never only in the worker's memory); committing a step is one script call that
# removes the job from the active list and pushes the next step (or the run's completion signal),
# atomically. Each round trip is one pipeline: the commits of every finished job, followed by
# the claim of the next batch. No lease, no run state, no retention, no events: a floor, not a
# product (a crashed worker's active jobs would need a sweeper this loop does not have).

BASELINE_CLAIM = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not job then break end
  out[i] = job
end
return out
"""
BASELINE_COMMIT = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def baseline_keys(queue: str) -> tuple[str, str]:
    return f"bench:{queue}:bl:wait", f"bench:{queue}:bl:active"


def baseline_step(job: str) -> tuple[bool, str]:
    """Run one chain10 step: returns (done, payload): the next job, or "<run>:<value>"."""
    run, k, v = job.split("|")
    k1, v1 = int(k) + 1, int(v) + 1  # the node: input + 1
    if k1 < SHAPES["chain10"]["steps"]:
        return False, f"{run}|{k1}|{v1}"
    return True, f"{run}:{v1}"


async def run_baseline(url: str, queue: str, concurrency: int) -> tuple[Any, Any]:
    import redis.asyncio as aioredis

    r = aioredis.from_url(url, decode_responses=True)  # hiredis parses when installed
    wait, active = baseline_keys(queue)
    done = done_key(queue)
    claim_sha = await r.script_load(BASELINE_CLAIM)
    commit_sha = await r.script_load(BASELINE_COMMIT)
    counts: Counter[str] = Counter()
    stopping = asyncio.Event()

    async def loop() -> None:
        jobs: list[Any] = []  # str (decode_responses)
        while not stopping.is_set():
            if not jobs:  # drained: block for one job, then top the batch up
                job = await r.blmove(wait, active, 1, "RIGHT", "LEFT")
                if job is None:
                    continue
                counts["round_trips"] += 1
                jobs = [job]
                if concurrency > 1:
                    jobs += await r.evalsha(claim_sha, 2, wait, active, concurrency - 1)
                    counts["round_trips"] += 1
            pipe = r.pipeline(transaction=False)
            for job in jobs:
                finished, payload = baseline_step(job)
                pipe.evalsha(commit_sha, 2, active, done if finished else wait, job, payload)
            pipe.evalsha(claim_sha, 2, wait, active, concurrency)
            results = await pipe.execute()
            counts["round_trips"] += 1
            counts["processed"] += len(jobs)
            jobs = results[-1]

    task = asyncio.get_running_loop().create_task(loop())

    def stats() -> dict[str, Any]:
        return dict(counts)

    async def close() -> None:
        stopping.set()
        try:
            await asyncio.wait_for(task, timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        await r.aclose()

    return stats, close


async def main() -> None:
    kind, url, queue, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    starters = {"ours": run_ours, "bullmq": run_bullmq, "arq": run_arq, "baseline": run_baseline}
    stats, close = await starters[kind](url, queue, concurrency)
    print("READY " + json.dumps({"pid": os.getpid(), "kind": kind}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "stats":
                print("STATS " + json.dumps(stats()), flush=True)
            elif line in ("stop", ""):
                break
    finally:
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(close(), timeout=20)
        finally:
            final = stats()
            final["close_s"] = round(time.monotonic() - t0, 3)
            print("BYE " + json.dumps(final), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
