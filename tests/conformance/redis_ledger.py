"""An execution ledger kept in Redis, outside the worker processes, so counts survive them."""

from __future__ import annotations

from typing import Any

import redis.asyncio


class RedisLedger:
    """`ledger:<runId>` hash: node id -> attempts started (HINCRBY from every attempt)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            self._client = redis.asyncio.Redis.from_url(self.url, decode_responses=True)
        return self._client

    async def record(self, run_id: str, node_id: str) -> None:
        await self._redis().hincrby(f"ledger:{run_id}", node_id, 1)

    async def counts(self, run_id: str) -> dict[str, int]:
        raw = await self._redis().hgetall(f"ledger:{run_id}")
        return {k: int(v) for k, v in raw.items()}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
