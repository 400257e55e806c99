"""Crash recovery with the daemon's lease settings (real daemons, real SIGKILL).

A daemon started with `--lease 2 --stalled-interval 1` is killed with SIGKILL while its node
runs; a second daemon with the same settings takes the job over once the lease lapses and the
run completes. With the default 30 s lease the job would still be leased when the wait below
gives up, so the settings are what makes it finish: the wait is a bound, not a speed claim.
The first stalled check runs when a worker starts, so the second daemon needs no interval of
its own before it looks.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
import redis

from flowcraft_fast import FlowClient

from .helpers import clean_env, start_daemon, stop_daemon

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

SLOW_APP = textwrap.dedent(
    """
    import asyncio, os
    import redis
    from flowcraft_fast.runtime import FlowRuntime

    async def slow(ctx):
        r = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
        r.rpush("ran:" + ctx.run_id, os.getpid())
        r.close()
        if os.environ.get("HANG") == "1":
            await asyncio.sleep(600)
        return "done"

    runtime = FlowRuntime(
        blueprints={"slow": {"id": "slow", "nodes": [{"id": "a", "uses": "slow"}], "edges": []}},
        registry={"slow": slow},
    )
    """
)


async def test_a_killed_daemons_job_is_run_again_after_its_short_lease(
    redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    args = ["--app", "slowapp:runtime", "--redis-url", redis_url, "--queue", "rec",
            "--lease", "2", "--stalled-interval", "1", "--reconcile-interval", "0"]  # fmt: skip
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    first = start_daemon(args, tmp_path, clean_env(TEST_REDIS_URL=redis_url, HANG="1"))
    second = None
    try:
        client = FlowClient(redis_url, queue_name="rec")
        for _ in range(200):  # the daemon publishes its blueprints when it is up
            if r.hexists("bull:rec:flowcraft:blueprints", "slow"):
                break
            await asyncio.sleep(0.1)
        run_id = await client.start("slow", {})
        for _ in range(200):
            if r.llen(f"ran:{run_id}") == 1:
                break
            await asyncio.sleep(0.1)
        assert r.lrange(f"ran:{run_id}", 0, -1) == [str(first.pid)]
        first.kill()  # SIGKILL: the node never finishes, the lease is not released
        first.wait()
        second = start_daemon(args, tmp_path, clean_env(TEST_REDIS_URL=redis_url, HANG="0"))
        result = await client.wait(run_id, timeout=20)
        assert result.status == "completed", result
        assert result.context["a"] == "done"
        ran = r.lrange(f"ran:{run_id}", 0, -1)
        assert ran[0] == str(first.pid) and ran[-1] == str(second.pid), ran
    finally:
        if first.poll() is None:
            first.kill()
        if second is not None:
            stop_daemon(second)
        r.close()
