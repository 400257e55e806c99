"""The dashboard's JSON documents, built from the queue's records (no state of its own)."""

from __future__ import annotations

from typing import Any

from ..distributed.client import FlowClient
from ..distributed.workers import mark_served
from ..runs_listing import STATUSES, RunFilter, recent_runs
from ..runtime.vocabulary import AWAIT, DONE, FIRED, split_node_key

MAX_LIMIT = 500


class BadRequest(ValueError):
    """A query the API refuses (400), with the reason."""


async def queues(client: FlowClient, queue: str) -> dict[str, Any]:
    """`/api/queues`: the queue's job counts and its live workers."""
    workers = await client.live_workers()
    return {
        "queues": [
            {
                "name": queue,
                "counts": await client.counts(),
                "workers": [w.to_json() for w in workers],
            }
        ]
    }


def run_filter(query: dict[str, list[str]]) -> RunFilter:
    """`/api/runs?status=failed&status=running&blueprint=ID&limit=N`."""
    statuses = frozenset(query.get("status", []))
    unknown = statuses - set(STATUSES)
    if unknown:
        raise BadRequest(f"unknown status {sorted(unknown)[0]!r}; one of {', '.join(STATUSES)}")
    blueprint = query.get("blueprint", [None])[0] or None
    try:
        limit = int(query.get("limit", ["50"])[0])
    except ValueError:
        raise BadRequest("limit must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be 1-{MAX_LIMIT}")
    return RunFilter(statuses, blueprint, None, limit)


async def runs(client: FlowClient, f: RunFilter) -> dict[str, Any]:
    """`/api/runs`: runs in flight and recently ended, newest activity first; a live run whose
    blueprint no live worker serves is flagged (`served: false`)."""
    found, more = await recent_runs(await client.queues(), f)
    workers = await client.live_workers()
    mark_served((r for r in found if r["status"] in ("running", "awaiting")), workers)
    return {"runs": found, "truncated": more}


def node_states(meta: dict[str, str], status: str, failed: set[str]) -> dict[str, str]:
    """Each node's state as the run's record tells it: `failed` (an error names it),
    `awaiting` (parked until resumed), `completed` (committed, at any iteration), `running`
    (an activation created and not committed: queued or running), else absent (not reached)."""
    states: dict[str, str] = {}
    for key in meta:
        for prefix, state in ((FIRED, "running"), (DONE, "completed"), (AWAIT, "awaiting")):
            if key.startswith(prefix):
                node = split_node_key(key[len(prefix) :])[1]
                if state != "running" or node not in states:
                    states[node] = state
    if status not in ("running", "awaiting"):
        # an ended run runs nothing: an activation that never committed was dropped
        states = {n: s for n, s in states.items() if s != "running" or n in failed}
    for node in failed:
        states[node] = "failed"
    return states


async def run_detail(client: FlowClient, run_id: str) -> dict[str, Any] | None:
    """`/api/runs/<runId>`: what `flowcraft-fast status` shows, the blueprint's graph (nodes and
    edges as published) and each node's state; None for an unknown run."""
    from ..cli import run_report

    report = await run_report(client, run_id)
    if report is None:
        return None
    meta, _ = await (await client.queue_for(run_id)).run_info(run_id)
    failed = {str(e["node_id"]) for e in report["errors"] if e["node_id"]}
    report["nodes"] = node_states(meta, report["status"], failed)
    graph: dict[str, Any] | None = None
    if report["blueprint_id"]:
        raw = await (await client.queues())[0].get_blueprint(report["blueprint_id"])
        if raw is not None:
            import json

            bp = json.loads(raw)
            graph = {
                "nodes": [{"id": n.get("id"), "uses": n.get("uses")} for n in bp.get("nodes", [])],
                "edges": [
                    {
                        "source": e.get("source"),
                        "target": e.get("target"),
                        "action": e.get("action"),
                        "condition": e.get("condition"),
                    }
                    for e in bp.get("edges", [])
                ],
            }
    report["graph"] = graph
    return report
