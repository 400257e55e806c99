"""Type stubs for the native module `flowcraft_fast._core` (kept honest by mypy.stubtest)."""

from collections.abc import Sequence
from typing import Protocol, final

__all__ = [
    "ClaimedJob",
    "CommitReply",
    "History",
    "Queue",
    "RedisCommandError",
    "RedisConnection",
    "RedisConnectionError",
    "StateStore",
    "__version__",
    "script_source",
    "settle_at_exit",
    "state_key",
]
__version__: str

class RedisConnectionError(ConnectionError): ...
class RedisCommandError(RuntimeError): ...

@final
class RedisConnection:
    def __new__(
        cls,
        url: str,
        *,
        connect_timeout: float = 5.0,
        response_timeout: float = 30.0,
        retry_deadline: float = 30.0,
        ca_certs: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> RedisConnection: ...
    @property
    def server(self) -> str: ...
    @property
    def wait_replicas(self) -> int:
        """Replicas every script pipeline waits for (WAIT); 0: none."""
    @property
    def replica_wait_timeouts(self) -> int:
        """Script pipelines whose WAIT timed out before enough replicas acknowledged."""
    @property
    def retry_deadline(self) -> float:
        """Seconds a call keeps retrying LOADING, BUSY and connection failures (0: none)."""
    async def ping(self) -> str: ...
    async def config_get(self, name: str) -> str | None: ...
    async def info(self, section: str) -> dict[str, str]: ...
    async def topology(self) -> str:
        """ "single", "cluster" or "sentinel": what the URL turned out to be (connects)."""
    async def get(self, key: str) -> str | None: ...
    async def set_if_absent(self, key: str, value: str) -> str:
        """SET NX, then the key's value (`value` when it was absent)."""

@final
class StateStore:
    def __new__(cls, connection: RedisConnection, *, key_prefix: str = ...) -> StateStore: ...
    async def get(self, run_id: str, field: str) -> str | None: ...
    async def set(self, run_id: str, field: str, value: str) -> None: ...
    async def has(self, run_id: str, field: str) -> bool: ...
    async def delete(self, run_id: str, field: str) -> bool: ...
    async def get_all(self, run_id: str) -> dict[str, str]: ...
    async def patch(self, run_id: str, sets: list[tuple[str, str]], deletes: list[str]) -> None: ...

@final
class ClaimedJob:
    """A job a claim handed to this worker, with what its node needs to run."""

    def __new__(
        cls,
        id: str,
        token: str,
        data: str,
        run_id: str,
        target_key: str,
        blueprint_id: str,
        blueprint_version: str,
        opts: str,
        input: str,
    ) -> ClaimedJob:
        """A job run ahead of the commit that claims it (speculative continuation): its
        parent's commit takes it with `token` only when the prediction holds. `target_key`
        is `<iteration>|<node id>`; ValueError otherwise."""
    @property
    def id(self) -> str: ...
    @property
    def token(self) -> str:
        """The lease token the commit must present (fencing)."""
    @property
    def data(self) -> str:
        """The job data, JSON text."""
    @property
    def run_id(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def iteration(self) -> str:
        """As the data gives it: "0", "3", "1.2"."""
    @property
    def blueprint_id(self) -> str: ...
    @property
    def blueprint_version(self) -> str:
        """ "" when the data has none."""
    @property
    def attempts_made(self) -> int: ...
    @property
    def attempts_started(self) -> int: ...
    @property
    def opts(self) -> str: ...
    @property
    def input(self) -> str | None:
        """What its incoming edges carried (JSON, or "\\x01" for a skip token); None for a
        start node."""
    @property
    def resume(self) -> str | None:
        """`{output, action}` JSON a client resumed a waiting node with."""
    @property
    def slept(self) -> bool: ...
    @property
    def stalls(self) -> int:
        """How often the job's lease expired while a worker held it (its workers died)."""
    @property
    def held_limit(self) -> str:
        """The concurrency group (digest) whose slot the commit that took this job acquired
        for it; "" when it holds none yet."""
    @property
    def node_key(self) -> str:
        """`<iteration>|<node id>`."""

@final
class CommitReply:
    """What one commit did (see `commit.lua`)."""

    @property
    def code(self) -> str:
        """ "ok", "dup", "terminal", "lost" or "error"."""
    @property
    def detail(self) -> str:
        """For "ok": the run's outstanding job count, or "failed" / "awaiting"."""
    @property
    def fired(self) -> str:
        """Node keys of the successor jobs the commit created, separated by "\\x1f"."""
    @property
    def taken(self) -> list[ClaimedJob]:
        """The successor jobs it claimed for this worker (local continuation)."""
    @property
    def state(self) -> dict[str, str] | None:
        """The run's state fields after the commit, when it took a job and the request's
        `known_version` was stale (None: the snapshot plus the commit's writes is the state)."""
    @property
    def version(self) -> int:
        """The run's state version after the commit (-1 when not reported)."""

_ClaimedRuns = dict[str, tuple[str, dict[str, str], int, str | None, int]]
"""run id -> (run status, run state fields as JSON text, state version, the W3C traceparent its
client stored at start or None, its outstanding jobs or -1), once per run."""

_ClaimReply = tuple[int, _ClaimedRuns, list[ClaimedJob], list[tuple[str, str]]]
"""(next delayed job due time in ms or 0, runs, jobs)."""

class _ArrivalRequest(Protocol):
    """Read by attribute (`flowcraft_fast.distributed.wire.ArrivalRequest`)."""

    target_key: str
    source: str
    value: str
    strategy: str
    predecessors: list[str]
    job_id: str
    job_data: str
    job_opts: str

class _CommitRequest(Protocol):
    """Read by attribute (`flowcraft_fast.distributed.wire.CommitRequest`)."""

    job_id: str
    token: str
    run_id: str
    node_key: str
    mode: str
    result: str
    payload: str
    sets: list[tuple[str, str]]
    deletes: list[str]
    take: int
    blueprint_id: str
    blueprint_version: str
    known_version: int
    stacktrace: str
    @property
    def arrivals(self) -> Sequence[_ArrivalRequest]: ...

class _StartRequest(Protocol):
    """Read by attribute (`flowcraft_fast.distributed.wire.StartRequest`)."""

    run_id: str
    blueprint_id: str
    version: str
    sets: list[tuple[str, str]]
    jobs: list[tuple[str, str, str, str]]
    traceparent: str
    priority: int
    singleton: str

@final
class History:
    """The history streams of one queue's (or partition's) runs (rust/src/history.rs): one
    Redis Stream per run, `<run prefix>workflow:history:<runId>`, each kept to its last
    `max_entries` entries (exactly up to 1000, approximately above) and expiring `state_ttl_s`
    (the queue's) after its last append. Entries are (run id, type, JSON data) on the way in,
    (entry id, type, JSON data) on the way out."""

    def __new__(cls, queue: Queue, max_entries: int) -> History: ...
    @property
    def max_entries(self) -> int: ...
    def key(self, run_id: str) -> str:
        """The run's stream key."""
    async def append(self, entries: list[tuple[str, str, str]]) -> None:
        """Append (run id, type, JSON data) entries in order, in one pipeline."""
    async def read(self, run_id: str) -> list[tuple[str, str, str]]:
        """Every entry of the run, oldest first: (entry id, type, JSON data)."""

@final
class Queue:
    def __new__(
        cls,
        connection: RedisConnection,
        name: str,
        *,
        prefix: str = ...,
        run_prefix: str = ...,
        state_ttl_s: int = 86400,
        keep_completed: int = 1000,
        keep_failed: int = 5000,
        job_events: bool = False,
    ) -> Queue: ...
    @property
    def key_base(self) -> str: ...
    async def claim(self, max_jobs: int, lease_ms: int, token_prefix: str) -> _ClaimReply: ...
    async def wait_for_work(self, timeout_s: float) -> bool: ...
    def start_heartbeat(self, lease_ms: int, renew_ms: int = 0) -> None: ...
    def stop_heartbeat(self) -> None: ...
    def listen_for_stops(self) -> None: ...
    def stopped_runs(self) -> list[str]: ...
    def track(self, job_id: str, token: str, run_id: str) -> None: ...
    def untrack(self, job_id: str, token: str) -> None: ...
    def lease_events(self) -> list[tuple[str, str, str]]: ...
    def stop_waiting(self) -> None:
        """The worker stops: a wait still blocked in Redis gives back the marker it takes."""
    def lease_stats(self) -> tuple[int, int, int]:
        """(tracked jobs, renew calls made, renew calls that failed)."""
    async def beat(
        self, worker_id: str, fields: list[tuple[str, str]], ttl_ms: int, served: list[str]
    ) -> tuple[list[str], bool]:
        """Write this worker's heartbeat record (expiring after `ttl_ms`) and name its
        connections the way BullMQ does; (served blueprint ids the queue lacks, whether Redis
        accepted the connection name)."""
    async def leave(self, worker_id: str) -> None:
        """Remove this worker's heartbeat record."""
    async def admit_many(
        self, batch: Sequence[tuple[str, str, tuple[str, str, int], tuple[str, str, int, int]]]
    ) -> list[tuple[str, int]]:
        """limit.lua's verdicts for claimed jobs of limited nodes, one round trip: ("ok" |
        "parked" | "delay" | "lost" | "error: ...", delay ms) each; a job is (job id, token,
        (digest, name, limit), (digest, name, max, window ms)), an empty digest for a limit
        not set."""
    async def release_limits(self, groups: list[tuple[str, list[str]]]) -> None:
        """Free the slots of jobs that left this worker ((digest, job ids) per group) and fill
        the groups' free slots from their waiters."""
    async def sweep_limits(self, max_groups: int) -> int:
        """Promote the waiters of up to `max_groups` groups whose holders died."""
    async def limit_stats(self) -> list[tuple[str, int, int, int]]:
        """The concurrency groups: (name, limit, holding, waiting)."""
    async def live_workers(self) -> list[dict[str, str]]:
        """The heartbeat records of the queue's live workers, least recent beat first."""
    async def commit(
        self,
        batch: Sequence[_CommitRequest],
        claim_max: int = 0,
        lease_ms: int = 30000,
        token_prefix: str = ...,
    ) -> tuple[list[CommitReply], _ClaimReply | None]: ...
    async def retry(self, batch: list[tuple[str, str, int, str, str, str]]) -> list[str]: ...
    async def renew(self, jobs: list[tuple[str, str, str]], lease_ms: int) -> list[str]: ...
    async def requeue_stalled(
        self, guard_ms: int, release_prefix: str = ..., own_prefix: str = ...
    ) -> list[str]: ...
    async def start_runs(self, batch: Sequence[_StartRequest]) -> list[str]: ...
    async def cancel_run(self, run_id: str, payload: str) -> str: ...
    async def resume_run(
        self, run_id: str, node_key: str, job_id: str, data: str, opts: str, payload: str
    ) -> str: ...
    async def send_event(
        self,
        run_id: str,
        name: str,
        payload: str,
        delivery: str,
        node_key: str,
        job_id: str,
        data: str,
        opts: str,
    ) -> str:
        """event.lua: "delivered", "buffered", "duplicate", "missing", "ended" or
        "retry:<node key>"."""
    async def adopt_run(
        self, run_id: str, blueprint_id: str, version: str, starts: list[tuple[str, str]]
    ) -> str: ...
    async def reconcile_run(
        self, run_id: str, candidates: list[tuple[str, str, str, str, str, str]]
    ) -> list[str]: ...
    async def stalled_runs(
        self, idle_ms: int, offset: int, count: int
    ) -> list[tuple[str, int]]: ...
    async def survey_page(
        self, threshold_ms: int, cursor: str, count: int
    ) -> tuple[str | None, int, int, list[str]]: ...
    async def survey_keys(
        self, threshold_ms: int, cursor: str, count: int
    ) -> tuple[str | None, int, int, list[str]]: ...
    async def run_joins(self, run_id: str) -> dict[str, str]: ...
    async def run_info(self, run_id: str) -> tuple[dict[str, str], str | None]: ...
    async def wait_result(self, run_id: str, timeout_s: float) -> tuple[str, dict[str, str]] | None:
        """Wait until the run writes its status (terminal or awaiting): (status JSON, the run's
        state fields), read in one round trip when a message woke the wait, in two when the
        status was set before; None on timeout or a dropped subscription."""
    async def publish_blueprints(self, items: list[tuple[str, str]]) -> None: ...
    async def get_blueprint(self, blueprint_id: str) -> str | None: ...
    async def counts(self) -> dict[str, int]: ...
    async def list_runs(
        self,
        ended: bool,
        since_ms: int | None = None,
        before_ms: int | None = None,
        offset: int = 0,
        count: int = 100,
    ) -> list[tuple[str, int, dict[str, str]]]:
        """A listing page of runs, highest score first: ended runs (scored by their end, ms)
        or unfinished ones (scored by their last progress); (run id, score, the run meta's
        status, blueprintId, blueprintVersion, startedAt, endedAt, pending when present)."""

def script_source(name: str) -> str:
    """The Lua source of a queue script exactly as Redis runs it (`lib.lua` prepended), or of
    `"lib"` itself. KeyError for an unknown name."""

def state_key(prefix: str, run_id: str) -> str: ...
def settle_at_exit() -> None:
    """Registered with atexit: lets an I/O thread finish handing a result to asyncio."""
