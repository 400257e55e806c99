"""Redis restarts under a running worker (SPEC section 5; reliability.md T3).

"Survives a Redis restart (reconnect, reload scripts) without losing acknowledged work when
Redis persists." One in-process adapter keeps running through each fault; it is never
restarted. Blueprint: a 5-step chain s1 -> ... -> s5 whose nodes sleep ~20 ms and add 1 to
their input, so a run started with x ends with s5 == x + 5.

(a) graceful restart (SIGTERM) with AOF: every run completes with the right result, 0 lost;
(b) kill -9 with AOF appendfsync everysec: 0 acknowledged runs lost (the page cache keeps the
    AOF writes made before each reply); the `aof_delayed_fsync` delta is reported;
(c) restart without persistence (empty dataset): earlier runs are gone, their waits end with a
    clear error within their bound, the worker neither crashes nor spins and a new run completes;
(d) SCRIPT FLUSH while running: every run completes, no NOSCRIPT error reaches the worker.

In every variant the worker logs no ERROR records (no tracebacks) and its background tasks are
alive. Every wait is bounded; no assertion depends on how fast anything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from chaos_tools import scaled

from flowcraft_fast import (
    BullMQAdapter,
    FlowClient,
    FlowRuntime,
    NodeContext,
    RedisCoordinationStore,
)
from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.client import RunNotFound
from waiting import wait_until

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.timeout(scaled(180)),
]

QUEUE = "q"
BP_ID = "chain5"
STEPS = 5
RUNS = scaled(50)
"""Runs per variant: 50 times $FLOWCRAFT_CHAOS_SCALE."""
WAIT_BOUND_S = 8.0
"""The bound given to client.wait on runs that Redis then loses (variant c)."""

# ---------------------------------------------------------------------------- workflow


async def step(ctx: NodeContext) -> Any:
    await asyncio.sleep(0.02)
    base = ctx.input if isinstance(ctx.input, int) else await ctx.context.get("x")
    return base + 1


BLUEPRINT = {
    "id": BP_ID,
    "metadata": {"version": "1"},
    "nodes": [{"id": f"s{i}", "uses": "step"} for i in range(1, STEPS + 1)],
    "edges": [{"source": f"s{i}", "target": f"s{i + 1}"} for i in range(1, STEPS)],
}


def runtime() -> FlowRuntime:
    return FlowRuntime(blueprints=[BLUEPRINT], registry={"step": step})


# ---------------------------------------------------------------------------- helpers


def sync_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def cached_scripts(r: redis.Redis) -> int:
    """How many scripts the server's script cache holds (a restart or SCRIPT FLUSH empties it)."""
    return int(r.info("memory")["number_of_cached_scripts"])


def run_status(r: redis.Redis, run_id: str) -> str | None:
    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return r.hget(f"workflow:run:{run_id}", "status")
    return None


def count_status(r: redis.Redis, runs: list[str], status: str) -> int:
    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        pipe = r.pipeline(transaction=False)
        for run_id in runs:
            pipe.hget(f"workflow:run:{run_id}", "status")
        return sum(1 for s in pipe.execute() if s == status)
    return 0


def count_done(r: redis.Redis, runs: list[str], node: str) -> int:
    """How many runs have committed `node` (its `done:` marker in the run meta)."""
    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        pipe = r.pipeline(transaction=False)
        for run_id in runs:
            pipe.hexists(f"workflow:run:{run_id}", f"done:0|{node}")
        return sum(1 for s in pipe.execute() if s)
    return 0


def error_counts(r: redis.Redis) -> dict[str, int]:
    """INFO errorstats as {error prefix: count} (Redis 6.2+)."""
    out = {}
    for key, value in r.info("errorstats").items():
        if key.startswith("errorstat_"):
            out[key.removeprefix("errorstat_")] = int(value["count"])
    return out


def failed_commands(r: redis.Redis) -> dict[str, int]:
    """Commands Redis answered with an error since it started: {command: failed calls}."""
    return {
        key.removeprefix("cmdstat_"): int(v.get("failed_calls", 0))
        + int(v.get("rejected_calls", 0))
        for key, v in r.info("commandstats").items()
        if int(v.get("failed_calls", 0)) + int(v.get("rejected_calls", 0))
    }


@asynccontextmanager
async def running_adapter(url: str, **kwargs: Any) -> AsyncIterator[BullMQAdapter]:
    store = RedisCoordinationStore(url, state_ttl_seconds=600)
    adapter = BullMQAdapter(
        runtime_options=runtime().options,
        coordination_store=store,
        queue_name=QUEUE,
        concurrency=kwargs.pop("concurrency", 8),
        lease_ms=2000,
        stalled_interval_seconds=1,
        **kwargs,
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=10)


def assert_worker_alive(adapter: BullMQAdapter) -> None:
    tasks = adapter.worker._tasks
    assert len(tasks) == 4, "the worker's background tasks are gone"
    for task in tasks:
        assert not task.done(), f"worker task {task.get_name()} ended: {task!r}"


def assert_no_worker_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """No ERROR record (and no traceback) from the worker; returns its warnings for the report."""
    bad = [
        r
        for r in caplog.records
        if r.name.startswith("flowcraft_fast")
        and (r.levelno >= logging.ERROR or r.exc_info is not None)
    ]
    assert not bad, "worker logged errors:\n" + "\n".join(
        f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad
    )
    return [r.getMessage() for r in caplog.records if r.name.startswith("flowcraft_fast")]


async def start_runs(client: FlowClient, n: int, tag: str) -> dict[str, int]:
    runs = {}
    for i in range(n):
        run_id = await client.start(BP_ID, {"x": i * 100}, run_id=f"{tag}-{i}")
        runs[run_id] = i * 100
    return runs


async def collect(client: FlowClient, runs: dict[str, int], timeout: float) -> dict[str, Any]:
    """Wait for every run (bounded); returns run id -> result, or the exception it ended with."""

    async def one(run_id: str) -> Any:
        try:
            return await client.wait(run_id, timeout=timeout)
        except Exception as exc:
            return exc

    results = await asyncio.gather(*(one(r) for r in runs))
    return dict(zip(runs, results, strict=True))


def lost_runs(results: dict[str, Any], runs: dict[str, int]) -> dict[str, str]:
    """Runs that did not complete with s5 == x + 5, with what happened to them."""
    lost = {}
    for run_id, x in runs.items():
        res = results[run_id]
        if isinstance(res, BaseException):
            lost[run_id] = f"{type(res).__name__}: {res}"
        elif res.status != "completed":
            lost[run_id] = f"status {res.status}: {res.errors}"
        elif res.context.get(f"s{STEPS}") != x + STEPS:
            lost[run_id] = f"wrong result {res.context.get(f's{STEPS}')} != {x + STEPS}"
    return lost


async def restart_mid_flight(
    server: RedisServer, r: redis.Redis, runs: list[str], *, kill: bool
) -> int:
    """Restart Redis mid-flight: once 10 runs got past their second step (jobs are claimed in
    FIFO order, so the runs advance together and most are then halfway).

    Returns how many runs had not completed when Redis went down: read back from the restarted
    server when it persists (exact), else counted just before the restart (an upper bound).
    """
    await wait_until(
        lambda: count_done(r, runs, "s2") >= 10, 60, "runs to get past their second step"
    )
    unfinished = len(runs) - count_status(r, runs, "completed")
    await asyncio.to_thread(server.restart, kill=kill)
    if server.persistence:
        r = sync_redis(server.url)
        unfinished = len(runs) - count_status(r, runs, "completed")
        r.close()
    return unfinished


# ---------------------------------------------------------------------------- (a), (b)


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "kill9"])
async def test_restart_with_aof_loses_no_run(
    redis_factory: Any, caplog: pytest.LogCaptureFixture, kill: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="flowcraft_fast")
    server = redis_factory(persistence=True)
    r = sync_redis(server.url)
    async with running_adapter(server.url) as adapter:
        client = FlowClient(RedisCoordinationStore(server.url), queue_name=QUEUE)
        runs = await start_runs(client, RUNS, "aof")
        assert r.config_get("appendfsync")["appendfsync"] == "everysec"
        fsync_before = int(r.info("persistence")["aof_delayed_fsync"])
        unfinished = await restart_mid_flight(server, r, list(runs), kill=kill)
        assert unfinished > 0, "every run finished before the restart: the test proved nothing"
        r = sync_redis(server.url)
        assert r.info("persistence")["aof_enabled"] == 1
        # acknowledged work survived: every run started before the restart is still there
        missing = [run_id for run_id in runs if not r.exists(f"workflow:run:{run_id}")]
        results = await collect(client, runs, timeout=60)
        lost = lost_runs(results, runs)
        fsync_delta = int(r.info("persistence")["aof_delayed_fsync"]) - fsync_before
        print(
            f"\n[T3 {'kill -9' if kill else 'graceful'}] runs={RUNS} unfinished at restart="
            f"{unfinished} lost={len(lost)} missing after restart={len(missing)} "
            f"aof_delayed_fsync delta={fsync_delta} errorstats={error_counts(r)} "
            f"failed commands={failed_commands(r)}"
        )
        assert not missing, f"runs gone after the restart: {missing}"
        assert not lost, f"{len(lost)} runs lost: {lost}"
        # the same worker reconnected and reloaded its scripts (the restart emptied the cache)
        assert cached_scripts(r) >= 2, "the worker's scripts are not loaded again"
        assert error_counts(r).get("NOSCRIPT", 0) >= 1, "no call met NOSCRIPT after restart?"
        # and it still serves new work
        new = await start_runs(client, 3, "after")
        assert not lost_runs(await collect(client, new, timeout=30), new)
        assert_worker_alive(adapter)
        assert adapter.worker.stats.committed >= RUNS * STEPS
    warnings = assert_no_worker_errors(caplog)
    print(f"[T3] worker warnings: {len(warnings)}; first: {warnings[:3]}")


# ---------------------------------------------------------------------------- (c)


async def test_restart_without_persistence_ends_waits_and_keeps_serving(
    redis_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flowcraft_fast")
    server = redis_factory(persistence=False)
    r = sync_redis(server.url)
    async with running_adapter(server.url) as adapter:
        client = FlowClient(RedisCoordinationStore(server.url), queue_name=QUEUE)
        runs = await start_runs(client, RUNS, "gone")
        # waits started before the restart must end within their bound rather than hang
        early_waits = asyncio.ensure_future(collect(client, runs, timeout=WAIT_BOUND_S))
        unfinished = await restart_mid_flight(server, r, list(runs), kill=False)
        assert unfinished > 0, "every run finished before the restart: the test proved nothing"
        r = sync_redis(server.url)
        assert not any(r.exists(f"workflow:run:{x}") for x in runs), "the dataset survived?"
        results = await asyncio.wait_for(early_waits, timeout=WAIT_BOUND_S + 30)
        errors = {run_id: res for run_id, res in results.items() if isinstance(res, BaseException)}
        # each wait ended with the result (its run finished before the restart) or a clear error
        for run_id, res in errors.items():
            assert isinstance(res, (TimeoutError, RunNotFound, ConnectionError)), (run_id, res)
        for run_id, res in results.items():
            if run_id not in errors:
                assert not lost_runs({run_id: res}, {run_id: runs[run_id]}), (run_id, res)
        print(
            f"\n[T3 no persistence] unfinished at restart={unfinished}; waits that returned the "
            f"result={len(results) - len(errors)}, ended with "
            f"{sorted({type(e).__name__ for e in errors.values()})} x{len(errors)}"
        )
        assert errors, "no run was lost with the data: the restart came too late to test"
        # a fresh wait on a run Redis lost says so within its bound
        with pytest.raises(RunNotFound):
            await client.wait(next(iter(errors)), timeout=1)

        # the worker is not spinning on the empty server: it blocks on the queue marker
        claims_before = adapter.worker.stats.claims
        await asyncio.sleep(1.5)
        idle_claims = adapter.worker.stats.claims - claims_before
        assert idle_claims < 20, f"{idle_claims} claim round trips in 1.5 s while idle: spinning"
        assert_worker_alive(adapter)

        # A NEW run completes on the same worker: the blueprints it published went with the
        # data, and it publishes them again at its next stalled-job check.
        r = sync_redis(server.url)
        await wait_until(
            lambda: r.hexists(f"bull:{QUEUE}:flowcraft:blueprints", BP_ID), 12, "re-publish"
        )
        new = await start_runs(client, 3, "fresh")
        assert not lost_runs(await collect(client, new, timeout=30), new)
        assert_worker_alive(adapter)
    assert_no_worker_errors(caplog)


async def test_worker_publishes_blueprints_again_after_data_loss(redis_factory: Any) -> None:
    server = redis_factory(persistence=False)
    async with running_adapter(server.url) as adapter:
        client = FlowClient(RedisCoordinationStore(server.url), queue_name=QUEUE)
        await client.blueprint(BP_ID)
        await asyncio.to_thread(server.restart)
        r = sync_redis(server.url)
        # several stalled-check intervals and claim-wait timeouts for the worker to notice
        await wait_until(
            lambda: r.hexists(f"bull:{QUEUE}:flowcraft:blueprints", BP_ID), 12, "re-publish"
        )
        new = await start_runs(client, 1, "fresh")
        assert not lost_runs(await collect(client, new, timeout=30), new)
        assert_worker_alive(adapter)


# ---------------------------------------------------------------------------- (d)


async def test_script_flush_while_running(
    redis_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flowcraft_fast")
    server = redis_factory(persistence=False)
    r = sync_redis(server.url)
    async with running_adapter(server.url) as adapter:
        client = FlowClient(RedisCoordinationStore(server.url), queue_name=QUEUE)
        runs = await start_runs(client, RUNS, "flush")
        run_list = list(runs)
        flushes = 0
        for target in (3, 15, 30):
            await wait_until(
                lambda t=target: (
                    count_status(r, run_list, "completed") >= t
                    or count_status(r, run_list, "completed") == RUNS
                ),
                60,
                f"{target} runs to complete",
            )
            if count_status(r, run_list, "completed") < RUNS:
                r.script_flush()
                flushes += 1
        assert flushes >= 1, "every run finished before the first SCRIPT FLUSH"
        results = await collect(client, runs, timeout=60)
        lost = lost_runs(results, runs)
        print(f"\n[T3 SCRIPT FLUSH] flushes={flushes} lost={len(lost)} errors={error_counts(r)}")
        assert not lost, lost
        assert cached_scripts(r) >= 2, "the worker's scripts are not loaded again"
        assert error_counts(r).get("NOSCRIPT", 0) >= flushes
        assert_worker_alive(adapter)
    messages = assert_no_worker_errors(caplog)
    assert not [m for m in messages if "NOSCRIPT" in m], messages
