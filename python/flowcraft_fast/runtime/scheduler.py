"""The in-memory scheduler of one run: a sliding window over a ready queue.

It is a thin applier of the decisions made elsewhere: `executor.execute_node` runs a node,
`routing.route` picks its edges, `state.apply_arrivals` decides joins and dead paths. At most
`concurrency` node tasks are in flight; a new node starts as soon as one finishes. Nothing
recurses, so chains and fan-outs of any size run in constant stack depth.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..blueprint import thaw
from ..errors import FlowcraftError
from .context import MemoryContext
from .events import EventEmitter
from .executor import ExecutorServices, NodeOutcome, execute_node
from .graph import CONTINUE, RunGraph
from .inputs import resolve_input, start_input_key
from .routing import Evaluate, route
from .state import Arrival, RunState, apply_arrivals, reset_loop
from .types import NodeContext, NodeResult, RunStatus, WorkflowError

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class _Job:
    node_id: str
    edge_value: Any
    iteration: int
    stands_in_for: tuple[str, ...] = ()
    """For a fallback: the failed node(s) whose outgoing edges it inherits."""
    prior_errors: tuple[WorkflowError, ...] = ()


class RunScheduler:
    """Drives one run (or one resumed stretch of it) to a final status."""

    def __init__(
        self,
        *,
        services: ExecutorServices,
        events: EventEmitter,
        graph: RunGraph,
        state: RunState,
        context: MemoryContext,
        dependencies: Mapping[str, Any],
        run_id: str,
        evaluate: Evaluate,
        concurrency: int | None = None,
        cancel: asyncio.Event | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 (or None for no limit), got {concurrency}")
        self.services = services
        self.events = events
        self.graph = graph
        self.state = state
        self.context = context
        self.dependencies = dependencies
        self.run_id = run_id
        self.evaluate = evaluate
        self.concurrency = concurrency
        self.cancel = cancel
        self.logger = logger or services.logger
        self.errors: list[WorkflowError] = []
        self.stopped: Literal["failed", "cancelled"] | None = None
        self.run_cancelled = asyncio.Event()
        """Handed to every node as `ctx.cancelled`; set when the run fails or is cancelled."""
        self._ready: deque[_Job] = deque()
        self._in_flight: dict[asyncio.Task[tuple[NodeOutcome, Any]], _Job] = {}
        self._done: asyncio.Queue[asyncio.Task[tuple[NodeOutcome, Any]] | None] = asyncio.Queue()
        self.max_in_flight = 0
        """Largest number of node tasks seen in flight at once (for tests and metrics)."""

    # ------------------------------------------------------------------ seeding

    def seed_start_nodes(self) -> None:
        for node_id in self.graph.static.start_nodes:
            self.state.started.add(node_id)
            value = self.context.data.get(start_input_key(node_id))
            self._ready.append(_Job(node_id, value, self.state.iteration(node_id)))

    async def complete_externally(self, node_id: str, result: NodeResult) -> None:
        """Finish an awaiting node with a result supplied from outside (resume)."""
        self.state.awaiting.remove(node_id)
        await self._finish(node_id, result, ())

    # ------------------------------------------------------------------ the loop

    async def drive(self) -> RunStatus:
        watcher = asyncio.create_task(self._watch_cancel()) if self.cancel is not None else None
        try:
            while self.stopped is None:
                self._fill_window()
                if not self._in_flight:
                    break
                task = await self._done.get()
                if task is None:  # the caller's cancel event fired
                    self._stop("cancelled")
                    break
                job = self._in_flight.pop(task, None)
                if job is None or task.cancelled():
                    continue
                outcome, node_input = task.result()
                await self._handle(job, outcome, node_input)
        finally:
            if watcher is not None:
                watcher.cancel()
            await self._stop_in_flight()
        if self.stopped is not None:
            return self.stopped
        return "awaiting" if self.state.awaiting else "completed"

    def _fill_window(self) -> None:
        limit = self.concurrency
        while self._ready and (limit is None or len(self._in_flight) < limit):
            job = self._ready.popleft()
            task = asyncio.create_task(self._run_job(job), name=f"flowcraft:{job.node_id}")
            self._in_flight[task] = job
            task.add_done_callback(self._done.put_nowait)
        self.max_in_flight = max(self.max_in_flight, len(self._in_flight))

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

    # ------------------------------------------------------------------ one node

    async def _run_job(self, job: _Job) -> tuple[NodeOutcome, Any]:
        node = self.graph.node(job.node_id)
        data = self.context.data
        node_input = resolve_input(node, data, job.edge_value)
        if node_input is not None:
            data[start_input_key(node.id)] = node_input  # Flowcraft's `_inputs.<id>`
        ctx = NodeContext(
            context=self.context,
            input=node_input,
            params=thaw(node.params),
            dependencies=self.dependencies,
            run_id=self.run_id,
            node_id=node.id,
            cancelled=self.run_cancelled,
            blueprint_id=self.graph.blueprint.id,
            iteration=job.iteration,
        )
        return await execute_node(self.services, self.events, node, ctx), node_input

    async def _handle(self, job: _Job, outcome: NodeOutcome, node_input: Any) -> None:
        node_id = job.node_id
        if self.state.iteration(node_id) != job.iteration:
            self.logger.debug("dropping stale result of %r (loop moved on)", node_id)
            return
        if outcome.result is not None:
            if outcome.result.awaiting:
                self.state.awaiting.append(node_id)
                return
            await self._finish(node_id, outcome.result, job.stands_in_for)
            return
        assert outcome.error is not None
        node = self.graph.node(node_id)
        fallback = node.config.fallback
        chain = (*job.stands_in_for, node_id)
        if fallback is not None and fallback not in chain and self.graph.has_node(fallback):
            await self.events.emit("node:fallback", nodeId=node_id, fallback=fallback)
            self.state.started.add(fallback)
            self._ready.append(
                _Job(
                    fallback,
                    node_input,
                    self.state.iteration(fallback),
                    stands_in_for=chain,
                    prior_errors=(*job.prior_errors, outcome.error),
                )
            )
            return
        self.errors.extend((*job.prior_errors, outcome.error))
        self._stop("failed")

    async def _finish(self, node_id: str, result: NodeResult, owners: tuple[str, ...]) -> None:
        data = self.context.data
        output = result.output
        for finished_id in (node_id, *owners):
            self.state.finished.add(finished_id)
            data[f"_outputs.{finished_id}"] = output
            data[finished_id] = output
        try:
            if result.dynamic_nodes:
                self.graph.add_dynamic(node_id, result.dynamic_nodes, output)
        except FlowcraftError as exc:
            self.errors.append(WorkflowError.from_exception(node_id, exc))
            self._stop("failed")
            return
        if result.action == CONTINUE and self.graph.is_loop_controller(node_id):
            reset_loop(self.graph, self.state, node_id)
        decision = route(
            self.graph, node_id, output, result.action, data, self.evaluate, inherit_from=owners
        )
        if self.events.enabled:
            for ev in decision.evaluations:
                await self.events.emit(
                    "edge:evaluate",
                    source=ev.edge.source,
                    target=ev.edge.target,
                    condition=ev.edge.condition.source if ev.edge.condition else None,
                    result=ev.result,
                )
        arrivals = [Arrival(t.source, t.target, t.value) for t in decision.taken]
        arrivals.extend(Arrival(s, t, skipped=True) for s, t in decision.skipped)
        progress = apply_arrivals(self.graph, self.state, arrivals)
        for target, value in progress.fire:
            self._ready.append(_Job(target, value, self.state.iteration(target)))
        if self.events.enabled:
            for skipped in progress.skipped:
                await self.events.emit("node:skipped", nodeId=skipped)
