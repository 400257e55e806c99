"""Job identity and payloads: one BullMQ job per (run, node, iteration).

BullMQ refuses custom job ids containing `:` or made only of digits, and node ids may contain
any character, so a job id is `<runId>.<iteration>.<hash of the node id>`; the readable ids
travel in the job data `{runId, blueprintId, nodeId, iteration, blueprintVersion}`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .. import jsoncodec
from ..blueprint import NodeDefinition
from ..runtime.vocabulary import Iteration, iteration_json, iteration_text

JOB_NAME = "executeNode"

VERSION_FIELD = "\x1fversion"
"""Suffix of the published-blueprints field holding the version workers serve."""

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_\-{}]{1,128}")


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} must be 1-128 characters of letters, digits, '_', '-', '{{', '}}'"
        )
    return run_id


def job_id(run_id: str, node_id: str, iteration: Iteration) -> str:
    digest = hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"{run_id}.{iteration_text(iteration)}.{digest}"


def job_data(
    run_id: str, blueprint_id: str, version: str, node_id: str, iteration: Iteration
) -> str:
    return jsoncodec.dumps(
        {
            "runId": run_id,
            "blueprintId": blueprint_id,
            "nodeId": node_id,
            "iteration": iteration_json(iteration),
            "blueprintVersion": version,
        }
    )


def job_opts(node: NodeDefinition, jid: str) -> str:
    """BullMQ options, so BullMQ tools show the retry policy the worker applies."""
    opts: dict[str, Any] = {"attempts": node.config.max_retries, "jobId": jid, "delay": 0}
    if node.config.retry_delay_ms:
        opts["backoff"] = {"type": "exponential", "delay": int(node.config.retry_delay_ms)}
    return jsoncodec.dumps(opts)
