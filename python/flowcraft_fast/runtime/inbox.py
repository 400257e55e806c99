"""Events for in-memory runs (`FlowRuntime.send_event`), the twin of event.lua.

An event for a run that is executing goes straight into its context as `_events.<name>`: the
`wait-for-event` node takes it when it runs (nodes/wait_event.py); if the node had already
parked, the run is resumed with it as soon as its drive ends. An event for a run id that is not
executing waits here until a run with that id starts (bounded: the oldest run's events go
first). An awaiting result is resumed (or gets the event buffered) by `deliver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ..blueprint import Blueprint
from .vocabulary import EVENT, EVENT_WAIT, LEDGER_KEY, split_node_key

MAX_PENDING_RUNS = 10_000
"""Run ids whose events wait for their run to start, at most (the oldest are dropped)."""


class EventInbox:
    def __init__(self) -> None:
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._live: dict[str, dict[str, Any]] = {}
        self._arrived: dict[str, asyncio.Event] = {}

    def send(self, run_id: str, name: str, payload: Any) -> str:
        """`"buffered"` into a live run's context, or `"pending"` until the run starts."""
        live = self._live.get(run_id)
        if live is not None:
            live[EVENT + name] = payload
            arrived = self._arrived.get(run_id)
            if arrived is not None:
                arrived.set()
            return "buffered"
        events = self._pending.setdefault(run_id, {})
        self._pending.move_to_end(run_id)
        events[name] = payload
        while len(self._pending) > MAX_PENDING_RUNS:
            self._pending.popitem(last=False)
        return "pending"

    def attach(self, run_id: str, data: dict[str, Any]) -> None:
        """A run starts (or resumes) with `data` as its context: events sent before it go in."""
        for name, payload in self._pending.pop(run_id, {}).items():
            data[EVENT + name] = payload
        self._live[run_id] = data

    def live(self, run_id: str) -> dict[str, Any] | None:
        """The context of a run executing now, else None."""
        return self._live.get(run_id)

    def detach(self, run_id: str) -> None:
        self._live.pop(run_id, None)
        self._arrived.pop(run_id, None)

    async def wait(self, run_id: str, data: dict[str, Any], seconds: float) -> None:
        """Until an event for the run arrives (into `data`) or `seconds` pass."""
        self.attach(run_id, data)
        arrived = self._arrived.setdefault(run_id, asyncio.Event())
        try:
            if not any(ready_waiters(data)):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), max(0.0, seconds))
        finally:
            self.detach(run_id)


def ready_waiters(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(event name, node id) of parked `wait-for-event` nodes whose event has arrived."""
    for key, activation in list(data.items()):
        if key.startswith(EVENT_WAIT):
            name = key.removeprefix(EVENT_WAIT)
            if EVENT + name in data:
                yield name, split_node_key(str(activation))[1]


def with_event(serialized: str, name: str, payload: Any) -> tuple[dict[str, Any], str | None]:
    """An awaiting run's serialized context with the event in it, and the node waiting for it
    (None: no node waits for this event yet; it stays buffered for the one that will)."""
    data = json.loads(serialized)
    if not isinstance(data, dict) or LEDGER_KEY not in data:
        raise ValueError("not the serialized context of an awaiting run")
    waiter = data.get(EVENT_WAIT + name)
    data[EVENT + name] = payload
    return data, None if waiter is None else split_node_key(str(waiter))[1]


def event_timeouts(bp: Blueprint, data: dict[str, Any]) -> dict[str, float]:
    """Node id -> timeout (ms) of the parked `wait-for-event` nodes that have one."""
    from ..nodes.wait_event import event_timeout_ms

    found: dict[str, float] = {}
    for key, activation in data.items():
        if key.startswith(EVENT_WAIT):
            node_id = split_node_key(str(activation))[1]
            node = bp.node(node_id)
            timeout = event_timeout_ms(node.params, node_id) if node is not None else None
            if timeout is not None:
                found[node_id] = timeout
    return found
