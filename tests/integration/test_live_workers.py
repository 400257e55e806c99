"""Live workers (issue 12): heartbeat records, BullMQ connection names, re-publication.

Real workers (`BullMQAdapter` in this process), a real Redis, the real `bullmq` package's
`Queue.get_workers` (it reads CLIENT LIST and keeps the connections named `<prefix>:<queue>` or
`<prefix>:<queue>:w:<name>`), and `flowcraft-fast inspect` as a user runs it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import bullmq
import pytest
import redis

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext, __version__
from flowcraft_fast.cli import main
from flowcraft_fast.distributed.workers import live_workers

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]

QUEUE = "alive"
BP = {"id": "one", "nodes": [{"id": "a", "uses": "ok"}], "edges": []}
OTHER = {"id": "other", "nodes": [{"id": "a", "uses": "ok"}], "edges": []}


async def ok(ctx: NodeContext) -> str:
    return "ok"


@asynccontextmanager
async def worker(
    url: str, name: str | None = None, blueprints: tuple[dict[str, Any], ...] = (BP,)
) -> AsyncIterator[BullMQAdapter]:
    rt = FlowRuntime(blueprints=list(blueprints), registry={"ok": ok})
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        connection=url,
        queue_name=QUEUE,
        concurrency=3,
        stalled_interval_seconds=0.3,
        worker_name=name,
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=5)


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)


async def bullmq_workers(url: str) -> list[dict[str, Any]]:
    q = bullmq.Queue(QUEUE, {"connection": url})
    try:
        return list(await q.get_workers())
    finally:
        await q.close()


async def test_a_worker_keeps_a_record_that_inspect_and_bullmq_list(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    async with worker(redis_url, name="w-one") as adapter:
        records = await until(lambda: live_workers(client.queue), "the worker's record")
        assert len(records) == 1
        rec = records[0]
        assert rec.id == adapter.worker.token_prefix and rec.name == "w-one"
        assert (rec.host, rec.pid, rec.version) == (socket.gethostname(), os.getpid(), __version__)
        assert rec.queue == QUEUE and rec.blueprints == {"one": ""} and rec.concurrency == 3
        assert rec.last_beat_ms > 0 and rec.started_ms > 0
        # BullMQ's own listing sees the worker's connections (both are named, one per tool
        # flavour: this package matches the plain queue name)
        listed = await until(lambda: bullmq_workers(redis_url), "bullmq listing the worker")
        assert [w["rawname"] for w in listed] == [f"bull:{QUEUE}:w:{rec.id}"], listed
        # the CLI shows it, in the table and in --json
        code = await asyncio.to_thread(
            main, ["inspect", "--redis-url", redis_url, "--queue", QUEUE, "--json"]
        )
        assert code == 0
        report = json.loads(capsys.readouterr().out)
        assert [w["name"] for w in report["workers"]] == ["w-one"]
        assert report["workers"][0]["blueprints"] == {"one": ""}
        code = await asyncio.to_thread(
            main, ["inspect", "--redis-url", redis_url, "--queue", QUEUE]
        )
        out = capsys.readouterr().out
        assert code == 0 and "live workers: 1" in out and "w-one" in out, out
    # a worker that stops leaves the listing at once (no wait for its record to expire), and
    # BullMQ's once its connections close (with its process; here: the adapter dropped)
    assert await live_workers(client.queue) == []
    del adapter
    gc.collect()

    async def unlisted() -> bool:
        return not any(w["rawname"].endswith(rec.id) for w in await bullmq_workers(redis_url))

    await until(unlisted, "bullmq no longer listing the stopped worker")


async def test_a_run_no_live_worker_serves_is_flagged(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    async with worker(redis_url, blueprints=(BP, OTHER)):
        pass  # publishes both blueprints, then stops
    async with worker(redis_url, name="only-one"):
        await until(lambda: live_workers(client.queue), "the worker's record")
        # a run of a blueprint the live worker does not serve stays queued: flagged
        orphan = await client.start("other", {})
        code = await asyncio.to_thread(
            main, ["inspect", "--redis-url", redis_url, "--queue", QUEUE, "--json"]
        )
        runs = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
        assert code == 0 and runs[orphan]["served"] is False
        await asyncio.to_thread(main, ["inspect", "--redis-url", redis_url, "--queue", QUEUE])
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.startswith(orphan))
        assert "no live worker serves its blueprint" in line
    async with worker(redis_url, blueprints=(BP, OTHER)):
        assert (await client.wait(orphan, timeout=30)).status == "completed"


async def test_blueprints_are_published_again_after_flushall(redis_url: str) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with worker(redis_url):
            run = await client.start("one", {})
            assert (await client.wait(run, timeout=30)).status == "completed"
            r.flushall()  # Redis lost its data while the worker runs
            # within a heartbeat or two the worker finds its blueprint missing and publishes it
            await until(
                lambda: asyncio.to_thread(r.hexists, f"bull:{QUEUE}:flowcraft:blueprints", "one"),
                "the blueprint published again",
            )
            await until(lambda: live_workers(client.queue), "the worker's record again")
            run = await client.start("one", {})
            assert (await client.wait(run, timeout=30)).status == "completed"
    finally:
        r.close()
