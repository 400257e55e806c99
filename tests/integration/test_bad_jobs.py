"""Bad jobs fail alone, at once, with the real reason (issue 10; SPEC section 5).

Each kind of job that cannot run is written straight into a live queue served by a real
worker, next to a healthy run: the job must end in BullMQ's `failed` set within 5 s with a
reason naming what is wrong, never `completed`; the run it names (if any) must not change; the
healthy run must complete. An id pushed on `wait` without a job hash is removed and reported.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext, _core
from flowcraft_fast.distributed.jobs import RUN_ID_PATTERN
from waiting import wait_until

pytestmark = pytest.mark.timeout(60)

QP = "bull:q:"
CHAIN = {
    "id": "chain",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "b", "uses": "plus"}],
    "edges": [{"source": "a", "target": "b"}],
}
GATED = {"id": "gated", "nodes": [{"id": "w", "uses": "wait"}], "edges": []}
DOOMED = {"id": "doomed", "nodes": [{"id": "x", "uses": "explode"}], "edges": []}


async def one(ctx: NodeContext) -> int:
    return 1


async def plus(ctx: NodeContext) -> int:
    return int(ctx.input) + 1


async def explode(ctx: NodeContext) -> None:
    raise RuntimeError("exploded")


@pytest_asyncio.fixture
async def served(redis_url: str) -> AsyncIterator[tuple[BullMQAdapter, FlowClient, redis.Redis]]:
    rt = FlowRuntime(
        blueprints=[CHAIN, GATED, DOOMED], registry={"one": one, "plus": plus, "explode": explode}
    )
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="q")
    await adapter.start()
    try:
        yield (
            adapter,
            FlowClient(redis_url, queue_name="q"),
            redis.Redis.from_url(redis_url, decode_responses=True),
        )
    finally:
        await adapter.close(timeout=2)


def push(r: redis.Redis, jid: str, data: str | None, **fields: Any) -> None:
    """A job as BullMQ's Queue.add writes it (or as a hostile producer might)."""
    if data is not None or fields:
        mapping = {"name": "executeNode", "opts": "{}", "timestamp": 0, "atm": 0, **fields}
        if data is not None:
            mapping["data"] = data
        r.hset(QP + jid, mapping=mapping)
    r.lpush(QP + "wait", jid)
    r.zadd(QP + "marker", {"0": 0})


async def failed_with(r: redis.Redis, jid: str) -> str:
    await wait_until(lambda: r.zscore(QP + "failed", jid) is not None, 5, f"job {jid} to fail")
    assert r.zscore(QP + "completed", jid) is None
    assert not r.exists(QP + jid + ":lock")
    return str(r.hget(QP + jid, "failedReason"))


async def healthy_run_completes(client: FlowClient) -> None:
    result = await client.wait(await client.start("chain", {}), timeout=15)
    assert result.status == "completed" and result.context["b"] == 2


def job(run_id: str = "r1", node: str = "a", **extra: Any) -> str:
    return json.dumps({"runId": run_id, "blueprintId": "chain", "nodeId": node, **extra})


BAD: list[tuple[str, Any, str]] = [
    ("not-json", "{nope", "job data is not valid JSON"),
    ("not-object", "[1, 2]", "job data is not a JSON object"),
    ("too-large", json.dumps({"runId": "r", "nodeId": "a", "pad": "x" * (2 << 20)}),
     "bytes, over the limit of 1048576 bytes"),
    ("too-deep", "[" * 5000 + "]" * 5000, "nested deeper than 1000 levels (the limit)"),
    ("runid-type", json.dumps({"runId": 7, "nodeId": "a"}), "field runId must be a string"),
    ("runid-chars", job("bad:id\n"), "field runId \"bad:id\\n\" is not a run id"),
    ("nodeid-type", json.dumps({"runId": "r1", "nodeId": ["a"]}),
     "field nodeId must be a non-empty string, not an array or object"),
    ("iteration-type", job(iteration="zero"), 'field iteration must be a whole number >= 0 '
     'or dotted ones ("1.2"), not "zero"'),
    ("version-type", job(blueprintVersion=3), "field blueprintVersion must be a string or null"),
    ("no-run", job("never-started"), "run never-started not found"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "data", "reason"), BAD, ids=[b[0] for b in BAD])
async def test_a_bad_job_fails_at_once_with_its_reason(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis], kind: str, data: str, reason: str
) -> None:
    adapter, client, r = served
    push(r, f"bad-{kind}", data)
    assert reason in await failed_with(r, f"bad-{kind}")
    # the claim failed it in Redis; its reply reaches the worker's counter a moment later
    await wait_until(lambda: adapter.worker.stats.rejected >= 1, 5, "the worker to count it")
    await healthy_run_completes(client)


async def _parked_run(client: FlowClient, r: redis.Redis) -> tuple[str, dict[str, str]]:
    """A live run whose only node waits: jobs naming it must leave it exactly as it is."""
    run_id = await client.start("gated", {})
    await wait_until(lambda: r.hget(f"workflow:run:{run_id}", "status") == "awaiting", 10, "await")
    return run_id, r.hgetall(f"workflow:run:{run_id}")


async def test_a_job_for_an_unknown_node_fails_alone_and_never_the_run(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis],
) -> None:
    _, client, r = served
    run_id, meta = await _parked_run(client, r)
    push(r, "stale", json.dumps({"runId": run_id, "blueprintId": "gated", "nodeId": "gone"}))
    assert "blueprint 'gated' has no node 'gone'" in await failed_with(r, "stale")
    assert r.hgetall(f"workflow:run:{run_id}") == meta  # the run did not change
    assert await client.status(run_id) == "awaiting"
    await healthy_run_completes(client)


async def test_a_job_for_an_unknown_blueprint_or_another_runs_fails_alone(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis],
) -> None:
    _, client, r = served
    run_id, meta = await _parked_run(client, r)
    push(r, "other-bp", json.dumps({"runId": run_id, "blueprintId": "chain", "nodeId": "a"}))
    assert 'job names blueprint "chain" but its run' in await failed_with(r, "other-bp")
    # a run record that names a blueprint nobody publishes (its worker went away)
    r.hset("workflow:run:orphaned", mapping={"status": "running", "blueprintId": "ghost"})
    push(r, "ghost", json.dumps({"runId": "orphaned", "blueprintId": "ghost", "nodeId": "a"}))
    assert 'blueprint "ghost" not found' in await failed_with(r, "ghost")
    assert r.hgetall(f"workflow:run:{run_id}") == meta
    assert r.hget("workflow:run:orphaned", "status") == "running"
    await healthy_run_completes(client)


async def test_a_job_of_an_ended_run_fails_saying_so_never_completed(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis],
) -> None:
    _, client, r = served
    run_id, _ = await _parked_run(client, r)
    assert await client.cancel(run_id)
    push(r, "late", json.dumps({"runId": run_id, "blueprintId": "gated", "nodeId": "w"}))
    assert f"run {run_id} already ended (cancelled)" in await failed_with(r, "late")


async def test_an_orphan_id_on_wait_is_removed_counted_and_logged(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis], caplog: pytest.LogCaptureFixture
) -> None:
    adapter, client, r = served
    caplog.set_level(logging.WARNING, logger="flowcraft_fast.worker")
    push(r, "orphan-id", None)
    await wait_until(lambda: adapter.worker.stats.rejected >= 1, 5, "the orphan to be reported")
    assert r.lpos(QP + "wait", "orphan-id") is None
    assert r.lpos(QP + "active", "orphan-id") is None
    assert any("orphan-id" in m and "no job hash" in m for m in caplog.messages)
    await healthy_run_completes(client)


@pytest.mark.parametrize("where", ["wait", "delayed"])
async def test_an_id_naming_a_queue_key_is_removed_and_the_key_left_alone(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis],
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    """`wait`, `meta`, `x:lock` ... are not job ids: their "job hash" would be a key of the
    queue (a list, the queue's meta hash, a lock string). Reading or failing them used to abort
    the claim script on every call (a list) or write a failedReason into the queue's meta."""
    adapter, client, r = served
    caplog.set_level(logging.WARNING, logger="flowcraft_fast.worker")
    await healthy_run_completes(client)
    r.set(QP + "x:lock", "someone")
    before = {k: r.dump(QP + k) for k in ("meta", "x:lock", "completed")}
    ids = ["wait", "meta", "x:lock", "flowcraft"]
    for bad in ids:
        if where == "wait":
            r.lpush(QP + "wait", bad)
        else:
            r.zadd(QP + "delayed", {bad: 0})  # due long ago
    r.zadd(QP + "marker", {"0": 0})
    await wait_until(lambda: adapter.worker.stats.rejected >= len(ids), 5, "the ids to go")
    for bad in ids:
        assert r.lpos(QP + "wait", bad) is None and r.lpos(QP + "active", bad) is None
        assert r.zscore(QP + "delayed", bad) is None and r.zscore(QP + "failed", bad) is None
    assert {k: r.dump(QP + k) for k in before} == before
    assert sum("not a job id" in m for m in caplog.messages) == len(ids)
    await healthy_run_completes(client)


@pytest.mark.parametrize("data_ok", [True, False], ids=["runnable", "bad-data"])
@pytest.mark.parametrize(
    ("field", "value"),
    [("atm", "abc"), ("atm", "1e400"), ("attemptsMade", "1.5"), ("ats", "x"), ("fce", "-1"),
     ("stc", "9" * 20)],
)  # fmt: skip
async def test_a_job_with_a_junk_counter_fails_at_once_and_the_worker_goes_on(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis], field: str, value: str, data_ok: bool
) -> None:
    """BullMQ's counters (atm, attemptsMade, ats) and ours (stc, fce) are counted with HINCRBY
    and read as numbers: junk there used to abort the claim script (jobs it had taken before
    were stranded in active), kill the worker's claim loop, or lose the job at its commit."""
    adapter, client, r = served
    run_id, meta = await _parked_run(client, r)
    data = json.dumps({"runId": run_id, "nodeId": "w"}) if data_ok else "{nope"
    push(r, "junk-counter", data, **{field: value})
    reason = await failed_with(r, "junk-counter")
    if data_ok:
        assert f"job field {field} must be a whole number >= 0, not {json.dumps(value)}" in reason
    assert r.hget(QP + "junk-counter", "atm") == "1"  # this attempt, counted
    assert r.hgetall(f"workflow:run:{run_id}") == meta
    assert all(not t.done() for t in adapter.worker._tasks)
    await healthy_run_completes(client)


async def test_a_job_naming_no_blueprint_is_checked_against_its_runs_blueprint(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis],
) -> None:
    """blueprintId is optional in the data (the run's is meant): the worker is handed the run's
    blueprint, not "" (which it used to defer as unserved for a minute, then fail the run)."""
    _, client, r = served
    run_id, meta = await _parked_run(client, r)
    push(r, "no-bp", json.dumps({"runId": run_id, "nodeId": "gone"}))
    assert "blueprint 'gated' has no node 'gone'" in await failed_with(r, "no-bp")
    assert r.hgetall(f"workflow:run:{run_id}") == meta


@pytest.mark.parametrize("same_id", [True, False], ids=["same-id", "other-id"])
async def test_a_copy_of_the_node_that_failed_its_run_fails_never_completed(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis], same_id: bool
) -> None:
    """Its node committed (the run records it done), but by failing the run: a re-delivered
    copy used to be settled as completed (with the same id: in failed and completed at once)."""
    _, client, r = served
    run_id = await client.start("doomed", {})
    assert (await client.wait(run_id, timeout=15)).status == "failed"
    first = r.hget(f"workflow:run:{run_id}", "fired:0|x")
    assert first is not None
    copy = first if same_id else "copy-of-x"
    if not same_id:
        push(r, copy, json.dumps({"runId": run_id, "blueprintId": "doomed", "nodeId": "x"}))
    else:
        r.lpush(QP + "wait", copy)
        r.zadd(QP + "marker", {"0": 0})
    await wait_until(
        lambda: r.lpos(QP + "wait", copy) is None and r.lpos(QP + "active", copy) is None,
        5,
        "the copy to be claimed",
    )
    assert f"run {run_id} already ended (failed)" in await failed_with(r, copy)


@pytest.mark.parametrize("fcr", ["1", "[]", '"x"', '{"output": 1, "action": 5}'])
async def test_a_malformed_resume_payload_fails_the_job_alone_never_the_run(
    served: tuple[BullMQAdapter, FlowClient, redis.Redis], fcr: str
) -> None:
    """Valid JSON but not the {output, action} a resume carries used to fail the run it named
    (AttributeError/TypeError in the node's step)."""
    _, client, r = served
    run_id, meta = await _parked_run(client, r)
    push(r, "bad-fcr", json.dumps({"runId": run_id, "nodeId": "w"}), fcr=fcr)
    assert "the job's resume payload (field fcr) must be an object" in await failed_with(
        r, "bad-fcr"
    )
    assert r.hgetall(f"workflow:run:{run_id}") == meta
    assert await client.status(run_id) == "awaiting"
    with pytest.raises(TypeError, match="resume action must be a string"):
        await client.resume(run_id, "w", 1, action=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "run_id",
    ["r1", "a" * 128, "a" * 129, "", "{tag}-1_x", "bad:id", "new\nline", "sp ace", "é", "a*b"],
)
def test_the_run_id_rule_is_the_same_in_lua_and_python(redis_url: str, run_id: str) -> None:
    """Valid run ids are checked twice: by the client (jobs.py RUN_ID_PATTERN) and by the claim
    (lib.lua valid_run_id); both must agree."""
    r = redis.Redis.from_url(redis_url)
    lua = _core.script_source("lib") + "\nreturn valid_run_id(ARGV[1]) and 1 or 0"
    assert bool(r.eval(lua, 0, run_id)) == bool(RUN_ID_PATTERN.fullmatch(run_id))
