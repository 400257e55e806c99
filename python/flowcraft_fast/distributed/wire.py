"""What the worker hands to the native queue: named, not positional.

The Rust side reads these by attribute (`#[derive(FromPyObject)]` in `rust/src/replies.rs`), so
a field renamed on one side fails loudly on the other; `_core.pyi` documents the same shapes.
What the queue hands back is `_core.ClaimedJob`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NO_LIMIT = ("", "", 0)


@dataclass(slots=True)
class ArrivalRequest:
    """A finished node's edge arriving at one activation of a successor."""

    target_key: str
    """`<iteration>|<node id>` of the successor activation."""
    source: str
    value: str
    """What the edge carries (JSON text), or `vocabulary.SKIP` for a skipped edge."""
    strategy: str
    predecessors: list[str]
    """The predecessors the successor's join waits for, as far as this worker knows."""
    job_id: str
    """The job that runs the successor if this arrival fires it; its data and options."""
    job_data: str
    job_opts: str
    limit: tuple[str, str, int] = NO_LIMIT
    """The successor's concurrency group (digest, name, limit) for this edge's value as its
    input: a commit that takes the job for this worker takes a slot of the group with it, or
    leaves the job on the queue when the group is full. NO_LIMIT: none (or not knowable)."""
    speculable: bool = False
    """The arrival fires its successor for sure (one predecessor) and the successor has no
    flow limits: the worker may run it before this commit is sent (speculative continuation,
    `worker.py`). Python only: the native queue does not read it."""


@dataclass(slots=True)
class CommitRequest:
    """One finished (or parked, or failed) activation, for `commit.lua`."""

    job_id: str
    token: str
    run_id: str
    node_key: str
    mode: str
    """"ok" (finished), "await" (parks the run), "fail" (fails the run), "reject" (the job
    alone fails with `result` as its reason; the run is not touched)."""
    result: str = "null"
    """The job's `returnvalue` (JSON), or its `failedReason` when failing."""
    payload: str = ""
    """The status payload when this commit ends or parks the run ("" for the default)."""
    sets: list[tuple[str, str]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    arrivals: list[ArrivalRequest] = field(default_factory=list)
    take: int = 0
    """How many of the successor jobs it fires the commit claims for this worker at once
    (local continuation; the worker sets it from its free slots when it sends the batch)."""
    blueprint_id: str = ""
    blueprint_version: str = ""
    """The committing job's blueprint (its successors' too): what the jobs it takes carry."""
    known_version: int = -1
    """The state version of the snapshot the node ran with: when it is still current, the
    commit sends no state back with the jobs it takes (the worker adds the writes itself)."""
    stacktrace: str = ""
    """With "fail": the node's traceback, appended to the job's `stacktrace` (BullMQ's JSON
    array of strings, newest last; see `node_job.stack_entry`); "" for none."""
    held_limit: str = ""
    """The concurrency group (digest) whose slot the job holds: the commit frees it."""
    follows: bool = False
    """Sent in the same script call as the commit before it in the batch: a speculative job's
    "ok" commit right behind the commit that takes it (commit.lua then creates the job as it
    finishes it). The worker sets it when it sends the batch."""


@dataclass(slots=True)
class StartRequest:
    """One run to create, for `start.lua`."""

    run_id: str
    blueprint_id: str
    version: str
    sets: list[tuple[str, str]]
    """The initial context: (key, JSON text) pairs."""
    jobs: list[tuple[str, str, str, str]]
    """One (job id, node key, data, opts) per start node."""
    priority: int = 0
    """BullMQ priority carried by every job of the run (0: none; lower runs first)."""
    singleton: str = ""
    """The run's singleton key ("" for none)."""
    traceparent: str = ""
    """The W3C traceparent of the client's start span ("" when nobody traces): kept once in
    the run's meta, handed to workers with the run by every claim (see `tracing`)."""
