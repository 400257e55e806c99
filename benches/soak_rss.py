"""Worker memory over a long run: one worker process of ours runs `--steps` chain10 steps.

The client keeps `--in-flight` runs going (batches started and awaited one after another) on a
private Redis; the worker's RSS is read from /proc at 10%, 50% and 100% of the steps (after a
warm-up of 2% that is not counted). Flat means the 100% figure is within a few MB of the 10%
one: nothing per job is kept.

    python benches/soak_rss.py                      # 1,000,000 steps (a few minutes)
    python benches/soak_rss.py --steps 20000        # smoke
Writes benches/results-soak.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402

from flowcraft_fast.devserver import RedisServer  # noqa: E402

SHAPE = "chain10"
MARKS = (0.10, 0.50, 1.00)


def soak(url: str, steps: int, in_flight: int) -> dict[str, Any]:
    per_run = benchlib.SHAPES[SHAPE]["steps"]
    runs_total = max(1, steps // per_run)
    samples: list[dict[str, Any]] = []
    with benchlib.Session("ours", url) as session:
        session.run_batch(SHAPE, max(1, runs_total // 50), 300)  # warm-up
        start_rss = benchlib.proc_rss_kb(session.worker.pid)
        done, marks = 0, list(MARKS)
        started = time.perf_counter()
        while done < runs_total:
            batch = min(in_flight, runs_total - done)
            session.run_batch(SHAPE, batch, 300)
            done += batch
            while marks and done >= marks[0] * runs_total:
                rss = benchlib.proc_rss_kb(session.worker.pid)
                samples.append(
                    {
                        "at": marks.pop(0),
                        "steps": done * per_run,
                        "rss_mb": round(rss["VmRSS"] / 1024, 1),
                        "peak_mb": round(rss["VmHWM"] / 1024, 1),
                        "elapsed_s": round(time.perf_counter() - started, 1),
                    }
                )
                print(f"{samples[-1]['steps']:>9,} steps: worker RSS {samples[-1]['rss_mb']} MB")
    return {
        "shape": SHAPE,
        "steps": runs_total * per_run,
        "in_flight": in_flight,
        "rss_after_warmup_mb": round(start_rss["VmRSS"] / 1024, 1),
        "samples": samples,
        "growth_10_to_100_mb": round(samples[-1]["rss_mb"] - samples[0]["rss_mb"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--out", default=str(HERE / "results-soak.json"))
    args = parser.parse_args()
    with RedisServer() as server:
        result = soak(server.url, args.steps, args.in_flight)
    result["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["command"] = " ".join(["python", "benches/soak_rss.py", *sys.argv[1:]])
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    growth = result["growth_10_to_100_mb"]
    print(f"growth from 10% to 100%: {growth:+.1f} MB; wrote {args.out}")


if __name__ == "__main__":
    main()
