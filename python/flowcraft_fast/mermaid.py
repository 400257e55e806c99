"""Mermaid flowcharts of blueprints: ``to_mermaid(blueprint)``.

Unlike the TypeScript original, the output is always valid Mermaid whatever the node ids,
actions and expressions contain: nodes get generated Mermaid ids (``n0``, ``n1``, ... in blueprint
order) and every label is double-quoted with ``"``, ``<``, ``>``, ``&``, ``#``, ``|`` and backticks
written as Mermaid entity codes and line breaks as spaces. The same blueprint always gives the same
text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .blueprint import Blueprint, EdgeDefinition, NodeDefinition, load_blueprint

__all__ = ["escape_label", "to_mermaid"]

# `#` first: the other replacements introduce `#`.
_ESCAPES: tuple[tuple[str, str], ...] = (
    ("#", "#35;"),
    ("&", "#amp;"),
    ('"', "#quot;"),
    ("<", "#lt;"),
    (">", "#gt;"),
    ("|", "#124;"),
    ("`", "#96;"),
)

# Node shapes by `uses`: (open, close) around the quoted label.
_SHAPES: dict[str, tuple[str, str]] = {
    "loop-controller": ("{", "}"),
    "wait": ("([", "])"),
    "sleep": ("([", "])"),
    "batch-scatter": ("[/", "/]"),
    "batch-gather": ("[\\", "\\]"),
    "subflow": ("[[", "]]"),
}
_DEFAULT_SHAPE = ("[", "]")


def escape_label(text: str) -> str:
    """Make ``text`` safe inside a double-quoted Mermaid label."""
    for raw, entity in _ESCAPES:
        text = text.replace(raw, entity)
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


def to_mermaid(blueprint: Blueprint | Mapping[str, Any] | str | bytes) -> str:
    """A ``flowchart TD`` of ``blueprint`` (a `Blueprint`, or anything `load_blueprint` takes).

    Nodes show their id and ``uses``; edges are labelled with their action, condition and
    transform; a node's ``fallback`` is drawn as a dotted edge labelled ``fallback``.
    """
    bp = load_blueprint(blueprint)
    mermaid_ids = {node.id: f"n{i}" for i, node in enumerate(bp.nodes)}
    lines = ["flowchart TD"]
    for node in bp.nodes:
        lines.append(f"    {mermaid_ids[node.id]}{_node_shape(node)}")
    for edge in bp.edges:
        lines.append(_edge_line(edge, mermaid_ids))
    for node in bp.nodes:
        if node.config.fallback is not None:
            lines.append(
                f'    {mermaid_ids[node.id]} -.->|"fallback"| {mermaid_ids[node.config.fallback]}'
            )
    return "\n".join(lines) + "\n"


def _node_shape(node: NodeDefinition) -> str:
    open_, close = _SHAPES.get(node.uses, _DEFAULT_SHAPE)
    label = f"{escape_label(node.id)}<br/>uses: {escape_label(node.uses)}"
    return f'{open_}"{label}"{close}'


def _edge_line(edge: EdgeDefinition, mermaid_ids: Mapping[str, str]) -> str:
    source, target = mermaid_ids[edge.source], mermaid_ids[edge.target]
    parts: list[str] = []
    if edge.action is not None:
        parts.append(edge.action)
    if edge.condition is not None:
        parts.append(f"if {edge.condition.source}")
    if edge.transform is not None:
        parts.append(f"transform: {edge.transform.source}")
    if not parts:
        return f"    {source} --> {target}"
    label = ", ".join(escape_label(p) for p in parts)
    return f'    {source} -->|"{label}"| {target}'
