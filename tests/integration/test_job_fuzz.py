"""Fuzz: arbitrary job hashes in a live queue never crash the worker nor end `completed` (issue 10).

Hypothesis writes batches of hostile jobs straight into a queue served by a real worker
(`BullMQAdapter` in-process, the session's private Redis): random bytes, random JSON (any
nesting of null/bool/number/string/array/object, NaN and Infinity too), objects with the job's
keys holding values of the wrong types, values over the 1 MiB limit, JSON nested past the 1000
levels cjson accepts (and just under it), odd ids (unicode, colons, braces, newlines, 10,000
characters), hashes without `data` or `name`, extra hash fields holding junk (`atm`/`ats`/`stc`/
`fce` not integers, `opts`/`fci`/`fcr` not JSON or huge or deep), ids pushed with no hash at
all, each on `wait` or in `prioritized` (a zset). Some jobs name a live run of a real blueprint
(parked on a wait node) and a real node of it whose code raises, so the junk fields reach the
worker's Python side too. For every batch: each job ends in `failed` with a non-empty
`failedReason` (an orphan id, or one holding ':', which is no job id, leaves
wait/active/prioritized and its key is left alone) within 5 s, none ends in
`completed`, the worker's background tasks are all alive, it logged no ERROR nor a traceback
(but its report of the target node failing), and a normal run started afterwards in the same
queue completes with the right result.

Left out, as jobs that may legitimately run or wait: a well-formed resume payload in `fcr`
(the node finishes with it, without running), a `blueprintVersion` string on a job of the live
run (deferred for a minute to a worker serving it); and ids that are the queue's own keys
(`wait`, `meta`...: writing a job hash there breaks the queue itself; test_bad_jobs pushes
such ids without writing a hash).

It runs 100 examples (batches of 1-8 jobs; ~10 s). Run it longer with, e.g.:

    FLOWCRAFT_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/integration/test_job_fuzz.py

(the test's timeout grows with the count). A failure prints the minimal batch and a
`@reproduce_failure` blob; the example is also kept in `.hypothesis/` and replayed first next
time.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext
from waiting import wait_until

EXAMPLES = int(os.environ.get("FLOWCRAFT_FUZZ_EXAMPLES", "100"))
# room for the examples (~0.2 s each) and, when one fails, for hypothesis to shrink it (each
# failing example waits SETTLE_S; hypothesis stops shrinking after 5 minutes)
pytestmark = [pytest.mark.redis, pytest.mark.timeout(600 + EXAMPLES)]

QP = "bull:q:"
LIMIT = 1 << 20  # the largest job data a claim accepts (ARGV[7] of claim.lua)
LIVE = "@LIVE@"  # stands for the example's live run id (no run id contains '@')
SETTLE_S = 5.0

CHAIN = {
    "id": "chain",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "b", "uses": "plus"}],
    "edges": [{"source": "a", "target": "b"}],
}
# A run parks on `hold` (a wait node); `boom` raises: a job reaching it fails, never completes.
TARGET = {
    "id": "target",
    "nodes": [{"id": "hold", "uses": "wait"}, {"id": "boom", "uses": "boom"}],
    "edges": [{"source": "hold", "target": "boom"}],
}
# The queue's own keys: a job hash written there would break the queue, not test the worker.
QUEUE_KEYS = {
    "wait", "active", "delayed", "marker", "meta", "failed", "completed", "prioritized", "pc",
    "events", "id", "paused", "stalled", "stalled-check", "limiter", "metrics", "repeat",
    "flowcraft:blueprints", "flowcraft:stops", "flowcraft:runs",
}  # fmt: skip


async def one(ctx: NodeContext) -> int:
    return 1


async def plus(ctx: NodeContext) -> int:
    return int(ctx.input) + 1


class Boom(Exception):
    """Raised by the target node: a fuzzed job that reaches it fails (and the run with it)."""


async def boom(ctx: NodeContext) -> None:
    raise Boom("a fuzzed job ran the target node")


# ------------------------------------------------------------------------------ strategies

JOB_KEYS = ["runId", "blueprintId", "nodeId", "iteration", "blueprintVersion"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and Infinity too: json.dumps writes them, cjson reads them
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(JOB_KEYS) | st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=16,
)
non_strings = json_values.filter(lambda v: not isinstance(v, str))


def deep(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_text = st.builds(
    deep, st.integers(990, 1010) | st.integers(1001, 20_000), st.sampled_from(["array", "object"])
)


@st.composite
def keyed(draw: st.DrawFn) -> str:
    """The job's keys, some of them holding values of the wrong type (or absent)."""
    live = draw(st.booleans())
    run_ids = st.from_regex(r"[A-Za-z0-9_{}-]{1,128}", fullmatch=True)  # valid, never a run's
    data: dict[str, Any] = {}
    goods: dict[str, st.SearchStrategy[Any]] = {
        "runId": st.just(LIVE) if live else run_ids,
        "blueprintId": st.sampled_from(["target", "chain", ""]),
        "nodeId": st.sampled_from(["boom", "nope", "a"]),  # never `hold`: it would park again
        "iteration": st.sampled_from([0, "0", 3, "1.2", None]),
        "blueprintVersion": st.sampled_from([None, ""]),
    }
    for key in JOB_KEYS:
        choice = draw(st.sampled_from(["good", "good", "junk", "absent"]))
        if choice == "absent":
            continue
        if choice == "good":
            data[key] = draw(goods[key])
        elif key == "blueprintVersion" and live:
            # a version string no worker serves is deferred for a minute by design (then the
            # run fails): only wrong types here
            data[key] = draw(non_strings)
        else:
            data[key] = draw(json_values)
    if draw(st.booleans()):
        data["pad"] = draw(json_values)
    return json.dumps(data)


def huge(size: int, kind: str) -> str:
    if kind == "string":
        return json.dumps(
            {"runId": LIVE, "blueprintId": "target", "nodeId": "boom", "p": "x" * size}
        )
    if kind == "array":
        return "[" + ",".join(["1"] * (size // 2)) + "]"
    return "x" * size  # not JSON either


huge_text = st.builds(
    huge,
    st.sampled_from([LIMIT + 1, LIMIT + 4096, 3 * LIMIT]),
    st.sampled_from(["string", "array", "raw"]),
)
deep_job = st.builds(
    lambda d: (
        '{"runId": "' + LIVE + '", "blueprintId": "target", "nodeId": "boom", "p": ' + d + "}"
    ),
    deep_text,
)
data_values: st.SearchStrategy[bytes | str] = st.one_of(
    st.binary(max_size=300),
    json_values.map(json.dumps),
    keyed(),
    keyed(),
    st.sampled_from([huge_text, deep_text, deep_job]).flatmap(lambda s: s),
)
odd_ids = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(st.sampled_from(":{}\n\r\t \x00é字🙂-_"), min_size=1, max_size=12),
    st.integers(0, 2**64).map(str),
    st.builds(lambda n, c: c * n, st.integers(1000, 10_000), st.sampled_from(["a", ":", "é"])),
).filter(lambda i: i not in QUEUE_KEYS)
junk_numbers = st.sampled_from(
    ["abc", "", "1e400", "1.5", "-1", " 1", "0x10", "NaN", "99999999999999999999", "01", "inf"]
)
junk_json = st.one_of(
    st.binary(max_size=100),
    junk_numbers,
    deep_text,
    json_values.map(json.dumps),
    st.just("x" * (LIMIT + 1)),
)
junk_values = st.one_of(junk_numbers, junk_json, st.integers().map(str))


def _resumes(value: str | bytes) -> bool:
    """A well-formed resume payload (`{output, action}`, as FlowClient.resume writes it): by
    design the node finishes with it without running its code (resume.lua), so a job carrying
    one is a job that can run, and complete; the fuzz writes every other kind of `fcr`."""
    try:
        payload = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: nested too deep (deep_text)
        return False
    return isinstance(payload, dict) and isinstance(payload.get("action"), str | None)


extra_fields = st.dictionaries(
    st.sampled_from(["atm", "ats", "attemptsMade", "stc", "fce", "opts", "fci", "fcr", "fcw",
                     "delay", "priority", "timestamp", "processedOn", "parentKey"]),
    junk_values,
    max_size=4,
).map(
    lambda fields: {k: v for k, v in fields.items() if k != "fcr" or not _resumes(v)}
)  # fmt: skip


@dataclass(frozen=True)
class FuzzJob:
    id: str
    fields: dict[str, bytes | str] | None
    """The job hash; None: the id is pushed with no hash at all."""
    prioritized: bool

    def __repr__(self) -> str:  # short: a failing example prints whole batches
        where = "prioritized" if self.prioritized else "wait"
        if self.fields is None:
            return f"FuzzJob({_short(self.id)}, no hash, {where})"
        fields = ", ".join(f"{k}: {_short(v)}" for k, v in self.fields.items())
        return f"FuzzJob({_short(self.id)}, {{{fields}}}, {where})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints with this
        printer.text(repr(self))


def _short(v: str | bytes) -> str:
    return repr(v) if len(v) <= 200 else f"{v[:160]!r}... ({len(v)} long)"


@st.composite
def fuzz_jobs(draw: st.DrawFn) -> FuzzJob:
    jid = draw(odd_ids)
    prioritized = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        return FuzzJob(jid, None, prioritized)
    fields: dict[str, bytes | str] = {"opts": "{}", "timestamp": "0", "atm": "0"}
    if draw(st.integers(0, 4)):
        fields["name"] = "executeNode"
    if draw(st.integers(0, 9)):
        fields["data"] = draw(data_values)
    fields.update(draw(extra_fields))
    return FuzzJob(jid, fields, prioritized)


batches = st.lists(fuzz_jobs(), min_size=1, max_size=8, unique_by=lambda j: j.id)


# ------------------------------------------------------------------------------ the worker


@dataclass
class Served:
    adapter: BullMQAdapter
    client: FlowClient
    r: redis.Redis


@pytest_asyncio.fixture
async def served(redis_url: str) -> AsyncIterator[Served]:
    rt = FlowRuntime(blueprints=[CHAIN, TARGET], registry={"one": one, "plus": plus, "boom": boom})
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="q")
    await adapter.start()
    try:
        yield Served(
            adapter, FlowClient(redis_url, queue_name="q"), redis.Redis.from_url(redis_url)
        )
    finally:
        await adapter.close(timeout=2)


def _push(r: redis.Redis, job: FuzzJob, live_run: str) -> None:
    key = QP + job.id
    # ids repeat across examples: start from nothing
    r.delete(key, key + ":lock")
    for zset in ("failed", "completed", "prioritized"):
        r.zrem(QP + zset, job.id)
    for lst in ("wait", "active"):
        r.lrem(QP + lst, 0, job.id)
    if job.fields is not None:
        fields = {
            k: v.replace(LIVE, live_run) if isinstance(v, str) else v for k, v in job.fields.items()
        }
        r.hset(key, mapping=fields)  # type: ignore[arg-type]
    if job.prioritized:
        r.zadd(QP + "prioritized", {job.id: len(job.id)})
        r.incr(QP + "pc")
    else:
        r.lpush(QP + "wait", job.id)


def _queued(r: redis.Redis, jid: str) -> bool:
    return (
        r.lpos(QP + "wait", jid) is not None
        or r.lpos(QP + "active", jid) is not None
        or r.zscore(QP + "prioritized", jid) is not None
    )


def _where(r: redis.Redis, jid: str) -> str:
    lists = [n for n in ("wait", "active") if r.lpos(QP + n, jid) is not None]
    zsets = [n for n in ("prioritized", "delayed", "failed", "completed") if r.zscore(QP + n, jid)]
    reason = r.hget(QP + jid, "failedReason")
    return f"in {lists + zsets or 'no list'}, failedReason {reason!r}"


def _not_a_job_id(jid: str) -> bool:
    """lib.lua `not_a_job_id` for the ids drawn here (queue key names are never drawn): an id
    holding ':' is removed from the queue and its hash left alone, like an orphan."""
    return jid == "" or ":" in jid


def _settled(r: redis.Redis, job: FuzzJob) -> bool:
    if _queued(r, job.id):
        return False
    if job.fields is None or _not_a_job_id(job.id):
        return r.hget(QP + job.id, "failedReason") is None  # removed, its key untouched
    return r.zscore(QP + "failed", job.id) is not None


def _check_worker(adapter: BullMQAdapter, caplog: pytest.LogCaptureFixture, since: int) -> None:
    tasks = adapter.worker._tasks
    assert len(tasks) == 4, "the worker's background tasks are gone"
    for task in tasks:
        assert not task.done(), f"worker task {task.get_name()} ended: {task!r}"
    bad = [
        rec
        for rec in caplog.records[since:]
        if rec.name.startswith("flowcraft_fast")
        and (rec.levelno >= logging.ERROR or rec.exc_info is not None)
        and not _boom_reported(rec)
    ]
    assert not bad, "worker logged errors:\n" + "\n".join(
        f"{rec.levelname} {rec.name}: {rec.getMessage()}" for rec in bad
    )


def _boom_reported(rec: logging.LogRecord) -> bool:
    """The worker reporting that the target node failed, as it should: it raised Boom, or the
    job's (fuzzed) `stc` says it stalled past the stall limit (StalledJobError)."""
    exc = rec.exc_info[1] if rec.exc_info else None
    if exc is not None:
        return isinstance(exc, Boom)
    return (
        re.search(r"node boom (attempt \d+ failed|stalled \d+ times)", rec.getMessage()) is not None
    )


async def _parked_run(s: Served) -> str:
    run_id = await s.client.start("target", {})
    meta = f"workflow:run:{run_id}"
    await wait_until(lambda: s.r.hget(meta, "status") == b"awaiting", 10, "the target run to park")
    return run_id


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one worker serves every example, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(batch=batches)
async def test_fuzzed_jobs_fail_alone_and_the_worker_keeps_serving(
    served: Served, caplog: pytest.LogCaptureFixture, batch: list[FuzzJob]
) -> None:
    s, r = served, served.r
    caplog.set_level(logging.WARNING, logger="flowcraft_fast")
    since = len(caplog.records)
    live_run = await _parked_run(s)
    for job in batch:
        _push(r, job, live_run)
    r.zadd(QP + "marker", {"0": 0})
    try:
        await wait_until(lambda: all(_settled(r, j) for j in batch), SETTLE_S, "the batch")
    except AssertionError:
        stuck = [f"{j!r} {_where(r, j.id)}" for j in batch if not _settled(r, j)]
        raise AssertionError(f"not settled within {SETTLE_S} s:\n" + "\n".join(stuck)) from None
    for job in batch:
        assert r.zscore(QP + "completed", job.id) is None, f"{job!r} ended completed"
        assert not r.exists(QP + job.id + ":lock"), f"{job!r} still holds a lease"
        if job.fields is not None and not _not_a_job_id(job.id):
            assert r.hget(QP + job.id, "failedReason"), f"{job!r} failed with no reason"
    _check_worker(s.adapter, caplog, since)
    result = await s.client.wait(await s.client.start("chain", {}), timeout=10)
    assert result.status == "completed" and result.context["b"] == 2, result
    _check_worker(s.adapter, caplog, since)
