"""Every call to Redis retries LOADING, BUSY and connection failures until a deadline.

Real private redis-servers only (no mocks):
- LOADING: a server with AOF persistence, a few thousand filler keys in its base file and
  `key-load-delay`, so after a restart it answers LOADING for a few seconds; runs started
  before, during and after the restart all start once and complete.
- BUSY: a Lua busy loop (`busy-reply-threshold` lowered) makes the server answer BUSY until
  SCRIPT KILL; client calls made meanwhile succeed once it ends.
- the deadline: with Redis stopped, a call fails after its deadline with a message saying so.
- lost replies: a TCP proxy between client and server forwards a script call, then drops the
  connection instead of the reply, so the client cannot know whether it ran; sent again, a
  start, a cancel and a resume each report success once (their scripts are safe to run again).

No assertion depends on speed; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from flowcraft_fast import (
    BullMQAdapter,
    FlowClient,
    FlowRuntime,
    NodeContext,
    RedisContext,
    RedisCoordinationStore,
)
from flowcraft_fast._core import RedisCommandError, RedisConnectionError
from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.connection import RETRY_DEADLINE_ENV, resolve_retry_deadline
from waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]

QUEUE = "q"
WAIT_S = 60.0
"""Bound on waiting for a run's result (generous: nothing here depends on speed)."""

RUNS: Counter[tuple[str, str]] = Counter()
"""(run id, node id) -> how often the node ran."""


async def step(ctx: NodeContext) -> Any:
    RUNS[(ctx.run_id, ctx.node_id)] += 1
    base = ctx.input if isinstance(ctx.input, int) else await ctx.context.get("x")
    return base + 1


BLUEPRINTS = [
    {
        "id": "chain",
        "metadata": {"version": "1"},
        "nodes": [{"id": f"s{i}", "uses": "step"} for i in (1, 2, 3)],
        "edges": [{"source": "s1", "target": "s2"}, {"source": "s2", "target": "s3"}],
    },
    {
        "id": "approval",
        "nodes": [{"id": "s1", "uses": "step"}, {"id": "w", "uses": "wait"}],
        "edges": [{"source": "s1", "target": "w"}],
    },
]


def sync_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)


def error_count(r: redis.Redis, code: str) -> int:
    """How often the server answered with error `code` since it started (INFO errorstats)."""
    return int(r.info("errorstats").get(f"errorstat_{code}", {}).get("count", 0))


@asynccontextmanager
async def serving(url: str) -> AsyncIterator[BullMQAdapter]:
    """A worker serving BLUEPRINTS on QUEUE (its own connection, default retry deadline)."""
    rt = FlowRuntime(blueprints=BLUEPRINTS, registry={"step": step})
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        coordination_store=RedisCoordinationStore(url, state_ttl_seconds=600),
        queue_name=QUEUE,
        concurrency=16,
        lease_ms=10_000,
        stalled_interval_seconds=1,
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=10)


async def completed_value(client: FlowClient, run_id: str) -> Any:
    result = await client.wait(run_id, timeout=WAIT_S)
    assert result.status == "completed", (run_id, result.status, result.errors)
    return result.context["s3"]


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    RUNS.clear()


# ---------------------------------------------------------------------------- LOADING

FILLER_KEYS = 3000
KEY_LOAD_DELAY_US = 1000
"""With FILLER_KEYS, loading takes about FILLER_KEYS * KEY_LOAD_DELAY_US = 3 s."""


def loading_server(redis_factory: Any) -> RedisServer:
    """A persistent server that answers LOADING for a few seconds after each restart."""
    try:
        server: RedisServer = redis_factory(
            persistence=True,
            extra_args=(
                "--key-load-delay",
                str(KEY_LOAD_DELAY_US),
                # serve clients (with LOADING) while loading, not only once done
                "--loading-process-events-interval-bytes",
                "1024",
            ),
        )
    except RuntimeError as exc:  # a redis-server without these (debug) settings
        pytest.skip(f"redis-server cannot slow down its loading: {exc}")
    r = sync_redis(server.url)
    pipe = r.pipeline(transaction=False)
    for i in range(FILLER_KEYS):
        pipe.set(f"filler:{i}", "x" * 100)
    pipe.execute()
    # Into the AOF's base file (an RDB preamble), whose loading `key-load-delay` slows down.
    r.bgrewriteaof()

    deadline = time.monotonic() + 60
    while True:
        info = r.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            break
        assert time.monotonic() < deadline, "the AOF rewrite did not finish within 60 s"
        time.sleep(0.02)
    r.close()
    return server


async def test_starts_and_runs_complete_across_a_loading_restart(redis_factory: Any) -> None:
    server = loading_server(redis_factory)
    async with serving(server.url) as adapter:
        client = FlowClient(server.url, queue_name=QUEUE)
        before = {f"before-{i}": i * 10 for i in range(20)}
        for run_id, x in before.items():
            await client.start("chain", {"x": x}, run_id=run_id)

        await asyncio.to_thread(server.stop)
        # Started while Redis is down (refused), then loading (LOADING), then back.
        during = {f"during-{i}": 1000 + i * 10 for i in range(50)}
        starts = [
            asyncio.ensure_future(client.start("chain", {"x": x}, run_id=run_id))
            for run_id, x in during.items()
        ]
        await asyncio.to_thread(server.start, 60.0)  # returns once it answers PING: loaded
        started = await asyncio.wait_for(asyncio.gather(*starts), WAIT_S)
        r = sync_redis(server.url)
        loading_replies = error_count(r, "LOADING")

        after = {f"after-{i}": 5000 + i for i in range(5)}
        for run_id, x in after.items():
            await client.start("chain", {"x": x}, run_id=run_id)

        runs = {**before, **during, **after}
        values = await asyncio.wait_for(
            asyncio.gather(*(completed_value(client, run_id) for run_id in runs)), WAIT_S * 2
        )
        print(
            f"\n[LOADING] LOADING replies={loading_replies} starts during the restart="
            f"{len(during)} node runs={sum(RUNS.values())} commits="
            f"{adapter.worker.stats.committed} leases lost={adapter.worker.stats.lost}"
        )
        # every start returned its own id, no exception, and no run was created twice
        assert started == list(during)
        assert values == [x + 3 for x in runs.values()]
        metas = set(r.scan_iter("workflow:run:*"))
        assert metas == {f"workflow:run:{run_id}" for run_id in runs}
        for run_id in runs:
            assert r.hget(f"workflow:run:{run_id}", "startToken")
            assert RUNS[(run_id, "s3")] >= 1
        # the restart did make Redis answer LOADING: the test exercised what it claims to
        assert loading_replies > 0, "no call met LOADING: the restart proved nothing"
        # and a run started with an id already used is not started again (idempotent)
        ended = r.hget("workflow:run:during-0", "endedAt")
        assert await client.start("chain", {"x": 1}, run_id="during-0") == "during-0"
        assert r.hget("workflow:run:during-0", "endedAt") == ended


# ---------------------------------------------------------------------------- BUSY


async def test_client_calls_made_while_a_script_is_busy_succeed_after_it(
    redis_factory: Any,
) -> None:
    server: RedisServer = redis_factory()
    r = sync_redis(server.url)
    r.config_set("lua-time-limit", 100)  # busy-reply-threshold: BUSY after 100 ms
    async with serving(server.url):
        client = FlowClient(server.url, queue_name=QUEUE)
        ctx = RedisContext(server.url, "side-run")
        waiting_run = await client.start("approval", {"x": 1})
        to_cancel = await client.start("approval", {"x": 2})
        for run_id in (waiting_run, to_cancel):
            assert (await client.wait(run_id, timeout=WAIT_S)).status == "awaiting"
        finished = await client.start("chain", {"x": 3})
        assert await completed_value(client, finished) == 6

        def busy_loop() -> None:
            with contextlib.suppress(redis.ResponseError):  # "Script killed by user"
                redis.Redis.from_url(server.url).eval("while true do end", 0)

        looping = threading.Thread(target=busy_loop, daemon=True)
        looping.start()
        probe = redis.Redis.from_url(server.url, socket_timeout=10)

        def is_busy() -> bool:
            try:
                probe.ping()
            except redis.ResponseError as exc:
                return str(exc).startswith("BUSY")
            return False

        await wait_until(is_busy, 30, "Redis to answer BUSY")
        calls = {
            "start": asyncio.ensure_future(client.start("chain", {"x": 10}, run_id="busy-1")),
            "status": asyncio.ensure_future(client.status(finished)),
            "wait": asyncio.ensure_future(client.wait(finished, timeout=WAIT_S)),
            "resume": asyncio.ensure_future(client.resume(waiting_run, "w", output=7)),
            "cancel": asyncio.ensure_future(client.cancel(to_cancel)),
            "context": asyncio.ensure_future(ctx.set("k", {"v": 1})),
        }
        await asyncio.sleep(1.0)  # a second of BUSY for the calls to meet
        assert is_busy(), "the busy script ended by itself?"
        pending = [name for name, task in calls.items() if not task.done()]
        assert pending == list(calls), {n: t for n, t in calls.items() if t.done()}
        probe.script_kill()
        await asyncio.to_thread(looping.join, 30)
        assert not looping.is_alive()

        results = dict(
            zip(
                calls,
                await asyncio.wait_for(asyncio.gather(*calls.values()), WAIT_S),
                strict=True,
            )
        )
        busy_replies = error_count(r, "BUSY")
        print(f"\n[BUSY] BUSY replies={busy_replies}")
        assert results["start"] == "busy-1"
        assert results["status"] == "completed"
        assert results["wait"].status == "completed"
        assert results["cancel"] is True
        assert await ctx.get("k") == {"v": 1}
        assert await completed_value(client, "busy-1") == 13
        resumed = await client.wait(waiting_run, timeout=WAIT_S)
        assert resumed.status == "completed" and resumed.context["w"] == 7
        assert await client.status(to_cancel) == "cancelled"
        assert busy_replies > 0


# ---------------------------------------------------------------------------- the deadline


async def test_a_call_to_a_stopped_redis_fails_after_its_deadline_saying_so(
    redis_factory: Any,
) -> None:
    server: RedisServer = redis_factory()
    client = FlowClient(server.url, queue_name=QUEUE, retry_deadline=1.0)
    assert client.store.connection.retry_deadline == 1.0
    assert await client.status("nothing") is None  # connected once
    server.stop()
    with pytest.raises(RedisConnectionError) as info:
        await asyncio.wait_for(client.status("nothing"), 60)
    message = str(info.value)
    assert f"127.0.0.1:{server.port}" in message
    assert "gave up after" in message and "(retry deadline 1 s)" in message, message

    # a client made while it is down: refused, retried, then the same kind of message
    late = FlowClient(server.url, queue_name=QUEUE, retry_deadline=0.5)
    with pytest.raises(RedisConnectionError, match=r"connection refused.*gave up after"):
        await asyncio.wait_for(late.start("chain", {}), 60)

    # 0: no retries, the error as it came
    at_once = FlowClient(server.url, queue_name=QUEUE, retry_deadline=0)
    with pytest.raises(RedisConnectionError) as info:
        await asyncio.wait_for(at_once.status("nothing"), 60)
    assert "gave up" not in str(info.value)


async def test_a_busy_redis_fails_after_the_deadline_as_a_command_error(
    redis_factory: Any,
) -> None:
    server: RedisServer = redis_factory()
    r = sync_redis(server.url)
    r.config_set("lua-time-limit", 100)
    ctx = RedisContext(server.url, "run", retry_deadline=0.5)
    await ctx.set("k", 1)

    def busy_loop() -> None:
        with contextlib.suppress(redis.ResponseError):
            redis.Redis.from_url(server.url).eval("while true do end", 0)

    looping = threading.Thread(target=busy_loop, daemon=True)
    looping.start()
    probe = redis.Redis.from_url(server.url, socket_timeout=10)
    try:

        def is_busy() -> bool:
            try:
                probe.ping()
            except redis.ResponseError as exc:
                return str(exc).startswith("BUSY")
            return False

        await wait_until(is_busy, 30, "Redis to answer BUSY")
        with pytest.raises(RedisCommandError, match=r"returned an error: BUSY .*gave up after"):
            await asyncio.wait_for(ctx.get("k"), 60)
    finally:
        probe.script_kill()
        await asyncio.to_thread(looping.join, 30)
    assert await ctx.get("k") == 1


def test_the_deadline_comes_from_the_argument_the_environment_or_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RETRY_DEADLINE_ENV, raising=False)
    assert resolve_retry_deadline() == 30.0
    assert resolve_retry_deadline(2) == 2.0
    monkeypatch.setenv(RETRY_DEADLINE_ENV, "4.5")
    assert resolve_retry_deadline() == 4.5
    assert resolve_retry_deadline(0) == 0.0
    assert RedisCoordinationStore("redis://127.0.0.1:1/0").connection.retry_deadline == 4.5
    monkeypatch.setenv(RETRY_DEADLINE_ENV, "soon")
    with pytest.raises(ValueError, match=RETRY_DEADLINE_ENV):
        resolve_retry_deadline()
    with pytest.raises(ValueError, match="retry_deadline"):
        resolve_retry_deadline(-1)


# ---------------------------------------------------------------------------- lost replies


class LossyProxy:
    """A TCP proxy to a Redis server that, when armed, forwards the next request carrying an
    EVALSHA and then closes the connection instead of passing the reply on: the script ran,
    the client never learns its outcome."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.armed = 0
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> LossyProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        lose = asyncio.Event()

        def close() -> None:
            cwriter.close()
            swriter.close()

        async def upstream() -> None:
            while data := await creader.read(65536):
                if self.armed and b"EVALSHA" in data:
                    self.armed -= 1
                    lose.set()
                swriter.write(data)
                await swriter.drain()
            close()

        async def downstream() -> None:
            while data := await sreader.read(65536):
                if lose.is_set():
                    self.dropped += 1
                    close()
                    return
                cwriter.write(data)
                await cwriter.drain()
            close()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)


async def test_a_start_cancel_or_resume_whose_reply_was_lost_succeeds_once(
    redis_url: str,
) -> None:
    r = sync_redis(redis_url)
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with LossyProxy(port) as proxy, serving(redis_url):
        client = FlowClient(proxy.url, queue_name=QUEUE)
        # warm up: blueprints cached, scripts loaded (a NOSCRIPT reply must not be the one lost)
        warm = await client.start("approval", {"x": 0})
        await client.cancel(warm)

        proxy.armed = 1
        run_id = await asyncio.wait_for(client.start("approval", {"x": 1}, run_id="lost"), 60)
        assert run_id == "lost" and proxy.dropped == 1
        assert r.hget("workflow:run:lost", "startToken")
        assert (await client.wait("lost", timeout=WAIT_S)).status == "awaiting"
        assert RUNS[("lost", "s1")] == 1  # one run, started once
        # someone else's start with the same id starts nothing (idempotent) and gets the id
        other = FlowClient(redis_url, queue_name=QUEUE)
        assert await other.start("approval", {}, run_id="lost") == "lost"
        assert RUNS[("lost", "s1")] == 1

        proxy.armed = 1
        await asyncio.wait_for(client.resume("lost", "w", output=5), 60)
        assert proxy.dropped == 2
        result = await client.wait("lost", timeout=WAIT_S)
        assert result.status == "completed" and result.context["w"] == 5

        other = await client.start("approval", {"x": 2})
        assert (await client.wait(other, timeout=WAIT_S)).status == "awaiting"
        proxy.armed = 1
        assert await asyncio.wait_for(client.cancel(other), 60) is True
        assert proxy.dropped == 3
        assert await client.status(other) == "cancelled"
        # a second cancel is told the run had already ended
        assert await client.cancel(other) is False
