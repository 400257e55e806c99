"""`EventRecorder`: an event bus that keeps every event in memory, for tests.

Give it to a runtime (`FlowRuntime(..., event_bus=recorder)`) and the distributed workers
built from that runtime's options record there too, since `BullMQAdapter` emits through
`runtime_options.event_bus`. `recorder.wrap(bus)` records and forwards to another bus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .trace import RecordedEvent, Trace

Match = Callable[[RecordedEvent], bool]


class EventRecorder:
    """Records `{"type": ..., "payload": {...}}` events in the order they were emitted.

    `events` is the live list; `names()`, `for_node()`, `for_run()` and `of_type()` filter
    it (the last three as a `Trace`, which renders); `clear()` forgets everything;
    `await wait_for(type, run_id=...)` waits until such an event has been recorded.

    `emit` is synchronous and cheap, so the runtime never waits on it. Events are recorded
    from the event loop that runs the nodes (the runtime emits there); `wait_for` may be
    awaited from another loop.
    """

    __slots__ = ("_waiters", "events")

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self._waiters: list[tuple[Match, asyncio.Future[RecordedEvent]]] = []

    # ------------------------------------------------------------------ the bus

    def emit(self, event: Mapping[str, Any]) -> None:
        recorded = RecordedEvent.from_emitted(event)
        self.events.append(recorded)
        if self._waiters:
            self._wake(recorded)

    def wrap(self, bus: Any) -> Any:
        """An event bus that records each event here, then hands it to `bus` (whose `emit`
        may be sync or async, as the runtime allows). `bus=None` gives this recorder, and a
        bus that records here already is returned as it is (nothing is recorded twice)."""
        if bus is None:
            return self
        if bus is self or (isinstance(bus, _Forwarding) and bus.recorder is self):
            return bus
        return _Forwarding(self, bus)

    # ------------------------------------------------------------------ reading

    def trace(self, run_id: str | None = None) -> Trace:
        """Everything recorded, or the events of run `run_id` and its subflows' runs."""
        everything = Trace(self.events)
        return everything if run_id is None else everything.for_run(run_id)

    def names(self, run_id: str | None = None) -> list[str]:
        """The recorded event types in order (of one run when `run_id` is given)."""
        return self.trace(run_id).names()

    def for_node(self, node_id: str) -> Trace:
        return self.trace().for_node(node_id)

    def for_run(self, run_id: str, *, subflows: bool = True) -> Trace:
        return self.trace().for_run(run_id, subflows=subflows)

    def of_type(self, *types: str) -> Trace:
        return self.trace().of_type(*types)

    def clear(self) -> None:
        """Forget the recorded events (waiters keep waiting for new ones)."""
        self.events.clear()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[RecordedEvent]:
        return iter(list(self.events))

    def __str__(self) -> str:
        return self.trace().render()

    def __repr__(self) -> str:
        return f"<EventRecorder: {len(self.events)} events>"

    # ------------------------------------------------------------------ waiting

    async def wait_for(
        self,
        event_type: str,
        *,
        run_id: str | None = None,
        node_id: str | None = None,
        timeout: float = 10.0,
    ) -> RecordedEvent:
        """The first recorded event of `event_type` (of run `run_id`, about node `node_id`,
        when given), waiting up to `timeout` seconds for it. Raises AssertionError, with
        what was recorded, when none came: a test fails saying what happened instead."""

        def match(event: RecordedEvent) -> bool:
            return (
                event.type == event_type
                and (run_id is None or event.run_id == run_id)
                and (node_id is None or event.node_id == node_id)
            )

        for event in list(self.events):
            if match(event):
                return event
        future: asyncio.Future[RecordedEvent] = asyncio.get_running_loop().create_future()
        waiter = (match, future)
        self._waiters.append(waiter)
        started = time.monotonic()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            of = "".join(
                f" {label} {value!r}"
                for label, value in (("of run", run_id), ("about node", node_id))
                if value is not None
            )
            waited = time.monotonic() - started
            raise AssertionError(
                f"no {event_type} event{of} within {waited:.1f} s; "
                f"recorded so far:\n{self.trace(run_id)}"
            ) from None
        finally:
            self._waiters.remove(waiter)

    def _wake(self, event: RecordedEvent) -> None:
        for match, future in list(self._waiters):
            if future.done() or not match(event):
                continue
            loop = future.get_loop()
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                future.set_result(event)
            else:  # recorded from another thread or loop
                loop.call_soon_threadsafe(_resolve, future, event)


def _resolve(future: asyncio.Future[RecordedEvent], event: RecordedEvent) -> None:
    if not future.done():
        future.set_result(event)


class _Forwarding:
    """Records an event, then passes it on (`EventRecorder.wrap`)."""

    __slots__ = ("bus", "recorder")

    def __init__(self, recorder: EventRecorder, bus: Any) -> None:
        self.recorder = recorder
        self.bus = bus

    def emit(self, event: Mapping[str, Any]) -> Any:
        self.recorder.emit(event)
        return self.bus.emit(event)  # an awaitable is awaited by the runtime

    def __repr__(self) -> str:
        return f"<{self.recorder!r} forwarding to {self.bus!r}>"
