"""Boot order: a daemon started before its Redis waits for it (backoff, each try logged and
reported to systemd with EXTEND_TIMEOUT_USEC), then serves; a stop while waiting exits 0;
`--redis-wait 0` and `--check` fail at once (tests/daemon/test_daemon_cli.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from flowcraft_fast.devserver import RedisServer, free_port

from .helpers import (
    FakeNotifySocket,
    clean_env,
    short_tmpdir,
    start_daemon,
    stop_daemon,
    wait_exit,
    write_app,
)

pytestmark = pytest.mark.redis


def _messages_with(
    listener: FakeNotifySocket, key: str, count: int, timeout: float = 60.0
) -> list[dict[str, str]]:
    """Read notifications until `count` of them carry `key` (a guard, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in listener.messages if key in m]
        if len(found) >= count:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"fewer than {count} {key} within {timeout}s: {listener.messages}")
        listener.listen(min(remaining, 1.0))


async def _run_tiny_flow(redis_url: str) -> Any:
    from flowcraft_fast.distributed.client import FlowClient

    client = FlowClient(redis_url)
    run_id = await client.start("tiny", {})
    return await client.wait(run_id, timeout=30)


def test_waits_for_a_redis_started_later(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with short_tmpdir() as short:
        listener = FakeNotifySocket(str(short / "notify.sock"))
        server: RedisServer | None = None
        try:
            app = write_app(tmp_path)
            env = clean_env(NOTIFY_SOCKET=listener.path)
            process = start_daemon(["--app", app, "--redis-url", url], tmp_path, env)
            try:
                waiting = _messages_with(listener, "EXTEND_TIMEOUT_USEC", 2)
                assert "waiting for Redis at" in waiting[0]["STATUS"]
                assert int(waiting[0]["EXTEND_TIMEOUT_USEC"]) > 1_000_000
                assert process.poll() is None, "the daemon exited instead of waiting"
                assert listener.count("READY") == 0
                server = RedisServer(port=port).start()
                ready = listener.expect("READY", timeout=90)
                assert "consuming queue" in ready["STATUS"]
                result = asyncio.run(_run_tiny_flow(url))
                assert result.status == "completed", result
            finally:
                code, _, err = stop_daemon(process, timeout=60)
            assert code == 0, err
            assert f"Redis at {url} not reachable (" in err
            assert "retrying in 1 s (attempt 1)" in err
            assert "retrying in 2 s (attempt 2)" in err
            stopping = listener.expect("STOPPING", timeout=5)
            # draining may outlast TimeoutStopSec: the stop is extended with the drain timeout
            assert int(stopping["EXTEND_TIMEOUT_USEC"]) >= 30_000_000, stopping
        finally:
            listener.close()
            if server is not None:
                server.close()


def test_a_stop_while_waiting_exits_0(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with short_tmpdir() as short:
        listener = FakeNotifySocket(str(short / "notify.sock"))
        try:
            app = write_app(tmp_path)
            env = clean_env(NOTIFY_SOCKET=listener.path)
            process = start_daemon(["--app", app, "--redis-url", url], tmp_path, env)
            try:
                _messages_with(listener, "EXTEND_TIMEOUT_USEC", 1)
            finally:
                code, _, err = stop_daemon(process, timeout=60)
            assert code == 0, err
            assert "not reachable" in err
            assert "stop requested while waiting for Redis" in err
            assert listener.count("READY") == 0
        finally:
            listener.close()


def test_redis_wait_bounds_the_wait(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    app = write_app(tmp_path)
    process = start_daemon(
        ["--app", app, "--redis-url", url, "--redis-wait", "1.5"], tmp_path, clean_env()
    )
    code, _, err = wait_exit(process, timeout=60)
    assert code == 1, err
    assert "retrying in 1 s (attempt 1)" in err
    assert "cannot connect to Redis" in err.strip().splitlines()[-1]
