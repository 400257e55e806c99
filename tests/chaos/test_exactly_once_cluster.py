"""Exactly-once on a real 3-master Redis Cluster (issue 11): duplicate delivery changes
nothing, and a worker killed (SIGKILL) between running a node and committing it leaves the
join firing once. The queue has 3 partitions; the nodes' ledger lives on a single Redis of its
own (chaos_app.py). Keys are read with redis-py's cluster client, named by the queue's layout
(partitions.py), so the test checks the tagged layout too.

Blueprint: start -> a, b, c -> j (joinStrategy all) -> end.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster as ClusterClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_app import NODES, PREDECESSORS, QUEUE, make_runtime
from chaos_tools import WorkerProcess, wait_until

from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.adapter import BullMQAdapter
from flowcraft_fast.distributed.client import FlowClient
from flowcraft_fast.distributed.jobs import job_id
from flowcraft_fast.distributed.partitions import Layout

pytestmark = [pytest.mark.redis, pytest.mark.chaos, pytest.mark.cluster]

PARTITIONS = 3


class Keys:
    """The keys of one run in the tagged layout."""

    def __init__(self, layout: Layout, run: str) -> None:
        p = layout.of(run)
        self.qp = f"bull:{layout.queue_name(p)}:"
        self.run_prefix = layout.run_prefix(p, "")
        self.run = run

    def job(self, node: str) -> str:
        return self.qp + job_id(self.run, node, ())

    def meta(self) -> str:
        return f"{self.run_prefix}workflow:run:{self.run}"

    def status(self) -> str:
        return f"{self.run_prefix}workflow:status:{self.run}"


@pytest.fixture
def cluster(cluster_url: str) -> Iterator[ClusterClient]:
    client = ClusterClient.from_url(cluster_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def ledger_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield r
    r.close()


def ledger(r: redis.Redis, run: str) -> dict[str, int]:
    return {k: int(v) for k, v in r.hgetall(f"ledger:{run}").items() if k in NODES}


def check_join_once(r: redis.Redis, run: str, ctx: dict[str, Any]) -> None:
    counts = ledger(r, run)
    assert counts.get("j") == 1 and counts.get("end") == 1, counts
    inputs = {k: json.loads(v) for k, v in r.hgetall(f"joinin:{run}").items()}
    assert list(inputs) == ["1"], inputs
    assert set(inputs["1"]) == set(PREDECESSORS)
    for p in PREDECESSORS:
        assert inputs["1"][p] == ctx[p]


async def test_duplicates_on_a_cluster_change_nothing(
    cluster_url: str, cluster: ClusterClient, ledger_redis: redis.Redis, redis_server: RedisServer
) -> None:
    """Runs in every partition complete; every job of each is re-delivered (the join's
    predecessors twice): no user code runs again, the runs' records stay as they were."""
    rt = make_runtime(redis_server.url)
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        connection=cluster_url,
        queue_name=QUEUE,
        lease_ms=1000,
        stalled_interval_seconds=0.5,
        partitions=PARTITIONS,
    )
    await adapter.start()
    try:
        client = FlowClient(cluster_url, queue_name=QUEUE)
        await client.queues()
        layout = client.layout
        assert layout is not None and layout.tagged
        ids = [f"dup-{i}" for i in range(60)]
        ids = [next(r for r in ids if layout.of(r) == p) for p in range(PARTITIONS)]
        runs = await client.start_many([("fan", {}, run_id) for run_id in ids])
        assert {layout.of(r) for r in runs} == set(range(PARTITIONS))
        first = {run: await client.wait(run, timeout=20) for run in runs}
        keys = {run: Keys(layout, run) for run in runs}
        before = {}
        for run in runs:
            assert first[run].status == "completed", first[run]
            assert ledger(ledger_redis, run) == {n: 1 for n in NODES}
            before[run] = (cluster.hgetall(keys[run].meta()), cluster.get(keys[run].status()))
        for run in runs:
            k = keys[run]
            for node in NODES:
                for _ in range(2 if node in PREDECESSORS else 1):
                    cluster.lpush(k.qp + "wait", job_id(run, node, ()))
            cluster.zadd(k.qp + "marker", {"0": 0})

        def settled() -> bool:
            for p in range(PARTITIONS):
                qp = f"bull:{layout.queue_name(p)}:"
                if cluster.llen(qp + "wait") or cluster.llen(qp + "active"):
                    return False
            return not any(cluster.exists(keys[r].job(n) + ":lock") for r in runs for n in NODES)

        await wait_until(settled, 20, "the re-delivered jobs to be acknowledged")
        for run in runs:
            after = await client.result(run)
            assert after.status == "completed" and after.context == first[run].context
            assert ledger(ledger_redis, run) == {n: 1 for n in NODES}, "a duplicate ran"
            k = keys[run]
            assert (cluster.hgetall(k.meta()), cluster.get(k.status())) == before[run]
            check_join_once(ledger_redis, run, after.context)
    finally:
        await adapter.close(timeout=5)


async def test_worker_killed_between_run_and_commit_on_a_cluster(
    cluster_url: str, cluster: ClusterClient, ledger_redis: redis.Redis, redis_server: RedisServer
) -> None:
    """b runs on worker 1, which gets SIGKILL before b commits; worker 2 takes b over once
    the lease lapses: b ran twice, the join once with exactly {a, b, c}."""
    workers: list[WorkerProcess] = []
    try:
        w1 = WorkerProcess(cluster_url, ledger_url=redis_server.url, partitions=PARTITIONS)
        workers.append(w1)
        await w1.ready()
        client = FlowClient(cluster_url, queue_name=QUEUE)
        # chaos_app's `after_done` reads the run's meta on the ledger's Redis: here the test
        # waits for a and c to commit instead (b sleeps meanwhile)
        plan = {"b": {"marker_first": True, "sleep_first": 60}}
        run = await client.start("fan", {"plan": plan})
        assert client.layout is not None
        keys = Keys(client.layout, run)
        await wait_until(
            lambda: (
                ledger_redis.get(f"marker:{run}:b")
                and cluster.hexists(keys.meta(), "done:0|a")
                and cluster.hexists(keys.meta(), "done:0|c")
            ),
            20,
            "b's first run, a and c committed",
        )
        assert int(ledger_redis.get(f"marker:{run}:b") or 0) == w1.pid
        w1.kill()
        assert not cluster.hexists(keys.meta(), "done:0|b")

        w2 = WorkerProcess(cluster_url, ledger_url=redis_server.url, partitions=PARTITIONS)
        workers.append(w2)
        await w2.ready()
        result = await client.wait(run, timeout=30)
        assert result.status == "completed", result
        counts = ledger(ledger_redis, run)
        assert counts == {"start": 1, "a": 1, "b": 2, "c": 1, "j": 1, "end": 1}, counts
        assert result.context["b"] == {"node": "b", "exec": 2, "pid": w2.pid}
        check_join_once(ledger_redis, run, result.context)
    finally:
        for w in workers:
            w.kill()
