"""`Stepper`: run a workflow in memory one node at a time (the TypeScript `createStepper`).

    async with Stepper(runtime, "order", {"id": 7}) as stepper:
        step = await stepper.next()        # runs the first node, returns what it did
        assert step.node_id == "fetch" and step.output == {...}
        stepper.context                    # the run's context now, between two steps
        result = await stepper.finish()    # the rest, at once

The run goes through a twin of the runtime (`traced_twin`) with concurrency 1 and an event bus
that holds each node at its `node:start` until `next()` lets it go; `next()` returns once the
node finished and its effects were committed (the next node waits at its start, or the run
ended). Parallel branches run one node per step, in the scheduler's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ..runtime import FlowRuntime, WorkflowResult
from .recorder import EventRecorder
from .runs import traced_twin
from .trace import RecordedEvent, Trace


@dataclass(frozen=True, slots=True)
class Step:
    """One node run by `Stepper.next()`: its id, input, output and action, or its error (a
    `{"message", "type"}` dict), and the events it emitted."""

    node_id: str
    input: Any = None
    output: Any = None
    action: str | None = None
    error: dict[str, Any] | None = None
    events: list[RecordedEvent] = field(default_factory=list)


class _Gate:
    """The stepper's event bus: holds each node at its start, then passes every event on to
    `bus` (the twin's recording bus)."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.waiting: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.go = asyncio.Semaphore(0)

    async def emit(self, event: Mapping[str, Any]) -> None:
        if event.get("type") == "node:start":
            await self.waiting.put(dict(event.get("payload") or {}))
            await self.go.acquire()
        outcome = self.bus.emit(event)
        if inspect.isawaitable(outcome):
            await outcome


class Stepper:
    def __init__(
        self,
        runtime: FlowRuntime,
        blueprint: Any,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        self.run_id = run_id or uuid.uuid4().hex
        self.recorder = EventRecorder()
        self._twin = traced_twin(runtime, self.recorder)
        # the gate in front of the twin's bus (which records, then forwards to the user's)
        self._gate = _Gate(self._twin.options.event_bus)
        self._twin.options = dataclasses.replace(self._twin.options, event_bus=self._gate)
        self._blueprint = blueprint
        self._context = context
        self._task: asyncio.Task[WorkflowResult] | None = None
        self._pending: dict[str, Any] | None = None

    @property
    def result(self) -> WorkflowResult | None:
        """The run's result once it ended, else None (also after `close()` stopped it)."""
        if self._task is None or not self._task.done() or self._task.cancelled():
            return None
        return self._task.result()

    @property
    def context(self) -> dict[str, Any]:
        """The run's context now (between two steps), or its final context once it ended."""
        result = self.result
        if result is not None:
            return result.context
        return self._twin.live_context(self.run_id) or dict(self._context or {})

    @property
    def trace(self) -> Trace:
        return self.recorder.trace(self.run_id)

    async def next(self) -> Step | None:
        """Run the next node to its end; None once the run has ended (`result` has it)."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._twin.run(self._blueprint, self._context, run_id=self.run_id, concurrency=1)
            )
        if self._pending is None:
            self._pending = await self._arrival()
            if self._pending is None:
                return None
        started = len(self.recorder.events)
        node = self._pending
        self._gate.go.release()
        self._pending = await self._arrival()
        events = [
            e for e in self.recorder.events[started:] if e.payload.get("runId") == self.run_id
        ]
        finish = next((e for e in events if e.type in ("node:finish", "node:error")), None)
        payload = finish.payload if finish is not None else {}
        result = payload.get("result") or {}
        return Step(
            node_id=str(node.get("nodeId")),
            input=node.get("input"),
            output=result.get("output"),
            action=result.get("action"),
            error=payload.get("error"),
            events=events,
        )

    async def _arrival(self) -> dict[str, Any] | None:
        """The next node held at its start, or None when the run ended first."""
        assert self._task is not None
        waiting = asyncio.ensure_future(self._gate.waiting.get())
        done, _ = await asyncio.wait({waiting, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            return waiting.result()
        waiting.cancel()
        self._task.result()  # an exception of the run (an invalid blueprint) propagates
        return None

    async def finish(self) -> WorkflowResult:
        """Run the rest without stopping; the run's result."""
        while await self.next() is not None:
            pass
        result = self.result
        assert result is not None
        return result

    async def close(self) -> None:
        """Stop the run if it has not ended (its task is cancelled)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def __aenter__(self) -> Stepper:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
