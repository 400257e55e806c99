"""In-memory engine against the TypeScript Flowcraft's in-memory FlowRuntime, in one run.

Both run the same blueprints (benches/workloads.py: chain10, fan10, and one 10,000-node chain)
with the same no-op nodes, one run after another in one process each: ours is `FlowRuntime.run`
in this process, theirs `FlowRuntime.run` under Node.js (benches/ts/memory.mjs, the npm package
pinned in benches/ts/package.json, installed on first use). Repetitions alternate between the
two; the table gives medians and ours/theirs ratios of the same repetition.

    python benches/memory.py                 # 3 repetitions, 2,000 runs per shape
    python benches/memory.py --reps 5 --runs 5000
    python benches/memory.py --quick         # smoke: tiny counts
Writes benches/results-memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import tspeer  # noqa: E402
import workloads  # noqa: E402

from flowcraft_fast import FlowRuntime, _core  # noqa: E402

LONG = 10_000


def shapes(runs: int, long_chain: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
    bps = [workloads.chain_blueprint(10), workloads.fan_blueprint(10)]
    counts = {"chain10": runs, "fan10": runs}
    if long_chain:
        bps.append(workloads.chain_blueprint(LONG))
        counts[f"chain{LONG}"] = 1
    return bps, counts


def expected(bp: dict[str, Any]) -> int:
    return len(bp["nodes"]) if bp["id"].startswith("chain") else 2 * (len(bp["nodes"]) - 2)


async def run_ours(
    bps: list[dict[str, Any]], counts: dict[str, int], warmup: int
) -> dict[str, Any]:
    registry = {"step": workloads.step, "sum": workloads.sum_inputs}
    runtime = FlowRuntime(blueprints=bps, registry=registry)
    out: dict[str, Any] = {}
    for bp in bps:
        runs = counts[bp["id"]]
        last = bp["nodes"][-1]["id"]
        for _ in range(min(warmup, runs)):
            await runtime.run(bp["id"], {})
        started = time.perf_counter()
        for _ in range(runs):
            result = await runtime.run(bp["id"], {})
        seconds = time.perf_counter() - started
        out[bp["id"]] = {
            "runs": runs,
            "steps": runs * len(bp["nodes"]),
            "seconds": seconds,
            "status": result.status,
            "value": result.context.get(last),
        }
    return out


def run_theirs(
    ts_dir: Path, bps: list[dict[str, Any]], counts: dict[str, int], warmup: int
) -> dict[str, Any]:
    spec = json.dumps({"blueprints": bps, "runs": counts, "warmup": warmup})
    done = subprocess.run(
        ["node", "memory.mjs"], input=spec, cwd=ts_dir, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"the TypeScript peer failed: {done.stderr.strip()[-800:]}")
    reply: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return reply


def check(name: str, bps: list[dict[str, Any]], results: dict[str, Any]) -> None:
    for bp in bps:
        got = results[bp["id"]]
        want = expected(bp)
        if name == "flowcraft" and bp["id"].startswith("fan"):
            want = 2  # its fan-in node gets one predecessor's output, not all (a known defect)
        if got["status"] != "completed" or got["value"] != want:
            raise AssertionError(f"{name} {bp['id']}: {got['status']} {got['value']!r} != {want}")


def measure(reps: int, runs: int, long_chain: bool, warmup: int) -> dict[str, Any]:
    bps, counts = shapes(runs, long_chain)
    ts_dir = tspeer.ensure_installed()
    rounds: list[dict[str, Any]] = []
    ts_version = None
    for rep in range(reps):
        ours = asyncio.run(run_ours(bps, counts, warmup))
        check("ours", bps, ours)
        entry: dict[str, Any] = {"rep": rep + 1, "ours": ours}
        if ts_dir is not None:
            theirs = run_theirs(ts_dir, bps, counts, warmup)
            ts_version = theirs["version"]
            check("flowcraft", bps, theirs["results"])
            entry["flowcraft"] = theirs["results"]
        rounds.append(entry)
    summary: dict[str, Any] = {}
    for bp in bps:
        shape = bp["id"]
        row: dict[str, Any] = {}
        for impl in ("ours", "flowcraft"):
            rates = [
                r[impl][shape]["steps"] / r[impl][shape]["seconds"] for r in rounds if impl in r
            ]
            secs = [r[impl][shape]["seconds"] for r in rounds if impl in r]
            if rates:
                row[impl] = {
                    "steps_per_s": statistics.median(rates),
                    "seconds": statistics.median(secs),
                }
        ratios = [
            (r["ours"][shape]["steps"] / r["ours"][shape]["seconds"])
            / (r["flowcraft"][shape]["steps"] / r["flowcraft"][shape]["seconds"])
            for r in rounds
            if "flowcraft" in r
        ]
        if ratios:
            row["ratio"] = {
                "median": statistics.median(ratios),
                "min": min(ratios),
                "max": max(ratios),
            }
        summary[shape] = row
    return {
        "versions": {
            "ours": _core.__version__,
            "flowcraft": ts_version,
            "python": platform.python_version(),
        },
        "reps": reps,
        "runs": counts,
        "summary": summary,
        "rounds": rounds,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| shape | ours steps/s | Flowcraft (TS) steps/s | ours/TS (median, min-max of reps) |",
        "|---|---:|---:|---:|",
    ]
    for shape, row in report["summary"].items():
        ours = row["ours"]
        theirs = row.get("flowcraft")
        ratio = row.get("ratio")
        if shape.startswith("chain") and shape != "chain10" and shape != "fan10":
            cell = f"{ours['seconds']:.2f} s"
            their_cell = f"{theirs['seconds']:.2f} s" if theirs else "skipped"
        else:
            cell = f"{ours['steps_per_s']:,.0f}"
            their_cell = f"{theirs['steps_per_s']:,.0f}" if theirs else "skipped"
        ratio_cell = (
            f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})" if ratio else "-"
        )
        lines.append(f"| {shape} | {cell} | {their_cell} | {ratio_cell} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--runs", type=int, default=2000, help="runs per shape (default 2000)")
    parser.add_argument("--quick", action="store_true", help="smoke: 1 rep, 20 runs, no long chain")
    parser.add_argument("--out", type=Path, default=HERE / "results-memory.json")
    args = parser.parse_args(argv)
    if args.quick:
        report = measure(1, 20, long_chain=False, warmup=2)
    else:
        report = measure(args.reps, args.runs, long_chain=True, warmup=200)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
