"""A worker refuses a Redis that can evict workflow state, with one clear error."""

from __future__ import annotations

from typing import Any

import pytest

from flowcraft_fast import BullMQAdapter, FlowRuntime
from flowcraft_fast.distributed.connection import open_connection
from flowcraft_fast.distributed.safety import UnsafeRedisError, check_server


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random"])
async def test_adapter_refuses_an_evicting_redis(redis_factory: Any, policy: str) -> None:
    server = redis_factory(extra_args=("--maxmemory-policy", policy))
    adapter = BullMQAdapter(runtime_options=FlowRuntime().options, connection=server.url)
    with pytest.raises(UnsafeRedisError, match=f"maxmemory-policy {policy}"):
        await adapter.start()


async def test_noeviction_passes_and_reports_the_version(redis_url: str) -> None:
    facts = await check_server(open_connection(redis_url))
    assert facts.maxmemory_policy == "noeviction"
    assert facts.version is not None and facts.version[0].isdigit()
    assert facts.warnings == ()


async def test_config_denied_by_acl_reads_the_policy_from_info(redis_url: str) -> None:
    import redis

    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "worker", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
    )
    host_port = redis_url.removeprefix("redis://").removesuffix("/0")
    conn = open_connection(f"redis://worker:pw@{host_port}/0")
    facts = await check_server(conn)
    assert (facts.maxmemory_policy, facts.warnings) == ("noeviction", ())
    admin.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(UnsafeRedisError, match="allkeys-lru"):
            await check_server(conn)
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.close()


async def test_config_and_info_denied_warns_and_goes_on(redis_url: str) -> None:
    import redis

    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "blind", enabled=True, passwords=["+pw"], keys=["*"],
        commands=["+@all", "-config", "-info"],
    )  # fmt: skip
    admin.close()
    host_port = redis_url.removeprefix("redis://").removesuffix("/0")
    facts = await check_server(open_connection(f"redis://blind:pw@{host_port}/0"))
    assert facts.maxmemory_policy is None
    assert any("cannot read maxmemory-policy" in w for w in facts.warnings)
