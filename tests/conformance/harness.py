"""Running a conformance case and checking its outcome, independent of how it is run.

`check_case(case, outcome)` holds every assertion; a mode (in memory, distributed) only has to
produce a `CaseOutcome`. `run_case_in_memory` is the in-memory mode.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowcraft_fast.runtime import FlowRuntime, WorkflowResult

from .vocabulary import Ledger, MemoryLedger, ledger_counts, make_registry

CASES_PATH = Path(__file__).with_name("cases.json")
"""The shared conformance cases (a copy of shared/conformance/cases.json, kept identical)."""
ENGINE_CASES_PATH = Path(__file__).with_name("engine_cases.json")
"""This project's own cases: one per rule the two modes must agree on (each says `why`)."""


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in (CASES_PATH, ENGINE_CASES_PATH):
        cases.extend(json.loads(path.read_text())["cases"])
    return cases


@dataclass
class CaseOutcome:
    """What running a case produced."""

    result: WorkflowResult | None = None
    raised: BaseException | None = None
    elapsed_ms: float = 0.0
    effects: dict[str, int] = field(default_factory=dict)
    resumed: WorkflowResult | None = None
    resumed_effects: dict[str, int] = field(default_factory=dict)


def check_case(case: dict[str, Any], outcome: CaseOutcome) -> None:
    """Assert that `outcome` meets `case["expect"]`."""
    expect = case["expect"]
    if "raises" in expect:
        assert outcome.raised is not None, f"expected {expect['raises']} to be raised"
        names = {cls.__name__ for cls in type(outcome.raised).__mro__}
        assert expect["raises"] in names, f"raised {outcome.raised!r}, not {expect['raises']}"
        return
    if outcome.raised is not None:
        raise AssertionError(f"the run raised {outcome.raised!r}") from outcome.raised
    assert outcome.result is not None
    check_result(expect, outcome.result, outcome.effects)
    if "min_elapsed_ms" in expect:
        assert outcome.elapsed_ms >= expect["min_elapsed_ms"], (
            f"run took {outcome.elapsed_ms:.0f} ms, expected >= {expect['min_elapsed_ms']}"
        )
    if "after_resume" in expect:
        assert outcome.resumed is not None, "the case expects a resume"
        check_result(expect["after_resume"], outcome.resumed, outcome.resumed_effects)


def check_result(expect: dict[str, Any], result: WorkflowResult, effects: dict[str, int]) -> None:
    assert result.status == expect["status"], (
        f"status {result.status!r}, expected {expect['status']!r}; errors: {result.errors}"
    )
    for key, value in expect.get("context", {}).items():
        assert key in result.context, f"context lacks {key!r}: {sorted(result.context)}"
        assert result.context[key] == value, f"context[{key!r}] = {result.context[key]!r}"
    for key in expect.get("absent", []):
        assert key not in result.context, f"context holds {key!r} = {result.context[key]!r}"
    for wanted in expect.get("errors", []):
        assert any(_error_matches(wanted, e) for e in result.errors), (
            f"no error matches {wanted}: {result.errors}"
        )
    for node_id, count in expect.get("effects", {}).items():
        assert effects.get(node_id, 0) == count, (
            f"node {node_id!r} ran {effects.get(node_id, 0)} times, expected {count}: {effects}"
        )


def _error_matches(wanted: dict[str, Any], error: Any) -> bool:
    if "node_id" in wanted and error.node_id != wanted["node_id"]:
        return False
    if "message_contains" in wanted and wanted["message_contains"] not in error.message:
        return False
    return "type" not in wanted or error.type == wanted["type"]


async def run_case_in_memory(case: dict[str, Any], ledger: Ledger | None = None) -> CaseOutcome:
    """Run `case` with `FlowRuntime.run` (and `resume`), counting effects in `ledger`."""
    ledger = ledger or MemoryLedger()
    runtime = FlowRuntime(
        blueprints=case.get("extra_blueprints", []),
        registry=make_registry(),
        dependencies={"ledger": ledger},
    )
    outcome = CaseOutcome()
    cancel: asyncio.Event | None = None
    timer: asyncio.TimerHandle | None = None
    if "cancel_after_ms" in case:
        cancel = asyncio.Event()
        timer = asyncio.get_running_loop().call_later(case["cancel_after_ms"] / 1000, cancel.set)
    started = time.monotonic()
    try:
        outcome.result = await runtime.run(
            case["blueprint"], case.get("context", {}), cancel=cancel
        )
    except Exception as exc:
        outcome.raised = exc
        return outcome
    finally:
        outcome.elapsed_ms = (time.monotonic() - started) * 1000
        if timer is not None:
            timer.cancel()
    outcome.effects = await ledger_counts(ledger, outcome.result.run_id)
    resume = case["expect"].get("then_resume")
    if resume is not None:
        data = {k: resume[k] for k in ("output", "action") if k in resume}
        outcome.resumed = await runtime.resume(
            case["blueprint"], outcome.result.serialized_context, data, resume.get("node_id")
        )
        outcome.resumed_effects = await ledger_counts(ledger, outcome.resumed.run_id)
    return outcome
