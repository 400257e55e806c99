"""The app `flowcraft-fastd` serves in the distributed conformance tests.

`flowcraft-fastd --app conformance.distributed_app:runtime` (with `tests/` on PYTHONPATH and
FLOWCRAFT_LEDGER_URL naming the Redis that keeps the execution ledger).
"""

from __future__ import annotations

import os
from typing import Any

from flowcraft_fast import FlowRuntime

from .harness import load_cases
from .redis_ledger import RedisLedger
from .vocabulary import make_registry


def servable_blueprints() -> list[dict[str, Any]]:
    """Every valid blueprint of the cases (the invalid ones are refused at load)."""
    blueprints: list[dict[str, Any]] = []
    for case in load_cases():
        if "raises" not in case["expect"]:
            blueprints.append(case["blueprint"])
            blueprints.extend(case.get("extra_blueprints", []))
    return blueprints


def runtime() -> FlowRuntime:
    ledger = RedisLedger(os.environ["FLOWCRAFT_LEDGER_URL"])
    return FlowRuntime(
        blueprints=servable_blueprints(), registry=make_registry(), dependencies={"ledger": ledger}
    )
