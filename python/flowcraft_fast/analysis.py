"""Static analysis of a blueprint: what a run would otherwise show only by misbehaving.

`analyze(blueprint, registry=None, *, blueprints=None)` returns `Finding`s, each with a stable
`code`, a `severity` ("error": the blueprint cannot work as written; "warning": it works, but
probably not as meant) and a `location`. `FlowRuntime(strict=True)` refuses a blueprint with an
error finding; `flowcraft-fast lint` prints them. docs/analysis.md lists every code with an
example.

The analysis reads the graph the runtime runs (`CompiledGraph`: start nodes, predecessors, loop
bodies and their back edges, fallbacks), so both agree on what a loop is. It never evaluates an
expression: conditions are compiled by the expression parser, which lists the names they read.

Which nodes can run is worked out the way the ledger fires joins: a start node runs; an `any`
join (and a loop controller, entered by its entry edges) runs when one predecessor that runs
reaches it by an edge that can be taken; an `all` join runs once every predecessor has run or
been skipped and one of them reaches it by such an edge; a fallback can run when its owner runs.
An edge cannot be taken when it names an action its source never returns, which is known only
for built-ins whose actions are fixed (`nodes.BUILTIN_ACTIONS`): blueprints do not declare the
actions of a node, and a user's function may return any.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .blueprint import (
    DEFAULT_LIMITS,
    Blueprint,
    BlueprintLimits,
    EdgeDefinition,
    NodeDefinition,
    compile_checked,
    load_blueprint,
    strongly_connected_components,
)
from .errors import BlueprintError
from .nodes import BUILTIN_ACTIONS, BUILTIN_NODES
from .runtime.graph import CONTINUE, CompiledGraph
from .runtime.runtime import check_builtin_params
from .runtime.vocabulary import GATHER_USES, SCATTER_USES

__all__ = [
    "CODES",
    "Finding",
    "Location",
    "Severity",
    "analyze",
    "has_errors",
]

Severity = Literal["error", "warning"]

INVALID = "invalid"
DANGLING_FALLBACK = "dangling-fallback"
DANGLING_SUBFLOW = "dangling-subflow"
UNKNOWN_USES = "unknown-uses"
UNREACHABLE = "unreachable"
NEVER_RUNS = "never-runs"
DEAD_EDGE = "dead-edge"
CYCLE = "cycle"
SINGLE_PREDECESSOR_ANY_JOIN = "single-predecessor-any-join"
UNWRITTEN_CONTEXT_KEY = "unwritten-context-key"

CODES: Mapping[str, Severity] = {
    INVALID: "error",
    DANGLING_FALLBACK: "error",
    DANGLING_SUBFLOW: "error",
    UNKNOWN_USES: "error",
    UNREACHABLE: "error",
    NEVER_RUNS: "error",
    DEAD_EDGE: "warning",
    CYCLE: "warning",
    SINGLE_PREDECESSOR_ANY_JOIN: "warning",
    UNWRITTEN_CONTEXT_KEY: "warning",
}
"""Every finding code and its severity (a code always has the same one)."""

WHOLE_BLUEPRINT = "/"
"""The `path` of a finding about the blueprint as a whole (one that does not load)."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding is: a JSON-pointer-like `path` into the blueprint as written
    (`/nodes/3`, `/edges/5/condition`; a key when `nodes` is written as an object), and the
    node id or the edge (`"a->b"`) it is about."""

    path: str
    node: str | None = None
    edge: str | None = None

    def __str__(self) -> str:
        subject = self.edge if self.edge is not None else self.node
        return self.path if subject is None else f"{self.path} ({subject})"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the analysis found; `str(finding.location)` and `finding.message` make the
    line `flowcraft-fast lint` prints."""

    code: str
    """A stable id, one of `CODES`."""
    severity: Severity
    message: str
    """One line: what is wrong and why."""
    location: Location

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "path": self.location.path,
            "node": self.location.node,
            "edge": self.location.edge,
        }


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def analyze(
    blueprint: Blueprint | Mapping[str, Any] | str | bytes,
    registry: Mapping[str, Any] | None = None,
    *,
    blueprints: Mapping[str, Any] | Iterable[str | Blueprint] | None = None,
    limits: BlueprintLimits = DEFAULT_LIMITS,
) -> list[Finding]:
    """Analyse a blueprint (a loaded `Blueprint`, its mapping, or JSON text); findings in
    blueprint order (nodes, then edges).

    `registry`: the node implementations (`FlowRuntime`'s `registry`; the built-ins are added
    under it the same way): nodes whose `uses` (or a batch's `workerUsesKey`) it lacks are
    errors. Without it, implementations are not checked and built-in keys are taken to be the
    built-ins. `blueprints`: the ids (or blueprints) a subflow may run; without it, only a
    subflow naming no blueprint at all is reported.

    A blueprint that does not load gives one `invalid` finding with the loader's message; a
    fallback naming no node is reported as `dangling-fallback` and the rest analysed without it.
    """
    findings: list[Finding] = []
    loaded = _load(blueprint, limits, findings)
    if loaded is None:
        return findings
    bp, where = loaded
    try:
        check_builtin_params(bp, limits)
        graph = CompiledGraph.from_blueprint(bp)
    except BlueprintError as exc:
        findings.append(_finding(INVALID, str(exc), Location(WHOLE_BLUEPRINT)))
        return findings
    impls = None if registry is None else {**BUILTIN_NODES, **registry}
    known = None if blueprints is None else {*_blueprint_ids(blueprints), bp.id}
    checks = _Checks(bp, graph, where, impls, limits)
    findings.extend(_dangling_fallbacks_of(bp, where))
    findings.extend(checks.implementations())
    findings.extend(checks.subflows(known))
    findings.extend(checks.runnability())
    findings.extend(checks.cycles())
    findings.extend(checks.single_predecessor_any_joins())
    findings.extend(checks.unwritten_context_keys())
    return where.in_order(findings)


# ---------------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class _Where:
    """Paths of the blueprint's nodes and edges as the caller wrote them."""

    nodes: Mapping[str, str]
    """Node id -> `/nodes/<index or key>`."""
    edges: Sequence[str]
    """Edge index -> `/edges/<index or key>`."""

    def node(self, node_id: str, rest: str = "") -> Location:
        return Location(self.nodes[node_id] + rest, node=node_id)

    def edge(self, index: int, edge: EdgeDefinition, rest: str = "") -> Location:
        return Location(self.edges[index] + rest, edge=f"{edge.source}->{edge.target}")

    def in_order(self, findings: list[Finding]) -> list[Finding]:
        """The whole blueprint first, then nodes and edges in blueprint order."""
        ranks = {path: (1, i) for i, path in enumerate(self.nodes.values())}
        ranks.update({path: (2, i) for i, path in enumerate(self.edges)})

        def order(finding: Finding) -> tuple[int, int, str]:
            path = finding.location.path
            item = "/".join(path.split("/", 3)[:3])  # "/nodes/3/config" -> "/nodes/3"
            rank, index = ranks.get(item, (0, 0))
            return rank, index, path

        return sorted(findings, key=order)


def _load(
    raw: Blueprint | Mapping[str, Any] | str | bytes,
    limits: BlueprintLimits,
    findings: list[Finding],
) -> tuple[Blueprint, _Where] | None:
    if isinstance(raw, Blueprint):
        return raw, _Where(
            {n.id: f"/nodes/{i}" for i, n in enumerate(raw.nodes)},
            [f"/edges/{i}" for i in range(len(raw.edges))],
        )
    data: Any = raw
    if isinstance(raw, (str, bytes)):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            message = f"blueprint is not valid JSON: {exc}"
            findings.append(_finding(INVALID, message, Location(WHOLE_BLUEPRINT)))
            return None
    if isinstance(data, Mapping):
        data = _without_dangling_fallbacks(data, findings)
    try:
        bp = load_blueprint(data, limits)
    except BlueprintError as exc:
        findings.append(_finding(INVALID, str(exc), Location(WHOLE_BLUEPRINT)))
        return None
    node_paths = _item_paths(data.get("nodes"), "/nodes")
    edge_paths = _item_paths(data.get("edges", []), "/edges")
    return bp, _Where({n.id: node_paths[i] for i, n in enumerate(bp.nodes)}, edge_paths)


def _item_paths(items: Any, prefix: str) -> list[str]:
    # Flowcraft accepts nodes and edges as an object whose values are the items (as the loader).
    if isinstance(items, Mapping):
        return [f"{prefix}/{_escape(str(key))}" for key in items]
    return [f"{prefix}/{i}" for i in range(len(items))]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _without_dangling_fallbacks(raw: Mapping[str, Any], findings: list[Finding]) -> Any:
    """`raw` without the fallbacks that name no node (one finding each), so that the rest of
    the blueprint loads and is analysed; the loader refuses such a blueprint outright."""
    nodes = raw.get("nodes")
    if isinstance(nodes, Mapping):
        items = [(_escape(str(k)), k, v) for k, v in nodes.items()]
    elif isinstance(nodes, (list, tuple)):
        items = [(str(i), i, v) for i, v in enumerate(nodes)]
    else:
        return raw
    ids = [n.get("id") for _, _, n in items if isinstance(n, Mapping)]
    patched: dict[Any, Any] = {}
    for text, key, node in items:
        config = node.get("config") if isinstance(node, Mapping) else None
        fallback = config.get("fallback") if isinstance(config, Mapping) else None
        if not isinstance(fallback, str) or fallback in ids:
            continue
        assert isinstance(node, Mapping) and isinstance(config, Mapping)
        node_id = node.get("id")
        message = (
            f"node '{node_id}' names fallback '{fallback}', which is not a node of this "
            f"blueprint{_did_you_mean(fallback, [i for i in ids if isinstance(i, str)])}"
        )
        at = Location(f"/nodes/{text}/config/fallback", node=str(node_id))
        findings.append(_finding(DANGLING_FALLBACK, message, at))
        patched[key] = {**node, "config": {k: v for k, v in config.items() if k != "fallback"}}
    if not patched:
        return raw
    if isinstance(nodes, Mapping):
        return {**raw, "nodes": {k: patched.get(k, v) for k, v in nodes.items()}}
    return {**raw, "nodes": [patched.get(i, v) for i, v in enumerate(nodes)]}


def _dangling_fallbacks_of(bp: Blueprint, where: _Where) -> Iterator[Finding]:
    """The same finding for a `Blueprint` built without the loader (its fields are public)."""
    ids = [n.id for n in bp.nodes]
    for n in bp.nodes:
        fallback = n.config.fallback
        if fallback is not None and fallback not in ids:
            message = (
                f"node '{n.id}' names fallback '{fallback}', which is not a node of this "
                f"blueprint{_did_you_mean(fallback, ids)}"
            )
            yield _finding(DANGLING_FALLBACK, message, where.node(n.id, "/config/fallback"))


def _blueprint_ids(blueprints: Mapping[str, Any] | Iterable[str | Blueprint]) -> Iterator[str]:
    if isinstance(blueprints, Mapping):
        yield from (str(k) for k in blueprints)
        return
    for item in blueprints:
        yield item.id if isinstance(item, Blueprint) else str(item)


# ---------------------------------------------------------------------------- checks


class _Checks:
    """The checks of one loaded blueprint, sharing what they work out about its graph."""

    def __init__(
        self,
        bp: Blueprint,
        graph: CompiledGraph,
        where: _Where,
        impls: Mapping[str, Any] | None,
        limits: BlueprintLimits,
    ) -> None:
        self.bp = bp
        self.graph = graph
        self.where = where
        self.impls = impls
        self.limits = limits
        self.order = {n.id: i for i, n in enumerate(bp.nodes)}
        # Edges coming back from a loop's body into its controller: the controller's iteration
        # logic handles them (it waits for its entry edges first), so they are neither part of
        # a join to wait for nor a cycle outside a loop.
        back = {(p, c) for c, preds in graph.loop_back_predecessors.items() for p in preds}
        self.forward = [(i, e) for i, e in enumerate(bp.edges) if (e.source, e.target) not in back]
        self.dead = {i: reason for i, e in self.forward if (reason := self._dead(e)) is not None}
        # Unique predecessors and successors over those edges, in edge order (dicts as sets).
        self.preds: dict[str, dict[str, None]] = {n.id: {} for n in bp.nodes}
        self.live_preds: dict[str, set[str]] = {n.id: set() for n in bp.nodes}
        self.succs: dict[str, list[str]] = {n.id: [] for n in bp.nodes}
        self.incoming: dict[str, list[int]] = {n.id: [] for n in bp.nodes}
        for i, e in self.forward:
            if e.source not in self.preds[e.target]:
                self.preds[e.target][e.source] = None
                self.succs[e.source].append(e.target)
            if i not in self.dead:
                self.live_preds[e.target].add(e.source)
            self.incoming[e.target].append(i)
        self.component = strongly_connected_components([n.id for n in bp.nodes], self.succs)

    # -- what a node's result can do

    def _builtin(self, node: NodeDefinition) -> bool:
        """Whether `node.uses` runs the built-in of that name (a registry may replace it)."""
        builtin = BUILTIN_NODES.get(node.uses)
        return builtin is not None and (self.impls is None or self.impls.get(node.uses) is builtin)

    def _fallback_chain(self, node_id: str) -> list[NodeDefinition]:
        """The node and the fallbacks that stand in for it (a fallback inherits its owner's
        outgoing edges, so they route its result too)."""
        chain: list[NodeDefinition] = []
        current: str | None = node_id
        while current is not None and current in self.graph.nodes:
            node = self.graph.nodes[current]
            if node in chain:
                break
            chain.append(node)
            current = node.config.fallback
        return chain

    def _dead(self, edge: EdgeDefinition) -> str | None:
        """Why `edge` is never taken, or None when it may be."""
        if edge.action is None:
            return None
        if (
            self.graph.is_loop_controller(edge.source)
            and edge.condition is not None
            and edge.action != CONTINUE
        ):
            return None  # a conditional exit: evaluated on every iteration, whatever the action
        chain = self._fallback_chain(edge.source)
        actions: set[str] = set()
        for node in chain:
            known = BUILTIN_ACTIONS.get(node.uses) if self._builtin(node) else None
            if known is None:
                return None
            actions |= known
        if edge.action in actions:
            return None
        source = chain[0]
        who = f"'{source.id}' ({source.uses}" + (", with its fallbacks)" if len(chain) > 1 else ")")
        returns = (
            "returns no action"
            if not actions
            else "returns only " + " or ".join(f"'{a}'" for a in sorted(actions))
        )
        return f"{edge.source}->{edge.target} needs action '{edge.action}', but {who} {returns}"

    # -- implementations and subflows

    def implementations(self) -> Iterator[Finding]:
        if self.impls is None:
            return
        known = sorted(self.impls)
        for n in self.bp.nodes:
            if n.uses not in self.impls:
                message = (
                    f"node '{n.id}' uses '{n.uses}', which the registry does not hold"
                    f"{_did_you_mean(n.uses, known)}"
                )
                yield _finding(UNKNOWN_USES, message, self.where.node(n.id, "/uses"))
            worker = n.params.get("workerUsesKey")
            if n.uses == SCATTER_USES and isinstance(worker, str) and worker not in self.impls:
                message = (
                    f"batch node '{n.id}' runs workers with '{worker}', which the registry "
                    f"does not hold{_did_you_mean(worker, known)}"
                )
                at = self.where.node(n.id, "/params/workerUsesKey")
                yield _finding(UNKNOWN_USES, message, at)

    def subflows(self, known: set[str] | None) -> Iterator[Finding]:
        for n in self.bp.nodes:
            if n.uses != "subflow" or not self._builtin(n):
                continue
            target = n.params.get("blueprintId")
            if not isinstance(target, str) or not target:
                message = f"subflow node '{n.id}' names no blueprint (params.blueprintId)"
                yield _finding(DANGLING_SUBFLOW, message, self.where.node(n.id, "/params"))
            elif known is not None and target not in known:
                message = (
                    f"subflow node '{n.id}' runs blueprint '{target}', which is not among the "
                    f"blueprints given{_did_you_mean(target, sorted(known))}"
                )
                at = self.where.node(n.id, "/params/blueprintId")
                yield _finding(DANGLING_SUBFLOW, message, at)

    # -- which nodes can run

    def runnability(self) -> Iterator[Finding]:
        runs, settles = self._runnable()
        # Over every edge, loop back edges too: a node a loop's body leads to is reachable.
        reach_live = self._reachable(lambda i: i not in self.dead)
        reach_any = self._reachable(lambda i: True)
        never: set[str] = set()
        for n in self.bp.nodes:
            if n.id in runs:
                continue
            incoming = self.incoming[n.id]
            if incoming and all(i in self.dead for i in incoming):
                reasons = "; ".join(self.dead[i] for i in incoming)
                message = f"node '{n.id}' never runs: no incoming edge can be taken ({reasons})"
                never.add(n.id)
                yield _finding(NEVER_RUNS, message, self.where.node(n.id))
            elif n.id not in reach_live:
                why = (
                    "it is reached only by edges that are never taken"
                    if n.id in reach_any
                    else "no path leads to it from a start node "
                    f"({', '.join(repr(s) for s in self.graph.start_nodes)})"
                )
                yield _finding(
                    UNREACHABLE, f"node '{n.id}' never runs: {why}", self.where.node(n.id)
                )
            else:
                yield self._blocked(n, runs, settles)
        for i, reason in self.dead.items():
            if self.bp.edges[i].target not in never:  # else the never-runs finding names it
                message = f"edge {reason}, so it is never taken"
                yield _finding(DEAD_EDGE, message, self.where.edge(i, self.bp.edges[i], "/action"))

    def _blocked(self, n: NodeDefinition, runs: set[str], settles: set[str]) -> Finding:
        """The finding of a node that a path reaches but whose join never fires."""
        waiting = [p for p in self.preds[n.id] if p not in settles]
        if self._joins_any(n.id) or not waiting or not self.live_preds[n.id] & runs:
            silent = sorted(self.live_preds[n.id] - runs, key=self.order.__getitem__)
            through = ", ".join(f"'{p}'" for p in silent) or "nodes that never run"
            message = f"node '{n.id}' never runs: every path to it passes through {through}"
            return _finding(UNREACHABLE, message, self.where.node(n.id))
        # A predecessor runs, so the join would fire but for one it waits for in vain; on a
        # cycle with it, this join is where the cycle locks.
        on_cycle = [p for p in waiting if self.component[p] == self.component[n.id]]
        if on_cycle:
            message = (
                f"node '{n.id}' never runs: it joins with strategy 'all', so it waits for "
                f"'{on_cycle[0]}', which can only run after '{n.id}' itself (they are on a "
                "cycle that is not a loop); declare joinStrategy 'any', or use a loop-controller"
            )
            return _finding(NEVER_RUNS, message, self.where.node(n.id))
        message = (
            f"node '{n.id}' never runs: it joins with strategy 'all' and waits for "
            f"'{waiting[0]}', which never runs"
        )
        return _finding(UNREACHABLE, message, self.where.node(n.id))

    def _joins_any(self, node_id: str) -> bool:
        # A loop controller joins as `any` whatever it declares (RunGraph.join_strategy).
        return (
            self.graph.is_loop_controller(node_id)
            or self.graph.nodes[node_id].config.join_strategy == "any"
        )

    def _runnable(self) -> tuple[set[str], set[str]]:
        """(nodes that can run, nodes that can settle: run or be skipped), as the join rule
        decides them, from the start nodes on (a least fixed point, one pass over the edges)."""
        runs: set[str] = set()
        settles: set[str] = set()
        settled_preds: dict[str, int] = dict.fromkeys(self.preds, 0)
        reached_live: set[str] = set()
        events: deque[tuple[bool, str]] = deque()

        def settle(node_id: str) -> None:
            if node_id not in settles:
                settles.add(node_id)
                events.append((False, node_id))

        def run(node_id: str) -> None:
            if node_id not in runs:
                runs.add(node_id)
                events.append((True, node_id))
                settle(node_id)

        def decide(node_id: str) -> None:
            all_settled = settled_preds[node_id] == len(self.preds[node_id])
            if node_id in reached_live and (self._joins_any(node_id) or all_settled):
                run(node_id)
            elif all_settled:
                settle(node_id)  # every arrival a skip: the node is skipped

        for start in self.graph.start_nodes:
            run(start)
        while events:
            ran, node_id = events.popleft()
            fallback = self.graph.nodes[node_id].config.fallback
            if fallback is not None and fallback in self.graph.nodes:
                (run if ran else settle)(fallback)  # it runs when its owner fails
            for target in self.succs[node_id]:
                if ran:
                    if node_id in self.live_preds[target]:
                        reached_live.add(target)
                        decide(target)
                else:
                    settled_preds[target] += 1
                    decide(target)
        return runs, settles

    def _reachable(self, usable: Callable[[int], bool]) -> set[str]:
        """Nodes a path of usable edges (or fallback links) leads to from the start nodes."""
        out: dict[str, list[str]] = {n.id: [] for n in self.bp.nodes}
        for i, e in enumerate(self.bp.edges):
            if usable(i):
                out[e.source].append(e.target)
        for n in self.bp.nodes:
            if n.config.fallback in out:
                out[n.id].append(n.config.fallback)
        seen = set(self.graph.start_nodes)
        queue = deque(seen)
        while queue:
            for target in out[queue.popleft()]:
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
        return seen

    # -- cycles

    def cycles(self) -> Iterator[Finding]:
        members: dict[int, list[str]] = {}
        for n in self.bp.nodes:
            members.setdefault(self.component[n.id], []).append(n.id)
        reported: set[int] = set()
        inside = [
            (i, e) for i, e in self.forward if self.component[e.source] == self.component[e.target]
        ]
        # Report each cycle at an edge that leads back to an earlier node (the one a reader
        # would call the back edge), else at its first edge.
        inside.sort(key=lambda ie: self.order[ie[1].target] > self.order[ie[1].source])
        for i, e in inside:
            group = self.component[e.source]
            if group in reported:
                continue
            reported.add(group)
            path = self._path(e.target, e.source, group)
            shown = " -> ".join([*path, e.target])
            message = (
                f"{shown} is a cycle outside any loop: each node on it runs once at most "
                "(later arrivals are ignored), so it does not repeat; to repeat, route it "
                "through a loop-controller"
            )
            yield _finding(CYCLE, message, self.where.edge(i, e))

    def _path(self, start: str, end: str, group: int) -> list[str]:
        """A shortest path start -> ... -> end inside one strongly connected component."""
        previous: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            node_id = queue.popleft()
            if node_id == end:
                break
            for target in self.succs[node_id]:
                if target not in previous and self.component[target] == group:
                    previous[target] = node_id
                    queue.append(target)
        path: list[str] = []
        step: str | None = end
        while step is not None:
            path.append(step)
            step = previous[step]
        return path[::-1]

    # -- joins

    def single_predecessor_any_joins(self) -> Iterator[Finding]:
        gathers = {n.params.get("gatherNodeId") for n in self.bp.nodes if n.uses == SCATTER_USES}
        for n in self.bp.nodes:
            if (
                n.config.join_strategy != "any"
                or self.graph.is_loop_controller(n.id)
                or n.uses == GATHER_USES
                or n.id in gathers  # a gather's predecessors are added while the run goes
            ):
                continue
            preds = self.graph.predecessors[n.id]
            if len(preds) == 1:
                message = (
                    f"node '{n.id}' declares joinStrategy 'any' but has one predecessor "
                    f"('{preds[0]}'), so there is nothing to join; 'any' changes nothing"
                )
                yield _finding(
                    SINGLE_PREDECESSOR_ANY_JOIN, message, self.where.node(n.id, "/config")
                )

    # -- context keys read by conditions

    def unwritten_context_keys(self) -> Iterator[Finding]:
        written = self._written_roots()
        for i, e in enumerate(self.bp.edges):
            if e.condition is None:
                continue
            names = sorted(name for name in e.condition.names if name != "result")
            missing = [name for name in names if _unwritten(name, written)]
            if missing:
                hint = " (a condition sees the context and result, not input)"
                message = _unwritten_message(
                    f"the condition of edge {e.source}->{e.target}",
                    missing,
                    hint if "input" in missing else "",
                )
                at = self.where.edge(i, e, "/condition")
                yield _finding(UNWRITTEN_CONTEXT_KEY, message, at)
        for controller in self.graph.loop_bodies:
            source = self.graph.nodes[controller].params.get("condition")
            if not isinstance(source, str):
                continue  # check_builtin_params refused it already
            condition = compile_checked(source, "loop condition", self.limits)
            missing = sorted(name for name in condition.names if _unwritten(name, written))
            if missing:
                hint = " (a loop condition sees only the context, not result)"
                message = _unwritten_message(
                    f"the condition of loop controller '{controller}'",
                    missing,
                    hint if "result" in missing else "",
                )
                at = self.where.node(controller, "/params/condition")
                yield _finding(UNWRITTEN_CONTEXT_KEY, message, at)

    def _written_roots(self) -> set[str]:
        """First parts of the context keys something in the blueprint may write: node ids
        (outputs are stored under the id), and every string in node params that reads as a
        key (`total`, `order.state`), since nodes such as a `set` or a batch gather take the
        key they write as a param (`key`, `outputKey`); a subflow's `params.outputs` keys are
        written in the parent. A loop controller writes nothing (its params hold its
        condition, which reads)."""
        roots = {n.id.split(".")[0] for n in self.bp.nodes}
        for n in self.bp.nodes:
            if self.graph.is_loop_controller(n.id):
                continue
            roots.update(s.split(".")[0] for s in _strings(n.params) if _KEY.match(s))
            outputs = n.params.get("outputs")
            if n.uses == "subflow" and isinstance(outputs, Mapping):
                roots.update(str(k).split(".")[0] for k in outputs)
        return roots


_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z0-9_$]+)*\Z")
"""A string that a condition could name as a key: the expression language's names, dotted."""


def _unwritten(name: str, written: set[str]) -> bool:
    # Names starting with "_" are the engine's keys (`_outputs.x`, `_inputs.x`); the parser
    # lists only a name's first part, so `_outputs.x` cannot be checked against the nodes.
    return not name.startswith("_") and name not in written


def _unwritten_message(what: str, names: list[str], hint: str) -> str:
    listed = " and ".join(f"'{n}'" for n in names)
    one = len(names) == 1
    return (
        f"{what} reads {listed}, which nothing in this blueprint writes (no node has "
        f"{'that id' if one else 'those ids'} and no node's params name "
        f"{'it' if one else 'them'}); unless the initial context sets "
        f"{'it' if one else 'them'}, {'it is' if one else 'they are'} null{hint}"
    )


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _finding(code: str, message: str, location: Location) -> Finding:
    return Finding(code, CODES[code], message, location)


def _did_you_mean(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
