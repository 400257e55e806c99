"""Scale-out figures (issue 11): steps/s and Redis CPU per shard for a 1-master and a 3-master
Redis Cluster in the same run, and the cost of `--wait-replicas 1` under Sentinel.

    . .venv/bin/activate
    python benches/scale_out.py               # ~2 minutes
    python benches/scale_out.py --quick       # a smoke run

Per topology: a fresh cluster; WORKERS `flowcraft-fastd` processes with `--partitions 6`
serve chain10 runs (10 trivial steps each) that one client starts in batches and waits for.
Reported per master: its Redis CPU (INFO cpu, user + sys) over the measured window, and per
step; the capacity model divides one core by the Redis CPU per step. Every process (Redis
nodes, workers, client) shares this machine's cores, so a 3-master cluster here cannot show
3x one master: the workers saturate the box first (said in the output and docs/scale-out.md).

The WAIT part: a primary + replica + 3 sentinels, one worker on the redis+sentinel:// URL,
with --wait-replicas 0 and 1 in turn (same load): steps/s and the ratio.
Writes benches/results-scale-out.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from flowcraft_fast.devserver import (  # noqa: E402
    RedisCluster,
    RedisSentinelGroup,
    redis_command,
)
from flowcraft_fast.distributed.client import FlowClient  # noqa: E402

QUEUE = "scale"
PARTITIONS = 6
STEPS_PER_RUN = 10


def cpu_seconds(port: int) -> float:
    text = redis_command(port, "INFO", "cpu")
    text = text.decode() if isinstance(text, bytes) else str(text)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def start_workers(url: str, count: int, *extra: str) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable, "-m", "flowcraft_fast.daemon",
        "--app", "scale_app:runtime", "--redis-url", url, "--queue", QUEUE,
        "--concurrency", "64", "--reconcile-interval", "0", "--log-level", "warning",
        *extra,
    ]  # fmt: skip
    return [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr)
        for _ in range(count)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


async def drive(url: str, runs: int, batch: int) -> float:
    """Start `runs` chain10 runs in batches (one start_many each) and wait for all; seconds."""
    client = FlowClient(url, queue_name=QUEUE)
    deadline = time.monotonic() + 60
    while True:  # the workers publish the blueprint once up
        try:
            await client.blueprint("chain10")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    # warm-up
    ids = await client.start_many([("chain10", {}) for _ in range(batch)])
    for run_id in ids:
        await client.wait(run_id, timeout=120)
    started = time.monotonic()
    pending: list[str] = []
    for _ in range(0, runs, batch):
        pending += await client.start_many([("chain10", {}) for _ in range(batch)])
    for run_id in pending:
        result = await client.wait(run_id, timeout=300)
        assert result.status == "completed", result
    return time.monotonic() - started


def measure_cluster(masters: int, workers: int, runs: int, batch: int) -> dict[str, Any]:
    with RedisCluster(masters=masters) as cluster:
        ports = [n.port for n in cluster.nodes]
        procs = start_workers(cluster.url, workers, "--partitions", str(PARTITIONS))
        try:
            before = {p: cpu_seconds(p) for p in ports}
            t0 = time.monotonic()
            elapsed = asyncio.run(drive(cluster.url, runs, batch))
            window = time.monotonic() - t0
            after = {p: cpu_seconds(p) for p in ports}
            keys = cluster.keys_per_master()
        finally:
            stop_workers(procs)
    steps = runs * STEPS_PER_RUN
    cpu = {p: after[p] - before[p] for p in ports}
    total_cpu = sum(cpu.values())
    return {
        "masters": masters,
        "workers": workers,
        "runs": runs,
        "steps": steps,
        "seconds": round(elapsed, 3),
        "steps_per_s": round(steps / elapsed),
        "redis_cpu_s_per_master": {str(p): round(c, 3) for p, c in cpu.items()},
        "redis_busy_per_master": {str(p): round(c / window, 3) for p, c in cpu.items()},
        "redis_cpu_us_per_step": round(total_cpu / steps * 1e6, 1),
        "keys_per_master": {str(p): n for p, n in keys.items()},
        "model_steps_per_s_per_shard": round(steps / total_cpu) if total_cpu else None,
    }


async def sequential_ms(url: str, runs: int) -> float:
    """Median milliseconds of one chain10 run started and waited for alone (latency)."""
    client = FlowClient(url, queue_name=QUEUE)
    times = []
    for _ in range(runs):
        t = time.monotonic()
        run_id = await client.start("chain10", {})
        await client.wait(run_id, timeout=60)
        times.append((time.monotonic() - t) * 1000)
    return statistics.median(times)


def measure_wait(runs: int, batch: int, reps: int) -> dict[str, Any]:
    """Throughput and latency with --wait-replicas 0 and 1, alternating, `reps` times each
    (a fresh sentinel group per measurement); medians."""
    rates: dict[int, list[float]] = {0: [], 1: []}
    latency: dict[int, list[float]] = {0: [], 1: []}
    for rep in range(reps):
        for replicas in (0, 1) if rep % 2 == 0 else (1, 0):
            with RedisSentinelGroup() as group:
                procs = start_workers(group.url, 1, "--wait-replicas", str(replicas))
                try:
                    elapsed = asyncio.run(drive(group.url, runs, batch))
                    latency[replicas].append(asyncio.run(sequential_ms(group.url, 50)))
                finally:
                    stop_workers(procs)
            rates[replicas].append(runs * STEPS_PER_RUN / elapsed)
    out: dict[str, Any] = {}
    for replicas in (0, 1):
        out[f"wait_replicas_{replicas}_steps_per_s"] = round(statistics.median(rates[replicas]))
        out[f"wait_replicas_{replicas}_run_ms"] = round(statistics.median(latency[replicas]), 2)
    out["throughput_ratio_wait1_to_async"] = round(
        out["wait_replicas_1_steps_per_s"] / out["wait_replicas_0_steps_per_s"], 3
    )
    out["latency_ratio_wait1_to_async"] = round(
        out["wait_replicas_1_run_ms"] / out["wait_replicas_0_run_ms"], 3
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--runs", type=int, default=3000, help="chain10 runs per topology")
    args = parser.parse_args()
    runs = 200 if args.quick else args.runs
    batch = 100
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "note": "Redis nodes, workers and client share these cores",
        "cluster": [],
    }
    for masters in (1, 3):
        row = measure_cluster(masters, args.workers, runs, batch)
        results["cluster"].append(row)
        print(
            f"{masters} master(s): {row['steps_per_s']} steps/s, Redis CPU "
            f"{row['redis_cpu_us_per_step']} us/step, busy per master "
            f"{row['redis_busy_per_master']}, keys per master {row['keys_per_master']}, "
            f"model {row['model_steps_per_s_per_shard']} steps/s per shard core",
            flush=True,
        )
    wait = measure_wait(max(100, runs // 3), batch, 1 if args.quick else 3)
    results["wait"] = wait
    print(
        f"sentinel, 1 worker: {wait['wait_replicas_0_steps_per_s']} steps/s and "
        f"{wait['wait_replicas_0_run_ms']} ms per chain10 run alone with asynchronous "
        f"replication; {wait['wait_replicas_1_steps_per_s']} steps/s and "
        f"{wait['wait_replicas_1_run_ms']} ms with --wait-replicas 1 (throughput "
        f"{wait['throughput_ratio_wait1_to_async']}x, latency "
        f"{wait['latency_ratio_wait1_to_async']}x)"
    )
    if not args.quick:
        (HERE / "results-scale-out.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
