"""The context a distributed node sees: the run's state as claimed, plus its own writes.

Nothing reaches Redis while the node runs; its writes are committed with its output, in the
same atomic step, or not at all (a node whose job is re-delivered leaves no partial writes).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping
from typing import Any

from .. import jsoncodec
from ..runtime.context import PatchOp, check_json_value, normalise_op

_DELETED = object()


class BufferedContext:
    """Async context over a snapshot; `changes()` gives what to commit."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self._snapshot = snapshot
        self._writes: dict[str, Any] = {}

    def _lookup(self, key: str) -> Any:
        if key in self._writes:
            return self._writes[key]
        return self._snapshot.get(key, _DELETED)

    async def get(self, key: str, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is _DELETED else value

    async def set(self, key: str, value: Any) -> None:
        check_json_value(value, f"context key {key!r}")
        self._writes[key] = value

    async def has(self, key: str) -> bool:
        return self._lookup(key) is not _DELETED

    async def delete(self, key: str) -> bool:
        existed = self._lookup(key) is not _DELETED
        self._writes[key] = _DELETED
        return existed

    async def to_dict(self) -> dict[str, Any]:
        return dict(self.view())

    async def patch(self, ops: Iterable[PatchOp]) -> None:
        for op in ops:
            kind, key, value = normalise_op(op)
            if kind == "set":
                await self.set(key, value)
            else:
                await self.delete(key)

    def write(self, key: str, value: Any) -> None:
        """An engine write (outputs, inputs): recorded like a node's own."""
        self._writes[key] = value

    def write_delete(self, key: str) -> None:
        """An engine delete (bookkeeping keys), committed with the node."""
        self._writes[key] = _DELETED

    def view(self) -> Mapping[str, Any]:
        """The context as the node left it (for routing conditions and transforms)."""
        live = {k: v for k, v in self._writes.items() if v is not _DELETED}
        base = {k: v for k, v in self._snapshot.items() if self._writes.get(k, v) is not _DELETED}
        return ChainMap(live, base)

    def changes(self) -> tuple[list[tuple[str, str]], list[str]]:
        sets = [
            (k, jsoncodec.dumps(v, what=f"context key {k!r}"))
            for k, v in self._writes.items()
            if v is not _DELETED
        ]
        deletes = [k for k, v in self._writes.items() if v is _DELETED]
        return sets, deletes
