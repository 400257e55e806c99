"""Run ours and the peers in one session on one private Redis; print one table; write JSON.

    . .venv/bin/activate
    python benches/run_all.py                 # the full run (about 3-5 minutes on 2 cores)
    python benches/run_all.py --quick         # a smoke run (seconds)

Each repetition starts a fresh worker process per implementation (FLUSHALL first), warms it up,
then measures every shape; the implementation order rotates between repetitions so neither
runs always first. Reported: the median over repetitions (min-max in the JSON), and ratios of
ours to each peer computed from the same invocation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import redis

from flowcraft_fast.devserver import RedisServer

HERE = Path(__file__).resolve().parent


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rounds:
        out.setdefault(f"{r['impl']}/{r['shape']}", {"rows": []})["rows"].append(r)
    for entry in out.values():
        rows = entry.pop("rows")
        rates = [r["steps_per_s"] for r in rows]
        entry.update(
            impl=rows[0]["impl"], shape=rows[0]["shape"], runs=rows[0]["runs"],
            steps=rows[0]["steps"], reps=len(rows),
            steps_per_s=statistics.median(rates), steps_per_s_min=min(rates),
            steps_per_s_max=max(rates),
        )  # fmt: skip
        for key in (
            "redis_cmds_per_step",
            "evalsha_per_step",
            "redis_cpu_us_per_step",
            "worker_cpu_us_per_step",
            "client_cpu_us_per_step",
            "worker_rt_per_step",
            "worker_rt_incl_wait_per_step",
            "jobs_per_claim",
            "jobs_per_commit_batch",
        ):
            entry[key] = med(rows, key)  # fmt: skip
        # VmHWM is the worker process's peak since it started (its warm-up of every shape came
        # first), VmRSS its resident size at the end of this round; the max over repetitions.
        entry["worker_rss_kb_max"] = max(r["worker_rss_kb"].get("VmHWM", 0) for r in rows)
        entry["worker_peak_rss_mb"] = entry["worker_rss_kb_max"] / 1024
        entry["worker_rss_end_mb_max"] = (
            max(r["worker_rss_kb"].get("VmRSS", 0) for r in rows) / 1024
        )
        entry["redis_cmds_by_name_per_step_last"] = rows[-1]["redis_cmds_by_name_per_step"]
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(summary: dict[str, dict[str, Any]], latency: dict[str, dict[str, Any]],
          impls: list[str]) -> str:  # fmt: skip
    lines = [
        "| impl | shape | steps/s (median) | min-max | ours / impl | Redis cmds/step | "
        "EVALSHA/step | Redis CPU us/step | worker CPU us/step | worker RTT/step | "
        "worker peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in ("chain10", "fan10", "fan100"):
        ours = summary.get(f"ours/{shape}")
        for impl in impls:
            e = summary.get(f"{impl}/{shape}")
            if e is None:
                continue
            rel = "1.00x" if impl == "ours" else (
                f"{ratio(ours['steps_per_s'], e['steps_per_s']):.2f}x" if ours else "-"
            )  # fmt: skip
            lines.append(
                f"| {impl} | {shape} | {fmt(e['steps_per_s'])} | "
                f"{fmt(e['steps_per_s_min'])}-{fmt(e['steps_per_s_max'])} | {rel} | "
                f"{fmt(e['redis_cmds_per_step'], 1)} | {fmt(e['evalsha_per_step'], 2)} | "
                f"{fmt(e['redis_cpu_us_per_step'], 1)} | {fmt(e['worker_cpu_us_per_step'], 0)} | "
                f"{fmt(e['worker_rt_per_step'], 3)} | {fmt(e['worker_peak_rss_mb'], 1)} |"
            )
    if latency:
        lines += ["", "| impl | sequential chain10, runs | p50 ms | p99 ms | min ms | max ms | "
                  "impl p50 / ours p50 |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        ours_p50 = latency.get("ours", {}).get("p50_ms")
        for impl in impls:
            lat = latency.get(impl)
            if lat is None:
                continue
            rel = "1.00x" if impl == "ours" else (
                f"{lat['p50_ms'] / ours_p50:.2f}x" if ours_p50 else "-"
            )  # fmt: skip
            lines.append(
                f"| {impl} | {lat['runs']} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | "
                f"{lat['min_ms']:.2f} | {lat['max_ms']:.2f} | {rel} |"
            )
    return "\n".join(lines)


def cost_table(cost: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| ours, worker alone | runs | Redis cmds/step | EVALSHA/step | Redis CPU us/step | "
        "worker CPU us/step | worker RTT/step | client start: cmds/run, Redis CPU us/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape, c in cost.items():
        lines.append(
            f"| {shape} | {c['runs']} | {c['worker_redis_cmds_per_step']:.1f} | "
            f"{c['worker_evalsha_per_step']:.2f} | {c['worker_redis_cpu_us_per_step']:.1f} | "
            f"{c['worker_cpu_us_per_step']:.0f} | {c['worker_rt_per_step']:.3f} | "
            f"{c['client_start_cmds_per_run']:.1f}, {c['client_start_redis_cpu_us_per_run']:.0f} |"
        )
    return "\n".join(lines)


def summarize_reconciler(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for case in ("lost", "idle"):
        sel = [r for r in rows if r["case"] == case]
        if not sel:
            continue
        rates = [r["scanned_per_s"] for r in sel]
        out[case] = {
            "runs": sel[0]["runs"], "reps": len(sel),
            "scanned_per_s": statistics.median(rates), "scanned_per_s_min": min(rates),
            "scanned_per_s_max": max(rates),
            "reconciled_per_s": statistics.median(r["reconciled_per_s"] for r in sel),
            "reconciled_runs": sel[-1]["reconciled"],
            "elapsed_s": statistics.median(r["elapsed_s"] for r in sel),
            "redis_cmds_per_run": med(sel, "redis_cmds_per_run"),
            "redis_cpu_us_per_run": med(sel, "redis_cpu_us_per_run"),
            "client_cpu_us_per_run": med(sel, "client_cpu_us_per_run"),
            "redis_cmds_by_name_per_run_last": sel[-1]["redis_cmds_by_name_per_run"],
        }  # fmt: skip
    return out


def reconciler_table(rec: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| reconciler pass (no worker) | runs | scanned runs/s (median) | min-max | "
        "reconciled runs/s | Redis cmds/run | Redis CPU us/run | reconciler CPU us/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"lost": "stalled, start job lost", "idle": "healthy but idle (job queued)"}
    for case, e in rec.items():
        lines.append(
            f"| {names[case]} | {e['runs']} | {fmt(e['scanned_per_s'])} | "
            f"{fmt(e['scanned_per_s_min'])}-{fmt(e['scanned_per_s_max'])} | "
            f"{fmt(e['reconciled_per_s'])} | {fmt(e['redis_cmds_per_run'], 1)} | "
            f"{fmt(e['redis_cpu_us_per_run'], 1)} | {fmt(e['client_cpu_us_per_run'], 0)} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--impls", default=",".join(benchlib.IMPLS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chain-runs", type=int, default=200)
    ap.add_argument("--fan10-runs", type=int, default=200)
    ap.add_argument("--fan100-runs", type=int, default=50)
    ap.add_argument("--latency-runs", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=300.0, help="per round, seconds")
    ap.add_argument("--quick", action="store_true", help="tiny counts, 1 repetition (smoke)")
    ap.add_argument("--no-cost", action="store_true",
                    help="skip the worker-only Redis cost measurement of ours")  # fmt: skip
    ap.add_argument(
        "--reconcile-runs",
        type=int,
        default=2000,
        help="stalled / idle runs per reconciler pass (0 skips the reconciler)",
    )
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()
    if args.quick:
        args.reps, args.chain_runs, args.fan10_runs = 1, 20, 20
        args.fan100_runs, args.latency_runs = 5, 5
        args.reconcile_runs = min(args.reconcile_runs, 20)
    runs = {"chain10": args.chain_runs, "fan10": args.fan10_runs, "fan100": args.fan100_runs}
    impls = [i for i in args.impls.split(",") if i]
    missing = [i for i in impls if not benchlib.available(i)]
    if missing:
        print(f"skipping (not installed): {', '.join(missing)}", file=sys.stderr)
        impls = [i for i in impls if i not in missing]

    started = time.time()
    code_at_start = benchlib.code_identity()
    rounds: list[dict[str, Any]] = []
    latency: dict[str, dict[str, Any]] = {}
    cost: dict[str, dict[str, Any]] = {}
    rec_rounds: list[dict[str, Any]] = []
    with RedisServer() as srv:
        admin = redis.Redis.from_url(srv.url)
        redis_version = admin.info("server")["redis_version"]
        for rep in range(args.reps):
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
            for impl in order:
                admin.flushall()
                with benchlib.Session(impl, srv.url, args.concurrency) as s:
                    for shape in benchlib.IMPL_SHAPES[impl]:  # warm-up
                        s.run_batch(shape, min(20, runs[shape]), args.timeout)
                    for shape in benchlib.IMPL_SHAPES[impl]:
                        row = s.measure(shape, runs[shape], args.timeout)
                        row["rep"] = rep
                        rounds.append(row)
                        print(f"rep {rep} {impl:6s} {shape:7s} {row['steps_per_s']:10,.0f} steps/s",
                              file=sys.stderr, flush=True)  # fmt: skip
        for impl in impls:
            admin.flushall()
            with benchlib.Session(impl, srv.url, args.concurrency) as s:
                s.latency("chain10", 5)  # warm-up
                latency[impl] = s.latency("chain10", args.latency_runs)
        if "ours" in impls and not args.no_cost:
            for shape in benchlib.IMPL_SHAPES["ours"]:
                admin.flushall()
                cost[shape] = benchlib.worker_only_cost(srv.url, shape, runs[shape],
                                                        args.concurrency, args.timeout)  # fmt: skip
        if "ours" in impls and args.reconcile_runs > 0:  # no worker process is alive here
            with benchlib.ReconcilerBench(srv.url) as rb:
                for rep in range(args.reps):
                    for lost in (True, False):
                        row = rb.measure(args.reconcile_runs, lost)
                        row["rep"] = rep
                        rec_rounds.append(row)
                        print(f"rep {rep} reconciler {row['case']:4s} {row['scanned_per_s']:8,.0f} "
                              "scanned runs/s", file=sys.stderr, flush=True)  # fmt: skip
        admin.close()

    reconciler = summarize_reconciler(rec_rounds)
    summary = summarize(rounds)
    ratios = {}
    for key, e in summary.items():
        impl, shape = key.split("/")
        ours = summary.get(f"ours/{shape}")
        if impl != "ours" and ours:
            ratios[f"ours_over_{impl}/{shape}"] = {
                "steps_per_s": ratio(ours["steps_per_s"], e["steps_per_s"]),
                "redis_cpu_per_step_peer_over_ours": ratio(
                    e["redis_cpu_us_per_step"], ours["redis_cpu_us_per_step"]),
                "worker_cpu_per_step_peer_over_ours": ratio(
                    e["worker_cpu_us_per_step"], ours["worker_cpu_us_per_step"]),
            }  # fmt: skip
    for impl, lat in latency.items():
        if impl != "ours" and "ours" in latency:
            ratios[f"latency_p50_{impl}_over_ours"] = ratio(
                lat["p50_ms"], latency["ours"]["p50_ms"]
            )
    text = table(summary, latency, impls)
    if cost:
        text += "\n\n" + cost_table(cost)
    if reconciler:
        text += "\n\n" + reconciler_table(reconciler)
    print(text)
    result = {
        "date_utc": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "note": "shared/noisy 2-core VM; worker, client and Redis unpinned"},
        "redis_version": redis_version,
        "versions": benchlib.versions(),
        "code": code_at_start,
        "code_changed_during_run": benchlib.code_identity() != code_at_start,
        "params": {**vars(args), "runs": runs, "impls": impls},
        "summary": summary,
        "ratios": ratios,
        "latency": latency,
        "worker_only_cost_ours": cost,
        "reconciler": reconciler,
        "reconciler_rounds": rec_rounds,
        "rounds": rounds,
        "table_markdown": text,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if result["code_changed_during_run"]:
        print("WARNING: the measured package changed during the run", file=sys.stderr)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
