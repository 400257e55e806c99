"""Every conformance case, run in memory with FlowRuntime."""

from __future__ import annotations

from typing import Any

import pytest

from .harness import check_case, load_cases, run_case_in_memory

CASES = load_cases()


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_case_in_memory(case: dict[str, Any]) -> None:
    check_case(case, await run_case_in_memory(case))
