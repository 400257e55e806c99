"""How native results reach asyncio (rust/src/bridge.rs): one completion queue and eventfd per
event loop, drained by the loop's own thread.

- Many calls in flight at once each get their own result; a Redis error arrives as the
  exception of its own call, the others unaffected.
- A call whose awaiting task gave up (a timeout) is not answered later: no "invalid state"
  error reaches the loop, and the loop goes on serving calls.
- Each event loop gets its own queue: loops one after another (`asyncio.run` twice with one
  connection) and loops in two threads at once.
- A loop that cannot watch a file descriptor still gets its results (the fallback path).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest
import redis

from flowcraft_fast import _core

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


def _fill(url: str, n: int, tag: str) -> None:
    r = redis.Redis.from_url(url)
    r.mset({f"bridge:{tag}:{i}": f"v{i}" for i in range(n)})
    r.close()


async def _read_all(conn: _core.RedisConnection, n: int, tag: str) -> list[str | None]:
    return list(await asyncio.gather(*(conn.get(f"bridge:{tag}:{i}") for i in range(n))))


def test_concurrent_calls_get_their_own_results_and_errors(redis_url: str) -> None:
    _fill(redis_url, 500, "a")
    r = redis.Redis.from_url(redis_url)
    r.set("workflow:state:not-a-hash", "x")  # WRONGTYPE for a hash read
    r.close()
    conn = _core.RedisConnection(redis_url)
    states = _core.StateStore(conn)

    async def main() -> tuple[list[str | None], list[Any]]:
        values = await _read_all(conn, 500, "a")
        mixed = await asyncio.gather(
            conn.get("bridge:a:1"),
            states.get("not-a-hash", "f"),
            conn.get("bridge:a:2"),
            return_exceptions=True,
        )
        return values, mixed

    values, mixed = asyncio.run(main())
    assert values == [f"v{i}" for i in range(500)]
    assert mixed[0] == "v1" and mixed[2] == "v2"
    assert isinstance(mixed[1], _core.RedisCommandError) and "WRONGTYPE" in str(mixed[1])


def test_a_call_given_up_is_not_answered_later(redis_url: str) -> None:
    conn = _core.RedisConnection(redis_url)
    queue = _core.Queue(conn, "bridge")
    problems: list[dict[str, Any]] = []

    async def main() -> str | None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: problems.append(ctx))
        for _ in range(3):  # BZPOPMIN on an empty marker: blocks past the timeout
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(queue.wait_for_work(0.5), 0.05)
        await asyncio.sleep(0.8)  # the blocked pops end meanwhile; nobody takes their replies
        return await conn.ping()

    unraisable: list[Any] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        assert asyncio.run(main()) == "PONG"
    finally:
        sys.unraisablehook = hook
    assert problems == [] and unraisable == []


def test_each_event_loop_gets_its_own_queue(redis_url: str) -> None:
    _fill(redis_url, 200, "b")
    conn = _core.RedisConnection(redis_url)
    for _ in range(3):  # one loop after another, one connection
        assert asyncio.run(_read_all(conn, 200, "b")) == [f"v{i}" for i in range(200)]
    results: dict[int, list[str | None]] = {}

    def in_thread(k: int) -> None:
        results[k] = asyncio.run(_read_all(conn, 200, "b"))

    threads = [threading.Thread(target=in_thread, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {k: [f"v{i}" for i in range(200)] for k in range(2)}


class _NoReaders(asyncio.SelectorEventLoop):
    def add_reader(self, *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError("this loop watches no file descriptors")


def test_a_loop_without_readers_still_gets_results(redis_url: str) -> None:
    _fill(redis_url, 50, "c")
    conn = _core.RedisConnection(redis_url)
    loop = _NoReaders()
    try:
        assert loop.run_until_complete(_read_all(conn, 50, "c")) == [f"v{i}" for i in range(50)]
    finally:
        loop.close()
