"""Type stubs for the native module `flowcraft_fast._core` (kept honest by mypy.stubtest)."""

from typing import final

__all__ = [
    "Queue",
    "RedisCommandError",
    "RedisConnection",
    "RedisConnectionError",
    "StateStore",
    "__version__",
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
        ca_certs: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> RedisConnection: ...
    @property
    def server(self) -> str: ...
    async def ping(self) -> str: ...

@final
class StateStore:
    def __new__(cls, connection: RedisConnection, *, key_prefix: str = ...) -> StateStore: ...
    async def get(self, run_id: str, field: str) -> str | None: ...
    async def set(self, run_id: str, field: str, value: str) -> None: ...
    async def has(self, run_id: str, field: str) -> bool: ...
    async def delete(self, run_id: str, field: str) -> bool: ...
    async def get_all(self, run_id: str) -> dict[str, str]: ...
    async def patch(self, run_id: str, sets: list[tuple[str, str]], deletes: list[str]) -> None: ...

_ClaimedJob = tuple[
    str, str, str, int, int, str, str | None, str, dict[str, str], str | None, bool
]
"""(job id, lease token, data JSON, attempts made, attempts started, opts JSON,
input JSON carried by the job or None, run status, run state fields as JSON text,
resume payload JSON or None, slept flag)."""

_Arrival = tuple[str, str, str, str, list[str], str, str, str]
"""(target node key, predecessor id, value JSON or "\\x01" when skipped, join strategy,
all predecessor ids of the target, successor job id, successor job data, successor job opts)."""

_CommitRequest = tuple[
    str, str, str, str, str, str, str, list[tuple[str, str]], list[str], str, list[_Arrival]
]
"""(job id, token, run id, node key, mode ok|await|fail, job result text, status payload,
context sets, context deletes, route JSON, arrivals)."""

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
    ) -> Queue: ...
    @property
    def key_base(self) -> str: ...
    async def claim(
        self, max_jobs: int, lease_ms: int, token_prefix: str
    ) -> tuple[int, list[_ClaimedJob]]: ...
    async def wait_for_work(self, timeout_s: float) -> bool: ...
    async def commit(self, batch: list[_CommitRequest]) -> list[tuple[str, str]]: ...
    async def retry(self, batch: list[tuple[str, str, int, str, bool]]) -> list[str]: ...
    async def renew(self, jobs: list[tuple[str, str, str]], lease_ms: int) -> list[str]: ...
    async def requeue_stalled(
        self, max_stalls: int, guard_ms: int
    ) -> tuple[list[str], list[str]]: ...
    async def start_run(
        self,
        run_id: str,
        blueprint_id: str,
        version: str,
        sets: list[tuple[str, str]],
        jobs: list[tuple[str, str, str]],
    ) -> str: ...
    async def cancel_run(self, run_id: str, payload: str) -> str: ...
    async def resume_run(
        self, run_id: str, node_key: str, job_id: str, data: str, opts: str, payload: str
    ) -> str: ...
    async def run_info(self, run_id: str) -> tuple[dict[str, str], str | None]: ...
    async def wait_status(self, run_id: str, timeout_s: float) -> str | None: ...
    async def publish_blueprints(self, items: list[tuple[str, str]]) -> None: ...
    async def get_blueprint(self, blueprint_id: str) -> str | None: ...
    async def counts(self) -> dict[str, int]: ...

def state_key(prefix: str, run_id: str) -> str: ...
