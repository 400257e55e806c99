"""Shared fixtures: a private redis-server for the whole test session.

Never the machine's Redis on 6379: each session starts its own on a free port (no
persistence), so tests can restart it, flush it and never collide. Tests that need their own
server (restarts, persistence, unix sockets, TLS) use `redis_factory`.

Topologies, started only by the tests that ask for them: `redis_cluster` (a 3-master Redis
Cluster shared by the session; `cluster_url` empties it) and `redis_sentinels` (a primary, a
replica and 3 sentinels, fresh for each test since tests kill the primary).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from flowcraft_fast.devserver import RedisCluster, RedisSentinelGroup, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's private Redis, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start extra private servers (with persistence, a socket, TLS...); all stopped after."""
    started: list[RedisServer] = []

    def make(**kwargs: object) -> RedisServer:
        server = RedisServer(**kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster for the whole session (started on first use)."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """URL of the session's Redis Cluster (its first node), every node running and every master
    emptied before the test; a cluster client discovers the other nodes from it."""
    redis_cluster.start()  # brings back a node an earlier test killed and left down
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def redis_sentinels() -> Iterator[RedisSentinelGroup]:
    """A private primary, its replica and 3 sentinels (master name "mymaster"), for this test
    alone: `redis_sentinels.url` is the redis+sentinel:// URL."""
    with RedisSentinelGroup() as group:
        yield group


@pytest.fixture
def spans() -> Iterator[object]:
    """An OpenTelemetry SDK provider set globally for the test, its spans kept in memory
    (tests/otel.py; the test is skipped when the otel extra is not installed)."""
    from tests.otel import captured_spans

    yield from captured_spans()
