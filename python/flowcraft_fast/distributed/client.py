"""`FlowClient`: start distributed runs, wait for their results, query and steer them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .. import _core, jsoncodec
from ..blueprint import Blueprint, load_blueprint
from ..errors import FlowcraftError
from ..runtime.graph import CompiledGraph, RunGraph
from ..runtime.history import (
    START,
    HistoryEntry,
    HistoryError,
    decode,
    fork_point,
    replay_entries,
    start_entry,
)
from ..runtime.types import WorkflowError, WorkflowResult
from ..runtime.vocabulary import (
    AWAIT,
    AWAITING,
    AWAITING_KEY,
    BOOKKEEPING_PREFIXES,
    node_key,
    split_node_key,
)
from ..tracing import end_start_span, start_spans
from .context import RedisContext
from .jobs import check_run_id, job_data, job_id, job_opts
from .partitions import Layout, partition_of, summed
from .store import RedisCoordinationStore
from .wire import StartRequest

RunToStart = (
    tuple[str, Mapping[str, Any] | None]
    | tuple[str, Mapping[str, Any] | None, str | None]
    | Mapping[str, Any]
)
"""A run for `FlowClient.start_many`: (blueprint id, initial context[, run id]) or a mapping
with the keys `blueprint_id`, `initial_context`, `run_id`, `priority`, `singleton_key` (all
but the first optional)."""

SINGLETON_HELD = "singleton:"
"""start.lua's answer when a live run holds the singleton key: the prefix of that run's id."""
MAX_PRIORITY = 2_097_152
"""BullMQ's largest job priority (2^21)."""
MAX_SINGLETON_KEY = 512
"""Characters in a singleton key, at most."""
_SPEC_KEYS = {"blueprint_id", "initial_context", "run_id", "priority", "singleton_key"}


class _RunSpec(NamedTuple):
    blueprint_id: str
    context: Mapping[str, Any] | None
    run_id: str | None
    priority: int
    singleton: str
    start_at: str | None = None
    """A fork's node to start at (None: the blueprint's start nodes)."""


def check_priority(priority: object, where: str = "priority") -> int:
    """BullMQ's priority: an int 0 (none) .. 2,097,152; lower runs first."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"{where} must be an int, not {type(priority).__name__}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"{where} must be 0 (none) .. {MAX_PRIORITY:,}, not {priority}")
    return priority


def check_singleton_key(key: object, where: str = "singleton_key") -> str:
    if not isinstance(key, str):
        raise TypeError(f"{where} must be a string, not {type(key).__name__}")
    if not key or len(key) > MAX_SINGLETON_KEY:
        raise ValueError(f"{where} must be 1-{MAX_SINGLETON_KEY} characters, not {len(key)}")
    return key


def _run_spec(index: int, run: Any) -> _RunSpec:
    priority: object = 0
    singleton: object = None
    if isinstance(run, Mapping):
        unknown = set(run) - _SPEC_KEYS
        if unknown or "blueprint_id" not in run:
            raise ValueError(
                f"run #{index}: a mapping needs 'blueprint_id' (and optionally "
                f"'initial_context', 'run_id', 'priority', 'singleton_key'); got keys "
                f"{sorted(map(str, run))}"
            )
        bp_id, ctx, run_id = run["blueprint_id"], run.get("initial_context"), run.get("run_id")
        priority, singleton = run.get("priority", 0), run.get("singleton_key")
    elif isinstance(run, tuple) and len(run) in (2, 3):
        bp_id, ctx, run_id = run[0], run[1], run[2] if len(run) == 3 else None
    else:
        raise TypeError(
            f"run #{index}: expected (blueprint_id, initial_context[, run_id]) or a mapping, "
            f"not {type(run).__name__}"
        )
    if not isinstance(bp_id, str):
        raise TypeError(f"run #{index}: blueprint id must be a string, not {bp_id!r}")
    if ctx is not None and not isinstance(ctx, Mapping):
        raise TypeError(
            f"run #{index}: initial context must be a mapping, not {type(ctx).__name__}"
        )
    return _RunSpec(
        bp_id,
        ctx,
        check_run_id(run_id) if run_id is not None else None,
        check_priority(priority, f"run #{index}: priority"),
        "" if singleton is None else check_singleton_key(singleton, f"run #{index}: singleton_key"),
    )


def _initial_sets(
    context: Mapping[str, Any] | None, index: int, many: bool
) -> list[tuple[str, str]]:
    where = f"run #{index}: " if many else ""
    return [
        (str(k), jsoncodec.dumps(v, what=f"{where}initial context key {k!r}"))
        for k, v in (context or {}).items()
    ]


async def _start_runs(queue: Any, requests: list[StartRequest]) -> list[str]:
    """start.lua for `requests`; when someone traces, each under a `start` span whose W3C
    traceparent the run keeps (its trace begins here, see `tracing`)."""
    spans = start_spans(requests)
    if spans is None:
        return list(await queue.start_runs(requests))
    try:
        outcomes: list[str] = await queue.start_runs(requests)
    except BaseException as exc:
        for span in spans:
            end_start_span(span, exc)
        raise
    for span, outcome in zip(spans, outcomes, strict=False):
        end_start_span(span, outcome)
    return outcomes


class RunNotFound(FlowcraftError, LookupError):
    """No run with this id exists (or it expired)."""


class FlowClient:
    """Talks to the queue that `flowcraft-fastd` workers serve.

    `conn` is a URL, a redis-py client, or a `RedisCoordinationStore` to share. Every call
    retries LOADING, BUSY and connection failures (a Redis restart) for up to `retry_deadline`
    seconds (default $FLOWCRAFT_REDIS_RETRY_DEADLINE, else 30; a store brings its own), then
    raises `RedisConnectionError` or `RedisCommandError` saying how long it tried.
    """

    def __init__(
        self,
        conn: Any,
        queue_name: str = "flowcraft-queue",
        *,
        retry_deadline: float | None = None,
        history: int = 0,
    ) -> None:
        self.store = (
            conn
            if isinstance(conn, RedisCoordinationStore)
            else RedisCoordinationStore(conn, retry_deadline=retry_deadline)
        )
        self.queue_name = queue_name
        self.queue = self.store.queue(queue_name)
        """The queue of the first partition (the whole queue when it has one partition on a
        single Redis); set once the layout is known (`queues()`)."""
        self.layout: Layout | None = None
        """The queue's partitions (read from Redis on first use)."""
        self._queues: list[_core.Queue] = []
        self._states: list[_core.StateStore] = []
        self._blueprints: dict[str, tuple[str, Blueprint]] = {}
        self._secret: str | None = None
        if history < 0:
            raise ValueError(f"history must be 0 (off) or a number of entries, not {history}")
        self.history_entries = history
        """History on (docs/history.md): the runs this client starts get their initial
        context recorded as their history's first entry (the workers record the rest)."""

    async def queues(self) -> list[_core.Queue]:
        """One queue per partition (partitions.py), found on first use: the partition count
        the workers published, and whether the Redis is a cluster. Until a worker has
        published the count it is read again on every call."""
        if self.layout is None or not self.layout.published:
            layout = await self.store.layout(self.queue_name)
            self._queues = self.store.partition_queues(layout)
            self._states = [
                self.store.state_store(layout.run_prefix(i, self.store.key_prefix))
                for i in range(layout.count)
            ]
            self.queue = self._queues[0]
            self.layout = layout
        return self._queues

    async def queue_for(self, run_id: str) -> _core.Queue:
        """The queue of the partition `run_id` lives in."""
        queues = await self.queues()
        assert self.layout is not None
        return queues[self.layout.of(run_id)]

    async def _states_for(self, run_id: str) -> _core.StateStore:
        await self.queues()
        assert self.layout is not None
        return self._states[self.layout.of(run_id)]

    async def counts(self) -> dict[str, int]:
        """Jobs per BullMQ state, summed over the partitions (one round trip each)."""
        return summed(await asyncio.gather(*(q.counts() for q in await self.queues())))

    async def limit_stats(self) -> list[tuple[str, int, int, int]]:
        """Concurrency groups (name, limit, holding, waiting) of every partition."""
        per = await asyncio.gather(*(queue.limit_stats() for queue in await self.queues()))
        return [group for groups in per for group in groups]

    async def live_workers(self) -> list[Any]:
        """The live workers of every partition (`WorkerRecord`s; a process serving several
        partitions has one per partition), least recent beat first."""
        from .workers import live_workers

        per = await asyncio.gather(*(live_workers(queue) for queue in await self.queues()))
        found = [record for records in per for record in records]
        found.sort(key=lambda w: w.last_beat_ms)
        return found

    async def context(self, run_id: str) -> RedisContext:
        """The run's context in Redis (`RedisContext`), in whatever partition it lives."""
        await self.queues()
        assert self.layout is not None
        prefix = self.layout.run_prefix(self.layout.of(run_id), self.store.key_prefix)
        return RedisContext(self.store.connection, run_id, key_prefix=prefix)

    async def blueprint(self, blueprint_id: str) -> Blueprint:
        """The blueprint as the queue's workers published it (fetched now, then cached)."""
        raw = await (await self.queues())[0].get_blueprint(blueprint_id)
        if raw is None:
            self._blueprints.pop(blueprint_id, None)
            raise FlowcraftError(
                f"no worker on queue {self.queue_name!r} serves blueprint {blueprint_id!r} "
                "(start flowcraft-fastd with an app that registers it)"
            )
        cached = self._blueprints.get(blueprint_id)
        if cached is None or cached[0] != raw:
            cached = (raw, load_blueprint(raw))
            self._blueprints[blueprint_id] = cached
        return cached[1]

    async def start(
        self,
        blueprint_id: str,
        initial_context: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        *,
        priority: int = 0,
        singleton_key: str | None = None,
    ) -> str:
        """Create a run and enqueue its start nodes in one atomic step; returns the run id.

        Idempotent by `run_id`: when a run with that id exists (live or ended, until its keys
        expire), nothing is started and the id is returned. `priority` (BullMQ's: 1 first,
        2,097,152 last, 0 none; jobs without one are served before prioritized jobs) is carried
        by every job of the run. With `singleton_key`, nothing is started while a live run of
        this queue holds the same key: its id is returned instead; the key is free again when
        that run ends.

        The blueprint is cached; the start script checks that the workers still serve the
        cached version (one round trip), and a changed blueprint is fetched again.
        """
        run: dict[str, Any] = {
            "blueprint_id": blueprint_id,
            "initial_context": initial_context,
            "run_id": run_id,
            "priority": priority,
            "singleton_key": singleton_key,
        }
        return (await self.start_many([run]))[0]

    async def start_many(self, runs: Iterable[RunToStart]) -> list[str]:
        """Start many runs in one round trip (each run atomic on its own); returns their ids,
        in order. Each run is `(blueprint_id, initial_context)` or `(blueprint_id,
        initial_context, run_id)`, or a mapping with the keys `blueprint_id`,
        `initial_context` and `run_id` (the last two optional).

        Everything is checked first: a context that JSON cannot carry, a bad run id, priority
        or singleton key raises (naming the run's index) and nothing is started. A run whose id
        already exists is not started (its id is returned: starts are idempotent by run id),
        nor one whose singleton key a live run holds (that run's id is returned). A start sent
        again because its reply was lost (Redis restarting) is recognised as this call's own
        (each start carries a token): it is started once.
        """
        specs = [_run_spec(index, run) for index, run in enumerate(runs)]
        return await self._start_specs(specs)

    async def _start_specs(self, specs: list[_RunSpec]) -> list[str]:
        many = len(specs) > 1
        await self.queues()
        assert self.layout is not None
        ids = [self._run_id(index, spec, self.layout) for index, spec in enumerate(specs)]
        if len(set(ids)) != len(ids):
            raise ValueError("run ids must be distinct")
        sets = [_initial_sets(spec.context, index, many) for index, spec in enumerate(specs)]
        bps: dict[str, Blueprint] = {}
        for bp_id in dict.fromkeys(spec.blueprint_id for spec in specs):
            cached = self._blueprints.get(bp_id)
            bps[bp_id] = cached[1] if cached is not None else await self.blueprint(bp_id)
        if self.history_entries:  # before the runs exist: the workers' entries come after it
            await self._record_starts(ids, specs)
        pending = list(range(len(specs)))
        for _ in range(3):
            requests = []
            for i in pending:
                spec, bp = specs[i], bps[specs[i].blueprint_id]
                jobs = self._start_jobs(bp, ids[i], spec.start_at)
                requests.append(
                    StartRequest(
                        ids[i], bp.id, bp.version or "", sets[i], jobs, spec.priority,
                        spec.singleton,
                    )
                )  # fmt: skip
            outcomes = await self._start_partitioned(requests) if requests else []
            retry = []
            for i, outcome in zip(pending, outcomes, strict=True):
                if outcome.startswith(SINGLETON_HELD):
                    ids[i] = outcome.removeprefix(SINGLETON_HELD)
                elif outcome not in ("ok", "exists"):
                    retry.append(i)
            pending = retry
            if not pending:
                return ids
            for bp_id in dict.fromkeys(specs[i].blueprint_id for i in pending):
                bps[bp_id] = await self.blueprint(bp_id)  # unpublished raises; stale refetches
        raise FlowcraftError("the blueprints keep changing; try again")

    @staticmethod
    def _run_id(index: int, spec: _RunSpec, layout: Layout) -> str:
        """The run's id: the given one, or a new one. A singleton run must live in the
        partition of its singleton key (where start.lua keeps the key), so that one live run
        holds it across all partitions: a new id is drawn until it falls there; a given id
        that does not is refused."""
        if not spec.singleton or layout.count == 1:
            return spec.run_id or uuid.uuid4().hex
        home = partition_of(spec.singleton, layout.count)
        if spec.run_id is not None:
            if layout.of(spec.run_id) != home:
                raise ValueError(
                    f"run #{index}: run id {spec.run_id!r} lives in partition "
                    f"{layout.of(spec.run_id)}, but singleton key {spec.singleton!r} in "
                    f"partition {home} of {layout.count}: leave the run id out (one is drawn "
                    "in the right partition) or pick one that lives there"
                )
            return spec.run_id
        while True:
            run_id = uuid.uuid4().hex
            if layout.of(run_id) == home:
                return run_id

    async def _start_partitioned(self, requests: list[StartRequest]) -> list[str]:
        """start.lua for each request in its run's partition (one round trip per partition,
        concurrently); the outcomes in the order of `requests`."""
        queues = await self.queues()
        assert self.layout is not None
        if len(queues) == 1:
            return await _start_runs(queues[0], requests)
        groups: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self.layout.of(request.run_id), []).append(i)
        replies = await asyncio.gather(
            *(_start_runs(queues[p], [requests[i] for i in idx]) for p, idx in groups.items())
        )
        outcomes = [""] * len(requests)
        for idx, reply in zip(groups.values(), replies, strict=True):
            for i, outcome in zip(idx, reply, strict=True):
                outcomes[i] = outcome
        return outcomes

    @staticmethod
    def _start_jobs(
        bp: Blueprint, run_id: str, start_at: str | None = None
    ) -> list[tuple[str, str, str, str]]:
        version = bp.version or ""
        graph = CompiledGraph.from_blueprint(bp)
        jobs = []
        for node_id in graph.start_nodes if start_at is None else (start_at,):
            jid = job_id(run_id, node_id, ())
            jobs.append(
                (
                    jid,
                    node_key(node_id, ()),
                    job_data(run_id, bp.id, version, node_id, ()),
                    job_opts(graph.nodes[node_id], jid),
                )
            )
        return jobs

    # ------------------------------------------------------------------ history, time travel

    async def _history_of(self, run_id: str, max_entries: int = 1) -> _core.History:
        return _core.History(await self.queue_for(run_id), max_entries)

    async def _record_starts(self, ids: list[str], specs: list[_RunSpec]) -> None:
        """The `workflow:start` entries (initial contexts) of runs to start, one round trip per
        partition."""
        per: dict[int, list[tuple[str, str, str]]] = {}
        assert self.layout is not None
        for run_id, spec in zip(ids, specs, strict=True):
            entry = (run_id, START, start_entry(spec.blueprint_id, spec.context or {}))
            per.setdefault(self.layout.of(run_id), []).append(entry)
        await asyncio.gather(
            *(
                _core.History(self._queues[p], self.history_entries).append(entries)
                for p, entries in per.items()
            )
        )

    async def history(self, run_id: str) -> list[HistoryEntry]:
        """The recorded history of `run_id`, oldest first (docs/history.md); empty when it has
        none (history off, or expired)."""
        raw = await (await self._history_of(run_id)).read(run_id)
        return [decode(*entry) for entry in raw]

    async def replay(self, run_id: str, until: str | None = None) -> dict[str, Any]:
        """The run's context as it was after the history entry `until` (an entry's `id`;
        None: after the last one), rebuilt from its recorded history: as
        `FlowRuntime.replay`. Raises `HistoryError` when the history cannot say."""
        return replay_entries(await self.history(run_id), until, run_id=run_id)

    async def fork(
        self, run_id: str, from_node: str, *, new_run_id: str | None = None, priority: int = 0
    ) -> str:
        """Start a new run of the recorded run's blueprint at `from_node`, with the context as
        recorded just before `from_node` first started (and the input it was given then);
        returns its id (`wait` for its result). Limits: docs/history.md."""
        point = fork_point(await self.history(run_id), from_node, run_id=run_id)
        bp = await self.blueprint(point.blueprint_id)
        if from_node not in CompiledGraph.from_blueprint(bp).nodes:
            raise HistoryError(f"blueprint {bp.id!r} has no node {from_node!r} to fork from")
        spec = _RunSpec(
            bp.id, point.context, None if new_run_id is None else check_run_id(new_run_id),
            check_priority(priority), "", from_node,
        )  # fmt: skip
        return (await self._start_specs([spec]))[0]

    async def cancel(self, run_id: str) -> bool:
        """End a running or awaiting run as `cancelled`, keeping its context.

        Returns True when this call cancelled it, False when it had already ended; raises
        RunNotFound for an unknown run. Queued nodes are dropped; running ones are stopped at
        their worker's next lease renewal and their results discarded.
        """
        outcome = await (await self.queue_for(run_id)).cancel_run(
            run_id, jsoncodec.dumps({"status": "cancelled", "reason": "cancelled by a client"})
        )
        if outcome == "missing":
            raise RunNotFound(f"no run {run_id!r}")
        return outcome == "ok"

    async def resume(
        self, run_id: str, node_id: str, output: Any = None, action: str | None = None
    ) -> None:
        """Give the waiting node `node_id` its output (and an optional routing action)."""
        if action is not None and not isinstance(action, str):  # a worker would reject the job
            raise TypeError(f"resume action must be a string or None, not {action!r}")
        queue = await self.queue_for(run_id)
        meta, _ = await queue.run_info(run_id)
        if not meta:
            raise RunNotFound(f"no run {run_id!r}")
        waiting = [k for k in meta if k.startswith(AWAIT) and split_node_key(k)[1] == node_id]
        if not waiting:
            raise FlowcraftError(f"run {run_id!r} is not waiting at node {node_id!r}")
        key = waiting[0].removeprefix(AWAIT)
        jid, data, opts = await self._resume_job(run_id, meta, key, "r")
        outcome = await queue.resume_run(
            run_id,
            key,
            jid,
            data,
            opts,
            jsoncodec.dumps({"output": output, "action": action}, what="resume output"),
        )
        if outcome == "missing":
            raise RunNotFound(f"no run {run_id!r}")
        if outcome != "ok":
            raise FlowcraftError(f"run {run_id!r} is not waiting at node {node_id!r}")

    async def _resume_job(
        self, run_id: str, meta: Mapping[str, str], key: str, tag: str
    ) -> tuple[str, str, str]:
        """(job id, data, opts) of the job that carries a waiting node's result (`key`: its
        node key) to a worker."""
        node_id = split_node_key(key)[1]
        bp = await self.blueprint(meta.get("blueprintId", ""))
        iteration = RunGraph(CompiledGraph.from_blueprint(bp)).parse_iteration(
            node_id, split_node_key(key)[0]
        )
        jid = f"{job_id(run_id, node_id, iteration)}.{tag}{uuid.uuid4().hex[:8]}"
        data = job_data(run_id, bp.id, meta.get("blueprintVersion", ""), node_id, iteration)
        return jid, data, job_opts(bp.node(node_id), jid)

    async def send_event(
        self, run_id: str, name: str, payload: Any = None, *, delivery_id: str | None = None
    ) -> str:
        """Deliver event `name` to a run, whose `wait-for-event` node (params.event) takes it:
        "delivered" (the node waited and now runs on with the payload as its output) or
        "buffered" (kept in the run until the node waits for it: the node then takes it at
        once). Sent before, while or after the node waits, the event is never lost
        (event.lua orders it with the node's park).

        `delivery_id` makes the call idempotent: a second call with the same id changes
        nothing and returns "duplicate" (a replayed webhook; the ids are kept with the run).
        Without one, an id is drawn per call, so a resend after a lost reply is recognised.
        Raises RunNotFound for an unknown run, FlowcraftError for a run that ended.
        """
        from ..nodes.wait_event import event_name

        name = event_name({"event": name}, "send_event")
        text = jsoncodec.dumps(payload, what=f"event {name!r} payload")
        delivery = delivery_id if delivery_id is not None else uuid.uuid4().hex
        if not isinstance(delivery, str) or not 1 <= len(delivery) <= 200:
            raise ValueError(f"delivery_id must be a string of 1-200 characters, not {delivery!r}")
        queue = await self.queue_for(run_id)
        node_key, jid, data, opts = "", "", "", ""
        for _ in range(10):
            outcome = await queue.send_event(
                run_id, name, text, delivery, node_key, jid, data, opts
            )
            if outcome == "missing":
                raise RunNotFound(f"no run {run_id!r}")
            if outcome == "ended":
                raise FlowcraftError(f"run {run_id!r} has ended; event {name!r} not delivered")
            if outcome == "duplicate" and delivery_id is None:
                return "delivered"  # this call's own earlier send, whose reply was lost
            if not outcome.startswith("retry:"):
                return outcome
            node_key = outcome.removeprefix("retry:")
            meta, _ = await queue.run_info(run_id)
            jid, data, opts = await self._resume_job(run_id, meta, node_key, "e")
        raise FlowcraftError(f"run {run_id!r}: event {name!r} could not be delivered; try again")

    async def webhook_url_token(self, run_id: str, name: str) -> str:
        """A token for `POST /webhooks/<token>` (the dashboard server) that delivers event
        `name` to this run: `<run id>.<name>.<signature>`, an HMAC of both with the queue's
        webhook secret (made once, kept in Redis), so it cannot be guessed or altered."""
        from .webhooks import sign

        return sign(await self._webhook_secret(), run_id, name)

    async def _webhook_secret(self) -> str:
        """The queue's webhook secret: made once (SET NX) and kept in Redis; read once per
        client."""
        if self._secret is None:
            import secrets

            key = f"{self.store.queue_prefix}:{self.queue_name}:flowcraft:webhook-secret"
            self._secret = await self.store.connection.set_if_absent(key, secrets.token_hex(32))
        return self._secret

    async def status(self, run_id: str) -> str | None:
        meta, _ = await (await self.queue_for(run_id)).run_info(run_id)
        return meta.get("status")

    async def wait(self, run_id: str, timeout: float | None = 30.0) -> WorkflowResult:
        """Block until the run ends (or awaits); TimeoutError after `timeout` seconds.

        A dropped connection (Redis restarting) does not end the wait early: it subscribes
        again until the deadline, and only then raises the connection error it last met.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (1e9 if timeout is None else timeout)
        queue = await self.queue_for(run_id)
        while True:
            try:
                # None also when the subscription ended early (the connection dropped); the
                # run's state comes with its status (one round trip after the wake-up)
                ended = await queue.wait_result(run_id, max(0.0, deadline - loop.time()))
            except ConnectionError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
                continue
            if ended is not None or loop.time() >= deadline:
                break
        if ended is None:
            meta, _ = await queue.run_info(run_id)
            if not meta:
                raise RunNotFound(f"no run {run_id!r}")
            raise TimeoutError(f"run {run_id!r} did not finish within {timeout} s")
        return await self.result(run_id, *ended)

    async def result(
        self,
        run_id: str,
        raw_status: str | None = None,
        state_fields: dict[str, str] | None = None,
    ) -> WorkflowResult:
        """The run's result (RunNotFound while it has none); `raw_status` and `state_fields`
        when the caller read them already (`wait` does, in one round trip)."""
        queue = await self.queue_for(run_id)
        if raw_status is None:
            _, raw_status = await queue.run_info(run_id)
            if raw_status is None:
                raise RunNotFound(f"run {run_id!r} has no result yet")
        status = jsoncodec.loads(raw_status, what="run status")
        fields = state_fields
        if fields is None:
            fields = await (await self._states_for(run_id)).get_all(run_id)
        context = {k: jsoncodec.loads(v, what=f"context key {k!r}") for k, v in fields.items()}
        if status["status"] == AWAITING:  # as in memory: the nodes it waits at
            meta, _ = await queue.run_info(run_id)
            context[AWAITING_KEY] = list(
                dict.fromkeys(split_node_key(k)[1] for k in meta if k.startswith(AWAIT))
            )
        else:  # as in memory: bookkeeping leaves with the run
            context = {k: v for k, v in context.items() if not k.startswith(BOOKKEEPING_PREFIXES)}
        errors = [
            WorkflowError(e.get("nodeId"), str(e.get("message", "")), str(e.get("type", "")))
            for e in status.get("errors", [])
        ]
        return WorkflowResult(
            status=status["status"],
            context=context,
            serialized_context=jsoncodec.dumps(context),
            errors=errors,
            run_id=run_id,
        )
