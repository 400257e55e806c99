"""Attempts and backoff between them (pure; the caller sleeps or delays the job)."""

from __future__ import annotations

import random
from typing import Protocol

from ..blueprint import NodeConfig

MAX_BACKOFF_MS = 60_000.0
"""Upper bound of one backoff delay, whatever `retryDelay` and the attempt number say."""


class RandomSource(Protocol):
    def random(self) -> float: ...


def attempts_allowed(config: NodeConfig) -> int:
    """Total attempts (`maxRetries` is Flowcraft's name for the total, default 1)."""
    return config.max_retries


def should_retry(config: NodeConfig, failed_attempt: int) -> bool:
    """Whether another attempt follows the failed 1-based attempt `failed_attempt`."""
    return failed_attempt < config.max_retries


def backoff_delay_ms(
    config: NodeConfig,
    failed_attempt: int,
    rng: RandomSource | None = None,
    cap_ms: float = MAX_BACKOFF_MS,
) -> float:
    """Delay before the attempt that follows the failed attempt `failed_attempt` (1-based).

    Exponential: `retryDelay * 2**(failed_attempt - 1)`, capped at `cap_ms`, with "equal
    jitter": half of that delay is fixed and the other half is random, so the delay lies in
    [d/2, d]. Retries of many nodes that failed together spread out, yet the delay still grows
    with each attempt. `retryDelay` 0 gives no delay.
    """
    base = config.retry_delay_ms
    if base <= 0:
        return 0.0
    exponent = min(max(failed_attempt - 1, 0), 62)
    delay = min(cap_ms, base * (2.0**exponent))
    half = delay / 2.0
    return half + half * (rng or random).random()
