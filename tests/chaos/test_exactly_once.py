"""Exactly-once effects under duplicates, crashes and zombies (DESIGN-NOTES invariants 1-3).

Real Redis (the session's private server), real workers; crashes and pauses hit real worker
processes (`chaos_worker.py`) with SIGKILL / SIGSTOP. Node executions are counted in an external
ledger (`ledger:<runId>`, see chaos_app.py), so an execution that never committed still counts;
committed effects are read from the run's keys. No assertion depends on timing: every wait is
bounded and only fails the test when the awaited state never comes.

Blueprint: start -> a, b, c -> j (joinStrategy all) -> end.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_app import NODES, PREDECESSORS, QUEUE, make_runtime
from chaos_tools import Monitor, WorkerProcess, scaled, wait_until

from flowcraft_fast.distributed.adapter import BullMQAdapter
from flowcraft_fast.distributed.client import FlowClient
from flowcraft_fast.distributed.jobs import job_id
from flowcraft_fast.distributed.store import RedisCoordinationStore
from flowcraft_fast.distributed.wire import CommitRequest

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.chaos]

QP = f"bull:{QUEUE}:"


# ---------------------------------------------------------------------------- helpers


def sync_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def jid(run: str, node: str) -> str:
    return job_id(run, node, ())


def ledger(r: redis.Redis, run: str) -> dict[str, int]:
    raw = r.hgetall(f"ledger:{run}")
    return {k: int(v) for k, v in raw.items() if k in NODES}


def join_inputs(r: redis.Redis, run: str) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in r.hgetall(f"joinin:{run}").items()}


def meta(r: redis.Redis, run: str) -> dict[str, str]:
    return r.hgetall(f"workflow:run:{run}")


def context(r: redis.Redis, run: str) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in r.hgetall(f"workflow:state:{run}").items()}


def redeliver(r: redis.Redis, job: str, copies: int = 1) -> None:
    """Put a job back in the queue as BullMQ would re-deliver it: its id again in `wait`.

    The job hash (data, opts, the carried input `fci`) is still there after completion (jobs
    are kept in `completed`), which is all a claim reads; the marker wakes blocked workers.
    """
    assert r.exists(QP + job), f"job hash {job} is gone"
    for _ in range(copies):
        r.lpush(QP + "wait", job)
    r.zadd(QP + "marker", {"0": 0})


def queue_drained(r: redis.Redis) -> bool:
    return r.llen(QP + "wait") == 0 and r.llen(QP + "active") == 0


def fired_fields(m: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in m.items() if k.startswith(("fired:", "done:", "n:", "f:"))}


def check_join_once(r: redis.Redis, run: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """The join ran exactly once, with exactly the committed outputs of a, b and c."""
    counts = ledger(r, run)
    assert counts.get("j") == 1, f"join executions: {counts}"
    assert counts.get("end") == 1, f"end executions: {counts}"
    inputs = join_inputs(r, run)
    assert list(inputs) == ["1"], f"join inputs recorded: {inputs}"
    got = inputs["1"]
    assert set(got) == set(PREDECESSORS), got
    for p in PREDECESSORS:
        assert got[p] == ctx[p], f"join input for {p} is not {p}'s committed output"
    assert ctx["j"]["input"] == got
    assert ctx["end"]["node"] == "end"
    return got


async def spawn(redis_url: str, workers: list[WorkerProcess]) -> WorkerProcess:
    """A worker process, ready; kept in `workers` so the test's `finally` kills it."""
    w = WorkerProcess(redis_url)
    workers.append(w)
    await w.ready()
    return w


async def start_until_first_run(
    r: redis.Redis, client: FlowClient, plan: dict[str, Any], node: str
) -> str:
    """Start a `fan` run with `plan`; return its id once `node`'s first execution left its
    marker (the plan must set `marker_first` for it)."""
    run = await client.start("fan", {"plan": plan})
    await wait_until(lambda: r.get(f"marker:{run}:{node}"), 20, f"{node}'s first execution")
    return run


def make_adapter(url: str, concurrency: int = 8) -> BullMQAdapter:
    rt = make_runtime(url)
    return BullMQAdapter(
        runtime_options=rt.options,
        connection=url,
        queue_name=QUEUE,
        concurrency=concurrency,
        lease_ms=1000,
        stalled_interval_seconds=0.5,
    )


# ---------------------------------------------------------------------------- 1. duplicates


async def test_duplicates_after_completion_change_nothing(redis_url: str) -> None:
    """Re-delivering every job of a finished run (the join's predecessors twice) runs no user
    code, fires nothing, and leaves the run's result, context and coordination fields as they
    were."""
    r = sync_redis(redis_url)
    adapter = make_adapter(redis_url)
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name=QUEUE)
        run = await client.start("fan", {})
        first = await client.wait(run, timeout=20)
        assert first.status == "completed", first
        check_join_once(r, run, first.context)
        assert ledger(r, run) == {n: 1 for n in NODES}
        meta_before = meta(r, run)
        status_before = r.get(f"workflow:status:{run}")
        atm_before = {n: int(r.hget(QP + jid(run, n), "atm") or 0) for n in NODES}

        copies = {n: 2 if n in PREDECESSORS else 1 for n in NODES}
        for n, k in copies.items():
            redeliver(r, jid(run, n), k)

        # every injected copy was claimed and let go: nothing waits or holds a lease. The claim
        # itself settles a copy whose node already committed (the run records it done), so no
        # attempt is made and `atm` stays as it was
        await wait_until(
            lambda: (
                queue_drained(r)
                and not any(r.exists(QP + jid(run, n) + ":lock") for n in NODES)
                and all(r.zscore(QP + "completed", jid(run, n)) is not None for n in NODES)
            ),
            15,
            "the re-delivered jobs to be acknowledged",
        )
        after = await client.result(run)
        assert after.status == "completed"
        assert after.context == first.context
        assert ledger(r, run) == {n: 1 for n in NODES}, "a duplicate ran user code"
        assert {n: int(r.hget(QP + jid(run, n), "atm") or 0) for n in NODES} == atm_before
        assert meta(r, run) == meta_before
        assert r.get(f"workflow:status:{run}") == status_before
        check_join_once(r, run, after.context)
    finally:
        await adapter.close(timeout=5)
        r.close()


async def test_duplicates_before_the_join_fires(redis_url: str) -> None:
    """While c is still running, a and b (already committed) are re-delivered twice each and c
    once (a second copy of a job that is in flight). The copies may run user code again
    (at-least-once), but only the first commit of each node counts: the join fires once, with
    the values a and b committed first."""
    r = sync_redis(redis_url)
    adapters = [make_adapter(redis_url, 4), make_adapter(redis_url, 4)]  # two lease holders
    for a in adapters:
        await a.start()
    try:
        client = FlowClient(redis_url, queue_name=QUEUE)
        plan = {"c": {"sleep": 1.0}}
        run = await client.start("fan", {"plan": plan})
        await wait_until(
            lambda: (
                all(r.hexists(f"workflow:run:{run}", f"done:0|{n}") for n in ("a", "b"))
                and ledger(r, run).get("c") == 1
            ),
            15,
            "a and b to commit while c runs",
        )
        committed_a = context(r, run)["a"]
        committed_b = context(r, run)["b"]
        assert not r.hexists(f"workflow:run:{run}", "fired:0|j")
        redeliver(r, jid(run, "a"), 2)
        redeliver(r, jid(run, "b"), 2)
        redeliver(r, jid(run, "c"), 1)

        result = await client.wait(run, timeout=20)
        assert result.status == "completed", result
        await wait_until(lambda: queue_drained(r), 15, "the queue to drain")

        got = check_join_once(r, run, result.context)
        assert got["a"] == committed_a and got["b"] == committed_b
        assert result.context["a"] == committed_a and result.context["b"] == committed_b
        counts = ledger(r, run)
        assert counts["start"] == 1
        assert counts["c"] >= 1
    finally:
        for a in adapters:
            await a.close(timeout=5)
        r.close()


async def test_random_duplicate_injection_trials(redis_url: str) -> None:
    """20 seeded trials (times $FLOWCRAFT_CHAOS_SCALE), two workers: random branch delays and
    random re-deliveries of start, a, b, c at random moments (before the join, around it, after
    the run ended). In every trial the join fires exactly once with the committed outputs, and
    the run completes."""
    rng = random.Random(20261124)
    r = sync_redis(redis_url)
    adapters = [make_adapter(redis_url, 4), make_adapter(redis_url, 4)]
    for a in adapters:
        await a.start()
    try:
        client = FlowClient(redis_url, queue_name=QUEUE)
        fire_counts = []
        trials = scaled(20)
        for trial in range(trials):
            plan = {p: {"sleep": round(rng.uniform(0, 0.25), 3)} for p in PREDECESSORS}
            shots = [
                (
                    round(rng.uniform(0, 0.6), 3),
                    rng.choice(("start", *PREDECESSORS)),
                    rng.randint(1, 2),
                )
                for _ in range(rng.randint(1, 6))
            ]
            run = await client.start("fan", {"plan": plan}, run_id=f"trial{trial}")

            async def inject(run: str = run, shots: list = shots) -> None:
                t0 = asyncio.get_running_loop().time()
                for at, node, copies in sorted(shots):
                    await asyncio.sleep(max(0.0, at - (asyncio.get_running_loop().time() - t0)))
                    job = QP + jid(run, node)
                    if r.exists(job):  # a job hash appears when its node is enqueued
                        redeliver(r, jid(run, node), copies)

            injector = asyncio.create_task(inject())
            result = await client.wait(run, timeout=20)
            await asyncio.wait_for(injector, 10)
            assert result.status == "completed", (trial, result)
            await wait_until(lambda: queue_drained(r), 15, f"trial {trial}: queue to drain")
            final = context(r, run)
            check_join_once(r, run, final)
            assert final == result.context, f"trial {trial}: context changed after the end"
            fire_counts.append(ledger(r, run)["j"])
        assert fire_counts == [1] * trials
    finally:
        for a in adapters:
            await a.close(timeout=5)
        r.close()


# ---------------------------------------------------------------------------- 2. crash


async def test_worker_killed_after_running_before_commit(redis_url: str) -> None:
    """b runs on worker 1 and is still uncommitted when worker 1 gets SIGKILL; worker 2 takes
    it over after the lease expires. b ran twice (at-least-once), its second run is the one
    committed, and the join ran once with exactly {a, b, c}."""
    r = sync_redis(redis_url)
    workers: list[WorkerProcess] = []
    try:
        w1 = await spawn(redis_url, workers)
        client = FlowClient(redis_url, queue_name=QUEUE)
        plan = {"b": {"after_done": ["a", "c"], "marker_first": True, "sleep_first": 60}}
        run = await start_until_first_run(r, client, plan, "b")
        assert int(r.get(f"marker:{run}:b")) == w1.pid
        w1.kill()  # SIGKILL: b ran, never committed
        assert not r.hexists(f"workflow:run:{run}", "done:0|b")

        w2 = await spawn(redis_url, workers)
        result = await client.wait(run, timeout=30)
        assert result.status == "completed", result
        counts = ledger(r, run)
        assert counts == {"start": 1, "a": 1, "b": 2, "c": 1, "j": 1, "end": 1}, counts
        assert result.context["b"] == {"node": "b", "exec": 2, "pid": w2.pid}
        check_join_once(r, run, result.context)
    finally:
        for w in workers:
            w.kill()
        r.close()


async def test_worker_killed_while_it_ran_steps_ahead_of_their_commits(redis_url: str) -> None:
    """Speculative continuation: start is its run's only job, so a (and b, c) run right behind
    it, before start's commit is sent; a blocks the worker's event loop on its first run and the
    worker gets SIGKILL. Nothing of it was committed: worker 2 runs start and a again, every
    node commits once, and the join runs once with exactly {a, b, c}."""
    r = sync_redis(redis_url)
    workers: list[WorkerProcess] = []
    try:
        w1 = await spawn(redis_url, workers)
        client = FlowClient(redis_url, queue_name=QUEUE)
        run = await start_until_first_run(
            r, client, {"a": {"marker_first": True, "block_first": 60}}, "a"
        )
        assert r.hget(f"ledger:{run}", "start") == "1"
        assert not r.hexists(f"workflow:run:{run}", "done:0|start")  # start is not committed
        w1.kill()

        w2 = await spawn(redis_url, workers)
        result = await client.wait(run, timeout=30)
        assert result.status == "completed", result
        counts = ledger(r, run)
        assert counts["start"] == 2 and counts["a"] == 2, counts  # ran ahead, lost, ran again
        assert counts["j"] == 1 and counts["end"] == 1, counts
        assert result.context["a"]["pid"] == w2.pid
        check_join_once(r, run, result.context)
    finally:
        for w in workers:
            w.kill()
        r.close()


# ---------------------------------------------------------------------------- 3. zombie


async def test_zombie_commit_after_lease_expiry_is_refused(redis_url: str) -> None:
    """Worker 1 runs b and is paused (SIGSTOP) past its lease; worker 2 takes b over and
    finishes the run; worker 1 resumes (SIGCONT), completes b and sends its commit with its old
    lease token. Redis must refuse it: the run's context, meta (the `done:0|b` marker) and
    status, and b's job hash, stay exactly as worker 2 left them."""
    r = sync_redis(redis_url)
    monitor = Monitor(redis_url)
    workers: list[WorkerProcess] = []
    try:
        w1 = await spawn(redis_url, workers)
        client = FlowClient(redis_url, queue_name=QUEUE)
        # b's first run blocks its worker's event loop for 2 s, so that when the process is
        # resumed the node finishes and queues its commit before the worker can react to the
        # lost lease: the zombie really sends a commit.
        plan = {
            "b": {
                "after_done": ["a", "c"],
                "marker_first": True,
                "block_first": 2.0,
                "returned": True,
            }
        }
        run = await start_until_first_run(r, client, plan, "b")
        b_job = jid(run, "b")
        w1.stop()
        zombie_token = r.get(QP + b_job + ":lock")
        assert zombie_token, "b's lease should still be held when worker 1 is paused"

        w2 = await spawn(redis_url, workers)
        result = await client.wait(run, timeout=30)
        assert result.status == "completed", result
        assert result.context["b"] == {"node": "b", "exec": 2, "pid": w2.pid}
        check_join_once(r, run, result.context)
        meta_before = meta(r, run)
        context_before = context(r, run)
        status_before = r.get(f"workflow:status:{run}")
        job_before = r.hgetall(QP + b_job)
        assert meta_before["done:0|b"] == b_job

        w1.cont()
        # the zombie finishes b (ledger) and sends a commit carrying its stale token (MONITOR:
        # the commit script is the one called with 13+ keys)
        await wait_until(
            lambda: r.hget(f"ledger:{run}", "b:returned:1"), 15, "the zombie to finish b"
        )
        await wait_until(
            lambda: any(n >= 13 for n, _ in monitor.script_calls(zombie_token)),
            15,
            "the zombie's commit to reach Redis",
        )
        await wait_until(lambda: "lease lost" in w1.stderr(), 15, "the zombie to log the loss")
        await wait_until(lambda: queue_drained(r), 10, "the queue to drain")

        assert meta(r, run) == meta_before
        assert context(r, run) == context_before
        assert r.get(f"workflow:status:{run}") == status_before
        assert r.hgetall(QP + b_job) == job_before
        counts = ledger(r, run)
        assert counts == {"start": 1, "a": 1, "b": 2, "c": 1, "j": 1, "end": 1}, counts
        assert int(r.hget(f"ledger:{run}", "b:returned:1")) == w1.pid  # 2 runs, 1 effect
        assert context_before["b"]["pid"] == w2.pid
    finally:
        for w in workers:
            w.kill()
        monitor.close()
        r.close()


# ---------------------------------------------------------------------------- 3b. fencing


async def test_lease_token_fences_a_reclaim_by_the_same_worker(redis_url: str) -> None:
    """The lease token must identify one claim, not one (worker, job) pair.

    One worker (token prefix P) claims a job, loses the lease (it expired; the stalled check
    returned the job to the queue), and later claims the same job again. The first claim is now
    stale: its commit must be refused even though it comes from the same worker, and the
    current claim's commit must be accepted.
    """
    r = sync_redis(redis_url)
    store = RedisCoordinationStore(redis_url)
    queue = store.queue(QUEUE)
    run, node = "fence1", "x"
    job = jid(run, node)
    data = json.dumps(
        {"runId": run, "blueprintId": "fan", "nodeId": node, "iteration": 0, "blueprintVersion": ""}
    )
    r.hset(
        QP + job,
        mapping={
            "name": "executeNode",
            "data": data,
            "opts": "{}",
            "atm": 0,
            "ats": 0,
            "delay": 0,
            "priority": 0,
            "timestamp": 0,
        },
    )
    r.lpush(QP + "wait", job)
    r.hset(f"workflow:run:{run}", mapping={"status": "running", "pending": 1, "blueprintId": "fan"})
    r.hset(QP + "flowcraft:blueprints", "fan", "{}")  # published: claims serve only those
    try:
        _, _, first, _ = await queue.claim(1, 100, "P")
        assert [j.id for j in first] == [job]
        stale_token = first[0].token
        await wait_until(lambda: not r.exists(QP + job + ":lock"), 5, "the lease to expire")
        requeued = await queue.requeue_stalled(1)
        assert requeued == [job]
        _, _, second, _ = await queue.claim(1, 30_000, "P")
        assert [j.id for j in second] == [job]
        live_token = second[0].token

        def commit(token: str, value: str) -> Any:
            return CommitRequest(job, token, run, f"0|{node}", "ok", value, "", [(node, value)])

        (stale,), _ = await queue.commit([commit(stale_token, '"stale"')])
        assert stale.code == "lost", (
            f"a stale claim's commit was accepted ({stale}); both claims got token "
            f"{stale_token!r} == {live_token!r}"
        )
        assert not r.hexists(f"workflow:state:{run}", node)
        (live,), _ = await queue.commit([commit(live_token, '"live"')])
        assert live.code == "ok", live
        assert r.hget(f"workflow:state:{run}", node) == '"live"'
    finally:
        r.close()


# ---------------------------------------------------------------------------- 3c. a copy in flight


async def test_copy_of_an_in_flight_job_claimed_by_the_same_worker(redis_url: str) -> None:
    """A second copy of c is delivered while c's first execution is still running, and the same
    worker claims it: the copy's claim supersedes the first (new lease token), so the first
    execution's commit is refused and the copy's commit must be the one that counts. The copy's
    lease must keep being renewed after the first execution ends: c runs exactly twice (one
    per delivery), no lease of it lapses, and the run completes with the join fired once."""
    r = sync_redis(redis_url)
    adapter = make_adapter(redis_url)
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name=QUEUE)
        # the copy (2nd execution) outlives the first by more than a lease (1 s)
        plan = {"c": {"sleep_first": 0.5, "sleep_later": 2.5}}
        run = await client.start("fan", {"plan": plan})
        await wait_until(lambda: ledger(r, run).get("c") == 1, 15, "c's first execution")
        redeliver(r, jid(run, "c"), 1)
        result = await client.wait(run, timeout=20)
        assert result.status == "completed", result
        await wait_until(lambda: queue_drained(r), 10, "the queue to drain")
        counts = ledger(r, run)
        assert counts["c"] == 2, f"c ran {counts['c']} times for 2 deliveries: {counts}"
        assert result.context["c"]["exec"] == 2
        assert r.hget(QP + jid(run, "c"), "stc") is None, "c's live lease lapsed"
        check_join_once(r, run, result.context)
    finally:
        await adapter.close(timeout=5)
        r.close()
