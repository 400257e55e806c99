"""The run state a distributed node reads: fields as claimed (JSON text), decoded on first use.

A node that reads two fields of a wide run's state decodes two, and no two nodes share a
decoded (mutable) value. The node's writes are buffered over it (`runtime.buffered`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .. import jsoncodec


class LazyState(Mapping[str, Any]):
    """Run state fields (JSON text) decoded on first access."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: Mapping[str, str]) -> None:
        self._raw = raw
        self._decoded: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        try:
            return self._decoded[key]
        except KeyError:
            pass
        value = jsoncodec.loads(self._raw[key], what=f"context key {key!r}")
        self._decoded[key] = value
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)
