"""The compiled shape of a blueprint: edges per node, predecessors, start nodes, loops.

`CompiledGraph` is pure and cached per loaded blueprint. `RunGraph` overlays the nodes that a
run adds while it runs (`dynamic_nodes`, e.g. batch workers) on top of it; the step that adds
them records them in the context (`_dynamic.<node key>`), from which `run_graph` rebuilds the
overlay in every mode (a resumed run, another worker).

Loops: an activation of a node is identified by its node id and its `Iteration`, one count per
enclosing loop (`target_iteration` says which activation an edge reaches), so a loop's next
iteration, and an inner loop run again by an outer one, are new activations: nothing is reset.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..blueprint import (
    Blueprint,
    EdgeDefinition,
    JoinStrategy,
    NodeDefinition,
    load_node,
    start_node_ids,
)
from ..errors import BlueprintError
from .vocabulary import DYNAMIC_PREFIX, NO_ITERATION, Iteration, parse_iteration

LOOP_CONTROLLER = "loop-controller"
CONTINUE = "continue"
BREAK = "break"


@dataclass(frozen=True, slots=True)
class CompiledGraph:
    """Everything the scheduler and router need to know about a blueprint's static graph."""

    blueprint: Blueprint
    nodes: Mapping[str, NodeDefinition]
    outgoing: Mapping[str, tuple[EdgeDefinition, ...]]
    predecessors: Mapping[str, tuple[str, ...]]
    """Unique source ids of each node's incoming edges, in edge order."""
    start_nodes: tuple[str, ...]
    """The nodes a run starts with (`blueprint.start_node_ids`)."""
    fallback_owners: Mapping[str, tuple[str, ...]]
    """Fallback node id -> the nodes naming it as `config.fallback`."""
    loop_bodies: Mapping[str, frozenset[str]]
    """Loop controller id -> the nodes re-run on each iteration (controller excluded)."""
    loop_entry_predecessors: Mapping[str, tuple[str, ...]]
    loop_back_predecessors: Mapping[str, tuple[str, ...]]
    enclosing_loops: Mapping[str, tuple[str, ...]]
    """Node id -> the loop controllers whose loop holds it, outermost first (a controller's own
    loop last); absent for nodes outside loops."""
    transformed_targets: frozenset[str]
    """Nodes with an incoming edge that has a `transform` (see `inputs.resolve_input`)."""
    join_specs: Mapping[str, tuple[JoinStrategy, tuple[str, ...]]]
    """(strategy, predecessors) of each node that is not a loop controller (those depend on
    the iteration), so an arrival does not work them out again."""
    plain_targets: Mapping[str, tuple[str, ...]]
    """Node -> its unique targets, for nodes whose outgoing edges carry no action, condition or
    transform (not loop controllers): every edge is taken with the output (`routing.route`'s
    fast path)."""
    terminal_nodes: tuple[str, ...]
    """Nodes with no outgoing edge (fallback-only nodes excluded): a subflow's result."""

    @classmethod
    def from_blueprint(cls, bp: Blueprint) -> CompiledGraph:
        """Compile (or fetch from the cache) the graph of a loaded blueprint."""
        return _cached_graph(bp)

    def is_loop_controller(self, node_id: str) -> bool:
        return node_id in self.loop_bodies


def _check_loop_entry(
    bp_id: str, controller: str, entry: tuple[str, ...], start: Sequence[str]
) -> None:
    """A loop runs its iterations only when an edge from outside enters its controller: one
    entered only through its body would wait for itself (the run ended without running it),
    and one the run starts at has no iteration to number."""
    if not entry:
        why = "has no entry edge: every edge into it comes back from its own body"
    elif controller in start:
        why = (
            "is where the run starts (every node has an incoming edge, so the run starts at "
            "the first node of a cycle), but a loop runs only when an edge from outside enters "
            "it"
        )
    else:
        return
    raise BlueprintError(
        f"blueprint '{bp_id}': loop controller '{controller}' {why}; add an edge into "
        f"'{controller}' from a node outside its loop that the run reaches first"
    )


def _compile(bp: Blueprint) -> CompiledGraph:
    nodes = {n.id: n for n in bp.nodes}
    outgoing: dict[str, list[EdgeDefinition]] = {n.id: [] for n in bp.nodes}
    preds: dict[str, dict[str, None]] = {n.id: {} for n in bp.nodes}
    for e in bp.edges:
        outgoing[e.source].append(e)
        preds[e.target][e.source] = None
    owners: dict[str, list[str]] = {}
    for n in bp.nodes:
        if n.config.fallback is not None:
            owners.setdefault(n.config.fallback, []).append(n.id)
    start = start_node_ids(bp)
    bodies: dict[str, frozenset[str]] = {}
    entry: dict[str, tuple[str, ...]] = {}
    back: dict[str, tuple[str, ...]] = {}
    for n in bp.nodes:
        if n.uses != LOOP_CONTROLLER:
            continue
        continue_targets = [e.target for e in outgoing[n.id] if e.action == CONTINUE]
        if not continue_targets:
            raise BlueprintError(
                f"blueprint '{bp.id}': loop controller '{n.id}' has no outgoing edge with "
                "action 'continue'"
            )
        body = _loop_body(n.id, continue_targets, outgoing, preds)
        bodies[n.id] = body
        entry[n.id] = tuple(p for p in preds[n.id] if p not in body and p != n.id)
        back[n.id] = tuple(p for p in preds[n.id] if p in body or p == n.id)
    enclosing = _nesting(bp.id, bodies)  # overlapping loops are refused first
    for controller, entered_from in entry.items():
        _check_loop_entry(bp.id, controller, entered_from, start)
    return CompiledGraph(
        blueprint=bp,
        nodes=nodes,
        outgoing={k: tuple(v) for k, v in outgoing.items()},
        predecessors={k: tuple(v) for k, v in preds.items()},
        start_nodes=start,
        fallback_owners={k: tuple(v) for k, v in owners.items()},
        loop_bodies=bodies,
        loop_entry_predecessors=entry,
        loop_back_predecessors=back,
        enclosing_loops=enclosing,
        transformed_targets=frozenset(e.target for e in bp.edges if e.transform is not None),
        join_specs={
            n.id: (n.config.join_strategy, tuple(preds[n.id]))
            for n in bp.nodes
            if n.id not in bodies
        },
        plain_targets={
            n: tuple(dict.fromkeys(e.target for e in edges))
            for n, edges in outgoing.items()
            if n not in bodies
            and all(e.action is None and e.condition is None and e.transform is None for e in edges)
        },
        terminal_nodes=tuple(n.id for n in bp.nodes if not outgoing[n.id] and n.id not in owners),
    )


def _nesting(bp_id: str, bodies: Mapping[str, frozenset[str]]) -> dict[str, tuple[str, ...]]:
    """Node -> its enclosing loops, outermost first. Loops must nest: two loops either share
    no node, or one (controller and body) lies wholly inside the other's body."""
    members = {c: body | {c} for c, body in bodies.items()}
    controllers = list(bodies)
    for i, a in enumerate(controllers):
        for b in controllers[i + 1 :]:
            overlap = members[a] & members[b]
            if overlap and not (members[a] <= bodies[b] or members[b] <= bodies[a]):
                raise BlueprintError(
                    f"blueprint '{bp_id}': loops '{a}' and '{b}' overlap; a loop must lie "
                    "wholly inside another loop's body or share no node with it"
                )
    outer_first = sorted(controllers, key=lambda c: -len(members[c]))
    enclosing: dict[str, list[str]] = {}
    for controller in outer_first:
        for node in members[controller]:
            enclosing.setdefault(node, []).append(controller)
    return {node: tuple(loops) for node, loops in enclosing.items()}


def _loop_body(
    controller: str,
    continue_targets: Iterable[str],
    outgoing: Mapping[str, Sequence[EdgeDefinition]],
    preds: Mapping[str, Mapping[str, None]],
) -> frozenset[str]:
    """Nodes on a cycle through the controller: reachable from a continue target (without
    passing through the controller) and able to reach the controller again. Side exits out of
    the body are not part of it, so they are not re-run."""
    forward: set[str] = set()
    queue = deque(t for t in continue_targets if t != controller)
    while queue:
        node = queue.popleft()
        if node in forward:
            continue
        forward.add(node)
        queue.extend(e.target for e in outgoing[node] if e.target != controller)
    backward: set[str] = set()
    queue = deque(p for p in preds[controller] if p != controller)
    while queue:
        node = queue.popleft()
        if node in backward:
            continue
        backward.add(node)
        queue.extend(p for p in preds[node] if p != controller)
    return frozenset(forward & backward)


_CACHE: dict[int, tuple[Blueprint, CompiledGraph]] = {}
_CACHE_LIMIT = 512
_CACHE_LOCK = threading.Lock()


def _cached_graph(bp: Blueprint) -> CompiledGraph:
    # Blueprints hold MappingProxyType params, so they are not hashable: cache by identity and
    # keep the blueprint alive next to its graph so the id cannot be reused meanwhile.
    hit = _CACHE.get(id(bp))
    if hit is not None and hit[0] is bp:
        return hit[1]
    graph = _compile(bp)
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[id(bp)] = (bp, graph)
    return graph


class RunGraph:
    """The graph of one run: the compiled blueprint plus the nodes added while it runs.

    A dynamic node spec is a node mapping (`id`, `uses`, `params`, `inputs`, `config`) plus
    optional `predecessors` (default: the producing node) and `successors` (default: the
    producer output's `gatherNodeId`, when it has one). Dynamic edges carry no action and no
    condition.
    """

    __slots__ = ("_dyn_nodes", "_dyn_out", "_dyn_preds", "static")

    def __init__(self, static: CompiledGraph) -> None:
        self.static = static
        self._dyn_nodes: dict[str, NodeDefinition] = {}
        self._dyn_out: dict[str, list[EdgeDefinition]] = {}
        self._dyn_preds: dict[str, list[str]] = {}

    @property
    def blueprint(self) -> Blueprint:
        return self.static.blueprint

    def has_node(self, node_id: str) -> bool:
        return node_id in self.static.nodes or node_id in self._dyn_nodes

    def get(self, node_id: str) -> NodeDefinition | None:
        """The node (of the blueprint, or added while the run goes), or None."""
        found = self.static.nodes.get(node_id)
        return found if found is not None else self._dyn_nodes.get(node_id)

    def node(self, node_id: str) -> NodeDefinition:
        found = self.static.nodes.get(node_id)
        if found is None:
            found = self._dyn_nodes.get(node_id)
        if found is None:
            raise KeyError(node_id)
        return found

    def plain_targets(self, node_id: str) -> tuple[str, ...] | None:
        """The targets of a node whose every edge is taken with its output (no action,
        condition or transform, not a loop controller), or None."""
        if node_id in self._dyn_out:
            return None
        return self.static.plain_targets.get(node_id)

    def outgoing(self, node_id: str) -> Sequence[EdgeDefinition]:
        static = self.static.outgoing.get(node_id, ())
        extra = self._dyn_out.get(node_id)
        return static if extra is None else (*static, *extra)

    def predecessors(self, node_id: str) -> Sequence[str]:
        static = self.static.predecessors.get(node_id, ())
        extra = self._dyn_preds.get(node_id)
        return static if extra is None else (*static, *extra)

    def join_spec(self, node_id: str, iteration: Iteration) -> tuple[JoinStrategy, tuple[str, ...]]:
        """(join strategy, predecessors it waits for) of one activation of `node_id`."""
        spec = self.static.join_specs.get(node_id)
        if spec is not None and node_id not in self._dyn_preds:
            return spec
        return self.join_strategy(node_id), tuple(self.join_predecessors(node_id, iteration))

    def arrival_spec(
        self, source: str, iteration: Iteration, continues: bool, target: str
    ) -> tuple[Iteration, JoinStrategy, tuple[str, ...]]:
        """(activation, join strategy, predecessors) of the `target` that `source` (in
        `iteration`) reaches: `target_iteration` and `join_spec` in one call."""
        if target not in self.static.enclosing_loops and target not in self._dyn_preds:
            spec = self.static.join_specs.get(target)
            if spec is not None:  # the common case: outside loops, no nodes added
                return NO_ITERATION, spec[0], spec[1]
        it = self.target_iteration(source, iteration, continues, target)
        strategy, preds = self.join_spec(target, it)
        return it, strategy, preds

    def join_strategy(self, node_id: str) -> JoinStrategy:
        if node_id in self.static.loop_bodies:
            return "any"  # a loop controller is entered by whichever edge arrives
        return self.node(node_id).config.join_strategy

    def join_predecessors(self, node_id: str, iteration: Iteration) -> Sequence[str]:
        """The predecessors whose arrivals decide this node's join in this activation.

        A loop controller waits for its entry edges when its loop is entered (its own count
        is 0) and for the edges coming back from its body afterwards.
        """
        if node_id in self.static.loop_bodies:
            if not iteration or iteration[-1] == 0:
                return self.static.loop_entry_predecessors[node_id]
            return self.static.loop_back_predecessors[node_id]
        return self.predecessors(node_id)

    def is_loop_controller(self, node_id: str) -> bool:
        return node_id in self.static.loop_bodies

    def loop_body(self, node_id: str) -> frozenset[str]:
        return self.static.loop_bodies.get(node_id, frozenset())

    def enclosing_loops(self, node_id: str) -> tuple[str, ...]:
        return self.static.enclosing_loops.get(node_id, ())

    def parse_iteration(self, node_id: str, raw: Any) -> Iteration:
        """The iteration of `node_id` from its job data or node key; ValueError if it does not
        fit the node's loops."""
        return parse_iteration(raw, len(self.enclosing_loops(node_id)))

    def target_iteration(
        self, source: str, iteration: Iteration, continues: bool, target: str
    ) -> Iteration:
        """The activation of `target` that `source` (in `iteration`) reaches.

        Each loop enclosing the target keeps the source's count when the source is inside it
        too, and starts at 0 when the edge enters it. A loop controller that continues starts
        the next iteration of its body.
        """
        target_loops = self.static.enclosing_loops.get(target)
        if not target_loops:
            return NO_ITERATION
        source_loops = self.static.enclosing_loops.get(source, ())
        counts: list[int] = []
        for loop in target_loops:
            try:
                count = iteration[source_loops.index(loop)]
            except ValueError:
                count = 0  # entering this loop
            if continues and source == loop and target != loop:
                count += 1
            counts.append(count)
        return tuple(counts)

    def add_dynamic(
        self, producer: str, specs: Sequence[Mapping[str, Any]], output: Any
    ) -> list[str]:
        """Add the nodes a node returned as `dynamic_nodes`; returns their ids.

        Raises BlueprintError for a malformed spec or an id that is already taken.
        """
        where = f"dynamic node of '{producer}'"
        default_succ: list[str] = []
        if isinstance(output, Mapping) and isinstance(output.get("gatherNodeId"), str):
            default_succ = [output["gatherNodeId"]]
        loaded: list[tuple[NodeDefinition, list[str], list[str]]] = []
        new_ids: set[str] = set()
        for spec in specs:
            if not isinstance(spec, Mapping):
                raise BlueprintError(f"{where}: each dynamic node must be a mapping")
            node = load_node(
                {k: v for k, v in spec.items() if k not in ("predecessors", "successors")},
                where,
            )
            if self.has_node(node.id) or node.id in new_ids:
                raise BlueprintError(f"{where}: node id '{node.id}' is already taken")
            new_ids.add(node.id)
            preds = _id_list(spec.get("predecessors", [producer]), f"{where} '{node.id}'")
            succs = _id_list(spec.get("successors", default_succ), f"{where} '{node.id}'")
            loaded.append((node, preds, succs))
        for node, _, _ in loaded:
            self._dyn_nodes[node.id] = node
        for node, preds, succs in loaded:
            for p in preds:
                self._link(p, node.id, where)
            for s in succs:
                self._link(node.id, s, where)
        return [node.id for node, _, _ in loaded]

    def _link(self, source: str, target: str, where: str) -> None:
        if not self.has_node(source) or not self.has_node(target):
            missing = source if not self.has_node(source) else target
            raise BlueprintError(
                f"{where}: edge {source!r} -> {target!r} names unknown '{missing}'"
            )
        self._dyn_out.setdefault(source, []).append(EdgeDefinition(source=source, target=target))
        self._dyn_preds.setdefault(target, []).append(source)


def _id_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise BlueprintError(f"{where}: predecessors/successors must be node ids")


def run_graph(
    bp: Blueprint, state: Mapping[str, Any], dynamic_keys: Iterable[str] | None = None
) -> RunGraph:
    """The run's graph: the blueprint plus the dynamic nodes recorded in its context
    (`_dynamic.<node key>` fields), in memory and distributed alike.

    Producers' specs are applied in an order where every node they link to exists (a batch
    continuation links to the workers of the chunk before it).
    """
    graph = RunGraph(CompiledGraph.from_blueprint(bp))
    if dynamic_keys is None:
        dynamic_keys = [k for k in state if k.startswith(DYNAMIC_PREFIX)]
    pending = [state[k] for k in dynamic_keys]
    while pending:
        ready = [spec for spec in pending if _links_exist(graph, spec)]
        if not ready:
            raise BlueprintError("the run's dynamic nodes link to nodes that do not exist")
        for spec in ready:
            graph.add_dynamic(spec["producer"], spec["nodes"], spec.get("output"))
        pending = [spec for spec in pending if spec not in ready]
    return graph


def _links_exist(graph: RunGraph, spec: Mapping[str, Any]) -> bool:
    """Whether every node a dynamic spec links to (other than its own nodes) exists."""
    output = spec.get("output")
    gather = output.get("gatherNodeId") if isinstance(output, Mapping) else None
    default_succ = [gather] if isinstance(gather, str) else []
    own = {n.get("id") for n in spec["nodes"]}
    needed = {spec["producer"]}
    for node in spec["nodes"]:
        for key, default in (("predecessors", [spec["producer"]]), ("successors", default_succ)):
            ids = node.get(key, default)
            needed.update([ids] if isinstance(ids, str) else ids)
    return all(graph.has_node(n) for n in needed - own)
