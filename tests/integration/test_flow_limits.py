"""Per-key concurrency limits and rate limits (issue 14, SPEC section 10).

Distributed: real `flowcraft-fastd` processes on a real Redis; the nodes measure themselves,
outside the workers: each start INCRs a running counter in Redis and records the value it saw
(and DECRs it when done), so the largest value recorded is the most that ran at once across
processes. In memory: the same blueprints through `FlowRuntime`, measured in the process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.daemon.helpers import clean_env, start_daemon, stop_daemon

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext
from flowcraft_fast.distributed.jobs import job_id
from flowcraft_fast.errors import BlueprintError

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


def fan(bp_id: str, n: int, config: dict[str, Any], uses: str = "probe") -> dict[str, Any]:
    nodes = [{"id": "s", "uses": "start"}] + [
        {"id": f"w{i}", "uses": uses, "config": config} for i in range(n)
    ]
    return {
        "id": bp_id,
        "nodes": nodes,
        "edges": [{"source": "s", "target": f"w{i}"} for i in range(n)],
    }


def chain(bp_id: str, n: int, config: dict[str, Any]) -> dict[str, Any]:
    nodes = [{"id": f"c{i}", "uses": "probe", "config": config} for i in range(n)]
    edges = [{"source": f"c{i}", "target": f"c{i + 1}"} for i in range(n - 1)]
    return {"id": bp_id, "nodes": nodes, "edges": edges}


BLUEPRINTS = [
    fan("fan12", 12, {"concurrency": {"key": "'global'", "limit": 2}}),
    chain("chain1", 4, {"concurrency": {"key": "'one'", "limit": 1}}),
    chain("chainwide", 4, {"concurrency": {"key": "'wide'", "limit": 100}}),
    fan("tenant", 4, {"concurrency": {"key": "context.tenant", "limit": 1}}),
    fan("rated", 6, {"rateLimit": {"key": "'api'", "max": 5, "per": "1s"}}, uses="stamp"),
    fan("held", 2, {"concurrency": {"key": "'held'", "limit": 1}}, uses="hold"),
]

APP = textwrap.dedent(
    """
    import asyncio, os, json
    import redis
    from flowcraft_fast.runtime import FlowRuntime

    R = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])

    async def start(ctx):
        return "go"

    async def probe(ctx):
        tenant = await ctx.context.get("tenant") or "all"
        for group in ("all", "t:" + tenant):
            R.rpush("seen:" + group, R.incr("running:" + group))
        await asyncio.sleep(0.15)
        for group in ("all", "t:" + tenant):
            R.decr("running:" + group)
        return "ok"

    async def stamp(ctx):
        seconds, micros = R.time()
        R.rpush("starts", ctx.node_id + ":" + str(seconds * 1000 + micros // 1000))
        return "ok"

    async def hold(ctx):
        R.rpush("held", ctx.node_id + ":" + str(os.getpid()))
        if R.incr("hold:" + ctx.node_id) == 1 and os.environ.get("HANG") == "1":
            await asyncio.sleep(600)
        return "ok"

    runtime = FlowRuntime(
        blueprints=json.loads(os.environ["TEST_BLUEPRINTS"]),
        registry={"start": start, "probe": probe, "stamp": stamp, "hold": hold},
    )
    """
)


class Fleet:
    """Worker daemons serving the test's blueprints on one queue."""

    def __init__(self, redis_url: str, tmp_path: Path, queue: str) -> None:
        (tmp_path / "limitsapp.py").write_text(APP)
        self.tmp_path, self.queue, self.url = tmp_path, queue, redis_url
        self.env = clean_env(TEST_REDIS_URL=redis_url, TEST_BLUEPRINTS=json.dumps(BLUEPRINTS))
        self.args = ["--app", "limitsapp:runtime", "--redis-url", redis_url, "--queue", queue,
                     "--lease", "2", "--stalled-interval", "1",
                     "--reconcile-interval", "0"]  # fmt: skip
        self.daemons: list[Any] = []

    async def start(self, n: int = 1, **env: str) -> None:
        r = redis.Redis.from_url(self.url)
        for _ in range(n):
            self.daemons.append(start_daemon(self.args, self.tmp_path, {**self.env, **env}))
        for _ in range(300):
            if r.hexists(f"bull:{self.queue}:flowcraft:blueprints", "fan12"):
                break
            await asyncio.sleep(0.05)
        r.close()

    def stop(self) -> None:
        for d in self.daemons:
            if d.poll() is None:
                code, _, err = stop_daemon(d)
                assert code == 0, err


async def run_on_two_workers(
    redis_url: str, tmp_path: Path, starts: list[tuple[str, dict[str, Any]]]
) -> None:
    """Start the runs (blueprint, context) on a fleet of two daemons; each must complete."""
    fleet = Fleet(redis_url, tmp_path, "lim")
    try:
        await fleet.start(2)
        client = FlowClient(redis_url, queue_name="lim")
        runs = [await client.start(bp, context) for bp, context in starts]
        for run in runs:
            assert (await client.wait(run, timeout=60)).status == "completed"
    finally:
        fleet.stop()


def seen(r: redis.Redis, group: str) -> list[int]:
    return [int(v) for v in r.lrange("seen:" + group, 0, -1)]


def assert_group_empty(r: redis.Redis, name: str) -> None:
    """Nothing is left holding a slot of the group or waiting for one."""
    assert r.zcard("bull:lim:flowcraft:limit:" + _digest(name)) == 0
    assert r.llen("bull:lim:flowcraft:limit:" + _digest(name) + ":waiting") == 0


async def test_a_global_limit_holds_across_two_worker_processes(
    redis_url: str, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    await run_on_two_workers(redis_url, tmp_path, [("fan12", {})])
    counts = seen(r, "all")
    assert len(counts) == 12
    assert max(counts) == 2, counts  # never more than 2, and the limit was reached
    assert_group_empty(r, "global")


async def test_chains_under_a_wide_limit_are_admitted_by_their_commits(
    redis_url: str, tmp_path: Path
) -> None:
    """A commit takes a limited successor for its worker with a slot of the successor's group
    (commit.lua) and frees the committing job's slot: six chains complete and the group ends
    empty (nothing held by a job that left, nothing waiting)."""
    r = redis.Redis.from_url(redis_url)
    await run_on_two_workers(redis_url, tmp_path, [("chainwide", {})] * 6)
    assert len(seen(r, "all")) == 24
    assert_group_empty(r, "wide")


async def test_a_binding_limit_of_one_on_chains(redis_url: str, tmp_path: Path) -> None:
    """A full group leaves the successor on the queue (its claim parks it): three chains under
    a limit of 1 never overlap across two workers."""
    r = redis.Redis.from_url(redis_url)
    await run_on_two_workers(redis_url, tmp_path, [("chain1", {})] * 3)
    assert seen(r, "all") == [1] * 12  # one node of the group at a time, over both workers
    assert_group_empty(r, "one")


async def test_per_tenant_limits_run_tenants_in_parallel(redis_url: str, tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    await run_on_two_workers(
        redis_url, tmp_path, [("tenant", {"tenant": t}) for t in ("acme", "globex")]
    )
    for tenant in ("acme", "globex"):
        assert seen(r, "t:" + tenant) == [1, 1, 1, 1]  # one node of a tenant at a time
    assert max(seen(r, "all")) == 2  # while the two tenants ran side by side


async def test_a_rate_limit_defers_starts_to_the_next_window(
    redis_url: str, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    fleet = Fleet(redis_url, tmp_path, "lim")
    try:
        await fleet.start(1)
        client = FlowClient(redis_url, queue_name="lim")
        run = await client.start("rated", {})
        assert (await client.wait(run, timeout=60)).status == "completed"
    finally:
        fleet.stop()
    starts = dict(v.decode().split(":") for v in r.lrange("starts", 0, -1))
    assert sorted(starts) == [f"w{i}" for i in range(6)]
    # The limiter decides at admission, in Redis time: of six jobs in one window exactly one
    # is refused and deferred to the next window (claimed a second time: `ats` 2), and it
    # starts after the five others. (The times nodes record as they start can fall a few ms
    # after the window their admission was in, so counting those per second is flaky: CI
    # once saw all six in one second.)
    offers = {n: int(r.hget(f"bull:lim:{job_id(run, n, 0)}", "ats") or 0) for n in starts}
    deferred = [n for n, ats in offers.items() if ats > 1]
    assert deferred and len(deferred) == 1 and offers[deferred[0]] == 2, offers
    times = {n: int(ms) for n, ms in starts.items()}
    assert max(times, key=times.__getitem__) == deferred[0], times


async def test_a_killed_holder_frees_its_slot_after_its_lease(
    redis_url: str, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    fleet = Fleet(redis_url, tmp_path, "lim")
    try:
        await fleet.start(1, HANG="1")
        client = FlowClient(redis_url, queue_name="lim")
        run = await client.start("held", {})
        for _ in range(200):  # one node holds the slot (hanging), the other waits in Redis
            if r.llen("held") == 1 and r.llen(
                f"bull:lim:flowcraft:limit:{_digest('held')}:waiting"
            ):
                break
            await asyncio.sleep(0.05)
        assert r.llen("held") == 1
        # `inspect` shows the group: one running, one waiting
        out = subprocess.run(
            [sys.executable, "-m", "flowcraft_fast.cli", "inspect", "--redis-url", redis_url,
             "--queue", "lim", "--json"], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        groups = {g["group"]: g for g in json.loads(out)["limits"]}
        assert groups["held"] == {"group": "held", "limit": 1, "running": 1, "waiting": 1}
        holder = fleet.daemons[0]
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        await fleet.start(1)  # HANG unset: every node returns at once
        assert (await client.wait(run, timeout=60)).status == "completed"
    finally:
        fleet.stop()
    ran = r.lrange("held", 0, -1)
    assert sorted(x.split(":")[0] for x in ran) in (["w0", "w0", "w1"], ["w0", "w1", "w1"])


def _digest(name: str) -> str:
    from flowcraft_fast.runtime.limits import Groups

    return Groups.digest(name)


# ------------------------------------------------------------------- fairness, in this process

LOG: list[tuple[str, float]] = []


async def tick(ctx: NodeContext) -> str:
    await asyncio.sleep(0.002)
    LOG.append((str(await ctx.context.get("tenant")), time.perf_counter()))
    return "ok"


async def go(ctx: NodeContext) -> str:
    return "go"


def fan_of(n: int) -> dict[str, Any]:
    bp = fan(f"fan{n}", n, {"concurrency": {"key": "context.tenant", "limit": 2}}, uses="tick")
    return bp


async def test_a_small_key_is_not_starved_by_a_busy_one(redis_url: str) -> None:
    """Key "big" has 1,000 jobs queued (100 runs of 10), key "small" 10 (one run), started
    after. Over their limit, big's jobs wait in their group, out of the queue, so small's
    jobs are reached at once: small finishes long before big."""
    LOG.clear()
    rt = FlowRuntime(blueprints=[fan_of(10)], registry={"tick": tick, "start": go})
    client = FlowClient(redis_url, queue_name="fair")
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="fair")
    await adapter.publish()
    big = [await client.start("fan10", {"tenant": "big"}) for _ in range(100)]
    small = await client.start("fan10", {"tenant": "small"})
    await adapter.start()
    try:
        assert (await client.wait(small, timeout=120)).status == "completed"
        for run in big:
            assert (await client.wait(run, timeout=120)).status == "completed"
    finally:
        await adapter.close(timeout=5)
    big_done = [t for k, t in LOG if k == "big"]
    small_done = [t for k, t in LOG if k == "small"]
    assert len(big_done) == 1000 and len(small_done) == 10
    before = sum(1 for t in big_done if t < max(small_done))
    print(f"\nfairness: small's 10 jobs done after {before} of big's 1,000")
    assert before < 500, before


async def test_a_commit_admits_the_successor_it_continues(redis_url: str) -> None:
    """Under a limit that does not bind, a chain's later nodes are admitted by the commit that
    takes them (no admission call of their own): only each run's first node goes through
    limit.lua's admission. Every slot is freed by the commit that finished its job."""
    rt = FlowRuntime(blueprints=BLUEPRINTS, registry={"probe": go, "start": go})
    client = FlowClient(redis_url, queue_name="wide")
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="wide")
    await adapter.publish()
    runs = [await client.start("chainwide", {}) for _ in range(5)]
    await adapter.start()
    try:
        for run in runs:
            assert (await client.wait(run, timeout=60)).status == "completed"
    finally:
        await adapter.close(timeout=5)
    stats = adapter.worker.stats
    assert stats.admitted_by_commit == 15, stats  # nodes c1..c3 of each of the 5 runs
    r = redis.Redis.from_url(redis_url)
    assert r.zcard("bull:wide:flowcraft:limit:" + _digest("wide")) == 0


# ------------------------------------------------------------------- in memory


async def test_the_same_limits_hold_in_memory() -> None:
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def probe(ctx: NodeContext) -> str:
        tenant = "t:" + str(await ctx.context.get("tenant"))
        for g in ("all", tenant):
            running[g] = running.get(g, 0) + 1
            peak[g] = max(peak.get(g, 0), running[g])
        await asyncio.sleep(0.01)
        for g in ("all", tenant):
            running[g] -= 1
        return "ok"

    rt = FlowRuntime(blueprints=BLUEPRINTS, registry={"probe": probe, "start": go})
    result = await rt.run("fan12", {})
    assert result.status == "completed" and peak["all"] == 2
    peak.clear()
    results = await asyncio.gather(*(rt.run("tenant", {"tenant": t}) for t in ("a", "b")))
    assert all(r.status == "completed" for r in results)
    assert peak["t:a"] == 1 and peak["t:b"] == 1 and peak["all"] == 2


async def test_limits_hold_for_dynamic_nodes_in_memory() -> None:
    """Nodes a run adds while it goes (dynamic nodes, as batch workers are) count against
    their limits like the blueprint's own."""
    running, peak = [0], [0]

    async def probe(ctx: NodeContext) -> str:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.01)
        running[0] -= 1
        return "ok"

    async def spawn(ctx: NodeContext) -> dict[str, Any]:
        limit = {"concurrency": {"key": "'dyn'", "limit": 2}}
        nodes = [{"id": f"d{i}", "uses": "probe", "config": limit} for i in range(6)]
        return {"output": "spawned", "dynamic_nodes": nodes}

    bp = {"id": "dyn", "nodes": [{"id": "s", "uses": "spawn"}], "edges": []}
    rt = FlowRuntime(blueprints=[bp], registry={"probe": probe, "spawn": spawn})
    result = await rt.run("dyn", {})
    assert result.status == "completed", result
    assert peak[0] == 2


def test_limits_are_validated_with_the_reason() -> None:
    rt = FlowRuntime(blueprints=[], registry={"probe": go})

    def load(config: dict[str, Any]) -> None:
        rt.load({"id": "x", "nodes": [{"id": "a", "uses": "probe", "config": config}]})

    for config, reason in (
        ({"concurrency": {"limit": 2}}, "needs a key"),
        ({"concurrency": {"key": "'g'", "limit": 0}}, "limit must be an integer from 1"),
        ({"concurrency": {"key": "'g'", "limit": 2, "max": 3}}, "unknown key 'max'"),
        ({"rateLimit": {"max": 5, "per": "soon"}}, "rateLimit.per"),
        ({"rateLimit": {"max": 5}}, "rateLimit.per"),
        ({"concurrency": {"key": "((", "limit": 1}}, "concurrency.key"),
    ):
        with pytest.raises(BlueprintError, match=reason.replace("(", r"\(")):
            load(config)
    assert os.environ.get("FLOWCRAFT_NOT_SET") is None
