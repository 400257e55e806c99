"""One claimed job, from its payload to what to commit: the worker's half of a step.

`run_job` decodes a job into an `Activation` (node, iteration, what its edges carried, attempt,
resume payload), checks that this worker serves the job's blueprint version, turns a `sleep`
node into a delayed job, runs the engine's `step` and encodes the outcome as a commit request
(writes, routing decision, arrivals with the successor jobs they may create) or a retry.
The loops around it are in `worker.py`.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _core, jsoncodec
from ..blueprint import Blueprint, NodeDefinition, thaw
from ..errors import FlowcraftError
from ..nodes.sleep import parse_duration_ms, sleep_node
from ..nodes.wait_event import event_name, event_timeout_ms
from ..runtime.buffered import BufferedContext
from ..runtime.events import EventEmitter
from ..runtime.graph import CompiledGraph, RunGraph, run_graph
from ..runtime.history import HistoryTee
from ..runtime.inputs import resolve_input
from ..runtime.ledger import SKIPPED
from ..runtime.limits import Groups, LimitKeyError, groups, limited
from ..runtime.runtime import RuntimeOptions
from ..runtime.step import (
    FROM_CONTEXT,
    Activation,
    Finished,
    Parked,
    Retry,
    activation_input,
    counts_against_limits,
    step,
)
from ..runtime.types import WorkflowError
from ..runtime.vocabulary import (
    DYNAMIC_PREFIX,
    EVENT_TIMER,
    INPUTS_PREFIX,
    LIVE_STATUSES,
    SKIP,
    WAIT_FOR_EVENT_USES,
    node_key,
)
from ..tracing import job_trace
from .jobs import job_data, job_id, job_opts
from .lazy_state import LazyState
from .wire import NO_LIMIT, ArrivalRequest, CommitRequest

VERSION_RETRY_DELAY_MS = 5_000
VERSION_RETRY_LIMIT = 12
"""A job whose blueprint version no worker here serves is offered again this many times
(every 5 s, for a minute) before its run fails with the reason."""

RetryRequest = tuple[str, str, int, str, str, str]

Admit = Callable[[Groups], Awaitable[tuple[str, int]]]
"""Asks Redis whether a job of a limited node may start now (the worker's `_admit`)."""
"""(job id, token, delay ms, reason, why: "attempt" | "sleep" | "defer", stacktrace entry or "";
see retry.lua)"""

STACK_ENTRY_CHARS = 8 * 1024
"""The longest traceback text stored in a job's `stacktrace` entry: a longer one keeps its
start and its end (the raising frame and the exception), the middle cut out."""


def stack_entry(exceptions: Sequence[BaseException], fallback: str = "") -> str:
    """One entry of the job's BullMQ `stacktrace` field: the formatted tracebacks of
    `exceptions` (a fallback chain raises several), bounded to `STACK_ENTRY_CHARS`; `fallback`
    when none was raised."""
    text = "\n".join("".join(traceback.format_exception(e)).rstrip("\n") for e in exceptions)
    text = text or fallback
    if len(text) > STACK_ENTRY_CHARS:
        head = STACK_ENTRY_CHARS // 4
        tail = STACK_ENTRY_CHARS - head - 40
        cut = len(text) - head - tail
        text = f"{text[:head]}\n... ({cut} characters cut) ...\n{text[-tail:]}"
    return text


def _log_failure(
    log: logging.Logger,
    job: _core.ClaimedJob,
    attempt: int,
    errors: Sequence[WorkflowError],
    exceptions: Sequence[BaseException],
    retry_ms: int | None,
) -> None:
    """One log line per node failure: WARNING for an attempt that is retried, ERROR for the
    failure that fails the run; run id, node id, job id and attempt as fields (`extra`, so the
    JSON log format has them as keys), the traceback as the record's exception."""
    what = "; ".join(f"{e.type}: {e.message}" for e in errors)
    fields = {"run_id": job.run_id, "node_id": job.node_id, "job_id": job.id, "attempt": attempt}
    exc_info = exceptions[0] if exceptions else None
    if retry_ms is not None:
        log.warning(
            "run %s: node %s attempt %d failed, retrying in %d ms: %s",
            job.run_id, job.node_id, attempt, retry_ms, what, exc_info=exc_info, extra=fields,
        )  # fmt: skip
    else:
        log.error(
            "run %s: node %s attempt %d failed, the run fails: %s",
            job.run_id, job.node_id, attempt, what, exc_info=exc_info, extra=fields,
        )  # fmt: skip


@dataclass(slots=True)
class ClaimedRun:
    """A run as one claim returned it, shared by the claim's jobs of that run."""

    status: str
    raw: dict[str, str]
    """State fields as JSON text (each node decodes what it reads)."""
    version: int = -1
    """The state version `raw` is (see commit.lua); -1: unknown."""
    traceparent: str | None = None
    """The W3C trace context its client stored at start (see `tracing`)."""
    pending: int = -1
    """Its outstanding jobs as the claim saw them (-1: unknown)."""
    dynamic_keys: list[str] = field(init=False)
    """The fields recording dynamic nodes, found once per claim rather than once per job."""

    def __post_init__(self) -> None:
        self.dynamic_keys = [k for k in self.raw if k.startswith(DYNAMIC_PREFIX)]

    def after(self, request: CommitRequest, version: int) -> ClaimedRun:
        """The run as it is after `request` was committed on top of this snapshot."""
        raw = dict(self.raw)
        raw.update(request.sets)
        for field_name in request.deletes:
            raw.pop(field_name, None)
        return ClaimedRun(self.status, raw, version, self.traceparent)


async def adopt(
    options: RuntimeOptions,
    queue: _core.Queue,
    job: _core.ClaimedJob,
    run: ClaimedRun,
    log: logging.Logger,
) -> CommitRequest | RetryRequest | None:
    """The claim found no run record but a state naming a blueprint published here: a run
    started by the TypeScript client protocol. Create its record (once, whoever claims first)
    and update `run.status`; or say why this worker cannot (defer to another worker, or fail
    the job alone). The version mapping is the TypeScript adapter's: the state's
    `blueprintVersion` (JSON; null or absent for none) must equal the blueprint's
    `metadata.version` (absent = null); this worker defers a mismatch to the other workers for a
    minute (a mixed fleet may serve that version), then fails the job with both versions."""
    jid, bp_id = job.id, job.blueprint_id
    bp = options.blueprints.get(bp_id)
    raw_version = run.raw.get("blueprintVersion")
    try:
        stored = jsoncodec.loads(raw_version, what="blueprintVersion") if raw_version else None
    except ValueError as exc:
        return reject_commit(job, f"run {job.run_id}: its state's {exc}")
    have = bp.version if bp is not None else None
    if bp is None or stored != have:
        reason = (
            f"blueprint {bp_id!r} is not served by this worker"
            if bp is None
            else f"blueprint {bp_id!r} version {stored!r} is what run {job.run_id} was started "
            f"with, this worker has {have!r}"
        )
        if job.attempts_started <= VERSION_RETRY_LIMIT:
            log.warning("job %s: %s; leaving it for another worker", jid, reason)
            return (jid, job.token, VERSION_RETRY_DELAY_MS, reason, "defer", "")
        return reject_commit(job, f"{reason} (no matching worker took the job)")
    starts = [
        (node_key(n, ()), f"{job.run_id}_{n}") for n in CompiledGraph.from_blueprint(bp).start_nodes
    ]
    status = await queue.adopt_run(job.run_id, bp.id, bp.version or "", starts)
    if status == "mismatch":
        return reject_commit(job, f"run {job.run_id}: its state names another blueprint")
    if status == "running":
        log.info("run %s: adopted (started by the TypeScript client protocol)", job.run_id)
    run.status = status
    return None


async def run_job(
    options: RuntimeOptions,
    job: _core.ClaimedJob,
    run: ClaimedRun,
    cancelled: asyncio.Event,
    log: logging.Logger,
    max_stalls: int = 1,
    admit: Admit | None = None,
    history: list[tuple[str, str, str]] | None = None,
) -> CommitRequest | RetryRequest | None:
    """Turn the job into an activation, run it through the engine's step, and say what to
    commit (or when to retry). A job that stalled more than `max_stalls` times (its workers
    died running it) does not run again: its node fails with a StalledJobError. A job of a
    node with flow limits runs only once `admit` lets it (limit.lua): None when the job now
    waits in its group (nothing to send), a deferral when its rate window is full.
    With `history` (history on), the job's history entries are appended to it as (run id,
    type, JSON data): the worker sends them before the job's commit."""
    jid, run_id, node_id, bp_id = job.id, job.run_id, job.node_id, job.blueprint_id
    key = job.node_key

    def fail(message: str, errors: list[WorkflowError] | None = None) -> CommitRequest:
        errs = errors or [WorkflowError(node_id, message, "FlowcraftError")]
        payload = jsoncodec.dumps(
            {"status": "failed", "reason": message, "errors": [e.to_json() for e in errs]}
        )
        return CommitRequest(jid, job.token, run_id, key, "fail", message, payload)

    def reject(reason: str) -> CommitRequest:
        log.warning("job %s failed without running: %s", jid, reason)
        return reject_commit(job, reason)

    if run.status not in LIVE_STATUSES:
        return reject(f"run {run_id} already ended ({run.status or 'expired'}); node not run")
    bp = options.blueprints.get(bp_id)
    wanted = job.blueprint_version
    have = (bp.version or "") if bp is not None else None
    if bp is None or (wanted and have != wanted):
        reason = (
            f"blueprint {bp_id!r} is not served by this worker"
            if bp is None
            else f"blueprint {bp_id!r} version {wanted!r} is required, this worker has {have!r}"
        )
        if job.attempts_started <= VERSION_RETRY_LIMIT:
            log.warning("job %s: %s; leaving it for another worker", jid, reason)
            return (jid, job.token, VERSION_RETRY_DELAY_MS, reason, "defer", "")
        return fail(f"{reason} (no matching worker took the job)")
    snapshot = LazyState(run.raw)
    try:
        graph = run_graph(bp, snapshot, run.dynamic_keys)
    except (ValueError, FlowcraftError) as exc:
        return fail(f"run state is unreadable: {exc}")
    if not graph.has_node(node_id):  # a stale or foreign job: it fails, never the run it names
        return reject(f"blueprint {bp_id!r} has no node {node_id!r}")
    try:
        iteration = graph.parse_iteration(node_id, job.iteration)
    except ValueError as exc:
        return reject(f"job data field iteration: {exc}")
    context = BufferedContext(snapshot)
    edge_value: Any = FROM_CONTEXT
    try:
        if job.input == SKIP:
            edge_value = SKIPPED
        elif job.input is not None:
            edge_value = jsoncodec.loads(job.input, what="the job's input (field fci)")
        resume = (
            jsoncodec.loads(job.resume, what="the job's resume payload (field fcr)")
            if job.resume is not None
            else None
        )
    except ValueError as exc:  # JSONLimitError too: the message gives the size and the limit
        return reject(str(exc))
    if resume is not None and not (
        isinstance(resume, dict) and isinstance(resume.get("action"), str | None)
    ):  # the client writes {output, action}: anything else must not fail the run it names
        assert job.resume is not None
        excerpt = job.resume if len(job.resume) <= 60 else job.resume[:60] + "..."
        return reject(
            "the job's resume payload (field fcr) must be an object {output, action} with a "
            f"string or null action, not {excerpt!r}"
        )
    node = graph.node(node_id)
    if (
        edge_value is not SKIPPED
        and resume is None
        and options.registry.get(node.uses) is sleep_node
    ):  # a delayed job that holds no worker while it waits
        if not job.slept:
            try:
                delay = parse_duration_ms(thaw(node.params).get("duration"))
            except ValueError as exc:
                return fail(f"sleep node {node_id!r}: {exc}")
            return (jid, job.token, int(delay), "sleeping", "sleep", "")
        if edge_value is FROM_CONTEXT:
            edge_value = snapshot.get(f"{INPUTS_PREFIX}{node_id}")
        transformed = node_id in graph.static.transformed_targets
        resume = {"output": resolve_input(node, context.view(), edge_value, transformed)}
    trace = job_trace(run.traceparent, run_id, bp_id, wanted, jid)
    bus = options.event_bus
    if history is not None:
        bus = HistoryTee(bus, lambda kind, text: history.append((run_id, kind, text)))
    events = EventEmitter(bus, run_id, bp_id, options.logger, trace)
    act = Activation(node_id, iteration, edge_value, job.attempts_made + 1, resume)
    if job.stalls > max_stalls:
        message = (
            f"node {node_id} stalled {job.stalls} times (the workers running it died; "
            f"the stall limit is {max_stalls})"
        )
        log.error("job %s: %s", jid, message)
        act.failed = WorkflowError(node_id, message, "StalledJobError")
    if admit is not None and limited(node) and counts_against_limits(act) and not job.held_limit:
        # (a job taken by the commit that fired it came with its slot: commit.lua admitted it)
        try:
            node_input = activation_input(graph, node, act.edge_value, context)[1]
            g = groups(node, bp_id, node_input, context.view(), options.evaluate)
        except LimitKeyError as exc:
            return fail(str(exc), [WorkflowError(node_id, str(exc), "LimitKeyError")])
        verdict, delay_ms = await admit(g)
        if verdict == "delay":
            return (jid, job.token, max(1, delay_ms), "rate limited", "defer", "")
        if verdict != "ok":  # parked in its group (or its lease is gone): nothing to send
            return None
    outcome = await step(
        options, graph, act, context, events,
        run_id=run_id, cancelled=cancelled, attempts=[act.attempt],
    )  # fmt: skip
    if isinstance(outcome, Finished):
        return _commit_request(job, key, bp, graph, outcome, context, run.version, options)
    if isinstance(outcome, Retry):
        raised = () if outcome.exception is None else (outcome.exception,)
        delay_ms = int(outcome.delay_ms)
        _log_failure(log, job, act.attempt, [outcome.error], raised, delay_ms)
        stack = stack_entry(raised, f"{outcome.error.type}: {outcome.error.message}")
        return (jid, job.token, delay_ms, outcome.error.message, "attempt", stack)
    if isinstance(outcome, Parked):
        sets, deletes = context.changes()
        payload = jsoncodec.dumps({"status": "awaiting", "awaiting": [node_id]})
        if node.uses == WAIT_FOR_EVENT_USES:
            timeout = event_timeout_ms(node.params, node_id)
            if timeout is not None:  # commit.lua makes the timeout job with the park
                name = event_name(node.params, node_id)
                tid = f"{job_id(run_id, node_id, iteration)}.t{uuid.uuid4().hex[:8]}"
                timer = {
                    "id": tid,
                    "data": job_data(run_id, bp_id, wanted, node_id, iteration),
                    "opts": job_opts(node, tid),
                    "delay": max(1, int(timeout)),
                    "event": name,
                }
                sets = [*sets, (EVENT_TIMER + name, jsoncodec.dumps(timer))]
            # parks only on the state it read: an event sent meanwhile makes it run again
            return CommitRequest(
                jid, job.token, run_id, key, "await-event", "null", payload, sets, deletes,
                known_version=run.version,
            )  # fmt: skip
        return CommitRequest(jid, job.token, run_id, key, "await", "null", payload, sets, deletes)
    _log_failure(log, job, act.attempt, outcome.errors, outcome.exceptions, None)
    last = outcome.errors[-1]
    request = fail(last.message, outcome.errors)
    request.stacktrace = stack_entry(outcome.exceptions, f"{last.type}: {last.message}")
    return request


def _commit_request(
    job: _core.ClaimedJob,
    key: str,
    bp: Blueprint,
    graph: RunGraph,
    finished: Finished,
    context: BufferedContext,
    known_version: int,
    options: RuntimeOptions,
) -> CommitRequest:
    """The commit of a finished activation: its writes and the arrivals at its successors,
    each with the job that runs the successor if it fires (and the successor's concurrency
    group, so the commit that takes the job for this worker admits it too)."""
    run_id, version = job.run_id, bp.version or ""
    encode = jsoncodec.EncodeOnce()  # the output goes out up to four times: encode it once
    arrivals: list[ArrivalRequest] = []
    for a in finished.arrivals:
        succ = job_id(run_id, a.target, a.iteration)
        value = SKIP if a.value is SKIPPED else encode(a.value, "edge value")
        target = graph.node(a.target)
        single = len(a.predecessors) == 1
        arrivals.append(
            ArrivalRequest(
                a.key,
                a.source,
                value,
                a.strategy,
                list(a.predecessors),
                succ,
                job_data(run_id, bp.id, version, a.target, a.iteration),
                job_opts(target, succ),
                NO_LIMIT
                if a.value is SKIPPED or not single
                else _successor_limit(graph, bp.id, a.target, a.value, context, options),
                single and _speculable(graph, target),
            )
        )
    sets, deletes = context.changes(encode)
    result = finished.result
    returnvalue = "null" if result is None else encode(result.output)
    return CommitRequest(  # positional, in field order: a class call with keywords costs more
        job.id, job.token, run_id, key, "ok", returnvalue, "", sets, deletes, arrivals,
        0, bp.id, version, known_version,
    )  # fmt: skip


def _speculable(graph: RunGraph, target: NodeDefinition) -> bool:
    """A successor with one predecessor that only this arrival can fire: not a start node (a
    cycle back to it finds it fired already), not a fallback (its owner's failure fires it
    too), and without flow limits (its job is admitted when it starts)."""
    static = graph.static
    return (
        target.id not in static.start_nodes
        and target.id not in static.fallback_owners
        and not limited(target)
    )


def _successor_limit(
    graph: RunGraph,
    bp_id: str,
    target: str,
    value: Any,
    context: BufferedContext,
    options: RuntimeOptions,
) -> tuple[str, str, int]:
    """The concurrency group a successor's job will count against when `value` is its input
    and the context is this commit's (NO_LIMIT: no such limit, or a rate limit, which is only
    decided when the job starts). A key that cannot be evaluated gives NO_LIMIT: the job then
    goes the usual way (admitted, or failed with the reason, when it starts)."""
    node = graph.node(target)
    if node.config.concurrency is None or node.config.rate_limit is not None:
        return NO_LIMIT
    try:
        node_input = activation_input(graph, node, value, context)[1]
        g = groups(node, bp_id, node_input, context.view(), options.evaluate)
    except Exception:  # the job's own start reports it, with the real reason
        return NO_LIMIT
    assert g.concurrency is not None
    return Groups.digest(g.concurrency), g.concurrency, g.limit


def reject_commit(job: _core.ClaimedJob, reason: str) -> CommitRequest:
    """Fail the job alone, with `reason`: it cannot run (or its run ended); the run is not
    touched."""
    return CommitRequest(job.id, job.token, job.run_id, job.node_key, "reject", reason)
