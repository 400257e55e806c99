"""A distributed run's life from start to its one terminal state (SPEC sections 3 and 5).

- TTLs: run keys never expire while the run goes; once it ends (completed, failed, cancelled)
  its state, meta, joins and status keys expire within `state_ttl_seconds`.
- One terminal state, written once: a failure ends the run `failed` with the original
  exception's type and message; a sibling that commits later changes nothing.
- A failure poisons the run: successors of the failed node never run, in-flight siblings are
  cancelled (their outputs never reach the context).
- Blueprint versions: a job for a version this worker does not serve is left in the queue for a
  matching worker, with a warning naming both versions; a matching worker then runs it.
- Run ids are validated, unique, and job ids never contain ':'.
- A malformed job put straight into `wait` goes to `failed` with a reason; the worker goes on.
- A node output that JSON cannot carry fails the run with an error naming the node.

One in-process adapter per test (plus a second one where a test needs two workers) on the
session's private Redis; nodes record what they did in an in-process ledger. Every wait is
bounded; nothing asserts how fast anything happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from flowcraft_fast import (
    BullMQAdapter,
    FlowClient,
    FlowRuntime,
    NodeContext,
    RedisCoordinationStore,
)
from flowcraft_fast.distributed import node_job as node_job_module
from waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUEUE = "q"
QP = f"bull:{QUEUE}:"
TTL = 60
WAIT_S = 20.0

# ---------------------------------------------------------------------------- ledger + nodes

LEDGER: dict[str, list[str]] = defaultdict(list)
"""run id -> events ("<node>:start", "<node>:end", "<node>:cancelled", ...), in order."""
GATES: dict[str, asyncio.Event] = {}
"""Events a test sets to let a node finish ("<run id>:<node>")."""


def note(ctx: NodeContext, what: str) -> None:
    LEDGER[ctx.run_id].append(f"{ctx.node_id}:{what}")


def gate(run_id: str, node: str) -> asyncio.Event:
    return GATES.setdefault(f"{run_id}:{node}", asyncio.Event())


async def ok(ctx: NodeContext) -> Any:
    note(ctx, "start")
    note(ctx, "end")
    return {"node": ctx.node_id}


async def gated(ctx: NodeContext) -> Any:
    """Finishes when the test opens its gate (bounded)."""
    note(ctx, "start")
    await asyncio.wait_for(gate(ctx.run_id, ctx.node_id).wait(), WAIT_S)
    note(ctx, "end")
    return {"node": ctx.node_id}


async def fail_after_siblings(ctx: NodeContext) -> Any:
    """Raises ValueError once the nodes named in params.after have started (bounded)."""
    note(ctx, "start")
    after = ctx.params.get("after", [])
    await wait_until(
        lambda: all(f"{n}:start" in LEDGER[ctx.run_id] for n in after), WAIT_S, "siblings"
    )
    note(ctx, "raise")
    raise ValueError(f"bad input at {ctx.node_id}: 42")


async def sleeper(ctx: NodeContext) -> Any:
    """Sleeps long; a cancelled run must stop it before it ends."""
    note(ctx, "start")
    try:
        await asyncio.sleep(WAIT_S)
    except asyncio.CancelledError:
        note(ctx, "cancelled")
        raise
    note(ctx, "end")
    return "slept"


async def watcher(ctx: NodeContext) -> Any:
    """Waits on ctx.cancelled (bounded), the cooperative way to notice the run stopped."""
    note(ctx, "start")
    try:
        await asyncio.wait_for(ctx.cancelled.wait(), WAIT_S)
    except asyncio.CancelledError:
        note(ctx, "cancelled")
        raise
    except TimeoutError:
        note(ctx, "end")
        return "never told"
    note(ctx, "saw-cancelled")
    return "saw cancelled"


async def stubborn(ctx: NodeContext) -> Any:
    """Ignores cancellation and returns after the run has failed: a late commit."""
    note(ctx, "start")
    r = redis.Redis.from_url(ctx.dependencies["url"], decode_responses=True)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(gate(ctx.run_id, ctx.node_id).wait(), WAIT_S)
        # do not return before the run's failure is recorded
        deadline = time.monotonic() + WAIT_S
        while r.hget(f"workflow:run:{ctx.run_id}", "status") == "running":
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    finally:
        r.close()
    note(ctx, "end")
    return {"late": ctx.node_id}


def polling(ctx: NodeContext) -> Any:
    """A plain (threaded) node: task cancellation cannot stop it, only ctx.cancelled can."""
    note(ctx, "start")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if ctx.cancelled.is_set():
            note(ctx, "saw-cancelled")
            return "stopped early"
        time.sleep(0.01)
    note(ctx, "end")
    return "ran to the end"


async def setty(ctx: NodeContext) -> Any:
    note(ctx, "start")
    return {"tags": {"a", "b"}}


REGISTRY: dict[str, Any] = {
    "ok": ok,
    "gated": gated,
    "fail": fail_after_siblings,
    "sleeper": sleeper,
    "watcher": watcher,
    "stubborn": stubborn,
    "setty": setty,
    "polling": polling,
}


def bp(
    bp_id: str,
    nodes: dict[str, str | dict[str, Any]],
    edges: list[tuple[str, str]],
    version: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": bp_id,
        "nodes": [
            {"id": n, "uses": spec} if isinstance(spec, str) else {"id": n, **spec}
            for n, spec in nodes.items()
        ],
        "edges": [{"source": s, "target": t} for s, t in edges],
    }
    if version is not None:
        out["metadata"] = {"version": version}
    return out


# fan-out to a gated branch and a plain branch, joined: exercises joins and TTLs
TTL_BP = bp(
    "ttl",
    {"s": "ok", "g": "gated", "p": "ok", "j": {"uses": "ok", "config": {"joinStrategy": "all"}}},
    [("s", "g"), ("s", "p"), ("g", "j"), ("p", "j")],
)
# a fails while b is running; b swallows the cancellation and commits late
LATE_BP = bp(
    "late",
    {"a": {"uses": "fail", "params": {"after": ["b"]}}, "b": "stubborn", "b2": "ok"},
    [("b", "b2")],
)
# a fails while the sleeper s and the watcher w are in flight; each has successors
POISON_BP = bp(
    "poison",
    {
        "a": {"uses": "fail", "params": {"after": ["s", "w"]}},
        "a2": "ok",
        "s": "sleeper",
        "s2": "ok",
        "w": "watcher",
        "w2": "ok",
        "j": {"uses": "ok", "config": {"joinStrategy": "all"}},
    },
    [("a", "a2"), ("s", "s2"), ("w", "w2"), ("a2", "j"), ("s2", "j"), ("w2", "j")],
)
# a fails while the threaded node t (which can only watch ctx.cancelled) is running
THREAD_BP = bp(
    "thread",
    {"a": {"uses": "fail", "params": {"after": ["t"]}}, "t": "polling", "t2": "ok"},
    [("t", "t2")],
)
# node ids with ':' and other characters BullMQ refuses in job ids
IDS_BP = bp("ids", {"n:1": "ok", "n:2": "ok", "3": "ok"}, [("n:1", "n:2"), ("n:2", "3")])
SET_BP = bp(
    "setty",
    {"first": "ok", "bad:node": "setty", "after": "ok"},
    [
        ("first", "bad:node"),
        ("bad:node", "after"),
    ],
)
PLAIN_BP = bp("plain", {"x": "ok", "y": "ok"}, [("x", "y")])

ALL_BPS = [TTL_BP, LATE_BP, POISON_BP, THREAD_BP, IDS_BP, SET_BP, PLAIN_BP]


# ---------------------------------------------------------------------------- fixtures


def sync_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


@asynccontextmanager
async def serving(
    url: str, blueprints: list[dict[str, Any]] | None = None, **kwargs: Any
) -> AsyncIterator[tuple[BullMQAdapter, FlowClient, RedisCoordinationStore]]:
    """An adapter serving `blueprints` on QUEUE, and a client sharing its store."""
    rt = FlowRuntime(blueprints=blueprints or ALL_BPS, registry=REGISTRY, dependencies={"url": url})
    store = RedisCoordinationStore(url, state_ttl_seconds=TTL)
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        coordination_store=store,
        queue_name=QUEUE,
        concurrency=kwargs.pop("concurrency", 16),
        lease_ms=kwargs.pop("lease_ms", 2000),
        stalled_interval_seconds=1,
        **kwargs,
    )
    await adapter.start()
    try:
        yield adapter, FlowClient(store, queue_name=QUEUE), store
    finally:
        await adapter.close(timeout=10)


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    LEDGER.clear()
    GATES.clear()


def ttls(r: redis.Redis, run_id: str) -> dict[str, int]:
    keys = ("state", "run", "joins", "status")
    return {k: r.ttl(f"workflow:{k}:{run_id}") for k in keys}


def assert_expiring(r: redis.Redis, run_id: str, *, joins: bool) -> None:
    got = ttls(r, run_id)
    expected = ["state", "run", "status"] + (["joins"] if joins else [])
    for kind in expected:
        assert 0 < got[kind] <= TTL, f"workflow:{kind}:{run_id} TTL {got[kind]} ({got})"
    if not joins:
        assert got["joins"] in (-2, *range(1, TTL + 1)), got  # absent, or expiring too


def status_json(r: redis.Redis, run_id: str) -> dict[str, Any]:
    return json.loads(r.get(f"workflow:status:{run_id}"))


# ---------------------------------------------------------------------------- TTLs


async def test_run_keys_never_expire_while_running_and_expire_after_completion(
    redis_url: str,
) -> None:
    r = sync_redis(redis_url)
    async with serving(redis_url) as (_, client, _store):
        run_id = await client.start("ttl", {"seed": 1})
        await wait_until(lambda: "g:start" in LEDGER[run_id], WAIT_S, "g to start")
        await wait_until(lambda: "p:end" in LEDGER[run_id], WAIT_S, "p to finish")
        await wait_until(
            lambda: r.hexists(f"workflow:run:{run_id}", "done:0|p"), WAIT_S, "p's commit"
        )
        running = ttls(r, run_id)
        assert running["state"] == -1 and running["run"] == -1, running
        assert running["joins"] == -1, running  # p's arrival at j is recorded, not expiring
        assert running["status"] == -2, running  # no result yet
        gate(run_id, "g").set()
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "completed", result.errors
        assert result.context["j"] == {"node": "j"}
        assert_expiring(r, run_id, joins=True)


async def test_run_keys_expire_after_failure(redis_url: str) -> None:
    r = sync_redis(redis_url)
    async with serving(redis_url) as (_, client, _store):
        run_id = await client.start("poison", {"seed": 3})  # a state hash from the start
        await wait_until(lambda: "s:start" in LEDGER[run_id], WAIT_S, "s to start")
        assert ttls(r, run_id)["state"] == -1 and ttls(r, run_id)["run"] == -1
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "failed"
        assert_expiring(r, run_id, joins=False)


async def test_run_keys_expire_after_cancel(redis_url: str) -> None:
    r = sync_redis(redis_url)
    async with serving(redis_url) as (_, client, _store):
        run_id = await client.start("ttl", {"seed": 2})
        await wait_until(
            lambda: r.hexists(f"workflow:run:{run_id}", "done:0|p"), WAIT_S, "p's commit"
        )
        assert ttls(r, run_id)["state"] == -1 and ttls(r, run_id)["run"] == -1
        assert await client.cancel(run_id) is True
        assert await client.cancel(run_id) is False  # already ended: a no-op
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "cancelled"
        assert result.context["seed"] == 2 and result.context["p"] == {"node": "p"}
        # the running node g was stopped by its lease renewal: its output never lands
        await wait_until(
            lambda: "g:end" not in LEDGER[run_id] and not r.llen(QP + "active"),
            WAIT_S,
            "g's job to leave active",
        )
        assert "g" not in (await client.result(run_id)).context
        assert_expiring(r, run_id, joins=True)


# ---------------------------------------------------------------------------- one terminal state


async def test_failure_is_the_one_terminal_state_and_a_late_sibling_changes_nothing(
    redis_url: str,
) -> None:
    r = sync_redis(redis_url)
    async with serving(redis_url) as (_, client, _store):
        run_id = await client.start("late")
        pubsub = r.pubsub()
        pubsub.subscribe(f"workflow:status:{run_id}")
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "failed"
        first = status_json(r, run_id)
        meta_first = r.hgetall(f"workflow:run:{run_id}")
        # let the stubborn sibling commit now that the run has failed
        gate(run_id, "b").set()
        await wait_until(lambda: "b:end" in LEDGER[run_id], WAIT_S, "b to return")
        b_job = meta_first["fired:0|b"]
        await wait_until(
            lambda: r.zscore(QP + "failed", b_job) is not None, WAIT_S, "b's job to settle"
        )
        # never "completed": its result was discarded, and the reason says so
        assert "ended" in r.hget(QP + b_job, "failedReason")
        assert r.zscore(QP + "completed", b_job) is None
        assert status_json(r, run_id) == first
        assert r.hgetall(f"workflow:run:{run_id}") == meta_first
        ctx = (await client.result(run_id)).context
        assert "b" not in ctx and "b2" not in ctx
        assert "b2:start" not in LEDGER[run_id]
        # one terminal status published (besides the subscribe confirmation)
        messages = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "message":
                messages.append(msg["data"])
        pubsub.close()
        assert messages in ([], ["failed"]), messages  # subscribed late or saw it once
    assert first["status"] == "failed"
    assert "bad input at a: 42" in first["reason"]
    assert first["errors"] == [
        {"nodeId": "a", "message": "bad input at a: 42", "type": "ValueError"}
    ]
    assert [(e.node_id, e.message, e.type) for e in result.errors] == [
        ("a", "bad input at a: 42", "ValueError")
    ]


async def test_terminal_status_is_published_exactly_once(redis_url: str) -> None:
    """Subscribed before the run starts: exactly one status message, `failed`."""
    r = sync_redis(redis_url)
    async with serving(redis_url) as (_, client, _store):
        run_id = "once-1"
        pubsub = r.pubsub()
        pubsub.subscribe(f"workflow:status:{run_id}")
        await client.start("late", run_id=run_id)
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "failed"
        gate(run_id, "b").set()
        await wait_until(lambda: "b:end" in LEDGER[run_id], WAIT_S, "b to return")
        assert await client.cancel(run_id) is False  # cannot end it a second time
        messages = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "message":
                messages.append(msg["data"])
        pubsub.close()
        assert messages == ["failed"]


# ---------------------------------------------------------------------------- poisoning


async def test_failure_poisons_successors_and_cancels_in_flight_siblings(
    redis_url: str,
) -> None:
    r = sync_redis(redis_url)
    async with serving(redis_url) as (adapter, client, _store):
        run_id = await client.start("poison")
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "failed"
        assert [(e.node_id, e.type) for e in result.errors] == [("a", "ValueError")]
        # the siblings were stopped: the sleeper cancelled, the watcher cancelled or told by
        # ctx.cancelled (whichever reaches it first); neither ran to its end
        await wait_until(
            lambda: (
                "s:cancelled" in LEDGER[run_id]
                and {"w:cancelled", "w:saw-cancelled"} & set(LEDGER[run_id])
            ),
            WAIT_S,
            f"the in-flight siblings to be cancelled: {LEDGER[run_id]}",
        )
        await wait_until(lambda: adapter.worker.in_flight == 0, WAIT_S, "nothing in flight")
        events = LEDGER[run_id]
        for node in ("s", "w"):
            assert f"{node}:start" in events and f"{node}:end" not in events, events
        # nothing after the failed node, nor after the cancelled siblings, ever ran
        for node in ("a2", "s2", "w2", "j"):
            assert f"{node}:start" not in events, events
        ctx = (await client.result(run_id)).context
        for node in ("a", "a2", "s", "s2", "w", "w2", "j"):
            assert node not in ctx, (node, ctx)
        meta = r.hgetall(f"workflow:run:{run_id}")
        assert not [k for k in meta if k.startswith("fired:0|") and k[8:] in ("a2", "s2", "w2")]
        # no job of the run is left anywhere but completed/failed
        assert r.llen(QP + "wait") == 0 and r.llen(QP + "active") == 0
        assert r.zcard(QP + "delayed") == 0


async def test_a_plain_function_sibling_sees_ctx_cancelled(redis_url: str) -> None:
    """A `def` node runs in a thread that task cancellation cannot stop: the worker must set
    ctx.cancelled (SPEC: set when the run is cancelled or failed elsewhere) so it can stop."""
    async with serving(redis_url) as (adapter, client, _store):
        run_id = await client.start("thread")
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "failed"
        await wait_until(
            lambda: {"t:saw-cancelled", "t:end"} & set(LEDGER[run_id]), WAIT_S, "t to return"
        )
        assert "t:saw-cancelled" in LEDGER[run_id], LEDGER[run_id]
        await wait_until(lambda: adapter.worker.in_flight == 0, WAIT_S, "nothing in flight")
        assert "t2:start" not in LEDGER[run_id]
        assert "t" not in (await client.result(run_id)).context


# ---------------------------------------------------------------------------- versions


V1 = bp("v", {"only": "ok"}, [], version="1")
V2 = bp("v", {"only": "ok"}, [], version="2")


async def test_job_for_another_blueprint_version_waits_for_a_matching_worker(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="flowcraft_fast")
    # offered again every second instead of every 5 s, to keep the test short
    monkeypatch.setattr(node_job_module, "VERSION_RETRY_DELAY_MS", 1000)
    r = sync_redis(redis_url)
    async with serving(redis_url, [V1]) as (adapter_v1, client, _store):
        async with serving(redis_url, [V2]):  # publishes version 2, then goes away
            pass
        assert (await client.blueprint("v")).version == "2"
        run_id = await client.start("v")
        job = r.hget(f"workflow:run:{run_id}", "fired:0|only")
        assert json.loads(r.hget(QP + job, "data"))["blueprintVersion"] == "2"

        def version_warnings() -> list[str]:
            return [
                rec.getMessage()
                for rec in caplog.records
                if rec.levelno == logging.WARNING and job in rec.getMessage()
            ]

        await wait_until(lambda: len(version_warnings()) >= 2, WAIT_S, "two offers to v1")
        message = version_warnings()[0]
        assert "'2'" in message and "'1'" in message, message
        # left for another worker: queued (delayed or waiting), never completed nor failed; read
        # in one transaction (the job moves between delayed and active as it is offered again)
        pipe = r.pipeline(transaction=True)
        pipe.zscore(QP + "delayed", job).lrange(QP + "wait", 0, -1).lrange(QP + "active", 0, -1)
        delayed, waiting, active = pipe.execute()
        assert delayed is not None or job in waiting or job in active, (delayed, waiting, active)
        assert r.zscore(QP + "completed", job) is None and r.zscore(QP + "failed", job) is None
        assert await client.status(run_id) == "running"
        assert "only:start" not in LEDGER[run_id]
        assert int(r.hget(QP + job, "atm") or 0) == 0  # offers are not failed attempts

        async with serving(redis_url, [V2]):
            result = await client.wait(run_id, timeout=60)
        assert result.status == "completed", result.errors
        assert result.context["only"] == {"node": "only"}
        assert adapter_v1.worker.stats.committed == 0


async def test_version_offers_end_after_the_retry_limit(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_job_module, "VERSION_RETRY_DELAY_MS", 10)
    async with serving(redis_url, [V1]) as (_, client, _store):
        async with serving(redis_url, [V2]):
            pass
        run_id = await client.start("v")
        result = await client.wait(run_id, timeout=10)
        assert result.status == "failed"
        assert "no matching worker took the job" in result.errors[0].message


# ---------------------------------------------------------------------------- ids


async def test_run_ids_are_checked_and_unique_and_job_ids_have_no_colon(redis_url: str) -> None:
    r = sync_redis(redis_url)
    async with serving(redis_url) as (_, client, _store):
        for bad in ("bad:id", "", "a b", "x" * 129, "é"):
            with pytest.raises(ValueError):
                await client.start("plain", run_id=bad)
        assert not r.exists("workflow:run:bad:id")
        run_id = await client.start("plain", {"k": 1}, run_id="dup-{1}_x")
        # idempotent: the same id again starts nothing and answers the id
        assert await client.start("plain", {"k": 2}, run_id="dup-{1}_x") == run_id
        assert (await client.wait(run_id, timeout=WAIT_S)).status == "completed"
        assert json.loads(r.hget(f"workflow:state:{run_id}", "k")) == 1  # not overwritten
        assert await client.start("plain", run_id=run_id) == run_id  # also once it ended
        assert await client.status(run_id) == "completed"
        ids_run = await client.start("ids")
        result = await client.wait(ids_run, timeout=WAIT_S)
        assert result.status == "completed"
        assert set(result.context) >= {"n:1", "n:2", "3"}
        jobs = r.zrange(QP + "completed", 0, -1)
        assert len(jobs) == 2 + 3
        for job in jobs:
            assert ":" not in job and not job.isdigit(), job
        meta = r.hgetall(f"workflow:run:{ids_run}")
        for field, job in meta.items():
            if field.startswith(("fired:", "done:")):
                assert ":" not in job, (field, job)


# ---------------------------------------------------------------------------- malformed jobs


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("{not json", "job data is not valid JSON"),
        ('["a list"]', "job data is not a JSON object"),
        ('{"nodeId": "x"}', "field runId must be a string, not absent"),
        ('{"runId": 7, "nodeId": "x"}', "field runId must be a string, not 7"),
    ],
    ids=["not-json", "json-list", "no-run-id", "run-id-not-string"],
)
async def test_malformed_job_goes_to_failed_and_the_worker_keeps_serving(
    redis_url: str, caplog: pytest.LogCaptureFixture, data: str, why: str
) -> None:
    caplog.set_level(logging.WARNING, logger="flowcraft_fast")
    r = sync_redis(redis_url)
    async with serving(redis_url) as (adapter, client, _store):
        job = "junk-1"
        r.hset(QP + job, mapping={"name": "executeNode", "data": data, "opts": "{}"})
        r.lpush(QP + "wait", job)
        r.zadd(QP + "marker", {"0": 0})
        await wait_until(lambda: r.zscore(QP + "failed", job) is not None, WAIT_S, "failed")
        assert why in r.hget(QP + job, "failedReason")
        assert job not in r.lrange(QP + "active", 0, -1) + r.lrange(QP + "wait", 0, -1)
        # a job id in wait with no job hash at all is dropped too
        r.lpush(QP + "wait", "ghost-1")
        r.zadd(QP + "marker", {"0": 0})
        run_id = await client.start("plain")
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "completed"
        assert "ghost-1" not in r.lrange(QP + "wait", 0, -1) + r.lrange(QP + "active", 0, -1)
        assert all(not t.done() for t in adapter.worker._tasks)
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert not errors, [rec.getMessage() for rec in errors]


# ---------------------------------------------------------------------------- outputs


async def test_output_that_is_not_json_fails_the_run_naming_the_node(redis_url: str) -> None:
    r = sync_redis(redis_url)
    async with serving(redis_url) as (_, client, _store):
        run_id = await client.start("setty")
        result = await client.wait(run_id, timeout=WAIT_S)
        assert result.status == "failed"
        assert len(result.errors) == 1
        err = result.errors[0]
        assert err.node_id == "bad:node"
        assert "bad:node" in err.message and "JSON" in err.message and "set" in err.message
        assert "after:start" not in LEDGER[run_id]
        assert "bad:node" not in result.context
        assert result.context["first"] == {"node": "first"}
        job = r.hget(f"workflow:run:{run_id}", "fired:0|bad:node")
        assert r.zscore(QP + "failed", job) is not None
        assert "bad:node" in r.hget(QP + job, "failedReason")
