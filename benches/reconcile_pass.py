"""One reconciler pass over many idle runs: ours (index and SCAN modes) against the TypeScript
Flowcraft's reconciler on the same data, with Redis PING latency measured meanwhile.

    python benches/reconcile_pass.py                 # 100,000 runs, 3 repetitions
    python benches/reconcile_pass.py --runs 20000 --reps 1

Each repetition seeds N healthy but idle chain10 runs (their start jobs queued, no worker:
`ReconcilerBench.seed`) on a private redis-server, then times one pass of each reconciler, each
on a fresh seed (the TypeScript pass's prepare step changes the data; see benches/ts/reconcile.mjs
for what it does per key). While a pass runs, a separate process sends PING every millisecond on
its own connection and reports the latency percentiles: what a worker would see. `idle` is the
same pinger with no pass running, the floor on this machine. Only the ratios within one run mean
anything. Writes benches/results-reconciler.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import tspeer

from flowcraft_fast import create_bullmq_reconciler
from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.reconciler import Mode

PINGER = """
import sys, time, json, redis
r = redis.Redis.from_url(sys.argv[1]); r.ping()
print("ready", flush=True)
lat = []
import select
while not select.select([sys.stdin], [], [], 0.001)[0]:
    t = time.perf_counter(); r.ping(); lat.append(time.perf_counter() - t)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0
print(json.dumps({"n": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0)}))
"""


class Pinger:
    """PING every millisecond from another process until stopped; latency percentiles."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PINGER, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the pinger did not start")

    def stop(self) -> dict[str, float]:
        out, _ = self.proc.communicate("stop\n", timeout=60)
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return result


def ours(rb: benchlib.ReconcilerBench, runs: int, mode: Mode, url: str) -> dict[str, Any]:
    rb.admin.flushall()
    rb.seed(runs, lost=False)
    sd = rb.seeded
    reconciler = create_bullmq_reconciler(
        adapter=sd["adapter"], stalled_threshold_seconds=0, mode=mode
    )
    pinger = Pinger(url)
    r0, c0, t0 = benchlib.redis_cpu_s(rb.admin), time.process_time(), time.perf_counter()
    stats = rb.loop.run_until_complete(reconciler.run())
    elapsed = time.perf_counter() - t0
    r_cpu, c_cpu = benchlib.redis_cpu_s(rb.admin) - r0, time.process_time() - c0
    ping = pinger.stop()
    queued = rb.admin.llen(sd["wait_key"])
    if (stats.scanned_keys, stats.reconciled_runs, stats.failed_runs, queued) != (runs, 0, 0, runs):
        raise AssertionError(f"our {mode} pass over {runs} idle runs: {stats}, {queued} queued")
    return {
        "impl": f"ours ({mode})",
        "keys_per_s": runs / elapsed,
        "elapsed_s": elapsed,
        "redis_cpu_us_per_key": r_cpu * 1e6 / runs,
        "cpu_us_per_key": c_cpu * 1e6 / runs,
        "ping": ping,
    }


def typescript(rb: benchlib.ReconcilerBench, runs: int, url: str) -> dict[str, Any] | None:
    rb.admin.flushall()
    rb.seed(runs, lost=False)
    pinger = Pinger(url)
    result = tspeer.reconcile_pass(url, rb.seeded["queue"], timeout=3600)
    ping = pinger.stop()
    if result is None:
        return None
    if (result["scanned"], result["reconciled"], result["failed"]) != (runs, 0, 0):
        raise AssertionError(f"TypeScript pass over {runs} idle runs: {result}")
    return {
        "impl": "TypeScript Flowcraft",
        "keys_per_s": result["keys_per_s"],
        "elapsed_s": result["elapsed_s"],
        "redis_cpu_us_per_key": None,
        "cpu_us_per_key": result.get("cpu_us_per_key"),
        "ping": ping,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100_000, help="idle runs per pass")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (interleaved)")
    ap.add_argument("--no-ts", action="store_true", help="skip the TypeScript peer")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results-reconciler.json")))
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with RedisServer() as srv, benchlib.ReconcilerBench(srv.url) as rb:
        floor = Pinger(srv.url)
        time.sleep(2)
        rows.append({"impl": "idle (no pass)", "ping": floor.stop()})
        for rep in range(args.reps):
            modes: tuple[Mode, ...] = ("index", "scan")
            for mode in modes:
                rows.append(ours(rb, args.runs, mode, srv.url) | {"rep": rep})
                print(f"rep {rep}: {rows[-1]['impl']}: {rows[-1]['keys_per_s']:,.0f} keys/s",
                      flush=True)  # fmt: skip
            if not args.no_ts:
                ts = typescript(rb, args.runs, srv.url)
                if ts is not None:
                    rows.append(ts | {"rep": rep})
                    print(f"rep {rep}: TypeScript: {ts['keys_per_s']:,.0f} keys/s", flush=True)
    print(f"\n{args.runs:,} idle runs, {args.reps} repetitions (median; PING p99 during the pass)")
    print("| reconciler | keys/s | vs TypeScript | Redis CPU us/key | PING p99 ms |")
    print("|---|---:|---:|---:|---:|")
    ts_rate = statistics.median(
        [r["keys_per_s"] for r in rows if r["impl"].startswith("TypeScript")] or [0]
    )
    for impl in ("ours (index)", "ours (scan)", "TypeScript Flowcraft", "idle (no pass)"):
        sel = [r for r in rows if r["impl"] == impl]
        if not sel:
            continue
        p99 = statistics.median(r["ping"]["p99_ms"] for r in sel)
        if "keys_per_s" not in sel[0]:
            print(f"| {impl} | | | | {p99:.2f} |")
            continue
        rate = statistics.median(r["keys_per_s"] for r in sel)
        ratio = f"{rate / ts_rate:.1f}x" if ts_rate else "n/a"
        cpu = [r["redis_cpu_us_per_key"] for r in sel if r["redis_cpu_us_per_key"] is not None]
        cpu_text = f"{statistics.median(cpu):.1f}" if cpu else ""
        print(f"| {impl} | {rate:,.0f} | {ratio} | {cpu_text} | {p99:.2f} |")
    Path(args.out).write_text(json.dumps({"runs": args.runs, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
