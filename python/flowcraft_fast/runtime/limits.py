"""Flow control (SPEC section 10): which groups a node's job counts against, and the in-memory
enforcement.

One rule for both modes: a node's `config.concurrency` and `config.rateLimit` keys are
evaluated here (`groups`), over the node's `input` and the run's `context`, to a group name;
in memory `MemoryLimits` holds the slots and windows of a runtime (every run of it, within the
process); distributed, the worker hands the names to Redis (rust/src/scripts/limit.lua), where
the whole fleet shares them.

A group name is the key's value when it is a string, else its canonical JSON; a rate limit
without a key has one group per node (`node:<blueprint id>/<node id>`). Different nodes (and
blueprints) whose keys give the same value share the group: a string literal is a global group.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..blueprint import NodeDefinition
from ..expressions import Expression

MAX_GROUP_BYTES = 1024
"""A key value longer than this (UTF-8) fails the node: a group name is stored in Redis."""


class LimitKeyError(ValueError):
    """A limit's key evaluated to nothing usable (null, or too long)."""


@dataclass(frozen=True, slots=True)
class Groups:
    """The groups one job of a node counts against (None: that limit is not set)."""

    concurrency: str | None
    limit: int
    rate: str | None
    rate_max: int
    rate_per_ms: int

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def digest(name: str) -> str:
        """The short, key-safe id of a group in Redis keys (rust/src/keys.rs)."""
        return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:20]


def limited(node: NodeDefinition) -> bool:
    return node.config.concurrency is not None or node.config.rate_limit is not None


def _name(value: Any, what: str) -> str:
    if value is None:
        raise LimitKeyError(f"{what} evaluated to null")
    name = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(name.encode()) > MAX_GROUP_BYTES:
        raise LimitKeyError(f"{what} is over {MAX_GROUP_BYTES} bytes")
    return name


def groups(
    node: NodeDefinition,
    blueprint_id: str,
    node_input: Any,
    context: Mapping[str, Any],
    evaluate: Callable[[Expression, Mapping[str, Any]], Any],
) -> Groups:
    """The groups of a job of `node` (call only when `limited(node)`); LimitKeyError when a
    key gives null or an over-long value (the node fails with that reason)."""
    scope = {"input": node_input, "context": context}
    conc, rate = node.config.concurrency, node.config.rate_limit
    conc_group = None
    if conc is not None:
        conc_group = _name(evaluate(conc.key, scope), f"concurrency key {conc.key.source!r}")
    rate_group = None
    if rate is not None:
        if rate.key is None:
            rate_group = f"node:{blueprint_id}/{node.id}"
        else:
            rate_group = _name(evaluate(rate.key, scope), f"rateLimit key {rate.key.source!r}")
    return Groups(
        conc_group,
        conc.limit if conc is not None else 0,
        rate_group,
        rate.max if rate is not None else 0,
        rate.per_ms if rate is not None else 0,
    )


class MemoryLimits:
    """The slots and rate windows of one runtime, shared by all its runs in this process.

    A job over a concurrency limit waits for a slot (first come, first served per group); a job
    over a rate limit waits for the next window. Nothing polls: waiters sleep on a condition or
    until the window ends."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[str, int] = {}
        self._freed: dict[str, asyncio.Condition] = {}
        self._windows: dict[str, tuple[int, int]] = {}
        """rate group -> (window index, starts in it)."""

    def stats(self) -> dict[str, int]:
        """Running jobs per concurrency group (for tests and inspection)."""
        return {g: n for g, n in self._running.items() if n}

    def _on_this_loop(self) -> None:
        """A runtime may serve several event loops in turn (asyncio.run per call): nothing of
        an earlier loop is running any more, and its conditions cannot be awaited here."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._running.clear()
            self._freed.clear()

    async def acquire(self, g: Groups) -> None:
        self._on_this_loop()
        group = g.concurrency
        if group is not None:
            freed = self._freed.setdefault(group, asyncio.Condition())
            async with freed:
                await freed.wait_for(lambda: self._running.get(group, 0) < g.limit)
                self._running[group] = self._running.get(group, 0) + 1
        if g.rate is not None:
            try:
                await self._start_in_window(g)
            except BaseException:
                await self.release(g)
                raise

    async def _start_in_window(self, g: Groups) -> None:
        assert g.rate is not None
        while True:
            now = time.monotonic() * 1000
            window = int(now // g.rate_per_ms)
            index, starts = self._windows.get(g.rate, (window, 0))
            if index != window:
                starts = 0
            if starts < g.rate_max:
                self._windows[g.rate] = (window, starts + 1)
                return
            await asyncio.sleep(((window + 1) * g.rate_per_ms - now) / 1000)

    async def release(self, g: Groups) -> None:
        if g.concurrency is None:
            return
        freed = self._freed[g.concurrency]
        async with freed:
            self._running[g.concurrency] -= 1
            freed.notify(1)
