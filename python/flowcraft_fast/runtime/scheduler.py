"""The in-memory loop of one run: a sliding window over a ready queue of activations.

It only moves activations: `step.step` decides what one activation does, `ledger.MemoryLedger`
(the same rule as `commit.lua`) decides which activations a commit fires. At most
`concurrency` node tasks are in flight; a new one starts as soon as one finishes. Skip tokens
run no user code and are stepped inline. Nothing recurses, so chains and fan-outs of any size
run in constant stack depth.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from ..errors import FlowcraftError
from .buffered import BufferedContext
from .events import EventEmitter
from .graph import RunGraph
from .ledger import SKIPPED, MemoryLedger
from .step import Activation, Failed, Finished, Outcome, Parked, Retry, step
from .types import RunStatus, WorkflowError
from .vocabulary import split_node_key

if TYPE_CHECKING:
    from .runtime import RuntimeOptions


class RunStalled(FlowcraftError):
    """Activations were created that never ran: an engine defect, never a silent success."""


class RunScheduler:
    """Drives one run (or one resumed stretch of it) to a final status."""

    def __init__(
        self,
        *,
        options: RuntimeOptions,
        events: EventEmitter,
        graph: RunGraph,
        ledger: MemoryLedger,
        data: dict[str, Any],
        run_id: str,
        concurrency: int | None = None,
        cancel: asyncio.Event | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 (or None for no limit), got {concurrency}")
        self.options = options
        self.events = events
        self.graph = graph
        self.ledger = ledger
        self.data = data
        self.run_id = run_id
        self.concurrency = concurrency
        self.cancel = cancel
        self.logger = logger or options.logger
        self.errors: list[WorkflowError] = []
        self.stopped: Literal["failed", "cancelled"] | None = None
        self.run_cancelled = asyncio.Event()
        """Handed to every node as `ctx.cancelled`; set when the run fails or is cancelled."""
        self._ready: deque[Activation] = deque()
        self._in_flight: dict[asyncio.Task[Outcome], tuple[Activation, BufferedContext]] = {}
        self._done: asyncio.Queue[asyncio.Task[Outcome] | None] = asyncio.Queue()
        self.max_in_flight = 0
        """Largest number of node tasks seen in flight at once (for tests and metrics)."""

    # ------------------------------------------------------------------ seeding

    def seed_start_nodes(self) -> None:
        activations = [Activation(node_id, ()) for node_id in self.graph.static.start_nodes]
        self.ledger.start(a.key for a in activations)
        self._ready.extend(activations)

    def resume_at(self, key: str, resume: Mapping[str, Any]) -> None:
        """Run the parked activation `key` again with a result given from outside."""
        text, node_id = split_node_key(key)
        iteration = self.graph.parse_iteration(node_id, text)
        self.ledger.unpark(key)
        self._ready.append(Activation(node_id, iteration, resumed=resume))

    # ------------------------------------------------------------------ the loop

    async def drive(self) -> RunStatus:
        watcher = asyncio.create_task(self._watch_cancel()) if self.cancel is not None else None
        try:
            while self.stopped is None:
                await self._fill_window()
                if not self._in_flight:
                    break
                task = await self._done.get()
                if task is None:  # the caller's cancel event fired
                    self._stop("cancelled")
                    break
                entry = self._in_flight.pop(task, None)
                if entry is None or task.cancelled():
                    continue
                act, context = entry
                try:
                    outcome = task.result()
                except Exception as exc:  # a defect below the step: fail the run, loudly
                    self.logger.exception("stepping node %r failed", act.node_id)
                    outcome = Failed([WorkflowError.from_exception(act.node_id, exc)])
                self._apply(act, context, outcome)
        finally:
            if watcher is not None:
                watcher.cancel()
            await self._stop_in_flight()
        if self.stopped is not None:
            return self.stopped
        if self.ledger.awaiting:
            return "awaiting"
        never_ran = self.ledger.fired - self.ledger.done
        if never_ran:  # the ledger and the loop disagree: say so, never report success
            self.errors.append(
                WorkflowError.from_exception(
                    None,
                    RunStalled(
                        f"activations {sorted(never_ran)} were created but never ran "
                        "(an engine defect; please report it)"
                    ),
                )
            )
            return "stalled"
        return "completed"

    async def _fill_window(self) -> None:
        limit = self.concurrency
        ready = self._ready
        while ready and self.stopped is None and (limit is None or len(self._in_flight) < limit):
            act = ready.popleft()
            context = BufferedContext(self.data)
            if act.edge_value is SKIPPED:  # no user code: step it here
                self._apply(act, context, await self._step(act, context))
                continue
            task = asyncio.create_task(self._step(act, context), name=f"flowcraft:{act.node_id}")
            self._in_flight[task] = (act, context)
            task.add_done_callback(self._done.put_nowait)
        self.max_in_flight = max(self.max_in_flight, len(self._in_flight))

    def _step(self, act: Activation, context: BufferedContext) -> Any:
        return step(
            self.options,
            self.graph,
            act,
            context,
            self.events,
            run_id=self.run_id,
            cancelled=self.run_cancelled,
        )

    def _apply(self, act: Activation, context: BufferedContext, outcome: Outcome) -> None:
        if isinstance(outcome, Finished):
            context.apply_to(self.data)
            committed = self.ledger.commit(act.key, outcome.arrivals)
            for fired in committed.fired:
                arrival = fired.arrival
                self._ready.append(Activation(arrival.target, arrival.iteration, fired.input))
        elif isinstance(outcome, Parked):
            context.apply_to(self.data)  # e.g. a subflow's awaiting child
            self.ledger.park(act.key, act.node_id)
        elif isinstance(outcome, Failed):
            self.errors.extend(outcome.errors)
            self._stop("failed")
        elif isinstance(outcome, Retry):  # pragma: no cover - attempts run in process here
            raise AssertionError("the in-memory loop runs every attempt in process")

    async def _watch_cancel(self) -> None:
        assert self.cancel is not None
        await self.cancel.wait()
        self._done.put_nowait(None)

    def _stop(self, why: Literal["failed", "cancelled"]) -> None:
        if self.stopped is None:
            self.stopped = why
            self.run_cancelled.set()

    async def _stop_in_flight(self) -> None:
        if not self._in_flight:
            return
        self.run_cancelled.set()
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()
