"""A node's input: from its incoming edges, or from its `inputs` declaration (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..blueprint import NodeDefinition

_MISSING = object()


def start_input_key(node_id: str) -> str:
    """Context key a caller (or a parent subflow) sets to give a start node its input."""
    return f"_inputs.{node_id}"


def resolve_input(
    node: NodeDefinition, context: Mapping[str, Any], edge_value: Any, transformed: bool = False
) -> Any:
    """The input handed to `node`.

    Without `inputs`, it is `edge_value` (the join's value, see `ledger`; for a start node, the
    context key `_inputs.<id>`). With `inputs`, a string names a source and a mapping resolves
    each of its fields the same way (see `resolve_source`), unless an incoming edge of the node
    has a transform (`transformed`): then, as in Flowcraft, the edges' value is the input (the
    transform having been applied to what `inputs` names, see `routing`).
    """
    spec = node.inputs
    if spec is None or transformed:
        return edge_value
    if isinstance(spec, str):
        return resolve_source(spec, context)
    return {name: resolve_source(source, context) for name, source in spec.items()}


def resolve_source(source: str, context: Mapping[str, Any]) -> Any:
    """Resolve one `inputs` source string against the context.

    - `_...`: that context key verbatim (`_outputs.a`, `_batch.x.0`);
    - `x`: the output of node `x` (`_outputs.x`), else the context key `x`;
    - `x.a.b`: the output of node `x`, then fields `a.b` inside it; else the context key
      `x.a.b`; else the context key `x`, then fields `a.b`. A broken path gives None.
    """
    if source.startswith("_"):
        return context.get(source)
    value = context.get(f"_outputs.{source}", _MISSING)
    if value is not _MISSING:
        return value
    value = context.get(source, _MISSING)
    if value is not _MISSING:
        return value
    if "." not in source:
        return None
    head, _, rest = source.partition(".")
    base = context.get(f"_outputs.{head}", _MISSING)
    if base is _MISSING:
        base = context.get(head)
    return _walk(base, rest.split("."))


def _walk(value: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else None
        else:
            return None
    return value
