"""Distributed benchmarks: ours (flowcraft-fast) against bullmq and arq on the same Redis.

Each test drives ONE worker subprocess (benches/worker_main.py) from this process. Every
pytest-benchmark round is one batch: `runs` runs started at once, then all awaited; the steps/s,
Redis commands / CPU per step and worker CPU per step of each round go to `extra_info`.
Compare implementations with `--benchmark-group-by=group` (groups: throughput-<shape>,
latency-chain10). For one table with ratios use `python benches/run_all.py`.
"""

from __future__ import annotations

import statistics
from typing import Any

import benchlib
import pytest

CASES = [(impl, shape) for impl in benchlib.IMPLS for shape in benchlib.IMPL_SHAPES[impl]]


def _extra(benchmark: Any, rows: list[dict[str, Any]]) -> None:
    rates = [r["steps_per_s"] for r in rows]
    benchmark.extra_info.update(
        impl=rows[0]["impl"], shape=rows[0]["shape"], runs=rows[0]["runs"],
        steps_per_round=rows[0]["steps"], steps_per_s_median=statistics.median(rates),
        steps_per_s_rounds=rates,
    )  # fmt: skip
    last = rows[-1]
    for key in ("redis_cmds_per_step", "evalsha_per_step", "redis_cpu_us_per_step",
                "worker_cpu_us_per_step", "client_cpu_us_per_step", "worker_rt_per_step",
                "worker_rt_incl_wait_per_step", "worker_calls", "worker_rss_kb",
                "redis_cmds_by_name_per_step"):  # fmt: skip
        if key in last:
            benchmark.extra_info[key] = last[key]


@pytest.mark.parametrize(("impl", "shape"), CASES, ids=[f"{i}-{s}" for i, s in CASES])
def test_throughput(benchmark: Any, sessions: Any, counts: dict[str, int], impl: str,
                    shape: str) -> None:  # fmt: skip
    """Steps/s of one worker process with `counts[shape]` runs in flight."""
    session = sessions.get(impl)
    runs = counts[shape]
    session.run_batch(shape, min(runs, 20), 120)  # warm-up, untimed
    benchmark.group = f"throughput-{shape}"
    rows: list[dict[str, Any]] = []
    benchmark.pedantic(
        lambda: rows.append(session.measure(shape, runs, timeout=300)),
        rounds=counts["rounds"], iterations=1,
    )  # fmt: skip
    assert rows, "the benchmark did not run"
    _extra(benchmark, rows)
    if impl == "ours":
        # Round trips per step on the happy path (claims + commit batches + renews) stay <= 2;
        # with many runs in flight, batching keeps them far lower.
        assert rows[-1]["worker_rt_per_step"] <= 2.0, rows[-1]["worker_calls"]


@pytest.mark.parametrize("impl", benchlib.IMPLS)
def test_latency_chain10(benchmark: Any, sessions: Any, counts: dict[str, int],
                         impl: str) -> None:  # fmt: skip
    """One chain10 run at a time: enqueue -> result wall time (pytest-benchmark times each)."""
    session = sessions.get(impl)
    session.latency("chain10", 3)  # warm-up
    benchmark.group = "latency-chain10"
    samples: list[float] = []

    def one() -> None:
        row = session.latency("chain10", 1)
        samples.append(row["p50_ms"])

    benchmark.pedantic(one, rounds=counts["latency"], iterations=1)
    assert samples
    if len(samples) > 1:
        benchmark.extra_info.update(benchlib.percentiles([s / 1000 for s in samples]))
    benchmark.extra_info["runs"] = len(samples)
