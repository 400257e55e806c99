"""`sleep`: wait `params.duration` in process, then pass the input through."""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

from ..runtime.types import NodeContext

_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_ms(value: Any) -> float:
    """Milliseconds from a number of ms or a string like "250", "10s", "5m", "1h", "2d".

    Raises ValueError naming the bad value (negative, non-finite, unknown unit, wrong type).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(
            f"sleep duration must be milliseconds or a string like '10s', got {value!r}"
        )
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"sleep duration {value!r} is not <number><unit> with unit ms, s, m, h or d"
            )
        return float(match.group(1)) * _UNIT_MS[match.group(2) or "ms"]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"sleep duration must be a finite number >= 0, got {value!r}")
    return float(value)


async def sleep_node(ctx: NodeContext) -> Any:
    if "duration" not in ctx.params:
        raise ValueError(f"sleep node '{ctx.node_id}' needs params.duration")
    duration_ms = parse_duration_ms(ctx.params["duration"])
    await asyncio.sleep(duration_ms / 1000.0)
    return ctx.input
