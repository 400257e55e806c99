"""Rebuilding a run's frontier from its recorded decisions (for the reconciler).

The run meta hash records `fired:<node key>` (the job that runs a node), `done:<node key>`
and `await:<node key>`. The nodes fired and neither done nor waiting are the frontier; each
should have a live job. Their inputs, when the old job is gone, are rebuilt from the join
arrivals with the engine's own join rule.
"""

from __future__ import annotations

import uuid

from .. import _core, jsoncodec
from ..errors import FlowcraftError
from ..runtime.graph import RunGraph, run_graph
from ..runtime.ledger import SKIPPED, rebuilt_input
from ..runtime.runtime import RuntimeOptions
from ..runtime.vocabulary import (
    ARRIVAL_SEPARATOR,
    AWAIT,
    DONE,
    FIRED,
    LIVE_STATUSES,
    SKIP,
    Iteration,
    split_node_key,
)
from .jobs import job_data, job_opts


async def reconcile_run(
    options: RuntimeOptions,
    queue: _core.Queue,
    states: _core.StateStore,
    run_id: str,
    meta: dict[str, str] | None = None,
) -> set[str]:
    """Re-enqueue the run's lost nodes; returns their ids. `meta`: the run's meta hash when the
    caller has just read it."""
    if meta is None:
        meta, _ = await queue.run_info(run_id)
    if meta.get("status") not in LIVE_STATUSES:
        return set()
    frontier = [
        key.removeprefix(FIRED)
        for key in meta
        if key.startswith(FIRED)
        and f"{DONE}{key[len(FIRED) :]}" not in meta
        and f"{AWAIT}{key[len(FIRED) :]}" not in meta
    ]
    if not frontier:
        return set()
    bp_id = meta.get("blueprintId", "")
    bp = options.blueprints.get(bp_id)
    if bp is None:
        raise FlowcraftError(f"run {run_id!r}: blueprint {bp_id!r} is not served here")
    raw_state = await states.get_all(run_id)
    state = {k: jsoncodec.loads(v) for k, v in raw_state.items()}
    graph = run_graph(bp, state)
    joins = await queue.run_joins(run_id)
    version = meta.get("blueprintVersion", "")
    candidates = []
    for key in frontier:
        iteration_text, node_id = split_node_key(key)
        if not graph.has_node(node_id):
            continue
        iteration = graph.parse_iteration(node_id, iteration_text)
        old = meta[f"{FIRED}{key}"]
        new = f"{old}.rc{uuid.uuid4().hex[:8]}"
        candidates.append(
            (
                key,
                old,
                new,
                job_data(run_id, bp.id, version, node_id, iteration),
                job_opts(graph.node(node_id), new),
                _rebuilt_input(graph, key, node_id, iteration, joins),
            )
        )
    enqueued = await queue.reconcile_run(run_id, candidates)
    return {split_node_key(key)[1] for key in enqueued}


def _rebuilt_input(
    graph: RunGraph, key: str, node_id: str, iteration: Iteration, joins: dict[str, str]
) -> str:
    """The input a node's incoming edges carried, from the recorded arrivals ("" for none)."""
    prefix = f"{key}{ARRIVAL_SEPARATOR}"
    arrived = {
        f[len(prefix) :]: SKIPPED if v == SKIP else jsoncodec.loads(v)
        for f, v in joins.items()
        if f.startswith(prefix)
    }
    if not arrived:
        return ""  # a start node: its input is in the context
    value = rebuilt_input(
        arrived, graph.join_strategy(node_id), graph.join_predecessors(node_id, iteration)
    )
    return SKIP if value is SKIPPED else jsoncodec.dumps(value)
