"""Fluent construction of blueprints from Python code: ``create_flow(id)``.

The builder produces Flowcraft's camelCase JSON mapping (``to_blueprint()``), the validated
`Blueprint` (``build()``) and the registry of implementations it was given (``registry``, to pass
as ``FlowRuntime(registry=...)``).

Unlike the TypeScript original, ``uses`` keys of callables are stable across processes: a function
or class is keyed by ``f"{impl.__module__}.{impl.__qualname__}"``, never by a counter, ``id()`` or
registration order, so a worker process that imports the same module derives the same keys. Two
different objects that would get the same key (typically two lambdas, or two nested functions of
the same name) are rejected with a `BlueprintError`; give them distinct names, pass ``uses=``, or
pass a string key registered with the runtime yourself.

Building never mutates the builder: ``to_blueprint()`` can be called any number of times and gives
the same result each time.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from .blueprint import Blueprint, NodeConfig, compile_checked, load_blueprint
from .errors import BlueprintError

__all__ = ["FlowBuilder", "NodeImpl", "create_flow", "uses_key_for"]

NodeImpl: TypeAlias = Callable[..., Any] | type[Any] | str
"""A node implementation: a function, a class (a ``BaseNode`` subclass) or a registry key."""

ConfigInput: TypeAlias = Mapping[str, Any] | NodeConfig

_CONFIG_KEYS: dict[str, str] = {
    "maxRetries": "maxRetries",
    "max_retries": "maxRetries",
    "retryDelay": "retryDelay",
    "retry_delay": "retryDelay",
    "timeout": "timeout",
    "fallback": "fallback",
    "joinStrategy": "joinStrategy",
    "join_strategy": "joinStrategy",
}

_DURATION_RE = re.compile(r"^\d+[smhd]$")


def uses_key_for(impl: NodeImpl) -> str:
    """The stable registry key of ``impl``: the string itself, or ``module.qualname``."""
    if isinstance(impl, str):
        if not impl:
            raise BlueprintError("a uses key must be a non-empty string")
        return impl
    if not callable(impl):
        raise BlueprintError(
            f"a node implementation must be a function, a class or a string key, "
            f"not {type(impl).__name__}"
        )
    module = getattr(impl, "__module__", None)
    qualname = getattr(impl, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or not qualname:
        raise BlueprintError(
            f"cannot derive a stable uses key for {impl!r} (it has no __module__/__qualname__): "
            "use a named function or class, or pass uses='some-key'"
        )
    return f"{module}.{qualname}"


@dataclass(frozen=True, slots=True)
class _Node:
    id: str
    uses: str
    params: dict[str, Any]
    inputs: str | dict[str, str] | None
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Edge:
    source: str
    target: str
    action: str | None
    condition: str | None
    transform: str | None


@dataclass(frozen=True, slots=True)
class _Batch:
    scatter: str
    gather: str


@dataclass(frozen=True, slots=True)
class _Loop:
    id: str
    start: str
    end: str
    condition: str


class FlowBuilder:
    """Builds one blueprint. Every method that adds something returns the builder (chainable)."""

    def __init__(self, blueprint_id: str, *, metadata: Mapping[str, Any] | None = None) -> None:
        if not isinstance(blueprint_id, str) or not blueprint_id:
            raise BlueprintError("a blueprint id must be a non-empty string")
        self._id = blueprint_id
        self._metadata: dict[str, Any] = _json_copy(
            dict(metadata or {}), f"flow '{blueprint_id}': metadata"
        )
        self._nodes: list[_Node] = []
        self._edges: list[_Edge] = []
        self._batches: dict[str, _Batch] = {}
        self._loops: dict[str, _Loop] = {}
        self._taken: set[str] = set()
        self._registry: dict[str, Callable[..., Any] | type[Any]] = {}

    @property
    def id(self) -> str:
        return self._id

    # ------------------------------------------------------------------ nodes and edges

    def node(
        self,
        id: str,
        impl: NodeImpl,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: str | Mapping[str, str] | None = None,
        config: ConfigInput | None = None,
        uses: str | None = None,
    ) -> FlowBuilder:
        """Add a node running ``impl``.

        ``impl`` is a function, a class, or a string naming an existing registry key (a built-in
        such as ``"subflow"``, or an implementation registered with the runtime directly).
        ``uses`` overrides the derived key of a callable (needed for lambdas and callable
        objects). ``config`` takes the camelCase keys of the JSON (``maxRetries``, ``retryDelay``,
        ``timeout``, ``fallback``, ``joinStrategy``) or their snake_case aliases.
        """
        if isinstance(impl, str):
            if uses is not None and uses != impl:
                raise BlueprintError(
                    f"node '{id}': impl is already the uses key {impl!r}; do not pass uses="
                )
            key = uses_key_for(impl)
        else:
            key = self._register(impl, uses, f"node '{id}'")
        self._add_node(id, key, params=params, inputs=inputs, config=config)
        return self

    def edge(
        self,
        source: str,
        target: str,
        *,
        action: str | None = None,
        condition: str | None = None,
        transform: str | None = None,
    ) -> FlowBuilder:
        """Add an edge. Edges to a batch id go to its scatter node, edges from it leave its
        gather node; edges out of a loop controller without an action become ``break`` edges."""
        at = f"flow '{self._id}': edge {source!r} -> {target!r}"
        for name, value in (("source", source), ("target", target)):
            if not isinstance(value, str) or not value:
                raise BlueprintError(f"{at}: {name} must be a non-empty node id")
        for name, opt in (("action", action), ("condition", condition), ("transform", transform)):
            if opt is not None and not isinstance(opt, str):
                raise BlueprintError(f"{at}: {name} must be a string")
        self._edges.append(_Edge(source, target, action, condition, transform))
        return self

    # ------------------------------------------------------------------ built-in patterns

    def batch(
        self,
        id: str,
        worker: NodeImpl,
        *,
        input_key: str,
        output_key: str | None = None,
        chunk_size: int | None = None,
    ) -> FlowBuilder:
        """Run ``worker`` once per item of the list at ``input_key``, then gather the outputs.

        Adds ``<id>_scatter`` (``batch-scatter``) and ``<id>_gather`` (``batch-gather``, which
        writes the list of outputs to ``output_key``, default ``<id>_gather``). Use ``id`` in
        edges: edges to it reach the scatter node, edges from it leave the gather node.
        """
        where = f"flow '{self._id}': batch '{id}'"
        if not isinstance(input_key, str) or not input_key:
            raise BlueprintError(f"{where}: input_key must be a non-empty string")
        if output_key is not None and (not isinstance(output_key, str) or not output_key):
            raise BlueprintError(f"{where}: output_key must be a non-empty string")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise BlueprintError(f"{where}: chunk_size must be an integer >= 1, got {chunk_size!r}")
        scatter, gather = f"{id}_scatter", f"{id}_gather"
        self._check_new_id(id)
        for physical in (scatter, gather):
            if physical in self._taken:
                raise BlueprintError(
                    f"{where} needs node id '{physical}', which is already used in this flow"
                )
        worker_key = (
            uses_key_for(worker) if isinstance(worker, str) else self._register(worker, None, where)
        )
        out_key = output_key or gather
        scatter_params: dict[str, Any] = {
            "workerUsesKey": worker_key,
            "gatherNodeId": gather,
            "outputKey": out_key,
        }
        if chunk_size is not None:
            scatter_params["chunkSize"] = chunk_size
        self._add_node(scatter, "batch-scatter", params=scatter_params, inputs=input_key)
        self._add_node(
            gather, "batch-gather", params={"outputKey": out_key, "gatherNodeId": gather}
        )
        self._taken.add(id)
        self._batches[id] = _Batch(scatter, gather)
        self._edges.append(_Edge(scatter, gather, None, None, None))
        return self

    def loop(
        self,
        id: str,
        *,
        start_node_id: str,
        end_node_id: str,
        condition: str,
        max_iterations: int = 100,
    ) -> FlowBuilder:
        """Add loop controller ``id`` around the body ``start_node_id`` .. ``end_node_id``.

        Wire entry edges *to* ``id`` and exit edges *from* ``id``. The controller evaluates
        ``condition`` each time it is entered (before the first body run too, like ``while``):
        truthy takes the ``continue`` edge to the start node, falsy the exit (``break``) edges.
        More than ``max_iterations`` iterations fail the run.
        """
        where = f"flow '{self._id}': loop '{id}'"
        if not isinstance(condition, str) or not condition.strip():
            raise BlueprintError(f"{where}: condition must be a non-empty expression string")
        if (
            isinstance(max_iterations, bool)
            or not isinstance(max_iterations, int)
            or max_iterations < 1
        ):
            raise BlueprintError(
                f"{where}: max_iterations must be an integer >= 1, got {max_iterations!r}"
            )
        for name, value in (("start_node_id", start_node_id), ("end_node_id", end_node_id)):
            if not isinstance(value, str) or not value:
                raise BlueprintError(f"{where}: {name} must be a non-empty node id")
        self._add_node(
            id,
            "loop-controller",
            params={"condition": condition, "maxIterations": max_iterations},
            config={"joinStrategy": "any"},
        )
        self._loops[id] = _Loop(id, start_node_id, end_node_id, condition)
        self._edges.append(_Edge(end_node_id, id, None, None, None))
        self._edges.append(_Edge(id, start_node_id, "continue", None, None))
        return self

    def sleep(self, id: str, duration: int | float | str | datetime.timedelta) -> FlowBuilder:
        """Add a ``sleep`` node: ``duration`` in milliseconds, ``"10s"``/``"5m"``/``"1h"``/``"2d"``,
        or a ``timedelta``. It passes its input through."""
        where = f"flow '{self._id}': sleep '{id}'"
        value: int | float | str
        if isinstance(duration, datetime.timedelta):
            ms = duration.total_seconds() * 1000
            value = int(ms) if ms == int(ms) else ms
        else:
            value = duration
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise BlueprintError(f"{where}: duration must be milliseconds or a string like '10s'")
        if isinstance(value, str) and not _DURATION_RE.match(value):
            raise BlueprintError(
                f"{where}: duration {value!r} is not a number of milliseconds or "
                "<digits><s|m|h|d> (e.g. '10s', '5m', '1h', '2d')"
            )
        if not isinstance(value, str) and not (value >= 0 and value != float("inf")):
            raise BlueprintError(f"{where}: duration must be a finite number >= 0, got {value!r}")
        self._add_node(id, "sleep", params={"duration": value})
        return self

    def wait(self, id: str) -> FlowBuilder:
        """Add a ``wait`` node: the run becomes ``awaiting`` until resumed at this node."""
        self._add_node(id, "wait")
        return self

    # ------------------------------------------------------------------ outputs

    @property
    def registry(self) -> dict[str, Callable[..., Any] | type[Any]]:
        """uses key -> implementation, for ``FlowRuntime(registry=...)`` (a fresh dict)."""
        return dict(self._registry)

    def to_blueprint(self) -> dict[str, Any]:
        """The blueprint as Flowcraft's camelCase JSON mapping, validated with `load_blueprint`.

        Returns a fresh mapping on each call; the builder itself is not changed.
        """
        if not self._nodes:
            raise BlueprintError(
                f"flow '{self._id}' has no nodes: add at least one before building"
            )
        known = {n.id for n in self._nodes} | set(self._batches)
        for lp in self._loops.values():
            for role, ref in (("start", lp.start), ("end", lp.end)):
                if ref not in known:
                    raise BlueprintError(
                        f"flow '{self._id}': loop '{lp.id}' references unknown {role} node '{ref}'"
                    )
            compile_checked(lp.condition, f"flow '{self._id}': loop '{lp.id}' condition")

        nodes = [self._node_json(n) for n in self._nodes]
        edges = [self._edge_json(e) for e in self._edges]
        out: dict[str, Any] = {"id": self._id, "nodes": nodes, "edges": edges}
        if self._metadata:
            out["metadata"] = copy.deepcopy(self._metadata)
        load_blueprint(out)  # validates; load_blueprint copies what it keeps
        return out

    def build(self) -> Blueprint:
        """The validated, immutable `Blueprint`."""
        return load_blueprint(self.to_blueprint())

    def to_mermaid(self) -> str:
        """Mermaid flowchart of the built blueprint (see `flowcraft_fast.mermaid`)."""
        from .mermaid import to_mermaid

        return to_mermaid(self.build())

    def __repr__(self) -> str:
        return (
            f"FlowBuilder({self._id!r}, nodes={len(self._nodes)}, edges={len(self._edges)}, "
            f"registry={len(self._registry)})"
        )

    # ------------------------------------------------------------------ internals

    def _register(self, impl: Callable[..., Any] | type[Any], uses: str | None, where: str) -> str:
        if uses is not None:
            if not isinstance(uses, str) or not uses:
                raise BlueprintError(f"flow '{self._id}': {where}: uses must be a non-empty string")
            key = uses
        else:
            key = uses_key_for(impl)
        existing = self._registry.get(key)
        if existing is not None and not _same_impl(existing, impl):
            hint = (
                "two lambdas or nested functions with the same qualified name"
                if "<lambda>" in key or "<locals>" in key
                else "two different implementations"
            )
            raise BlueprintError(
                f"flow '{self._id}': {where}: uses key '{key}' is already taken by "
                f"{existing!r} ({hint}); use a named module-level function, pass uses='...', "
                "or pass a string key registered with the runtime"
            )
        self._registry[key] = impl
        return key

    def _check_new_id(self, node_id: str) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise BlueprintError(f"flow '{self._id}': a node id must be a non-empty string")
        if node_id in self._taken:
            raise BlueprintError(f"flow '{self._id}': duplicate node id '{node_id}'")

    def _add_node(
        self,
        node_id: str,
        uses: str,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: str | Mapping[str, str] | None = None,
        config: ConfigInput | None = None,
    ) -> None:
        self._check_new_id(node_id)
        at = f"flow '{self._id}': node '{node_id}'"
        if params is not None and not isinstance(params, Mapping):
            raise BlueprintError(f"{at}: params must be a mapping")
        node_params = _json_copy(dict(params or {}), f"{at}: params")
        node_inputs: str | dict[str, str] | None
        if inputs is None or isinstance(inputs, str):
            node_inputs = inputs
        elif isinstance(inputs, Mapping):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
                raise BlueprintError(f"{at}: inputs mapping must map strings to strings")
            node_inputs = dict(inputs)
        else:
            raise BlueprintError(f"{at}: inputs must be a string or a mapping")
        node_config = _normalise_config(config, at)
        self._nodes.append(_Node(node_id, uses, node_params, node_inputs, node_config))
        self._taken.add(node_id)

    def _node_json(self, n: _Node) -> dict[str, Any]:
        out: dict[str, Any] = {"id": n.id, "uses": n.uses}
        if n.params:
            out["params"] = copy.deepcopy(n.params)
        if n.inputs is not None:
            out["inputs"] = n.inputs if isinstance(n.inputs, str) else dict(n.inputs)
        if n.config:
            config = dict(n.config)
            fallback = config.get("fallback")
            if isinstance(fallback, str) and fallback in self._batches:
                config["fallback"] = self._batches[fallback].scatter
            out["config"] = config
        return out

    def _edge_json(self, e: _Edge) -> dict[str, Any]:
        source = self._batches[e.source].gather if e.source in self._batches else e.source
        target = self._batches[e.target].scatter if e.target in self._batches else e.target
        action = e.action
        if action is None and source in self._loops:
            action = "break"
        out: dict[str, Any] = {"source": source, "target": target}
        if action is not None:
            out["action"] = action
        if e.condition is not None:
            out["condition"] = e.condition
        if e.transform is not None:
            out["transform"] = e.transform
        return out


def create_flow(blueprint_id: str, *, metadata: Mapping[str, Any] | None = None) -> FlowBuilder:
    """Start building blueprint ``blueprint_id`` (``metadata`` may carry ``version``)."""
    return FlowBuilder(blueprint_id, metadata=metadata)


def _same_impl(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        # Bound methods are new objects on each attribute access but compare equal.
        return bool(a == b)
    except Exception:
        return False


def _normalise_config(config: ConfigInput | None, at: str) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, NodeConfig):
        return config.to_json()
    if not isinstance(config, Mapping):
        raise BlueprintError(f"{at}: config must be a mapping")
    out: dict[str, Any] = {}
    seen_as: dict[str, str] = {}
    for key, value in config.items():
        canonical = _CONFIG_KEYS.get(key) if isinstance(key, str) else None
        if canonical is None:
            allowed = ", ".join(sorted(set(_CONFIG_KEYS)))
            raise BlueprintError(f"{at}: unknown config key {key!r} (allowed: {allowed})")
        if canonical in seen_as:
            raise BlueprintError(
                f"{at}: config gives {canonical} twice (as {seen_as[canonical]!r} and {key!r})"
            )
        seen_as[canonical] = key
        if value is not None:
            out[canonical] = value
    return out


def _json_copy(value: dict[str, Any], what: str) -> dict[str, Any]:
    """A deep copy of ``value``, which must be JSON-serialisable (blueprints travel as JSON)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BlueprintError(f"{what} must be JSON-serialisable: {exc}") from None
    copied: dict[str, Any] = copy.deepcopy(value)
    return copied
