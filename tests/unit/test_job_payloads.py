"""Job payloads are built from cached parts: they must be the JSON a plain encoding gives."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from flowcraft_fast.blueprint import load_blueprint
from flowcraft_fast.distributed.jobs import job_data, job_id, job_opts

ids = st.text(min_size=1, max_size=20)
iterations = st.lists(st.integers(min_value=0, max_value=10_000), max_size=3).map(tuple)


@given(ids, ids, st.text(max_size=10), ids, iterations)
def test_job_data_is_the_plain_encoding(
    run_id: str, bp_id: str, version: str, node_id: str, iteration: tuple[int, ...]
) -> None:
    text = job_data(run_id, bp_id, version, node_id, iteration)
    want_iteration: int | str = (
        0
        if not iteration
        else iteration[0]
        if len(iteration) == 1
        else ".".join(map(str, iteration))
    )
    assert json.loads(text) == {
        "runId": run_id,
        "blueprintId": bp_id,
        "nodeId": node_id,
        "iteration": want_iteration,
        "blueprintVersion": version,
    }
    assert list(json.loads(text)) == [
        "runId",
        "blueprintId",
        "nodeId",
        "iteration",
        "blueprintVersion",
    ]


@given(st.integers(min_value=1, max_value=20), st.sampled_from([None, 0, 250, 1000.0]), ids)
def test_job_opts_is_the_plain_encoding(attempts: int, delay: float | None, node_id: str) -> None:
    config: dict[str, object] = {"maxRetries": attempts}
    if delay is not None:
        config["retryDelay"] = delay
    bp = load_blueprint({"id": "b", "nodes": [{"id": node_id, "uses": "x", "config": config}]})
    jid = job_id("run-1", node_id, ())
    want: dict[str, object] = {"attempts": attempts, "jobId": jid, "delay": 0}
    if delay:
        want["backoff"] = {"type": "exponential", "delay": int(delay)}
    assert json.loads(job_opts(bp.nodes[0], jid)) == want


def test_job_ids_name_the_run_and_iteration_and_hash_the_node() -> None:
    assert job_id("r", "a:b", ()) == job_id("r", "a:b", ())
    assert job_id("r", "a", (2,)).startswith("r.2.")
    assert job_id("r", "a", ()) != job_id("r", "b", ())
    assert ":" not in job_id("r", "a:b", (1, 2))
