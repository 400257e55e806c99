"""Startup safety checks on the Redis server: reachable, and not allowed to evict our keys.

Run state, leases and join arrivals live in ordinary keys; an evicting `maxmemory-policy`
would silently drop them and corrupt runs, so the daemon refuses such a server (SPEC 5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = ["RedisFacts", "RedisUnreachableError", "StartupError", "check_redis", "redact_url"]

log = logging.getLogger("flowcraft_fast.daemon")

CONNECT_TIMEOUT = 5.0


class StartupError(Exception):
    """The daemon cannot start safely; the message is one line meant for the operator."""


class RedisUnreachableError(StartupError):
    """Redis did not answer (refused, timed out, not resolvable): worth waiting for at boot,
    unlike an unsafe server, which stays unsafe."""


@dataclass(frozen=True)
class RedisFacts:
    """What the checks learned; None where the server would not say (ACL, renamed commands)."""

    version: str | None
    maxmemory_policy: str | None
    warnings: tuple[str, ...] = ()


async def check_redis(url: str, *, retry_deadline: float | None = None) -> RedisFacts:
    """Raise StartupError when Redis at `url` is unreachable (RedisUnreachableError) or may
    evict keys. `retry_deadline`: how long the first PING retries (default: the connection's,
    $FLOWCRAFT_REDIS_RETRY_DEADLINE else 30 s; the boot wait passes 0 and retries itself)."""
    where = redact_url(url)
    await _ping(url, where, retry_deadline)
    return await _inspect(url, where)


async def _ping(url: str, where: str, retry_deadline: float | None = None) -> None:
    from .. import _core
    from ..distributed.connection import open_connection

    try:
        conn = open_connection(
            url,
            connect_timeout=CONNECT_TIMEOUT,
            response_timeout=CONNECT_TIMEOUT,
            retry_deadline=retry_deadline,
        )
        await conn.ping()
    except _core.RedisConnectionError as exc:
        # The core's message already names the (redacted) server and the cause.
        raise RedisUnreachableError(_one_line(exc)) from None
    except OSError as exc:
        raise RedisUnreachableError(f"cannot reach Redis at {where}: {_one_line(exc)}") from None
    except (_core.RedisCommandError, ValueError) as exc:
        raise StartupError(f"cannot reach Redis at {where}: {_one_line(exc)}") from None


async def _inspect(url: str, where: str) -> RedisFacts:
    from .. import _core
    from ..distributed.connection import open_connection
    from ..distributed.safety import UnsafeRedisError, check_server

    conn = open_connection(url, connect_timeout=CONNECT_TIMEOUT, response_timeout=CONNECT_TIMEOUT)
    try:
        facts = await check_server(conn)
    except UnsafeRedisError as exc:
        raise StartupError(str(exc)) from None
    except (_core.RedisConnectionError, _core.RedisCommandError) as exc:
        raise StartupError(f"cannot query Redis at {where}: {_one_line(exc)}") from None
    return RedisFacts(
        version=facts.version, maxmemory_policy=facts.maxmemory_policy, warnings=facts.warnings
    )


def redact_url(url: str) -> str:
    """`url` without its password, fit for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
