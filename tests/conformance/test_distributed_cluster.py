"""Every conformance case, distributed on a real 3-master Redis Cluster (issue 11, SPEC 9).

Two `flowcraft-fastd` processes with `--partitions 6`, each given one node's URL (the cluster
client finds the others), serve the conformance app; FlowClient, given another node's URL,
reads the partition count from Redis. The nodes' execution ledger lives on a single Redis of
its own. Then 500 runs must spread over all three masters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from flowcraft_fast.devserver import RedisCluster, RedisServer
from flowcraft_fast.distributed.client import FlowClient
from flowcraft_fast.distributed.partitions import key_slot

from .harness import check_case, run_case_in_memory
from .test_distributed import (
    CASES,
    QUEUE,
    _params,
    assert_same_outcome,
    run_case_distributed,
    serving_daemons,
)

PARTITIONS = 6
pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster_workers(redis_cluster: RedisCluster, redis_server: RedisServer) -> Iterator[str]:
    redis_cluster.start()
    redis_cluster.flush()
    with serving_daemons(redis_cluster.urls[0], redis_server.url, "--partitions", str(PARTITIONS)):
        yield redis_cluster.urls[1]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", _params())
async def test_case_on_cluster(
    case: dict[str, Any], cluster_workers: str, redis_server: RedisServer
) -> None:
    distributed = await run_case_distributed(case, cluster_workers, ledger_url=redis_server.url)
    check_case(case, distributed)
    assert_same_outcome(case, await run_case_in_memory(case), distributed)


def _linear_case() -> dict[str, Any]:
    """A case whose run completes without input or resume: its blueprint for the spread."""
    for case in CASES:
        expect = case["expect"]
        if (
            expect.get("status") == "completed"
            and "then_resume" not in expect
            and "cancel_after_ms" not in case
            and not case.get("context")
        ):
            return case
    raise AssertionError("no plain completing case in cases.json")


@pytest.mark.asyncio
async def test_runs_spread_over_every_master(
    cluster_workers: str, redis_cluster: RedisCluster, redis_server: RedisServer
) -> None:
    case = _linear_case()
    client = FlowClient(cluster_workers, queue_name=QUEUE)
    # waits for the blueprint's publication
    await run_case_distributed(case, cluster_workers, ledger_url=redis_server.url)
    before = redis_cluster.keys_per_master()
    ids = await client.start_many([(case["blueprint"]["id"], {}) for _ in range(500)])
    for run_id in ids:
        assert (await client.wait(run_id, timeout=60)).status == "completed"
    layout = client.layout
    assert layout is not None and layout.count == PARTITIONS and layout.tagged
    per_partition = [0] * PARTITIONS
    for run_id in ids:
        per_partition[layout.of(run_id)] += 1
    slots = [key_slot(layout.queue_name(p)) for p in range(PARTITIONS)]
    masters = {redis_cluster.node_for_slot(slot).port for slot in slots}
    after = redis_cluster.keys_per_master()
    added = {port: after[port] - before.get(port, 0) for port in after}
    print(f"\nruns per partition {per_partition}; partition slots {slots}")
    print(f"keys added per master (port: keys) {added}")
    assert len(masters) == 3, f"partitions on masters {masters} only"
    assert all(n > 0 for n in per_partition)
    total = sum(added.values())
    # 6 partitions on 3 equal slot ranges: two per master; each master holds ~1/3 of the keys
    assert all(n > total / 6 for n in added.values()), added

    # the CLI sees every partition: `inspect` sums the counts, `status` finds any run
    inspect = _cli("inspect", "--json", "--redis-url", redis_cluster.urls[2], "--queue", QUEUE)
    report = json.loads(inspect)
    # ~85 runs per partition: at least 500 completed jobs only when the partitions are summed
    assert report["counts"]["completed"] >= 500
    assert len(report["workers"]) == 2 * PARTITIONS  # two daemons, one record per partition
    status = _cli("status", ids[-1], "--json", "--redis-url", cluster_workers, "--queue", QUEUE)
    assert json.loads(status)["status"] == "completed"


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flowcraft_fast.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
