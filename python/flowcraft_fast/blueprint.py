"""Blueprints: Flowcraft's JSON workflow shape, loaded once into immutable typed objects.

`load_blueprint` accepts the camelCase mapping written for the TypeScript Flowcraft (or a
`Blueprint` already loaded) and validates it: unknown node ids in edges, duplicate ids, a
fallback that does not exist, an unknown join strategy, bad config values, size limits and
expression syntax all raise `BlueprintError` naming the problem. Expressions are compiled here,
so a run never meets a syntax error.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .errors import BlueprintError, ExpressionError
from .expressions import DEFAULT_MAX_DEPTH, Expression, compile_expression

JoinStrategy = Literal["all", "any"]
JOIN_STRATEGIES: tuple[str, ...] = ("all", "any")


@dataclass(frozen=True, slots=True)
class BlueprintLimits:
    """Size limits applied when a blueprint is loaded."""

    max_nodes: int = 10_000
    max_edges: int = 50_000
    max_expression_length: int = 1_000
    max_expression_depth: int = DEFAULT_MAX_DEPTH
    max_id_length: int = 512


DEFAULT_LIMITS = BlueprintLimits()


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """`config.concurrency`: at most `limit` jobs with the same key value run at once, across
    the fleet (SPEC section 10; enforced by runtime/limits.py in memory, limit.lua distributed)."""

    key: Expression
    """Sees `input` and `context`; a string literal makes one global group."""
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key.source, "limit": self.limit}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`config.rateLimit`: at most `max` starts per `per_ms` window per key value."""

    key: Expression | None
    """None: one group for the node (its blueprint id and node id)."""
    max: int
    per_ms: int
    per_source: Any = None
    """`per` as written (for to_json)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max": self.max, "per": self.per_source}
        if self.key is not None:
            out["key"] = self.key.source
        return out


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Resilience and join behaviour of one node (`config` in the JSON)."""

    max_retries: int = 1
    """Total attempts (Flowcraft's naming); 1 means no retry."""
    retry_delay_ms: float = 0.0
    """Base of the exponential backoff between attempts, in milliseconds."""
    timeout_ms: float | None = None
    """Per-attempt timeout in milliseconds; None means no timeout."""
    fallback: str | None = None
    """Id of the node that runs when the last attempt failed."""
    join_strategy: JoinStrategy = "all"
    concurrency: ConcurrencyLimit | None = None
    rate_limit: RateLimit | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency.to_json()
        if self.rate_limit is not None:
            out["rateLimit"] = self.rate_limit.to_json()
        if self.max_retries != 1:
            out["maxRetries"] = self.max_retries
        if self.retry_delay_ms:
            out["retryDelay"] = self.retry_delay_ms
        if self.timeout_ms is not None:
            out["timeout"] = self.timeout_ms
        if self.fallback is not None:
            out["fallback"] = self.fallback
        if self.join_strategy != "all":
            out["joinStrategy"] = self.join_strategy
        return out


@dataclass(frozen=True, slots=True)
class NodeDefinition:
    id: str
    uses: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    inputs: str | Mapping[str, str] | None = None
    config: NodeConfig = NodeConfig()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "uses": self.uses}
        if self.params:
            out["params"] = _thaw(self.params)
        if self.inputs is not None:
            out["inputs"] = self.inputs if isinstance(self.inputs, str) else dict(self.inputs)
        config = self.config.to_json()
        if config:
            out["config"] = config
        return out


@dataclass(frozen=True, slots=True)
class EdgeDefinition:
    source: str
    target: str
    action: str | None = None
    condition: Expression | None = None
    transform: Expression | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "target": self.target}
        if self.action is not None:
            out["action"] = self.action
        if self.condition is not None:
            out["condition"] = self.condition.source
        if self.transform is not None:
            out["transform"] = self.transform.source
        return out


@dataclass(frozen=True, slots=True)
class Blueprint:
    id: str
    nodes: tuple[NodeDefinition, ...]
    edges: tuple[EdgeDefinition, ...]
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def version(self) -> str | None:
        v = self.metadata.get("version")
        return None if v is None else str(v)

    def node(self, node_id: str) -> NodeDefinition:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }
        if self.metadata:
            out["metadata"] = _thaw(self.metadata)
        return out


NODE_KEYS: tuple[str, ...] = ("id", "uses", "params", "inputs", "config")
EDGE_KEYS: tuple[str, ...] = ("source", "target", "action", "condition", "transform")
CONFIG_KEYS: tuple[str, ...] = (
    "maxRetries", "retryDelay", "timeout", "fallback", "joinStrategy", "concurrency", "rateLimit",
)  # fmt: skip


def unknown_keys(raw: Mapping[str, Any]) -> list[str]:
    """Keys of nodes, edges and node configs that flowcraft-fast does not read, one message
    each naming where and the closest known key. `load_blueprint` ignores such keys (blueprints
    may carry tool-specific extras); `flowcraft-fast validate` reports them, because a typo
    such as `condtion` silently makes an edge unconditional."""
    problems: list[str] = []
    where = f"blueprint '{raw.get('id')}'"

    def check(item: Any, known: tuple[str, ...], at: str) -> None:
        if not isinstance(item, Mapping):
            return
        for key in item:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                expected = ", ".join(known)
                problems.append(f"{at}: unknown key '{key}'{hint}; known keys: {expected}")

    nodes = raw.get("nodes")
    for index, node in enumerate(nodes if isinstance(nodes, list) else []):
        node_at = f"{where}: node '{node.get('id')}'" if isinstance(node, Mapping) else ""
        check(node, NODE_KEYS, node_at or f"{where}: nodes[{index}]")
        if isinstance(node, Mapping):
            check(node.get("config"), CONFIG_KEYS, f"{node_at} config")
    edges = raw.get("edges")
    for index, edge in enumerate(edges if isinstance(edges, list) else []):
        if isinstance(edge, Mapping):
            at = f"{where}: edge {index} ({edge.get('source')!r} -> {edge.get('target')!r})"
            check(edge, EDGE_KEYS, at)
    return problems


def load_blueprint(
    raw: Blueprint | Mapping[str, Any] | str | bytes, limits: BlueprintLimits = DEFAULT_LIMITS
) -> Blueprint:
    """Validate a Flowcraft blueprint (mapping, JSON text or `Blueprint`) and return it frozen."""
    if isinstance(raw, Blueprint):
        return raw
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise BlueprintError(f"blueprint is not valid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise BlueprintError(f"a blueprint must be a mapping, not {type(raw).__name__}")
    bp_id = raw.get("id")
    if not isinstance(bp_id, str) or not bp_id:
        raise BlueprintError("blueprint 'id' must be a non-empty string")
    where = f"blueprint '{bp_id}'"
    raw_nodes = _as_list(raw.get("nodes"), f"{where}: 'nodes'")
    raw_edges = _as_list(raw.get("edges", []), f"{where}: 'edges'")
    if len(raw_nodes) > limits.max_nodes:
        raise BlueprintError(
            f"{where} has {len(raw_nodes)} nodes, more than the limit of {limits.max_nodes}"
        )
    if len(raw_edges) > limits.max_edges:
        raise BlueprintError(
            f"{where} has {len(raw_edges)} edges, more than the limit of {limits.max_edges}"
        )
    if not raw_nodes:
        raise BlueprintError(f"{where} has no nodes")

    nodes = tuple(_load_node(n, i, where, limits) for i, n in enumerate(raw_nodes))
    ids: set[str] = set()
    for n in nodes:
        if n.id in ids:
            raise BlueprintError(f"{where}: duplicate node id '{n.id}'")
        ids.add(n.id)
    for n in nodes:
        fb = n.config.fallback
        if fb is not None:
            if fb not in ids:
                raise BlueprintError(
                    f"{where}: node '{n.id}' names fallback '{fb}', which is not a node"
                )
            if fb == n.id:
                raise BlueprintError(f"{where}: node '{n.id}' cannot be its own fallback")

    edges = tuple(_load_edge(e, i, where, ids, limits) for i, e in enumerate(raw_edges))
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise BlueprintError(f"{where}: 'metadata' must be a mapping")
    bp = Blueprint(id=bp_id, nodes=nodes, edges=edges, metadata=_freeze(metadata))

    start_node_ids(bp)  # raises when there is none
    return bp


def start_node_ids(bp: Blueprint) -> tuple[str, ...]:
    """The nodes a run starts with, in blueprint order.

    Every node with no incoming edge that is not another node's `config.fallback`. When every
    node has an incoming edge (the graph is made of cycles), Flowcraft's rule: one node per
    cycle that nothing outside it leads into, the first of `metadata.cycleEntryPoints` on that
    cycle, else its first node in blueprint order. Raises BlueprintError when there is none.
    """
    fallbacks = {n.config.fallback for n in bp.nodes if n.config.fallback}
    targets = {e.target for e in bp.edges}
    start = tuple(n.id for n in bp.nodes if n.id not in targets and n.id not in fallbacks)
    if start:
        return start
    entries = _cycle_entries(bp, fallbacks)
    if not entries:
        raise BlueprintError(
            f"blueprint '{bp.id}' has no start node (every node is a fallback, or is reached "
            "only from fallbacks)"
        )
    return entries


def _cycle_entries(bp: Blueprint, fallbacks: set[str]) -> tuple[str, ...]:
    """One entry node per source cycle: a strongly connected component (of non-fallback
    nodes) that no edge from outside it enters."""
    declared = bp.metadata.get("cycleEntryPoints", ())
    if isinstance(declared, str) or not all(isinstance(x, str) for x in declared):
        raise BlueprintError(f"blueprint '{bp.id}': metadata.cycleEntryPoints must be node ids")
    order = [n.id for n in bp.nodes if n.id not in fallbacks]
    successors: dict[str, list[str]] = {n: [] for n in order}
    for e in bp.edges:
        if e.source in successors and e.target in successors:
            successors[e.source].append(e.target)
    component = strongly_connected_components(order, successors)
    entered = {
        component[t] for s, ts in successors.items() for t in ts if component[s] != component[t]
    }
    entries: dict[int, str] = {}
    for node_id in [*declared, *order]:  # declared entry points first, then blueprint order
        group = component.get(node_id)
        if group is not None and group not in entered and group not in entries:
            entries[group] = node_id
    return tuple(sorted(entries.values(), key=order.index))


def strongly_connected_components(
    order: list[str], successors: Mapping[str, list[str]]
) -> dict[str, int]:
    """Strongly connected components (Tarjan's algorithm, iterative): node -> component id.

    Every node of `order` must be a key of `successors`, and every successor one of `order`.
    Also used by `analysis` (cycles outside loops), so both read a cycle the same way."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    component: dict[str, int] = {}
    groups = 0
    for root in order:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            nexts = successors[node]
            if child < len(nexts):
                work.append((node, child + 1))
                target = nexts[child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = groups
                    if member == node:
                        break
                groups += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return component


def _load_node(raw: Any, index: int, where: str, limits: BlueprintLimits) -> NodeDefinition:
    if not isinstance(raw, Mapping):
        raise BlueprintError(f"{where}: nodes[{index}] must be a mapping")
    node_id = raw.get("id")
    if not isinstance(node_id, str):
        raise BlueprintError(f"{where}: nodes[{index}] needs a string 'id'")
    if len(node_id) > limits.max_id_length:
        raise BlueprintError(
            f"{where}: nodes[{index}] id is longer than {limits.max_id_length} characters"
        )
    at = f"{where}: node '{node_id}'"
    uses = raw.get("uses")
    if not isinstance(uses, str) or not uses:
        raise BlueprintError(f"{at} needs a non-empty string 'uses'")
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        raise BlueprintError(f"{at}: 'params' must be a mapping")
    inputs = raw.get("inputs")
    if inputs is not None:
        if isinstance(inputs, Mapping):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
                raise BlueprintError(f"{at}: 'inputs' mapping must map strings to strings")
            inputs = MappingProxyType(dict(inputs))
        elif not isinstance(inputs, str):
            raise BlueprintError(f"{at}: 'inputs' must be a string or a mapping")
    config = _load_config(raw.get("config") or {}, at, limits)
    return NodeDefinition(
        id=node_id, uses=uses, params=_freeze(params), inputs=inputs, config=config
    )


def load_node(
    raw: Mapping[str, Any], where: str, limits: BlueprintLimits = DEFAULT_LIMITS
) -> NodeDefinition:
    """Validate one node mapping on its own (used for nodes added while a run runs)."""
    return _load_node(raw, 0, where, limits)


def _load_config(raw: Any, at: str, limits: BlueprintLimits) -> NodeConfig:
    if not isinstance(raw, Mapping):
        raise BlueprintError(f"{at}: 'config' must be a mapping")
    max_retries = raw.get("maxRetries", 1)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 1:
        raise BlueprintError(
            f"{at}: config.maxRetries must be an integer >= 1 (total attempts), got {max_retries!r}"
        )
    retry_delay = _non_negative(raw.get("retryDelay", 0), f"{at}: config.retryDelay")
    timeout = raw.get("timeout")
    if timeout is not None:
        timeout = _non_negative(timeout, f"{at}: config.timeout")
        if timeout == 0:
            raise BlueprintError(f"{at}: config.timeout must be > 0 milliseconds")
    fallback = raw.get("fallback")
    if fallback is not None and not isinstance(fallback, str):
        raise BlueprintError(f"{at}: config.fallback must be a node id (string)")
    join = raw.get("joinStrategy", "all")
    if join not in JOIN_STRATEGIES:
        raise BlueprintError(
            f"{at}: unknown joinStrategy {join!r} (expected one of {', '.join(JOIN_STRATEGIES)})"
        )
    return NodeConfig(
        max_retries=max_retries,
        retry_delay_ms=float(retry_delay),
        timeout_ms=None if timeout is None else float(timeout),
        fallback=fallback,
        join_strategy=join,
        concurrency=_concurrency(raw.get("concurrency"), at, limits),
        rate_limit=_rate_limit(raw.get("rateLimit"), at, limits),
    )


MAX_LIMIT = 1_000_000
"""The largest concurrency limit and rate limit `max` accepted."""


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise BlueprintError(f"{what} must be an integer from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def _limit_mapping(raw: Any, what: str, known: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise BlueprintError(f"{what} must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise BlueprintError(f"{what}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    return raw


def _concurrency(raw: Any, at: str, limits: BlueprintLimits) -> ConcurrencyLimit | None:
    if raw is None:
        return None
    what = f"{at}: config.concurrency"
    raw = _limit_mapping(raw, what, ("key", "limit"))
    key = _expression(raw.get("key"), f"{what}.key", limits)
    if key is None:
        raise BlueprintError(f"{what} needs a key (an expression; a string literal for one group)")
    return ConcurrencyLimit(key, _count(raw.get("limit"), f"{what}.limit"))


def _rate_limit(raw: Any, at: str, limits: BlueprintLimits) -> RateLimit | None:
    if raw is None:
        return None
    from .nodes.sleep import parse_duration_ms

    what = f"{at}: config.rateLimit"
    raw = _limit_mapping(raw, what, ("key", "max", "per"))
    key = _expression(raw.get("key"), f"{what}.key", limits)
    try:
        per = parse_duration_ms(raw.get("per"))
    except ValueError as exc:
        raise BlueprintError(
            f"{what}.per: {str(exc).replace('sleep duration', 'a window')}"
        ) from None
    if not 1 <= per <= 86_400_000:
        raise BlueprintError(f"{what}.per must be from 1 ms to 1 day, got {raw.get('per')!r}")
    return RateLimit(key, _count(raw.get("max"), f"{what}.max"), int(per), raw.get("per"))


def _non_negative(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BlueprintError(f"{what} must be a number of milliseconds, got {value!r}")
    if value < 0:
        raise BlueprintError(f"{what} must not be negative, got {value!r}")
    return float(value)


def _load_edge(
    raw: Any, index: int, where: str, ids: set[str], limits: BlueprintLimits
) -> EdgeDefinition:
    if not isinstance(raw, Mapping):
        raise BlueprintError(f"{where}: edges[{index}] must be a mapping")
    source, target = raw.get("source"), raw.get("target")
    at = f"{where}: edge {index} ({source!r} -> {target!r})"
    if not isinstance(source, str) or not isinstance(target, str):
        raise BlueprintError(f"{at} needs string 'source' and 'target'")
    if source not in ids:
        raise BlueprintError(f"{at}: unknown source node '{source}'")
    if target not in ids:
        raise BlueprintError(f"{at}: unknown target node '{target}'")
    action = raw.get("action")
    if action is not None and not isinstance(action, str):
        raise BlueprintError(f"{at}: 'action' must be a string")
    return EdgeDefinition(
        source=source,
        target=target,
        action=action,
        condition=_expression(raw.get("condition"), f"{at}: condition", limits),
        transform=_expression(raw.get("transform"), f"{at}: transform", limits),
    )


def _expression(source: Any, at: str, limits: BlueprintLimits) -> Expression | None:
    if source is None:
        return None
    if not isinstance(source, str):
        raise BlueprintError(f"{at} must be a string")
    return compile_checked(source, at, limits)


def compile_checked(source: str, at: str, limits: BlueprintLimits = DEFAULT_LIMITS) -> Expression:
    """Compile an expression under the blueprint limits; errors name where it came from."""
    try:
        return compile_expression(
            source,
            max_length=limits.max_expression_length,
            max_depth=limits.max_expression_depth,
        )
    except ExpressionError as exc:
        raise ExpressionError(f"{at}: {exc}") from None


def _as_list(value: Any, what: str) -> list[Any]:
    # Flowcraft accepts nodes/edges as arrays or as objects whose values are the items.
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, (list, tuple)):
        return list(value)
    raise BlueprintError(f"{what} must be a list")


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Turn frozen params/metadata back into plain JSON-able dicts and lists (fresh copies)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


thaw = _thaw
