"""The in-memory loop of one run: a sliding window over a ready queue of activations.

It only moves activations: `step.step` decides what one activation does, `ledger.MemoryLedger`
(the same rule as `commit.lua`) decides which activations a commit fires. At most
`concurrency` node tasks are in flight; a new one starts as soon as one finishes. Skip tokens
run no user code and are stepped inline. Nothing recurses, so chains and fan-outs of any size
run in constant stack depth.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..blueprint import NodeDefinition
from ..errors import FlowcraftError
from .buffered import BufferedContext
from .eager import Resumed
from .events import EventEmitter
from .graph import RunGraph
from .ledger import MemoryLedger
from .limits import LimitKeyError, groups, limited
from .step import (
    Activation,
    Failed,
    Finished,
    Outcome,
    Parked,
    Retry,
    activation_input,
    counts_against_limits,
    step,
)
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
        self._drivers: set[asyncio.Task[None]] = set()
        self._in_flight: dict[asyncio.Task[Any], tuple[Activation, BufferedContext]] = {}
        """Driver tasks waiting on a node (the node's task, as far as asyncio can tell)."""
        self._finished: asyncio.Future[None] | None = None
        self._caller: asyncio.Task[Any] | None = None
        """The task that called `drive`: the first driver."""
        self._caller_cancelled = False
        """`_stop` cancelled the node the caller's task was running (not someone else)."""
        self._node_vars = contextvars.copy_context()
        """The context variables the run's nodes see: a copy of the caller's, shared by the
        nodes of this run (as they would be by one task), never written back to the caller."""
        self.max_in_flight = 0
        """Largest number of node tasks seen in flight at once (for tests and metrics)."""

    # ------------------------------------------------------------------ seeding

    def seed_start_nodes(self, node_ids: Sequence[str] | None = None) -> None:
        """Ready the blueprint's start nodes (or `node_ids`: a fork starts at one node)."""
        starts = self.graph.static.start_nodes if node_ids is None else node_ids
        activations = [Activation(node_id, ()) for node_id in starts]
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
        """Run until nothing is ready or running, the run fails, or it is cancelled.

        Work is done by *drivers*, the caller's own task first. A driver takes ready
        activations and steps each one eagerly: an activation that finishes without waiting
        (most do) costs no task and no trip through the event loop, so a run that never waits
        runs without one. When a node does wait, its driver stays with it (so
        `asyncio.current_task()`, `asyncio.timeout` and cancellation behave as in a task of its
        own) and hands the rest of the work to a new driver task. At most `concurrency` nodes
        wait at once.
        """
        watcher = asyncio.create_task(self._watch_cancel()) if self.cancel is not None else None
        self._caller = asyncio.current_task()
        try:
            await self._driver(inline=True)
            if self._drivers:
                self._finished = asyncio.get_running_loop().create_future()
                await self._finished
        finally:
            self._caller = None
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

    def _spawn_driver(self) -> None:
        task = asyncio.create_task(self._driver(), name=f"flowcraft-run:{self.run_id}")
        self._drivers.add(task)
        task.add_done_callback(self._driver_done)

    def _driver_done(self, task: asyncio.Task[None]) -> None:
        self._drivers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._stop("failed")  # a defect in the loop itself: logged by _driver
        finished = self._finished  # set only while the caller waits for the last drivers
        if not self._drivers and finished is not None and not finished.done():
            finished.set_result(None)

    async def _driver(self, inline: bool = False) -> None:
        ready, data, limit, run_in = self._ready, self.data, self.concurrency, self._node_vars
        options, graph, events = self.options, self.graph, self.events
        run_id, cancelled = self.run_id, self.run_cancelled
        since_yield = 0
        try:
            while ready and self.stopped is None:
                if limit is not None and len(self._in_flight) >= limit:
                    return  # the driver whose node finishes first takes over
                act = ready.popleft()
                context = BufferedContext(data)
                coro = step(
                    options, graph, act, context, events, run_id=run_id, cancelled=cancelled
                )
                node = graph.get(act.node_id)  # dynamic nodes (batch workers) too
                if node is not None and limited(node) and counts_against_limits(act):
                    coro = _within_limits(options, graph, node, act, context, coro)
                try:
                    first = run_in.run(coro.send, None)
                except StopIteration as stop:
                    outcome = stop.value
                else:  # the node waits: stay with it, and let a new driver go on
                    task = asyncio.current_task()
                    assert task is not None
                    self._in_flight[task] = (act, context)
                    self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
                    self._spawn_driver()
                    try:
                        outcome = await Resumed(coro, first, run_in)
                    finally:
                        del self._in_flight[task]
                    since_yield = 0
                self._apply(act, context, outcome)
                since_yield += 1
                if since_yield >= YIELD_EVERY and ready:
                    since_yield = 0
                    await asyncio.sleep(0)  # a long run of eager steps lets others run too
        except asyncio.CancelledError:
            # the run failed or was cancelled and `_stop` cancelled the node this driver ran;
            # in the caller's task, only that request is ours to swallow
            if inline:
                caller = asyncio.current_task()
                if not self._caller_cancelled or caller is None:
                    raise
                self._caller_cancelled = False
                if caller.uncancel() > 0:
                    raise  # cancelled from outside as well
        except Exception:
            self.logger.exception("run %s: the in-memory loop failed", self.run_id)
            raise

    def _apply(self, act: Activation, context: BufferedContext, outcome: Outcome) -> None:
        if self.stopped is not None:
            return  # the run ended: like commit.lua, a late outcome changes nothing
        if isinstance(outcome, Finished):
            context.apply_to(self.data)
            committed = self.ledger.commit(act.key, outcome.arrivals)
            append = self._ready.append
            for fired in committed.fired:
                arrival = fired.arrival
                append(Activation(arrival.target, arrival.iteration, fired.input))
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
        self._stop("cancelled")

    def _stop(self, why: Literal["failed", "cancelled"]) -> None:
        if self.stopped is None:
            self.stopped = why
            self.run_cancelled.set()
            for task in list(self._in_flight):
                if task is self._caller:
                    self._caller_cancelled = True
                task.cancel()

    async def _stop_in_flight(self) -> None:
        """Cancel whatever still runs (the caller was cancelled, or the run stopped) and wait
        for it."""
        drivers = list(self._drivers)
        if not drivers:
            return
        self.run_cancelled.set()
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)


YIELD_EVERY = 64
"""Eager steps a driver runs back to back before it lets the event loop run other tasks."""


async def _within_limits(
    options: RuntimeOptions,
    graph: RunGraph,
    node: NodeDefinition,
    act: Activation,
    context: BufferedContext,
    coro: Coroutine[Any, Any, Outcome],
) -> Outcome:
    """`coro` (the node's step) once the node's concurrency slot and rate window allow it
    (limits.py: in memory, the runtime's limits hold across its runs in this process)."""
    try:
        node_input = activation_input(graph, node, act.edge_value, context)[1]
        g = groups(node, graph.static.blueprint.id, node_input, context.view(), options.evaluate)
    except LimitKeyError as exc:
        coro.close()
        return Failed([WorkflowError(node.id, str(exc), "LimitKeyError")])
    await options.flow_limits.acquire(g)
    try:
        return await coro
    finally:
        await options.flow_limits.release(g)
