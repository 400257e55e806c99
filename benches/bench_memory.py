"""In-memory engine against the TypeScript Flowcraft's in-memory FlowRuntime (smoke in CI; the
table comes from `python benches/memory.py`). The TypeScript side runs when Node.js and npm are
present (installed from the npm registry on first use), and is skipped with the reason
otherwise; ours always runs. Every run's result is checked; no time is asserted."""

from __future__ import annotations

from typing import Any

import memory
import tspeer


def test_in_memory_against_flowcraft(counts: dict[str, int]) -> None:
    runs = max(5, counts["chain10"])
    report: dict[str, Any] = memory.measure(1, runs, long_chain=False, warmup=1)
    summary = report["summary"]
    assert set(summary) == {"chain10", "fan10"}
    for row in summary.values():
        assert row["ours"]["steps_per_s"] > 0
        if tspeer.ensure_installed() is not None:
            assert row["flowcraft"]["steps_per_s"] > 0 and row["ratio"]["median"] > 0
