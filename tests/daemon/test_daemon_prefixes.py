"""A daemon started with `--key-prefix` keeps its runs and its queue under that prefix (issue 10):
a client using the same prefix runs through it, and nothing lands under the default keys."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from flowcraft_fast import FlowClient, RedisCoordinationStore

from .helpers import clean_env, start_daemon, stop_daemon, write_app

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


async def test_a_daemon_with_a_key_prefix_serves_its_own_deployment(
    redis_url: str, tmp_path: Path
) -> None:
    app = write_app(tmp_path)
    args = ["--app", app, "--redis-url", redis_url, "--queue", "pq", "--key-prefix", "tenant-a:",
            "--reconcile-interval", "0"]  # fmt: skip
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    daemon = start_daemon(args, tmp_path, clean_env())
    try:
        for _ in range(300):  # published under the derived queue prefix once it is up
            if r.hexists("tenant-a:bull:pq:flowcraft:blueprints", "tiny"):
                break
            assert daemon.poll() is None, daemon.communicate()[1]
            await asyncio.sleep(0.1)
        store = RedisCoordinationStore(redis_url, key_prefix="tenant-a:")
        client = FlowClient(store, queue_name="pq")
        run_id = await client.start("tiny", {})
        assert (await client.wait(run_id, timeout=30)).status == "completed"
        keys = list(r.scan_iter(count=1000))
        assert keys and all(k.startswith("tenant-a:") for k in keys), keys
        # the CLI finds the run with the same prefix, and not without it
        cli = [sys.executable, "-m", "flowcraft_fast.cli", "status", run_id, "--redis-url",
               redis_url, "--queue", "pq"]  # fmt: skip
        found = subprocess.run([*cli, "--key-prefix", "tenant-a:"], capture_output=True, text=True)
        assert found.returncode == 0 and "completed" in found.stdout, found
        missing = subprocess.run(cli, capture_output=True, text=True)
        assert missing.returncode != 0 and "no run" in missing.stderr, missing
    finally:
        code, _, err = stop_daemon(daemon)
        r.close()
    assert code == 0, err
