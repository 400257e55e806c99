"""Which edges a finished node takes: the routing decision of SPEC section 3, as a pure function.

1. The edges whose `action` equals the result's action are evaluated; when none of them is taken
   (or there is no action), the edges without an action are evaluated instead.
2. An evaluated edge is taken when it has no condition or its condition is truthy. A condition
   sees the context plus `result` (`result.output`, `result.action`).
3. A taken edge carries the node's output to its target, or the edge's transform of it (a
   transform sees `input` and `context`). When the target declares `inputs` as a string naming
   another node, the transform applies to that node's output instead (Flowcraft's rule).
4. A target reached only by edges that were not taken gets a "skipped" arrival (dead-path
   elimination), except out of a loop controller that continues: its exit edges stay pending
   until the loop ends.
5. A loop controller's conditional exit edges (a condition, and an action other than
   `continue`) are evaluated first, on every iteration: when one holds, only the exit edges
   that hold are taken and the loop ends, whatever the controller's action.

A fallback node inherits the outgoing edges of the node it stands in for: pass that node's id in
`inherit_from`; those edges are routed as if the failed node had finished with the fallback's
result (arrivals come from the failed node's id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..blueprint import EdgeDefinition
from ..expressions import Expression, truthy
from .graph import CONTINUE, RunGraph
from .inputs import resolve_source

Evaluate = Callable[[Expression, Mapping[str, Any]], Any]
"""How an expression is evaluated: the built-in language, or a user `evaluator`."""


def builtin_evaluate(expression: Expression, scope: Mapping[str, Any]) -> Any:
    return expression.evaluate(scope)


@dataclass(slots=True)  # a value; not frozen, since frozen ones cost twice as much to build
class TakenEdge:
    source: str
    target: str
    value: Any
    """What the edge carries: the source's output, or its transformed value."""


@dataclass(frozen=True, slots=True)
class EdgeEvaluation:
    """A conditional edge that was evaluated (reported as an `edge:evaluate` event)."""

    edge: EdgeDefinition
    result: bool


@dataclass(slots=True)  # a value; not frozen, since frozen ones cost twice as much to build
class RoutingDecision:
    taken: tuple[TakenEdge, ...]
    skipped: tuple[tuple[str, str], ...]
    """(source, target) pairs where the target is reached from that source only by untaken
    edges: each is a "skipped" arrival at the target."""
    evaluations: tuple[EdgeEvaluation, ...]
    continues: bool = False
    """A loop controller starts its body's next iteration (its `continue` edges were taken)."""


def route(
    graph: RunGraph,
    node_id: str,
    output: Any,
    action: str | None,
    context: Mapping[str, Any],
    evaluate: Evaluate = builtin_evaluate,
    *,
    inherit_from: Sequence[str] = (),
) -> RoutingDecision:
    """Decide the edges taken after `node_id` finished with (`output`, `action`)."""
    plain = None if inherit_from else graph.plain_targets(node_id)
    if plain is not None:  # no action, condition or transform: every edge is taken
        if len(plain) == 1:  # a chain's edge
            return RoutingDecision((TakenEdge(node_id, plain[0], output),), (), ())
        return RoutingDecision(tuple([TakenEdge(node_id, t, output) for t in plain]), (), ())
    taken: list[TakenEdge] = []
    skipped: list[tuple[str, str]] = []
    evaluations: list[EdgeEvaluation] = []
    held: dict[int, bool] = {}
    result_scope: _ConditionScope | None = None

    def condition_holds(edge: EdgeDefinition) -> bool:
        nonlocal result_scope
        if edge.condition is None:
            return True
        known = held.get(id(edge))
        if known is not None:
            return known
        if result_scope is None:
            result_scope = _ConditionScope({"output": output, "action": action}, context)
        ok = truthy(evaluate(edge.condition, result_scope))
        held[id(edge)] = ok
        evaluations.append(EdgeEvaluation(edge, ok))
        return ok

    early_exit: list[EdgeDefinition] = []
    if graph.is_loop_controller(node_id):
        early_exit = [
            e
            for e in graph.outgoing(node_id)
            if e.condition is not None and e.action != CONTINUE and condition_holds(e)
        ]
    continues = action == CONTINUE and not early_exit and graph.is_loop_controller(node_id)
    for source in (node_id, *inherit_from):
        edges = graph.outgoing(source)
        if not edges:
            continue
        chosen: list[EdgeDefinition] = early_exit if source == node_id else []
        if not chosen and action is not None:
            chosen = [e for e in edges if e.action == action and condition_holds(e)]
        if not chosen:
            chosen = [e for e in edges if e.action is None and condition_holds(e)]
        reached: dict[str, None] = {}
        for edge in chosen:
            if edge.target in reached:
                continue  # several taken edges to one target: the first one carries the value
            reached[edge.target] = None
            value = output
            if edge.transform is not None:
                base = _transform_base(graph, edge, output, context)
                value = evaluate(edge.transform, {"input": base, "context": context})
            taken.append(TakenEdge(source, edge.target, value))
        if continues:
            continue
        for edge in edges:
            if edge.target not in reached:
                reached[edge.target] = None
                skipped.append((source, edge.target))
    return RoutingDecision(tuple(taken), tuple(skipped), tuple(evaluations), continues)


def _transform_base(
    graph: RunGraph, edge: EdgeDefinition, output: Any, context: Mapping[str, Any]
) -> Any:
    """What a transform sees as `input`: the source's output, or, when the target declares
    `inputs` as a string naming another node, that node's output (Flowcraft's rule)."""
    spec = graph.node(edge.target).inputs
    if isinstance(spec, str) and spec != edge.source:
        return resolve_source(spec, context)
    return output


class _ConditionScope(Mapping[str, Any]):
    """The context with `result` laid over it, without copying the context."""

    __slots__ = ("_context", "_result")

    def __init__(self, result: dict[str, Any], context: Mapping[str, Any]) -> None:
        self._result = result
        self._context = context

    def __getitem__(self, key: str) -> Any:
        if key == "result":
            return self._result
        return self._context[key]

    def __contains__(self, key: object) -> bool:
        return key == "result" or key in self._context

    def __iter__(self) -> Iterator[str]:
        yield "result"
        yield from (k for k in self._context if k != "result")

    def __len__(self) -> int:
        return len(self._context) + (0 if "result" in self._context else 1)
