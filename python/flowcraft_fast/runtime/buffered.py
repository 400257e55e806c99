"""The context a node sees: the run's state, plus its own writes, buffered.

Nothing reaches the run's state while a node runs; its writes are committed with its output, in
the same step (over Redis: the same atomic script), or not at all: a failed attempt, a
re-delivered job or a failed node leave no partial writes, in memory and distributed alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .. import jsoncodec
from .context import PatchOp, check_json_value, normalise_op

_DELETED: Any = object()


class _View(Mapping[str, Any]):
    """The state with the node's writes over it."""

    __slots__ = ("_base", "_writes")

    def __init__(self, base: Mapping[str, Any], writes: dict[str, Any]) -> None:
        self._base = base
        self._writes = writes

    def __getitem__(self, key: str) -> Any:
        if key in self._writes:
            value = self._writes[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self._base[key]

    def __contains__(self, key: object) -> bool:
        if key in self._writes:
            return self._writes[key] is not _DELETED
        return key in self._base

    def __iter__(self) -> Iterator[str]:
        for key in self._base:
            if self._writes.get(key, None) is not _DELETED:
                yield key
        for key, value in self._writes.items():
            if value is not _DELETED and key not in self._base:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


class BufferedContext:
    """Async context over the claimed state; `changes()` gives what to commit."""

    __slots__ = ("_state", "_view", "_writes")

    def __init__(self, state: Mapping[str, Any]) -> None:
        self._state = state
        self._writes: dict[str, Any] = {}
        self._view = _View(state, self._writes)

    async def get(self, key: str, default: Any = None) -> Any:
        return self._view.get(key, default)

    async def set(self, key: str, value: Any) -> None:
        check_json_value(value, f"context key {key!r}")
        self._writes[key] = value

    async def has(self, key: str) -> bool:
        return key in self._view

    async def delete(self, key: str) -> bool:
        existed = key in self._view
        self._writes[key] = _DELETED
        return existed

    async def to_dict(self) -> dict[str, Any]:
        return dict(self._view)

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

    def write_all(self, writes: Mapping[str, Any]) -> None:
        """Several engine writes at once."""
        self._writes.update(writes)

    def write_delete(self, key: str) -> None:
        """An engine delete (bookkeeping keys), committed with the node."""
        self._writes[key] = _DELETED

    def view(self) -> Mapping[str, Any]:
        """The context as the node left it (for routing conditions and transforms)."""
        return self._view

    def mark(self) -> dict[str, Any] | None:
        """A point to roll back to (see `rollback`); cheap when nothing was written yet."""
        return dict(self._writes) if self._writes else None

    def rollback(self, mark: dict[str, Any] | None) -> None:
        """Forget the writes made since `mark` (a failed attempt's)."""
        self._writes.clear()
        if mark:
            self._writes.update(mark)

    def apply_to(self, data: dict[str, Any]) -> None:
        """Commit the writes to an in-memory run's context."""
        for key, value in self._writes.items():
            if value is _DELETED:
                data.pop(key, None)
            else:
                data[key] = value

    def written(self) -> list[tuple[str, str, Any]]:
        """(key, "set" | "delete", value or None) per key written, in write order (the
        `context:change` events)."""
        return [
            (k, "delete", None) if v is _DELETED else (k, "set", v) for k, v in self._writes.items()
        ]

    def changes(
        self, encode: jsoncodec.EncodeOnce | None = None
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """(field, JSON text) pairs to set and fields to delete."""
        dumps = encode or jsoncodec.EncodeOnce()
        sets = [
            (k, dumps(v, f"context key {k!r}"))
            for k, v in self._writes.items()
            if v is not _DELETED
        ]
        deletes = [k for k, v in self._writes.items() if v is _DELETED]
        return sets, deletes
