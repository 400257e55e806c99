"""Two deployments on one Redis never see each other's runs or jobs (issue 10).

A deployment is a key prefix in front of the run keys (`key_prefix`) and a queue prefix in
front of the queue's keys (`queue_prefix`: BullMQ's `bull` by default, `<key_prefix>bull` when
a key prefix is given): deployment A keeps the defaults (`workflow:*`, `bull:jobs:*`),
deployment B gives only `key_prefix="tenant-b:"` and so gets `tenant-b:bull`. Both
serve a queue named `jobs` with the same blueprint ids and start runs with the same run ids;
every key either writes is its own, each run completes with its own results on its own
workers, a cancellation in one leaves the other's run of the same id alone, and a reconciler
pass of one examines and repairs only its own runs.

Both prefixes must differ: two deployments that set different key prefixes but the same
explicit `queue_prefix` share the queue (`bull:jobs:*` with its blueprints, index of unfinished
runs and stops channel), and a worker of one fails the other's jobs ("run not found"); the last
test shows it.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from flowcraft_fast import (
    BullMQAdapter,
    FlowClient,
    FlowRuntime,
    NodeContext,
    RedisCoordinationStore,
    create_bullmq_reconciler,
)
from flowcraft_fast.distributed.jobs import job_id
from flowcraft_fast.errors import WorkflowCancelled
from waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUEUE = "jobs"
RUN_IDS = ("r1", "r2", "r3")

CHAIN = {
    "id": "chain",
    "nodes": [{"id": "who", "uses": "who"}, {"id": "tag", "uses": "tag"}],
    "edges": [{"source": "who", "target": "tag"}],
}
LONG = {
    "id": "long",
    "nodes": [{"id": "who", "uses": "who"}, {"id": "nap", "uses": "nap"}],
    "edges": [{"source": "who", "target": "nap"}],
}


@dataclass
class Deployment:
    name: str
    key_prefix: str
    given_queue_prefix: str | None
    """None: the store's default, derived from the key prefix."""
    url: str
    ran: list[tuple[str, str]] = field(default_factory=list)
    """(run id, node id) of every node its workers ran."""

    def store(self) -> RedisCoordinationStore:
        return RedisCoordinationStore(
            self.url, key_prefix=self.key_prefix, queue_prefix=self.given_queue_prefix
        )

    @property
    def queue_prefix(self) -> str:
        return self.store().queue_prefix

    def runtime(self) -> FlowRuntime:
        async def who(ctx: NodeContext) -> str:
            self.ran.append((ctx.run_id, ctx.node_id))
            return self.name

        async def tag(ctx: NodeContext) -> str:
            self.ran.append((ctx.run_id, ctx.node_id))
            return f"{ctx.input}:{await ctx.context.get('given')}"

        async def nap(ctx: NodeContext) -> str:
            self.ran.append((ctx.run_id, ctx.node_id))
            try:
                # A's is cancelled (the test waits for that); B's runs to its end
                await asyncio.wait_for(ctx.cancelled.wait(), 30.0 if self.name == "a" else 3.0)
            except TimeoutError:
                return "slept"
            raise WorkflowCancelled(f"node '{ctx.node_id}' cancelled")

        return FlowRuntime(blueprints=[CHAIN, LONG], registry={"who": who, "tag": tag, "nap": nap})

    def adapter(self) -> BullMQAdapter:
        return BullMQAdapter(
            runtime_options=self.runtime().options,
            coordination_store=self.store(),
            queue_name=QUEUE,
            lease_ms=60_000,  # renewed every 20 s: a prompt stop comes from the stops channel
        )

    def client(self) -> FlowClient:
        return FlowClient(self.store(), queue_name=QUEUE)

    def owns(self, key: str) -> bool:
        if self.key_prefix:
            return key.startswith((self.key_prefix, f"{self.queue_prefix}:{QUEUE}:"))
        # the default deployment: everything not under another prefix
        return key.startswith(("workflow:", f"{self.queue_prefix}:{QUEUE}:"))

    def reconciler(self, adapter: BullMQAdapter, mode: str) -> Any:
        return create_bullmq_reconciler(
            adapter=adapter,
            redis=self.url,
            stalled_threshold_seconds=0,
            key_prefix=f"{self.key_prefix}workflow:state:",
            mode=mode,  # type: ignore[arg-type]
        )


def deployments(url: str) -> tuple[Deployment, Deployment]:
    return (
        Deployment("a", "", None, url),
        Deployment("b", "tenant-b:", None, url),
    )


def keys(url: str) -> list[str]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(k for k in r.scan_iter(count=1000) if not k.startswith("ledger:"))
    finally:
        r.close()


async def serve(stack: AsyncExitStack, deployment: Deployment) -> BullMQAdapter:
    adapter = deployment.adapter()
    await adapter.start()
    stack.push_async_callback(adapter.close, 5)
    return adapter


def assert_disjoint(url: str, a: Deployment, b: Deployment) -> None:
    for key in keys(url):
        assert a.owns(key) != b.owns(key), f"{key}: whose is it?"


async def test_two_deployments_keep_to_their_own_runs_and_jobs(redis_url: str) -> None:
    a, b = deployments(redis_url)
    assert (a.queue_prefix, b.queue_prefix) == ("bull", "tenant-b:bull")
    clients = {d.name: d.client() for d in (a, b)}
    for d in (a, b):
        await d.adapter().publish()
        for run_id in RUN_IDS[:2]:  # the same run ids on both, each with its own context
            await clients[d.name].start("chain", {"given": f"{d.name}-{run_id}"}, run_id=run_id)
    assert_disjoint(redis_url, a, b)
    admin = redis.Redis.from_url(redis_url)
    for d in (a, b):
        queue = f"{d.queue_prefix}:{QUEUE}"
        assert sorted(admin.lrange(f"{queue}:wait", 0, -1)) == sorted(
            job_id(r, "who", ()).encode() for r in RUN_IDS[:2]
        )
        assert admin.hexists(f"{d.key_prefix}workflow:run:r1", "status")

    # A's start job of r1 is lost: only A's reconciler repairs it, and each pass examines
    # only its own deployment's runs (in both modes: the index, and SCAN over run keys)
    lost = job_id("r1", "who", ())
    admin.lrem(f"bull:{QUEUE}:wait", 0, lost)
    admin.delete(f"bull:{QUEUE}:{lost}")
    for mode in ("index", "scan"):
        stats_b = await b.reconciler(b.adapter(), mode).run()
        assert (stats_b.scanned_keys, stats_b.stalled_runs, stats_b.reconciled_runs) == (2, 0, 0)
    assert admin.lrange(f"bull:{QUEUE}:wait", 0, -1) == [job_id("r2", "who", ()).encode()]
    stats_a = await a.reconciler(a.adapter(), "scan").run()
    assert (stats_a.scanned_keys, stats_a.stalled_runs, stats_a.reconciled_runs) == (2, 1, 1)
    stats_a = await a.reconciler(a.adapter(), "index").run()
    assert (stats_a.scanned_keys, stats_a.reconciled_runs) == (2, 0)

    async with AsyncExitStack() as stack:
        adapters = {d.name: await serve(stack, d) for d in (a, b)}
        for d in (a, b):
            for run_id in RUN_IDS[:2]:
                result = await clients[d.name].wait(run_id, timeout=20)
                assert result.status == "completed"
                assert result.context["who"] == d.name
                assert result.context["tag"] == f"{d.name}:{d.name}-{run_id}"
        # same run id, both deployments: A cancels its r3; B's r3 runs on to the end
        for d in (a, b):
            await clients[d.name].start("long", {"given": d.name}, run_id="r3")
        await wait_until(
            lambda: all(x.worker.in_flight == 1 for x in adapters.values()), 20, "both naps"
        )
        assert await clients["a"].cancel("r3")
        assert (await clients["a"].wait("r3", timeout=20)).status == "cancelled"
        await wait_until(lambda: adapters["a"].worker.in_flight == 0, 5, "A's nap to stop")
        result_b = await clients["b"].wait("r3", timeout=20)
        assert result_b.status == "completed" and result_b.context["nap"] == "slept"
        assert await clients["a"].status("r3") == "cancelled"

    for d in (a, b):  # each worker ran its own deployment's nodes, each once
        assert sorted(d.ran) == sorted(
            [(r, n) for r in RUN_IDS[:2] for n in ("who", "tag")] + [("r3", "who"), ("r3", "nap")]
        )
    assert_disjoint(redis_url, a, b)
    for d in (a, b):
        for run_id in RUN_IDS:
            assert admin.exists(f"{d.key_prefix}workflow:status:{run_id}")
    admin.close()


async def test_different_key_prefixes_with_one_queue_prefix_do_not_separate(
    redis_url: str,
) -> None:
    """What docs/security.md warns about: with the same explicit `queue_prefix`, both
    deployments use `bull:jobs:*`; B's worker claims A's job, finds no run of that id under
    its own key prefix and fails the job, and A's run never ends."""
    a = Deployment("a", "tenant-a:", "bull", redis_url)
    b = Deployment("b", "tenant-b:", "bull", redis_url)
    await a.adapter().publish()
    run_id = await a.client().start("chain", {"given": "a"})
    async with AsyncExitStack() as stack:
        adapter_b = await serve(stack, b)
        await wait_until(lambda: adapter_b.worker.stats.rejected == 1, 20, "B to reject A's job")
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    jid = job_id(run_id, "who", ())
    assert admin.zscore(f"bull:{QUEUE}:failed", jid) is not None
    assert f"run {run_id} not found" in admin.hget(f"bull:{QUEUE}:{jid}", "failedReason")
    assert await a.client().status(run_id) == "running"  # and it stays so: its job is gone
    assert b.ran == []
    admin.close()
