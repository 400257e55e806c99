"""The distributed worker loop: claim jobs in batches, run nodes, commit results in batches.

One process runs one `Worker` per queue. It keeps up to `concurrency` nodes in flight:
- the claim loop takes as many ready jobs as there are free slots in one round trip (and waits
  on the queue's marker with a blocking pop when there are none);
- each claimed job is run by `node_job.run_job`: decoded into an activation for the engine's
  step function (the same `runtime.step` the in-memory loop calls) and encoded as a commit;
- finished nodes are committed in batches: one round trip carries every commit that is ready;
- a heartbeat renews the leases of all in-flight jobs in one call and stops nodes whose run has
  ended or whose lease was lost;
- a stalled-job check returns jobs of dead workers to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _core, jsoncodec
from ..runtime.eager import Resumed
from ..runtime.events import EventEmitter
from ..runtime.executor import NodeOutcome
from ..runtime.limits import Groups
from ..runtime.runtime import RuntimeOptions
from ..runtime.vocabulary import PAUSED_PREFIX, RUNNING
from .jobs import VERSION_FIELD
from .node_job import ClaimedRun, RetryRequest, adopt, reject_commit, run_job
from .safety import UnsafeRedisError
from .wire import CommitRequest
from .workers import heartbeat_ttl, own_record

SWEEP_GROUPS = 200
"""Concurrency groups with waiters looked at per stalled pass (their dead holders' slots)."""

_Retry = RetryRequest


@dataclass(slots=True)
class _InFlight:
    job: _core.ClaimedJob
    run: ClaimedRun
    started: float
    task: asyncio.Task[None] | None = None
    """The driver task running its node while the node waits (None otherwise)."""
    run_ended: bool = False
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """The nodes' `ctx.cancelled`: set when their run ended elsewhere (failed, cancelled)."""
    committing: bool = False
    """The node finished and its commit (or retry) is on its way: no longer stoppable."""
    held_limit: str | None = None
    """The concurrency group (digest) whose slot the job holds: freed for a waiter once the
    job leaves this worker (limit.lua)."""
    history: list[tuple[str, str, str]] | None = None
    """The job's history entries (history on), sent before its commit."""
    sole: bool = False
    """The job is its run's only outstanding one (a commit that left one job took it, or a
    speculative child of such a job with no other arrival): nobody else writes the run's state
    while it runs, so its successors can run on its own view (speculative continuation)."""
    parent: _InFlight | None = None
    """Speculative: the job whose commit (not yet answered) will claim this one for this
    worker; None once confirmed, or for a job claimed the usual way."""
    children: list[_InFlight] | None = None
    """Its successors this worker runs ahead of its commit's reply."""
    queued: bool = False
    """Its commit waits in the next batch (a speculative child's commit may follow it there)."""
    held: Any = None
    """A speculative job's outcome (commit, retry, or _NOTHING) kept until its parent's
    commit confirms that it holds the job."""
    dropped: bool = False
    """The prediction failed (the parent's commit did not take it with the predicted token):
    whatever it did is discarded, quietly; the job runs on what the commit returned."""

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def token(self) -> str:
        return self.job.token

    @property
    def run_id(self) -> str:
        return self.job.run_id


StepObserver = Callable[[str, float, str], None]
_OUTCOMES = {"ok": "completed", "dup": "duplicate", "lost": "lost", "terminal": "rejected"}
"""A commit reply's code as a step outcome (a job whose run ended first failed alone, as a
rejected one does); any other code ("error": the script failed) is "error"."""
_FREED_BY_COMMIT = frozenset(("ok", "dup", "terminal"))
"""Commit replies of a commit that finished the job (its lock gone, its slot freed)."""

LATENCY_SAMPLES = 4096
"""Job latencies kept for statistics: the most recent ones (a ring, not a growing list)."""


@dataclass(slots=True)
class WorkerStats:
    claimed: int = 0
    committed: int = 0
    retried: int = 0
    failed_runs: int = 0
    duplicates: int = 0
    lost: int = 0
    claims: int = 0
    continued: int = 0
    """Jobs a commit claimed for this worker as it fired them (local continuation); counted in
    `claimed` too."""
    speculated: int = 0
    """Jobs run ahead of the commit that claims them (speculative continuation), their commits
    pipelined behind their parents'; counted in `claimed` and `continued` once confirmed."""
    speculation_dropped: int = 0
    """Speculative runs discarded because the parent's commit did not take the job as
    predicted (its run ended, a duplicate, the queue paused, an event changed the state)."""
    commit_batches: int = 0
    rejected: int = 0
    """Jobs failed at once because they cannot run (bad payload, no such run/node), each logged
    with its reason; orphan ids (no job hash) removed from the queue are counted too."""
    parked: int = 0
    """Jobs over a concurrency limit, moved to their group's waiting list (limit.lua)."""
    requeued: int = 0
    """Wait-for-event parks refused because an event may have arrived (commit.lua): the job
    went back to the queue to run again on the new state."""
    admitted_by_commit: int = 0
    """Jobs of limited nodes taken with a slot of their group by the commit that fired them
    (no admission round trip of their own)."""
    redis_errors: int = 0
    """Round trips that failed (Redis unreachable, a command refused): claims, commits,
    retries, stalled checks and heartbeats; each is retried, these count the failures."""
    stalled_requeued: int = 0
    """Jobs whose worker died, returned to the queue by this worker's stalled checks."""
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))


DEFAULT_LEASE_MS = 10_000
"""A claimed job's lease: a worker that dies holding it gives it back after at most this plus
two stalled-check intervals. Renewal is one Rust script call per heartbeat for all in-flight
jobs (every lease / 3), so a short lease costs ~0.3 calls/s per worker process."""
DEFAULT_STALLED_INTERVAL_S = 5.0
"""How often one worker of the fleet looks for jobs whose lease expired."""

YIELD_EVERY = 64
"""Jobs a driver steps back to back before it lets the event loop run other tasks."""

MAX_QUEUED_COMMITS = 512
"""Speculation stops feeding a batch that already carries this many commits."""
COMMIT_BATCHES_IN_FLIGHT = 2
"""Commit batches sent and not answered yet, at most: the worker builds the next while Redis
runs the last (one batch at a time left both idle in turns)."""

_NOTHING = object()
"""A held outcome meaning "nothing to send" (the node was stopped, or waits in a group)."""


class Worker:
    def __init__(
        self,
        options: RuntimeOptions,
        queue: _core.Queue,
        *,
        concurrency: int = 64,
        lease_ms: int = DEFAULT_LEASE_MS,
        stalled_interval_s: float = DEFAULT_STALLED_INTERVAL_S,
        max_stalls: int = 1,
        logger: logging.Logger | None = None,
        queue_name: str = "",
        name: str | None = None,
        renew_ms: int = 0,
        server_check: Callable[[], Awaitable[object]] | None = None,
        history: _core.History | None = None,
        speculate: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if lease_ms < 100:
            raise ValueError(f"lease_ms must be >= 100, got {lease_ms}")
        if renew_ms < 0 or renew_ms >= lease_ms:
            raise ValueError(
                f"renew_ms must be >= 0 and below lease_ms ({lease_ms}), got {renew_ms}"
            )
        if max_stalls < 0:
            raise ValueError(f"max_stalls must be >= 0, got {max_stalls}")
        if name is not None:
            check_worker_name(name)
        self.options = options
        self.queue = queue
        self.queue_name = queue_name
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.stalled_interval_s = stalled_interval_s
        self.max_stalls = max_stalls
        self.log = logger or logging.getLogger("flowcraft_fast.worker")
        self.renew_ms = renew_ms or lease_ms // 3
        self.name = name
        """A stable name (`--name`): a restarted worker releases the leases its previous
        incarnation held at once. None: an anonymous worker, whose leases only expire."""
        incarnation = uuid.uuid4().hex
        self.token_prefix = f"{name}@{incarnation[:16]}" if name is not None else incarnation
        self.server_check = server_check
        self.history = history
        """Where the runs' history entries go (history on; docs/history.md); None: off."""
        self.speculate = speculate and history is None and options.event_bus is None
        """Speculative continuation (see `_speculate`): off with history or an event bus, whose
        records would include runs that may be discarded."""
        self._safe = asyncio.Event()
        self._safe.set()
        """Cleared while the server is unsafe (an evicting policy): no claims meanwhile."""
        self.stats = WorkerStats()
        self._in_flight: dict[str, _InFlight] = {}
        self._slot_freed = asyncio.Event()
        self._idle = asyncio.Event()
        """Set whenever nothing is in flight (close waits for it)."""
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._ready: deque[_InFlight] = deque()
        """Claimed jobs not started yet."""
        self._drivers: set[asyncio.Task[None]] = set()
        self._free_drivers = 0
        """Drivers taking ready jobs (not waiting on a node)."""
        self._pending_commits: list[tuple[CommitRequest, _InFlight]] = []
        self._pending_retries: list[tuple[_Retry, _InFlight]] = []
        self._commit_ready = asyncio.Event()
        self._event_tasks: set[asyncio.Task[None]] = set()
        self._next_due_ms = 0
        self._started_ms = int(time.time() * 1000)
        self._to_release: dict[str, list[str]] = {}
        """Concurrency group digest -> the jobs that left this worker holding a slot of it."""
        self._admissions: list[tuple[Any, asyncio.Future[tuple[str, int]]]] = []
        self._release_task: asyncio.Task[None] | None = None
        self._unnamed_warned = False
        self._awaiting_work = False
        """The claim loop is blocked on the queue's marker (the queue had nothing ready)."""
        self._reserved = 0
        """Slots promised to claims on the wire (the claim loop's, a commit batch's): no other
        claim counts them free, so concurrent claims never take more than the free slots."""
        self.step_observer: StepObserver | None = None
        """Called with (blueprint id, seconds from claim to settled commit, outcome) for every
        job this worker settles: "completed", "failed" (the node failed and its run with it),
        "rejected" (the job failed alone: it cannot run, or its run ended first), "retried",
        "duplicate", "lost" or "error" (the daemon's step latency histograms). None costs
        nothing."""

    # ------------------------------------------------------------------ lifecycle

    async def publish(self) -> None:
        """Publish the runtime's blueprints (JSON and served version) on the queue."""
        await self.publish_to(self.queue)

    async def publish_to(self, queue: _core.Queue) -> None:
        """Publish the runtime's blueprints on `queue` (another partition of the same queue)."""
        published: list[tuple[str, str]] = []
        for bp in self.options.blueprints.values():
            published.append((bp.id, jsoncodec.dumps(bp.to_json())))
            published.append((bp.id + VERSION_FIELD, bp.version or ""))
        await queue.publish_blueprints(published)

    async def start(self, *, publish: bool = True) -> None:
        """Publish the blueprints (unless the caller just did: `publish=False`) and start
        consuming in background tasks."""
        if publish:
            await self.publish()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._claim_loop(), name="flowcraft-claim"),
            loop.create_task(self._commit_loop(), name="flowcraft-commit"),
            loop.create_task(self._heartbeat_loop(), name="flowcraft-heartbeat"),
            loop.create_task(self._stalled_loop(), name="flowcraft-stalled"),
        ]

    async def close(self, timeout: float | None = None) -> None:
        """Stop claiming, let in-flight nodes finish and commit (within `timeout`), stop."""
        self._closing = True
        self.queue.stop_waiting()
        claim = self._tasks[0] if self._tasks else None
        if claim is not None:
            claim.cancel()
        self._ready.clear()  # claimed but not started: back to the queue when leases lapse
        for flight in [f for f in self._in_flight.values() if not f.committing and not f.task]:
            self._forget(flight)
        if self._in_flight:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        drivers = list(self._drivers)
        for task in drivers:
            task.cancel()
        if drivers:
            await asyncio.wait(drivers, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(ConnectionError, _core.RedisCommandError):
            await self.queue.leave(self.token_prefix)  # out of the live workers at once

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # ------------------------------------------------------------------ claiming

    async def _claim_loop(self) -> None:
        drained = False  # the last claim took everything that was ready
        while not self._closing:
            if not self._safe.is_set():
                await self._safe.wait()
                continue
            if self._free_slots() <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            free = 0
            try:
                if drained:
                    # Block until the queue's marker says work is ready (commits that create
                    # jobs, and producers, set it; a claim that empties the queue clears it).
                    self._awaiting_work = True
                    try:
                        await self.queue.wait_for_work(self._wait_timeout())
                    finally:
                        self._awaiting_work = False
                    if not self._safe.is_set():
                        continue  # paused while it waited: claim nothing
                free = self._free_slots()  # (commits may have taken jobs meanwhile)
                if free <= 0:
                    # the marker said work is ready and is gone: claim as soon as a slot is
                    # free, without waiting for a marker again
                    drained = False
                    continue
                self._reserved += free
                try:
                    next_due_ms, runs, jobs, rejected = await self.queue.claim(
                        free, self.lease_ms, self.token_prefix
                    )
                finally:
                    self._reserved -= free
            except (ConnectionError, _core.RedisCommandError) as exc:
                self.stats.redis_errors += 1
                self.log.warning("claiming jobs failed, retrying in 1 s: %s", exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                # a reply the parser refused (a bug): this loop must not end; the jobs that claim
                # leased return to the queue when their leases end
                self.log.exception("claiming jobs failed unexpectedly, retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            self.stats.claims += 1
            self._next_due_ms = next_due_ms
            self._report_rejected(rejected)
            self._launch_all(runs, jobs)
            drained = len(jobs) < free and not rejected

    def _free_slots(self) -> int:
        return self.concurrency - len(self._in_flight) - self._reserved

    def _report_rejected(self, rejected: list[tuple[str, str]]) -> None:
        """Jobs the claim failed at once (they cannot run): one WARNING line each, with why."""
        for jid, reason in rejected:
            self.stats.rejected += 1
            self.log.warning("job %s failed without running: %s", jid, reason)

    def _wait_timeout(self) -> float:
        if self._next_due_ms:
            return min(5.0, max(0.001, self._next_due_ms / 1000 - time.time()))
        return 5.0

    def _launch_all(
        self,
        runs: dict[str, tuple[str, dict[str, str], int, str | None, int]],
        jobs: list[_core.ClaimedJob],
    ) -> None:
        """Start a claim's jobs, each with its run's state as the claim read it."""
        claimed = {run_id: ClaimedRun(*run) for run_id, run in runs.items()}
        missing = ClaimedRun("", {})
        for job in jobs:
            run = claimed.get(job.run_id, missing)
            self._launch(run, (job,), sole=run.pending == 1)  # the run's only job: this one

    def _launch(
        self, run: ClaimedRun, jobs: Sequence[_core.ClaimedJob], sole: bool = False
    ) -> None:
        now = time.perf_counter()
        for job in jobs:
            flight = _InFlight(job, run, now, sole=sole)
            if job.held_limit:  # the commit that took it took a slot of its group for it
                flight.held_limit = job.held_limit
                self.stats.admitted_by_commit += 1
            self._in_flight[job.id] = flight
            self.queue.track(job.id, job.token, job.run_id)
            self._ready.append(flight)
        self.stats.claimed += len(jobs)
        if self._ready and not self._free_drivers:
            self._spawn_driver()

    def _spawn_driver(self) -> None:
        # free from now on, not from its first turn: the jobs launched before it runs must not
        # spawn a driver each (they would all run before the commit loop's next turn)
        self._free_drivers += 1
        task = asyncio.get_running_loop().create_task(self._driver(), name="flowcraft-jobs")
        self._drivers.add(task)
        task.add_done_callback(self._drivers.discard)

    async def _driver(self) -> None:
        """Step ready jobs eagerly: a node that finishes without waiting costs no task of its
        own. When a node waits, this task stays with it (its current task, timeouts and
        cancellation are its own) and another driver takes the remaining jobs."""
        ready = self._ready
        steps = 0
        try:
            while ready and not self._closing:
                flight = ready.popleft()
                if flight.dropped:  # a speculative job whose prediction failed meanwhile
                    self._forget(flight)
                    continue
                coro = self._execute(flight)
                variables = contextvars.copy_context()  # as a task of its own would have
                try:
                    first = variables.run(coro.send, None)
                except StopIteration as stop:
                    self._submit(flight, stop.value)
                else:
                    task = asyncio.current_task()
                    assert task is not None
                    flight.task = task
                    self._free_drivers -= 1
                    if ready:
                        self._spawn_driver()
                    try:
                        request = await Resumed(coro, first, variables)
                    except asyncio.CancelledError:
                        task.uncancel()  # this job's node was stopped; the driver goes on
                        request = self._stopped(flight)
                    finally:
                        flight.task = None
                        self._free_drivers += 1
                    self._submit(flight, request)
                steps += 1
                if steps % YIELD_EVERY == 0 and ready:
                    await asyncio.sleep(0)  # let the commit loop and others run
        finally:
            self._free_drivers -= 1

    async def _execute(self, flight: _InFlight) -> CommitRequest | _Retry | None:
        """Run the job's node to what to send; None when there is nothing to send."""
        try:
            if flight.run.status == "":  # no run record: one the TypeScript client started
                early = await adopt(self.options, self.queue, flight.job, flight.run, self.log)
                if early is not None:
                    return early
            if self.history is not None:
                flight.history = []
            return await run_job(
                self.options, flight.job, flight.run, flight.cancelled, self.log, self.max_stalls,
                lambda g: self._admit(flight, g), flight.history,
            )  # fmt: skip
        except asyncio.CancelledError:
            return self._stopped(flight)
        except Exception:
            self.log.exception(
                "job %s: unexpected worker error (the job will be retried)", flight.job_id
            )
            return None

    async def _admit(self, flight: _InFlight, g: Groups) -> tuple[str, int]:
        """limit.lua's verdict for a job of a limited node (see `run_job`); the admissions of
        one loop turn go to Redis in one round trip."""
        c_digest = "" if g.concurrency is None else Groups.digest(g.concurrency)
        r_digest = "" if g.rate is None else Groups.digest(g.rate)
        request = (
            flight.job_id,
            flight.token,
            (c_digest, g.concurrency or "", g.limit),
            (r_digest, g.rate or "", g.rate_max, g.rate_per_ms),
        )
        answer: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._admissions.append((request, answer))
        if len(self._admissions) == 1:
            asyncio.get_running_loop().create_task(self._send_admissions())
        verdict, delay_ms = await answer
        if verdict == "ok" and c_digest:
            flight.held_limit = c_digest
        elif verdict == "parked":
            self.stats.parked += 1
        elif verdict.startswith("error"):
            self.log.warning(
                "job %s: admission failed (%s); it returns with its lease", flight.job_id, verdict
            )
        return verdict, delay_ms

    async def _send_admissions(self) -> None:
        await asyncio.sleep(0)  # the admissions of this loop turn
        batch, self._admissions = self._admissions, []
        try:
            verdicts = await self.queue.admit_many([request for request, _ in batch])
        except Exception as exc:  # Redis unreachable, or a bug: no admission waits forever
            verdicts = [(f"error: {exc}", 0)] * len(batch)
        for (_, answer), verdict in zip(batch, verdicts, strict=True):
            if not answer.done():
                answer.set_result(verdict)

    def _stopped(self, flight: _InFlight) -> CommitRequest | None:
        """A node stopped on purpose: its run ended elsewhere (settle the job), or its lease was
        lost or the worker is closing (leave it; it returns to the queue when its lease ends)."""
        if flight.run_ended and not self._closing:
            return reject_commit(flight.job, f"run {flight.run_id} ended while the node ran")
        return None

    def _submit(self, flight: _InFlight, request: CommitRequest | _Retry | None) -> None:
        """Queue the job's commit (or retry) for the next batch; it settles when that returns.
        A speculative job's commit rides in its parent's batch, behind it; anything else it
        has to send waits until the parent's commit confirms it holds the job."""
        if flight.dropped:
            self._forget(flight)
            return
        parent = flight.parent
        if parent is not None and not (isinstance(request, CommitRequest) and parent.queued):
            flight.committing = True
            flight.held = _NOTHING if request is None else request
            return
        if request is None:
            self._forget(flight)
            return
        flight.committing = True
        if isinstance(request, tuple):
            self._pending_retries.append((request, flight))
        else:
            flight.queued = True
            self._pending_commits.append((request, flight))
            if self.speculate and flight.sole:
                self._speculate(flight, request)
        self._commit_ready.set()

    def _speculate(self, flight: _InFlight, request: CommitRequest) -> None:
        """Speculative continuation: a run's only outstanding job finished; its successors
        that fire for sure run now, on the state this commit leaves (the snapshot plus its
        writes: nobody else writes while the job is the run's only one), and their commits
        follow this one in the same batch. The commit takes each with a predicted token
        (commit.lua); when the prediction fails (the run ended, a duplicate, the queue
        paused, an event wrote the state) the child's commit finds another token and does
        nothing, its outcome is discarded and the job runs on what the commit returned. A
        sequential chain thus commits many steps in one round trip, with the durability of
        local continuation: a worker that dies loses its uncommitted steps, which run again
        (at least once, as any job).

        A job that is its run's only one and fires one successor leaves it the run's only
        one: chains speculate step after step."""
        if (
            request.mode != "ok"
            or request.known_version < 0
            or self._closing
            or len(self._pending_commits) >= MAX_QUEUED_COMMITS
        ):
            return
        room = 1 + max(0, self.concurrency - len(self._in_flight))  # its slot passes to one
        chosen = [a for a in request.arrivals if a.speculable and a.job_id not in self._in_flight]
        del chosen[room:]
        if not chosen:
            return
        wrote = bool(request.sets or request.deletes)
        run = flight.run.after(request, request.known_version + wrote)
        sole = len(request.arrivals) == 1
        now = time.perf_counter()
        children = []
        for a in chosen:
            job = _core.ClaimedJob(
                a.job_id, f"{self.token_prefix}:{a.job_id}:p", a.job_data, request.run_id,
                a.target_key, request.blueprint_id, request.blueprint_version, a.job_opts,
                a.value,
            )  # fmt: skip
            child = _InFlight(job, run, now, sole=sole, parent=flight)
            self._in_flight[job.id] = child
            children.append(child)
        if len(chosen) < len(request.arrivals):  # the commit takes the chosen ones first
            rest = [a for a in request.arrivals if not any(a is c for c in chosen)]
            request.arrivals = chosen + rest
        flight.children = children
        self.stats.speculated += len(children)
        self._ready.extendleft(reversed(children))  # next, depth first: one batch per chain
        if not self._free_drivers:
            self._spawn_driver()

    def _confirm(self, flight: _InFlight) -> None:
        """The parent's commit took the speculative job with its token: it is this worker's."""
        flight.parent = None
        if self._in_flight.get(flight.job_id) is not flight:
            return  # left already (the worker is closing): its lease lapses, as a claimed one's
        self.stats.claimed += 1
        self.stats.continued += 1
        self.queue.track(flight.job_id, flight.token, flight.run_id)
        held, flight.held = flight.held, None
        if held is not None:
            flight.committing = False
            self._submit(flight, None if held is _NOTHING else held)

    def _drop(self, flight: _InFlight) -> None:
        """The parent's commit did not take the speculative job as predicted: discard it and
        its own speculative children, wherever they are (running, held, in a batch)."""
        if flight.dropped:
            return
        flight.dropped = True
        self.stats.speculation_dropped += 1
        for child in flight.children or ():
            self._drop(child)
        flight.children = None
        if flight.task is not None and not flight.task.done():
            flight.task.cancel()  # its driver then submits nothing, and forgets it
        elif flight.held is not None:
            flight.held = None
            self._forget(flight)
        # else it waits in the ready queue (its driver skips it) or its commit is in a batch
        # (that reply finds another token and is settled quietly)

    def _forget(self, flight: _InFlight) -> None:
        """The job leaves this worker: stop renewing its lease, free its slot."""
        # A later claim of the same job (a re-delivered copy) may have replaced this one: its
        # lease must keep being renewed, so only this claim is untracked.
        self.queue.untrack(flight.job_id, flight.token)
        if flight.held_limit is not None:
            self._to_release.setdefault(flight.held_limit, []).append(flight.job_id)
            flight.held_limit = None
            if self._release_task is None:
                self._release_task = asyncio.get_running_loop().create_task(self._release())
        if self._in_flight.get(flight.job_id) is flight:
            del self._in_flight[flight.job_id]
        self._slot_freed.set()
        if not self._in_flight:
            self._idle.set()

    async def _release(self) -> None:
        """Free the slots of the jobs that left this worker and fill them from their groups'
        waiters, one call per loop turn. A failure is left to the sweep (a full group prunes
        holders whose lease is gone)."""
        try:
            await asyncio.sleep(0)
            while self._to_release:
                groups, self._to_release = list(self._to_release.items()), {}
                with contextlib.suppress(ConnectionError, _core.RedisCommandError):
                    await self.queue.release_limits(groups)
        finally:
            self._release_task = None

    def _settle(
        self, flight: _InFlight, request: CommitRequest, reply: _core.CommitReply | BaseException
    ) -> None:
        """A commit's reply arrived (or the error that Redis could not be reached)."""
        if flight.dropped:  # a failed prediction: its commit found another token
            self._forget(flight)
            return
        if isinstance(reply, BaseException):
            self.log.warning(
                "job %s: its commit could not be sent (%s); it returns to the queue when its "
                "lease ends",
                flight.job_id,
                reply,
            )
        else:
            if reply.code in _FREED_BY_COMMIT:
                flight.held_limit = None  # commit.lua freed its slot as it finished the job
            self._count(reply.code, reply.detail, flight)
            if self.options.event_bus is not None:
                events = self._job_events(flight, request, reply.code, reply.detail, reply.fired)
                task = asyncio.get_running_loop().create_task(events)
                self._event_tasks.add(task)
                task.add_done_callback(self._event_tasks.discard)
            elapsed = time.perf_counter() - flight.started
            self.stats.latencies.append(elapsed)
            if self.step_observer is not None:
                outcome = _OUTCOMES.get(reply.code, "error")
                if outcome == "completed" and reply.detail in ("failed", "rejected"):
                    outcome = reply.detail
                self.step_observer(flight.job.blueprint_id, elapsed, outcome)
        self._forget(flight)

    async def _job_events(
        self, flight: _InFlight, request: CommitRequest, code: str, detail: str, fired: str
    ) -> None:
        """The adapter-level events of a committed job (SPEC section 3: job:enqueued,
        job:processed, job:failed, and workflow:finish from the worker that ended the run)."""
        job, started = flight.job, flight.started
        events = EventEmitter(self.options.event_bus, job.run_id, job.blueprint_id, self.log)
        node_id = job.node_id
        if code != "ok" or detail == "requeued":
            return
        if request.mode == "reject":
            await events.emit("job:failed", nodeId=node_id, error=request.result)
            return
        failed = request.mode == "fail"
        if failed:
            await events.emit("job:failed", nodeId=node_id, error=request.result)
        await events.emit(
            "job:processed",
            nodeId=node_id,
            duration=round((time.perf_counter() - started) * 1000, 3),
            success=not failed,
        )
        for key in filter(None, fired.split("\x1f")):
            await events.emit(
                "job:enqueued", nodeId=key.partition("|")[2], queueName=self.queue_name
            )
        if failed or detail == "0":
            status = "failed" if failed else "completed"
            await events.emit("workflow:finish", status=status)
        elif detail == "awaiting":  # the node parked its run (a wait node, ctx.pause)
            paused = f"{PAUSED_PREFIX}{node_id}"
            reason = next((v for k, v in request.sets if k == paused), None)
            reasons = {} if reason is None else {node_id: jsoncodec.loads(reason)}
            await events.emit("workflow:pause", status="awaiting", reasons=reasons)

    def _count(self, code: str, detail: str, flight: _InFlight) -> None:
        if code == "ok" and detail == "requeued":
            self.stats.requeued += 1  # a wait-for-event park on a stale state: runs again
        elif code == "ok" and detail == "rejected":
            self.stats.rejected += 1
        elif code == "ok":
            self.stats.committed += 1
            if detail == "failed":
                self.stats.failed_runs += 1
                self._stop_run_locally(flight.run_id, flight.job_id)
        elif code == "dup":
            self.stats.duplicates += 1
        elif code == "lost":
            self.stats.lost += 1
            self.log.warning(
                "job %s: lease lost before commit; another worker owns it", flight.job_id
            )
        elif code == "error":
            self.log.error("job %s: commit failed: %s", flight.job_id, detail)

    # ------------------------------------------------------------------ committing

    async def _commit_loop(self) -> None:
        """Send what finished, a batch at a time, with up to COMMIT_BATCHES_IN_FLIGHT batches
        on the wire: the next one is built (its nodes run) while Redis runs the last, so the
        worker and Redis work at once instead of in turns. Batches are independent: a
        speculative job's commit rides in its parent's batch or waits for its reply."""
        batches: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._commit_ready.wait()
                self._commit_ready.clear()
                if len(self._in_flight) > len(self._pending_commits) + len(self._pending_retries):
                    # other jobs run: let those finishing in the same tick join this batch
                    await asyncio.sleep(0)
                if len(batches) >= COMMIT_BATCHES_IN_FLIGHT:
                    await asyncio.wait(batches, return_when=asyncio.FIRST_COMPLETED)
                commits, self._pending_commits = self._pending_commits, []
                retries, self._pending_retries = self._pending_retries, []
                if not commits and not retries:
                    continue
                for _, flight in commits:
                    flight.queued = False  # a speculative child's commit now waits for the reply
                task = asyncio.get_running_loop().create_task(self._flush(commits, retries))
                batches.add(task)
                task.add_done_callback(batches.discard)
        finally:
            for task in batches:
                task.cancel()

    async def _flush(
        self,
        commits: list[tuple[CommitRequest, _InFlight]],
        retries: list[tuple[_Retry, _InFlight]],
    ) -> None:
        try:
            if commits:
                await self._flush_commits(commits)
                self.stats.commit_batches += 1
            if retries:
                await self._flush_retries(retries)
        except Exception:  # a bug: the batch's jobs return when their leases end
            self.log.exception("a commit batch failed unexpectedly")

    async def _flush_commits(self, items: list[tuple[CommitRequest, _InFlight]]) -> None:
        """Commit a batch and, in the same round trip, fill the slots it frees: each commit
        claims the successors it fires (up to its `take`: local continuation, for edges into
        a node with one predecessor, which fire for sure), and a claim takes the rest from the
        queue."""
        await self._flush_history(items)
        items = _fused(items)
        free = 0
        if not self._closing:
            # slots the batch frees as it goes: a speculative job's frees only at its own
            # commit, after its parent's has decided what to take
            leaving = sum(1 for _, flight in items if flight.parent is None)
            free = max(0, self._free_slots() + leaving)
        for request, flight in items:
            ahead = len(flight.children or ())  # already running here: taken in any case
            certain = sum(1 for a in request.arrivals if len(a.predecessors) == 1)
            request.take = ahead + min(certain - ahead, free)
            free -= request.take - ahead
            if flight.held_limit is not None:
                request.held_limit = flight.held_limit  # the commit frees the slot
        # A claim in the same round trip fills slots the commits free; while the claim loop
        # waits for the queue's marker the queue had nothing ready, and whatever the commits
        # leave on it sets the marker (commit.lua): no claim is sent.
        claim_max = 0 if self._awaiting_work else free

        async def send(requests: list[CommitRequest]) -> Any:
            return await self.queue.commit(requests, claim_max, self.lease_ms, self.token_prefix)

        self._reserved += claim_max
        try:
            result = await self._send([request for request, _ in items], send)
        finally:
            self._reserved -= claim_max
        for index, (request, flight) in enumerate(items):
            reply = _UNREACHABLE if result is None else result[0][index]
            dropped = flight.dropped
            self._settle(flight, request, reply)
            ok = not dropped and not isinstance(reply, BaseException) and reply.code == "ok"
            taken = reply.taken if ok and not isinstance(reply, BaseException) else []
            if flight.children is not None:
                tokens = {j.id: j.token for j in taken}
                confirmed = set()
                for child in flight.children:
                    if tokens.get(child.job_id) == child.token:
                        confirmed.add(child.job_id)
                        self._confirm(child)
                    else:  # a job taken with another token runs again, on the reply's state
                        self._drop(child)
                flight.children = None
                taken = [j for j in taken if j.id not in confirmed]
            if taken:
                assert not isinstance(reply, BaseException)
                # the run as it is now: sent back when this worker's snapshot was stale, else
                # the snapshot plus this commit's writes
                if reply.state is not None:
                    run = ClaimedRun(RUNNING, reply.state, reply.version, flight.run.traceparent)
                else:
                    run = flight.run.after(request, reply.version)
                self.stats.continued += len(taken)
                self._launch(run, taken, sole=reply.detail == "1" and len(reply.taken) == 1)
        if result is not None and result[1] is not None:
            next_due_ms, claimed_runs, jobs, rejected = result[1]
            self.stats.claims += 1
            self._next_due_ms = next_due_ms
            self._report_rejected(rejected)
            self._launch_all(claimed_runs, jobs)

    async def _flush_history(self, items: Sequence[tuple[Any, _InFlight]]) -> None:
        """History on: the entries of a batch's jobs, in one round trip before the batch itself,
        so a run's history is complete once its end is committed. A failure loses the entries
        (logged), never the batch."""
        if self.history is None:
            return
        entries = [entry for _, flight in items if flight.history for entry in flight.history]
        if not entries:
            return
        try:
            await self.history.append(entries)
        except (ConnectionError, _core.RedisCommandError) as exc:
            self.stats.redis_errors += 1
            self.log.warning("%d history entries not recorded: %s", len(entries), exc)

    async def _flush_retries(self, items: list[tuple[_Retry, _InFlight]]) -> None:
        await self._flush_history(items)
        replies = await self._send([request for request, _ in items], self.queue.retry)
        for _, flight in items:
            if replies is None:
                self.log.warning(
                    "job %s: its retry could not be sent; it returns to the queue when its "
                    "lease ends",
                    flight.job_id,
                )
            else:
                self.stats.retried += 1
                if self.step_observer is not None:
                    elapsed = time.perf_counter() - flight.started
                    self.step_observer(flight.job.blueprint_id, elapsed, "retried")
            self._forget(flight)

    async def _send(self, requests: list[Any], send: Any) -> Any:
        """One batched round trip; None if it failed (the jobs return to the queue when their
        leases lapse).

        The connection retries LOADING, BUSY and connection failures until its retry deadline
        (rust/src/retry.rs): commits and retries are safe to send again (lease tokens and done
        markers), so a Redis restart costs a pause, not the batch.
        """
        try:
            return await send(requests)
        except (ConnectionError, _core.RedisCommandError) as exc:
            self.stats.redis_errors += 1
            self.log.warning("commit round trip failed: %s", exc)
            return None
        except Exception:  # a reply the parser refused (a bug): the commit loop must go on
            self.log.exception("commit round trip failed unexpectedly")
            return None

    # ------------------------------------------------------------------ leases

    async def _heartbeat_loop(self) -> None:
        """Leases are renewed by the Rust heartbeat; here, stop the nodes it reports, and the
        nodes of runs announced on the queue's stops channel (failed or cancelled elsewhere)."""
        self.queue.start_heartbeat(self.lease_ms, self.renew_ms)
        self.queue.listen_for_stops()
        try:
            while True:
                await asyncio.sleep(0.1)
                for run_id in self.queue.stopped_runs():
                    self._stop_run_locally(run_id, except_job="")
                for jid, token, status in self.queue.lease_events():
                    flight = self._in_flight.get(jid)
                    if flight is None or flight.token != token:
                        continue  # that claim already ended, or a newer one replaced it
                    if flight.task is None or flight.task.done():
                        continue
                    if status == "lost":
                        self.log.warning("job %s: lease lost; abandoning it", jid)
                    else:
                        flight.run_ended = True
                        flight.cancelled.set()
                    flight.task.cancel()
        finally:
            self.queue.stop_heartbeat()

    def _stop_run_locally(self, run_id: str, except_job: str) -> None:
        """The run ended early (failed here or elsewhere, cancelled): stop this process's nodes
        of it right away (those already committing are left to finish)."""
        for flight in list(self._in_flight.values()):
            if (
                flight.run_id == run_id
                and flight.job_id != except_job
                and not flight.committing
                and flight.task is not None
            ):
                flight.run_ended = True
                flight.cancelled.set()
                flight.task.cancel()

    async def _stalled_loop(self) -> None:
        """At start and then every interval: return stalled jobs to the queue (every active
        job, a slice per script call), check the server is still safe (an evicting policy set
        later pauses claiming), and publish the blueprints again (a Redis that lost its data, or
        a FLUSHALL, must not leave clients unable to start runs while this worker serves).
        Checking at start matters: a fleet that restarts more often than the interval would
        otherwise never check; a named worker also releases its previous incarnation's leases
        then, unguarded, so its jobs come back at once."""
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.stalled_interval_s)
            try:
                await self._beat()
                await self.queue.sweep_limits(SWEEP_GROUPS)
                if first and self.name is not None:
                    requeued = await self.queue.requeue_stalled(
                        0, f"{self.name}@", f"{self.token_prefix}:"
                    )
                else:
                    requeued = await self.queue.requeue_stalled(int(self.stalled_interval_s * 1000))
                first = False
                if requeued:
                    self.stats.stalled_requeued += len(requeued)
                    self.log.warning(
                        "stalled jobs: %d returned to the queue (their workers died)", len(requeued)
                    )
                await self._check_server()
            except (ConnectionError, _core.RedisCommandError):
                self.stats.redis_errors += 1

    async def _beat(self) -> None:
        """Renew this worker's heartbeat record (`workers.py`) and name its connections; publish
        the blueprints again when the queue lacks one (Redis lost its data, a FLUSHALL): clients
        must not be told that nobody serves a blueprint while this worker does."""
        served = {bp.id: bp.version or "" for bp in self.options.blueprints.values()}
        record = own_record(
            self.token_prefix, self.queue_name, served, self.concurrency,
            len(self._in_flight), self._started_ms, self.name,
        )  # fmt: skip
        ttl_ms = int(heartbeat_ttl(self.stalled_interval_s) * 1000)
        missing, named = await self.queue.beat(
            self.token_prefix, record.fields(), ttl_ms, list(served)
        )
        if missing:
            self.log.warning(
                "blueprints %s missing on the queue (Redis lost its data?): published again",
                ", ".join(sorted(missing)),
            )
            await self.publish()
        if not named and not self._unnamed_warned:
            self._unnamed_warned = True
            self.log.warning(
                "Redis refused CLIENT SETNAME (ACL without +client|setname?): BullMQ tools will "
                "not list this worker; flowcraft-fast inspect still does"
            )

    async def _check_server(self) -> None:
        """Pause claiming while the server may evict workflow state; say so once, and once
        when it is safe again."""
        if self.server_check is None:
            return
        try:
            await self.server_check()
        except UnsafeRedisError as exc:
            if self._safe.is_set():
                self.log.error("not claiming jobs until this is fixed: %s", exc)
                self._safe.clear()
            return
        if not self._safe.is_set():
            self.log.warning("the Redis server is safe again: claiming jobs")
            self._safe.set()


def check_worker_name(name: str) -> None:
    """A worker name ends up in every lease it holds: short, printable, no `@` (the separator
    from the incarnation) and no whitespace."""
    if not name or len(name) > 100 or "@" in name or any(c.isspace() for c in name):
        raise ValueError(f"worker name {name!r}: 1-100 characters, without '@' or whitespace")


_UNREACHABLE = ConnectionError("could not reach Redis to commit")


def _fused(
    items: list[tuple[CommitRequest, _InFlight]],
) -> list[tuple[CommitRequest, _InFlight]]:
    """The batch with each speculative job's "ok" commit right behind its parent's group and
    marked `follows`: one script call then commits a whole speculative chain (or fan-out),
    and commit.lua creates each such job as it finishes it, without a lock or a trip through
    `active`. Every other commit starts a call of its own; the order within a group (a parent
    before its children) is the batch's."""
    groups: list[list[tuple[CommitRequest, _InFlight]]] = []
    group_of: dict[int, list[tuple[CommitRequest, _InFlight]]] = {}
    for item in items:
        request, flight = item
        parent = flight.parent
        group = group_of.get(id(parent)) if parent is not None and request.mode == "ok" else None
        request.follows = group is not None
        if group is None:
            group = []
            groups.append(group)
        group.append(item)
        group_of[id(flight)] = group
    if len(groups) == len(items):
        return items
    return [item for group in groups for item in group]


__all__ = ["NodeOutcome", "Worker", "WorkerStats"]
