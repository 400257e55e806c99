"""The step: one activation of a node to exactly one outcome, the same in both modes.

The in-memory scheduler (`runtime.scheduler`) and the distributed worker (`distributed.worker`)
both call `step`; they differ only in where the run's state lives and how activations travel
(a Python queue, or BullMQ jobs committed by `commit.lua`). Everything a rule decides happens
here or below:

- a skip token (a dead path passing through) runs no user code and passes the skip on;
- the node's input (`inputs.resolve_input`), its attempts (`executor.execute_node`);
- a failed attempt that has attempts left: `Retry` (distributed; in memory the executor runs
  every attempt in process);
- a node that failed for good: its fallback, then the fallback's own fallback, and so on (a
  chain never visits a node twice); each runs with its own `inputs`, else the input of the
  node it stands in for, and the last one that succeeds finishes for the whole chain;
- a `wait` node, or a subflow whose child awaits: `Parked`; resuming it (`Activation.resumed`)
  finishes it with the given output and action, resuming the child first for a subflow;
- a finished node: its outputs and dynamic nodes written to its buffered context, its routing
  decision (`routing.route`) and the arrivals that decision makes at each successor's
  activation (`graph.target_iteration`), for the ledger to decide (`ledger`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..blueprint import NodeDefinition, thaw
from ..errors import FlowcraftError
from .buffered import BufferedContext
from .events import EventEmitter
from .executor import NodeOutcome, check_result, direct_impl, execute_node, plain_result
from .graph import RunGraph
from .inputs import resolve_input
from .ledger import SKIPPED, Arrival
from .retry import backoff_delay_ms, should_retry
from .routing import RoutingDecision, route
from .types import NodeContext, NodeResult, WorkflowError
from .vocabulary import (
    BATCH_PREFIX,
    DYNAMIC_PREFIX,
    GATHER_USES,
    INPUTS_PREFIX,
    OUTPUTS_PREFIX,
    SCATTER_USES,
    Iteration,
    Sentinel,
    batch_worker_id,
    node_key,
)

if TYPE_CHECKING:
    from .runtime import RuntimeOptions


FROM_CONTEXT: Any = Sentinel("FROM_CONTEXT")
"""A start activation's edge value: read `_inputs.<id>` from the context."""


@dataclass(slots=True)  # a value; not frozen, since frozen ones cost twice as much to build
class Activation:
    """One activation of a node: what its incoming edges carried, and how it is run."""

    node_id: str
    iteration: Iteration
    edge_value: Any = FROM_CONTEXT
    """The join's value; `SKIPPED` for a skip token; `FROM_CONTEXT` for a start node."""
    attempt: int = 1
    """The first attempt to run (1-based)."""
    resumed: Mapping[str, Any] | None = None
    """`{"output": ..., "action": ...}` given to a parked node from outside."""
    failed: WorkflowError | None = None
    """The node failed before it could run (its job stalled past the worker's stall limit):
    no attempt runs, its fallback chain does, else the run fails with this error."""

    @property
    def key(self) -> str:
        return node_key(self.node_id, self.iteration)


@dataclass(slots=True)
class Finished:
    """The activation finished: commit its writes and arrivals."""

    node_id: str
    """The node whose result this is (a fallback's id when one stood in)."""
    owners: tuple[str, ...]
    """The failed nodes a fallback stands in for, the activation's own node first."""
    result: NodeResult | None
    """None for a skip token."""
    decision: RoutingDecision
    arrivals: list[Arrival] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Retry:
    """The attempt failed and another follows after `delay_ms` (one attempt per job)."""

    delay_ms: float
    error: WorkflowError
    exception: BaseException | None = field(default=None, compare=False)
    """The exception the attempt raised (its traceback for logs and the job's stacktrace)."""


@dataclass(frozen=True, slots=True)
class Parked:
    """The node waits (`wait`, or a subflow whose child awaits) until it is resumed."""

    node_id: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The node failed for good (its fallbacks too): the run fails with these errors."""

    errors: list[WorkflowError]
    exceptions: tuple[BaseException, ...] = field(default=(), compare=False)
    """The exceptions behind `errors` that were raised (their tracebacks), in order."""


Outcome = Finished | Retry | Parked | Failed


def counts_against_limits(act: Activation) -> bool:
    """Whether running `act` starts the node's own code, so counts against its concurrency and
    rate limits (limits.py): not a skip passing through, a resume, or a failure's fallback."""
    return act.edge_value is not SKIPPED and act.resumed is None and act.failed is None


def activation_input(
    graph: RunGraph, node: NodeDefinition, edge_value: Any, context: BufferedContext
) -> tuple[Any, Any]:
    """(what the edges carried, the node's input): a start node's value comes from the
    context; a node declaring `inputs` reads them (`resolve_input`)."""
    if edge_value is FROM_CONTEXT:
        edge_value = context.view().get(f"{INPUTS_PREFIX}{node.id}")
    if node.inputs is None:  # most nodes: what the edges carry (`resolve_input`'s first rule)
        return edge_value, edge_value
    transformed = node.id in graph.static.transformed_targets
    return edge_value, resolve_input(node, context.view(), edge_value, transformed)


async def step(
    options: RuntimeOptions,
    graph: RunGraph,
    act: Activation,
    context: BufferedContext,
    events: EventEmitter,
    *,
    run_id: str,
    cancelled: asyncio.Event,
    attempts: Sequence[int] | None = None,
) -> Outcome:
    """Run `act` to one outcome. `attempts`: the attempt numbers to run here (None: every
    attempt of the node, in process; the distributed worker runs one per job)."""
    node_id = act.node_id
    if act.edge_value is SKIPPED:  # a dead path passing through: no user code runs
        if events.enabled:
            await events.emit("node:skipped", nodeId=node_id)
        targets = dict.fromkeys(e.target for e in graph.outgoing(node_id))
        decision = RoutingDecision((), tuple((node_id, t) for t in targets), ())
        return Finished(node_id, (), None, decision, _arrivals(graph, act.iteration, decision))
    node = graph.static.nodes.get(node_id) or graph.node(node_id)
    _, node_input = activation_input(graph, node, act.edge_value, context)
    if act.failed is not None:
        return await _fall_back(
            options, graph, act, node, node_input, act.failed, context, events, run_id, cancelled
        )
    if act.resumed is not None:
        try:
            result = await _resumed_result(options, node, context, act.resumed)
        except Exception as exc:
            return Failed([WorkflowError.from_exception(node_id, exc)], (exc,))
        if result.awaiting:
            return Parked(node_id)
        resumed = _finish(options, graph, act, node_id, (), result, node_input, context)
        return await _observed(events, node, context, resumed) if events.enabled else resumed
    ctx = _node_context(options, node, node_input, context, act, run_id, graph, cancelled)
    impl = direct_impl(options.executor, events, node, attempts)
    if impl is not None:  # most nodes: the call is all `execute_node` would do
        try:
            outcome = NodeOutcome(plain_result(node_id, await impl(ctx)), None, None, act.attempt)
        except Exception as exc:  # CancelledError is a BaseException and propagates
            error = WorkflowError.from_exception(node_id, exc)
            outcome = NodeOutcome(None, error, exc, act.attempt)
    else:
        outcome = await execute_node(options.executor, events, node, ctx, attempts=attempts)
    if outcome.result is not None:
        if outcome.result.awaiting:
            return Parked(node_id)
        finished = _finish(options, graph, act, node_id, (), outcome.result, node_input, context)
        return await _observed(events, node, context, finished) if events.enabled else finished
    assert outcome.error is not None
    if attempts is not None and should_retry(node.config, attempts[-1]):
        delay = backoff_delay_ms(node.config, attempts[-1], options.executor.rng)
        await events.emit(
            "node:retry",
            nodeId=node_id,
            attempt=attempts[-1],
            delayMs=delay,
            error={"message": outcome.error.message, "type": outcome.error.type},
        )
        return Retry(delay, outcome.error, outcome.exception)
    return await _fall_back(
        options, graph, act, node, node_input, outcome.error, context, events, run_id, cancelled,
        outcome.exception,
    )  # fmt: skip


async def _fall_back(
    options: RuntimeOptions,
    graph: RunGraph,
    act: Activation,
    node: NodeDefinition,
    node_input: Any,
    error: WorkflowError,
    context: BufferedContext,
    events: EventEmitter,
    run_id: str,
    cancelled: asyncio.Event,
    exception: BaseException | None = None,
) -> Outcome:
    """Run the failed node's fallback chain; the first fallback that succeeds finishes for the
    chain, inheriting every failed node's outgoing edges."""
    errors = [error]
    raised: tuple[BaseException, ...] = () if exception is None else (exception,)
    chain: tuple[str, ...] = (node.id,)
    failed, failed_input = node, node_input
    while True:
        fallback_id = failed.config.fallback
        if fallback_id is None or fallback_id in chain or not graph.has_node(fallback_id):
            return Failed(errors, raised)
        if cancelled.is_set():
            return Failed(errors, raised)
        await events.emit("node:fallback", nodeId=failed.id, fallback=fallback_id)
        context.rollback(None)  # the failed nodes leave no writes
        fallback = graph.node(fallback_id)
        fb_input = resolve_input(
            fallback, context.view(), failed_input, fallback_id in graph.static.transformed_targets
        )
        ctx = _node_context(options, fallback, fb_input, context, act, run_id, graph, cancelled)
        outcome = await execute_node(options.executor, events, fallback, ctx)
        if outcome.result is not None:
            if outcome.result.awaiting:
                return Failed(
                    [
                        *errors,
                        WorkflowError(fallback_id, "a fallback node cannot wait", "FlowcraftError"),
                    ],
                    raised,
                )
            done = _finish(
                options, graph, act, fallback_id, chain, outcome.result, fb_input, context
            )  # its writes are reported like any finished node's (context:change...)
            return await _observed(events, fallback, context, done) if events.enabled else done
        assert outcome.error is not None
        errors.append(outcome.error)
        if outcome.exception is not None:
            raised = (*raised, outcome.exception)
        chain = (*chain, fallback_id)
        failed, failed_input = fallback, fb_input


def _finish(
    options: RuntimeOptions,
    graph: RunGraph,
    act: Activation,
    node_id: str,
    owners: tuple[str, ...],
    result: NodeResult,
    node_input: Any,
    context: BufferedContext,
) -> Outcome:
    """Write the node's outputs, route its result and make the arrivals."""
    output = result.output
    if result.dynamic_nodes:  # e.g. a batch's workers: every step of the run must see them
        try:
            graph.add_dynamic(node_id, result.dynamic_nodes, output)
        except FlowcraftError as exc:
            return Failed([WorkflowError.from_exception(node_id, exc)], (exc,))
        context.write(
            f"{DYNAMIC_PREFIX}{act.key}",
            {"producer": node_id, "nodes": list(result.dynamic_nodes), "output": output},
        )
    writes = {} if node_input is None else {f"{INPUTS_PREFIX}{node_id}": node_input}
    writes[f"{OUTPUTS_PREFIX}{node_id}"] = output
    writes[node_id] = output
    for owner in owners:
        writes[f"{OUTPUTS_PREFIX}{owner}"] = output
        writes[owner] = output
    context.write_all(writes)
    decision = route(
        graph, node_id, output, result.action, context.view(), options.evaluate,
        inherit_from=owners,
    )  # fmt: skip
    return Finished(node_id, owners, result, decision, _arrivals(graph, act.iteration, decision))


async def _observed(
    events: EventEmitter, node: NodeDefinition, context: BufferedContext, outcome: Outcome
) -> Outcome:
    """The events of a node that finished, after its `node:finish` (the original's order):
    `context:change` per key it wrote (its own writes, then its output's), `batch:start` /
    `batch:finish` for a batch's scatter and gather, `edge:evaluate` per conditional edge."""
    if not isinstance(outcome, Finished):
        return outcome
    for key, op, value in context.written():
        if op == "set":
            await events.emit("context:change", sourceNode=node.id, key=key, op=op, value=value)
        else:
            await events.emit("context:change", sourceNode=node.id, key=key, op=op)
    if node.uses in (SCATTER_USES, GATHER_USES):
        await _batch_event(events, node, context)
    return await _evaluated(events, outcome)


async def _batch_event(
    events: EventEmitter, node: NodeDefinition, context: BufferedContext
) -> None:
    """`batchId` is the batch's name as the builder took it (`create_flow().batch("sq", ...)`
    gives "sq"), as the original names it: the scatter node's id without `_scatter`."""
    view = context.view()
    output = view.get(f"{OUTPUTS_PREFIX}{node.id}")
    if node.uses == SCATTER_USES and isinstance(output, dict):
        root = output.get("batchId")
        start, end = output.get("start"), output.get("end")
        if isinstance(root, str) and isinstance(start, int) and isinstance(end, int):
            await events.emit(
                "batch:start",
                batchId=root.removesuffix("_scatter"),
                scatterNodeId=node.id,
                workerNodeIds=[batch_worker_id(root, i) for i in range(start, end)],
            )
    elif node.uses == GATHER_USES:
        gather = node.params.get("gatherNodeId") or node.id
        meta = view.get(f"{BATCH_PREFIX}{gather}")
        root = meta.get("root") if isinstance(meta, dict) else None
        batch = root.removesuffix("_scatter") if isinstance(root, str) else None
        await events.emit("batch:finish", batchId=batch, gatherNodeId=node.id, results=output)


async def _evaluated(events: EventEmitter, outcome: Outcome) -> Outcome:
    """Emit `edge:evaluate` for each conditional edge the outcome's routing evaluated."""
    if isinstance(outcome, Finished):
        for ev in outcome.decision.evaluations:
            await events.emit(
                "edge:evaluate",
                source=ev.edge.source,
                target=ev.edge.target,
                condition=ev.edge.condition.source if ev.edge.condition else None,
                result=ev.result,
            )
    return outcome


def _arrivals(graph: RunGraph, iteration: Iteration, decision: RoutingDecision) -> list[Arrival]:
    spec = graph.arrival_spec
    continues = decision.continues
    arrivals: list[Arrival] = []
    for taken in decision.taken:
        source, target = taken.source, taken.target
        it, strategy, preds = spec(source, iteration, continues, target)
        arrivals.append(Arrival(target, it, source, taken.value, strategy, preds))
    for source, target in decision.skipped:
        it, strategy, preds = spec(source, iteration, continues, target)
        arrivals.append(Arrival(target, it, source, SKIPPED, strategy, preds))
    return arrivals


def _node_context(
    options: RuntimeOptions,
    node: NodeDefinition,
    node_input: Any,
    context: BufferedContext,
    act: Activation,
    run_id: str,
    graph: RunGraph,
    cancelled: asyncio.Event,
) -> NodeContext:
    return NodeContext(  # positional, in field order: a class call with keywords costs more
        context,
        node_input,
        thaw(node.params) if node.params else {},
        options.dependencies,
        run_id,
        node.id,
        act.attempt,
        cancelled,
        graph.static.blueprint.id,
        act.iteration[-1] if act.iteration else 0,
        tuple(act.iteration),
    )


async def _resumed_result(
    options: RuntimeOptions,
    node: NodeDefinition,
    context: BufferedContext,
    resume: Mapping[str, Any],
) -> NodeResult:
    """The result of a parked node resumed from outside: a subflow resumes its child run with
    `resume`; any other node finishes with the given output and action."""
    from ..nodes.subflow import child_awaits, resume_subflow

    action = resume.get("action")
    if action is not None and not isinstance(action, str):
        raise TypeError(f"resume action must be a string, not {action!r}")
    if child_awaits(node.id, context.view()):
        return await resume_subflow(options, node, context, resume)
    result = NodeResult(output=resume.get("output"), action=action)
    check_result(node.id, result)
    return result
