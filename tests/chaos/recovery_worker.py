"""A worker process for test_recovery.py: serves the blueprint ``relay`` until it is killed.

    python recovery_worker.py REDIS_URL --lease-ms L --stalled-s I [--concurrency C]
                              [--max-stalls M] [--name NAME]

Prints ``READY <pid> <lease token prefix> <time.time()>`` on stdout once it consumes (the prefix
is how the test tells this process's leases from the others': a lease token is
``<prefix>:<job>:<n>``);
logs warnings on stderr, each line ``[worker <pid>] <LEVEL> <message>``. It never exits on its
own: the test ends it with SIGKILL.

Blueprint ``relay``: r1 -> r2 -> r3 -> r4. Every execution of a node first appends
``"<node> <pid> <time.time()>"`` to the list ``starts:<runId>`` (its own redis-py client, so an
execution whose worker is killed before it commits is recorded too), then sleeps the run's
context key ``sleep`` (seconds) and returns ``{"v": input + 1, "pid": pid}`` (r1 adds 1 to the
context's ``x``): a run started with x ends with r4's ``v`` == x + 4.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import sys
import time
from typing import Any

import redis

from flowcraft_fast import FlowRuntime, NodeContext, create_flow
from flowcraft_fast.distributed.adapter import BullMQAdapter

QUEUE = "rq"
RELAY = "relay"
STEPS = ("r1", "r2", "r3", "r4")

_clients: dict[str, redis.Redis] = {}


def _client(url: str) -> redis.Redis:
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, decode_responses=True)
    return client


async def relay(ctx: NodeContext) -> Any:
    pid = os.getpid()
    _client(ctx.dependencies["ledger_url"]).rpush(
        f"starts:{ctx.run_id}", f"{ctx.node_id} {pid} {time.time():.6f}"
    )
    await asyncio.sleep(float(await ctx.context.get("sleep") or 0))
    base = ctx.input["v"] if isinstance(ctx.input, dict) else await ctx.context.get("x")
    return {"v": base + 1, "pid": pid}


def make_runtime(ledger_url: str) -> FlowRuntime:
    flow = create_flow(RELAY)
    for node in STEPS:
        flow = flow.node(node, relay)
    for a, b in itertools.pairwise(STEPS):
        flow = flow.edge(a, b)
    return FlowRuntime(
        blueprints=[flow.to_blueprint()],
        registry=flow.registry,
        dependencies={"ledger_url": ledger_url},
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--lease-ms", type=int, required=True)
    parser.add_argument("--stalled-s", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-stalls", type=int, default=1)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"[worker {os.getpid()}] %(levelname)s %(message)s",
    )
    rt = make_runtime(args.url)
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        connection=args.url,
        queue_name=QUEUE,
        concurrency=args.concurrency,
        lease_ms=args.lease_ms,
        stalled_interval_seconds=args.stalled_s,
        max_stalled_count=args.max_stalls,
        worker_name=args.name,
    )
    await adapter.start()
    print(f"READY {os.getpid()} {adapter.worker.token_prefix} {time.time():.6f}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
