"""Reconciler keys per second (SPEC §8): one `create_bullmq_reconciler(...).run()` pass.

Each round seeds `counts["reconcile"]` chain10 runs with no worker consuming (blueprints
published by `BullMQAdapter.publish`, runs started by `FlowClient.start`), untimed, then times
one pass with `stalled_threshold_seconds=0`:
- `lost`: the runs' start jobs (hashes and wait list) were deleted, so every run is stalled and
  the pass re-enqueues its n0 job (reconciled runs per second);
- `idle`: the start jobs are still queued, so the pass scans every run and re-enqueues nothing
  (scan speed over healthy runs).
The pass checks its own counts (scanned = runs, reconciled = runs or 0, failed = 0).
"""

from __future__ import annotations

import statistics
from typing import Any

import benchlib
import pytest


@pytest.mark.parametrize("case", ["lost", "idle"])
def test_reconciler_pass(benchmark: Any, sessions: Any, redis_url: str,
                         counts: dict[str, int], case: str) -> None:  # fmt: skip
    sessions.close()  # no worker process alive: nothing consumes the seeded runs
    runs = counts["reconcile"]
    benchmark.group = "reconciler"
    rows: list[dict[str, Any]] = []
    with benchlib.ReconcilerBench(redis_url) as rb:

        def setup() -> None:
            rb.admin.flushall()
            rb.seed(runs, lost=case == "lost")

        benchmark.pedantic(lambda: rows.append(rb.timed_pass()), setup=setup,
                           rounds=counts["rounds"], iterations=1)  # fmt: skip
    assert rows, "the benchmark did not run"
    last = rows[-1]
    benchmark.extra_info.update(
        case=case, runs=runs,
        scanned_per_s_median=statistics.median(r["scanned_per_s"] for r in rows),
        reconciled_per_s_median=statistics.median(r["reconciled_per_s"] for r in rows),
        redis_cmds_per_run=last["redis_cmds_per_run"],
        redis_cpu_us_per_run=last["redis_cpu_us_per_run"],
        client_cpu_us_per_run=last["client_cpu_us_per_run"],
        redis_cmds_by_name_per_run=last["redis_cmds_by_name_per_run"],
    )  # fmt: skip
