"""Job identity and payloads: one BullMQ job per (run, node, iteration).

BullMQ refuses custom job ids containing `:` or made only of digits, and node ids may contain
any character, so a job id is `<runId>.<iteration>.<hash of the node id>`; the readable ids
travel in the job data `{runId, blueprintId, nodeId, iteration, blueprintVersion}`.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

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
    return f"{run_id}.{iteration_text(iteration)}.{_node_digest(node_id)}"


@lru_cache(maxsize=4096)
def _node_digest(node_id: str) -> str:
    return hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()[:16]


def job_data(
    run_id: str, blueprint_id: str, version: str, node_id: str, iteration: Iteration
) -> str:
    """`{"runId", "blueprintId", "nodeId", "iteration", "blueprintVersion"}` as JSON text (the
    parts that do not change between runs are encoded once)."""
    middle, tail = _data_parts(blueprint_id, node_id, version)
    return f'{{"runId":{_text(run_id)}{middle}{_text(iteration_json(iteration))}{tail}'


@lru_cache(maxsize=4096)
def _data_parts(blueprint_id: str, node_id: str, version: str) -> tuple[str, str]:
    middle = f',"blueprintId":{_text(blueprint_id)},"nodeId":{_text(node_id)},"iteration":'
    return middle, f',"blueprintVersion":{_text(version)}}}'


def job_opts(node: NodeDefinition, jid: str) -> str:
    """BullMQ options, so BullMQ tools show the retry policy the worker applies."""
    head, tail = _opts_parts(node.config.max_retries, node.config.retry_delay_ms)
    return f"{head}{_text(jid)}{tail}"


@lru_cache(maxsize=256)
def _opts_parts(attempts: int, retry_delay_ms: float | None) -> tuple[str, str]:
    tail = ',"delay":0'
    if retry_delay_ms:
        tail += f',"backoff":{{"type":"exponential","delay":{int(retry_delay_ms)}}}'
    return f'{{"attempts":{int(attempts)},"jobId":', tail + "}"


def _text(value: str | int) -> str:
    return jsoncodec.dumps(value)
