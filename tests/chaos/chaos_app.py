"""The workflow the chaos tests run, shared by the test process and the worker subprocesses.

Blueprint ``fan``: start -> a, b, c (fan-out) -> j (joinStrategy "all") -> end.

Every node counts its executions in an external ledger, a Redis hash ``ledger:<runId>``
(HINCRBY nodeId 1), written with its own redis-py client, so executions that never commit (a
killed worker, a zombie) are counted too. Its output says which execution produced it:
``{"node": id, "exec": n, "pid": os.getpid()}``; the join also returns the input it got, and
records every input it was handed in ``joinin:<runId>`` (execution number -> JSON).

What a node does besides is steered per run by the initial context key ``plan``:
``plan[nodeId]`` may hold
- ``sleep``: seconds to ``asyncio.sleep`` on every execution;
- ``marker_first``: on the first execution, SET ``marker:<runId>:<nodeId>`` to the pid first;
- ``sleep_first``: seconds to ``asyncio.sleep`` on the first execution only;
- ``after_done``: on the first execution, wait (asynchronously, bounded) until these nodes have
  committed (their ``done:0|<id>`` marker is in the run meta ``workflow:run:<runId>``);
- ``block_first``: seconds to ``time.sleep`` (blocking the worker's event loop, as a long GC
  pause or CPU-bound code does) on the first execution only;
- ``wait_exec_first``: on the first execution, poll the ledger (asynchronously, bounded) until
  this node has started that many executions;
- ``sleep_later``: seconds to ``asyncio.sleep`` on every execution but the first;
- ``returned``: record ``<nodeId>:returned:<exec>`` = pid in the ledger just before returning.

Blueprint ``chain`` (the Redis kill test's load): s1 -> ... -> s4; each node sleeps
CHAIN_SLEEP_S and adds 1 to its input (s1 to the context's ``x``), so a run started with x
ends with s4 == x + 4. It keeps no ledger: it must not touch Redis besides the engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import redis

from flowcraft_fast import FlowRuntime, NodeContext, create_flow

QUEUE = "q"
NODES = ("start", "a", "b", "c", "j", "end")
PREDECESSORS = ("a", "b", "c")
CHAIN = "chain"
CHAIN_STEPS = 4
CHAIN_SLEEP_S = 0.05

_clients: dict[str, redis.Redis] = {}


def ledger_client(url: str) -> redis.Redis:
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, decode_responses=True)
    return client


async def step(ctx: NodeContext) -> Any:
    r = ledger_client(ctx.dependencies["ledger_url"])
    run, node = ctx.run_id, ctx.node_id
    n = r.hincrby(f"ledger:{run}", node, 1)
    plan = ((await ctx.context.get("plan")) or {}).get(node, {})
    if n == 1 and plan.get("after_done"):
        deadline = time.monotonic() + 20.0
        while not all(
            r.hexists(f"workflow:run:{run}", f"done:0|{other}") for other in plan["after_done"]
        ):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    if n == 1 and plan.get("marker_first"):
        r.set(f"marker:{run}:{node}", os.getpid())
    if n == 1 and plan.get("block_first"):
        time.sleep(float(plan["block_first"]))
    if n == 1 and plan.get("sleep_first"):
        await asyncio.sleep(float(plan["sleep_first"]))
    if n == 1 and plan.get("wait_exec_first"):
        deadline = time.monotonic() + 20.0
        while int(r.hget(f"ledger:{run}", node) or 0) < int(plan["wait_exec_first"]):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    if n > 1 and plan.get("sleep_later"):
        await asyncio.sleep(float(plan["sleep_later"]))
    if plan.get("sleep"):
        await asyncio.sleep(float(plan["sleep"]))
    out: dict[str, Any] = {"node": node, "exec": n, "pid": os.getpid()}
    if node == "j":
        out["input"] = ctx.input
        r.hset(f"joinin:{run}", str(n), json.dumps(ctx.input, sort_keys=True))
    if plan.get("returned"):
        r.hset(f"ledger:{run}", f"{node}:returned:{n}", os.getpid())
    return out


async def inc(ctx: NodeContext) -> Any:
    await asyncio.sleep(CHAIN_SLEEP_S)
    base = ctx.input if isinstance(ctx.input, int) else await ctx.context.get("x")
    return base + 1


def chain_blueprint() -> Any:
    flow = create_flow(CHAIN)
    for i in range(1, CHAIN_STEPS + 1):
        flow = flow.node(f"s{i}", inc)
    for i in range(1, CHAIN_STEPS):
        flow = flow.edge(f"s{i}", f"s{i + 1}")
    return flow


def blueprint() -> Any:
    flow = create_flow("fan")
    for node in NODES:
        flow = flow.node(node, step, config={"joinStrategy": "all"} if node == "j" else None)
    for p in PREDECESSORS:
        flow = flow.edge("start", p).edge(p, "j")
    flow = flow.edge("j", "end")
    return flow


def make_runtime(ledger_url: str) -> FlowRuntime:
    flow, chain = blueprint(), chain_blueprint()
    return FlowRuntime(
        blueprints=[flow.to_blueprint(), chain.to_blueprint()],
        registry={**flow.registry, **chain.registry},
        dependencies={"ledger_url": ledger_url},
    )
