"""The in-memory async context: the run's state as one dict, with JSON-only values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

PatchOp = tuple[str, str] | tuple[str, str, Any] | Mapping[str, Any]

_SCALARS = (str, int, bool, type(None))


_EXIT = object()
"""Marks, on the walk's stack, the end of a container's children (it leaves the path)."""


def check_json_value(value: Any, what: str) -> None:
    """Raise TypeError (naming `what`) unless `value` is plain JSON data.

    Accepted: None, bool, int, finite float, str, list/tuple of JSON, dict with str keys of
    JSON. Sets, bytes, objects, NaN and infinities are refused, and so is a container that
    holds itself (a reference cycle), at once: a run behaves the same in memory and over Redis
    (where every value is stored as JSON text) and never walks a cycle forever.
    """
    if isinstance(value, _SCALARS):
        return
    on_path: set[int] = set()
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if item is _EXIT:
            on_path.discard(id(stack.pop()))
            continue
        if isinstance(item, _SCALARS):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise TypeError(f"{what} is not JSON-serialisable: non-finite number {item!r}")
            continue
        if isinstance(item, (list, tuple, dict)):
            if id(item) in on_path:
                raise TypeError(
                    f"{what} is not JSON-serialisable: a {type(item).__name__} that contains "
                    "itself (a reference cycle)"
                )
            on_path.add(id(item))
            stack.append(item)
            stack.append(_EXIT)
            if isinstance(item, dict):
                for k, v in item.items():
                    if not isinstance(k, str):
                        raise TypeError(
                            f"{what} is not JSON-serialisable: mapping key {k!r} is not a string"
                        )
                    stack.append(v)
            else:
                stack.extend(item)
            continue
        raise TypeError(
            f"{what} is not JSON-serialisable: a value of type {type(item).__name__} "
            "(use dicts, lists, strings, numbers, booleans and None)"
        )


class MemoryContext:
    """`ctx.context` for in-memory runs: async methods over a plain dict (`data`).

    Keys are flat strings: `"_outputs.a"` is one key, not a path.
    """

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = {} if data is None else data

    async def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    async def set(self, key: str, value: Any) -> None:
        check_json_value(value, f"context key {key!r}")
        self.data[key] = value

    async def has(self, key: str) -> bool:
        return key in self.data

    async def delete(self, key: str) -> bool:
        return self.data.pop(key, _MISSING) is not _MISSING

    async def to_dict(self) -> dict[str, Any]:
        return dict(self.data)

    async def patch(self, ops: Iterable[PatchOp]) -> None:
        """Apply set/delete operations as one batch: all are checked before any is applied."""
        checked: list[tuple[str, str, Any]] = [normalise_op(op) for op in ops]
        for kind, key, value in checked:
            if kind == "set":
                check_json_value(value, f"context key {key!r}")
        for kind, key, value in checked:
            if kind == "set":
                self.data[key] = value
            else:
                self.data.pop(key, None)


_MISSING = object()


def normalise_op(op: PatchOp) -> tuple[str, str, Any]:
    if isinstance(op, Mapping):
        kind, key, value = op.get("op"), op.get("key"), op.get("value")
    elif isinstance(op, tuple) and len(op) in (2, 3):
        kind, key = op[0], op[1]
        value = op[2] if len(op) == 3 else None
    else:
        raise TypeError(f"a patch operation must be a tuple or a mapping, not {op!r}")
    if kind not in ("set", "delete"):
        raise ValueError(f"unknown patch operation {kind!r} (expected 'set' or 'delete')")
    if not isinstance(key, str):
        raise TypeError(f"patch key must be a string, not {key!r}")
    if kind == "set" and isinstance(op, tuple) and len(op) != 3:
        raise ValueError(f"a 'set' operation needs a value: {op!r}")
    return kind, key, value
