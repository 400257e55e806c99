"""`RedisContext`: one run's context, stored in the hash `workflow:state:<runId>`.

Each context key is one hash field holding JSON text (`null` for None), so the TypeScript
Flowcraft and any Redis client can read it. All I/O runs in the Rust core.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import _core, jsoncodec
from ..runtime.context import PatchOp, normalise_op
from .connection import open_connection


class RedisContext:
    """Async key/value view of one run's state in Redis.

    `conn` is a Redis URL (`redis://`, `rediss://`, `unix://`), a redis-py client whose
    connection parameters are reused, or a `flowcraft_fast._core.RedisConnection` to share.
    Calls retry LOADING, BUSY and connection failures for up to `retry_deadline` seconds
    (see `connection.open_connection`).
    """

    def __init__(
        self,
        conn: str | Any,
        run_id: str,
        *,
        key_prefix: str = "",
        retry_deadline: float | None = None,
    ) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("run_id must be a non-empty string")
        self._conn = open_connection(conn, retry_deadline=retry_deadline)
        self._store = _core.StateStore(self._conn, key_prefix=key_prefix)
        self.run_id = run_id
        self.key = _core.state_key(key_prefix, run_id)

    async def get(self, key: str, default: Any = None) -> Any:
        text = await self._store.get(self.run_id, key)
        if text is None:
            return default
        return jsoncodec.loads(text, what=f"context key {key!r}")

    async def set(self, key: str, value: Any) -> None:
        await self._store.set(self.run_id, key, jsoncodec.dumps(value, what=f"context key {key!r}"))

    async def has(self, key: str) -> bool:
        return await self._store.has(self.run_id, key)

    async def delete(self, key: str) -> bool:
        """Remove a key; True when it existed."""
        return await self._store.delete(self.run_id, key)

    async def to_dict(self) -> dict[str, Any]:
        raw = await self._store.get_all(self.run_id)
        return {k: jsoncodec.loads(v, what=f"context key {k!r}") for k, v in raw.items()}

    async def patch(self, ops: Iterable[PatchOp]) -> None:
        """Apply set/delete operations atomically: readers see all of them or none.

        Each op is `{"op": "set", "key": k, "value": v}`, `{"op": "delete", "key": k}`,
        `("set", k, v)` or `("delete", k)`. A later op on the same key wins.
        """
        final: dict[str, str | None] = {}
        for op in ops:
            kind, key, value = normalise_op(op)
            if kind == "set":
                final[key] = jsoncodec.dumps(value, what=f"context key {key!r}")
            else:
                final[key] = None
        sets = [(k, v) for k, v in final.items() if v is not None]
        deletes = [k for k, v in final.items() if v is None]
        await self._store.patch(self.run_id, sets, deletes)

    def __repr__(self) -> str:
        return f"RedisContext({self._conn.server!r}, run_id={self.run_id!r})"
