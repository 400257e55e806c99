"""Is this Redis safe to keep workflow state in? Checked when a worker starts.

Run state, leases and join arrivals live in ordinary keys: an evicting `maxmemory-policy`
would silently drop them and corrupt runs, so such a server is refused (SPEC section 5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import _core
from ..errors import FlowcraftError

SAFE_POLICY = "noeviction"
MIN_VERSION = (6, 2)

log = logging.getLogger("flowcraft_fast")


class UnsafeRedisError(FlowcraftError):
    """The Redis server could lose workflow state (or is too old); the message says why."""


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the check learned; None where the server would not say (ACL, renamed commands)."""

    version: str | None
    maxmemory_policy: str | None
    warnings: tuple[str, ...] = ()


_WARNED: set[str] = set()
"""Servers whose policy could not be read, already warned about (the check repeats)."""


async def check_server(conn: _core.RedisConnection) -> ServerFacts:
    """Raise UnsafeRedisError for an evicting or too old server; connection errors propagate."""
    warnings: list[str] = []
    try:
        policy = await conn.config_get("maxmemory-policy")
    except _core.RedisCommandError as exc:
        # Managed Redis often denies CONFIG (ACL) or renames it; INFO memory tells the policy
        # too (the worker's ACL rules allow INFO). Only when both fail do we say so, loudly
        # and once per server, and go on rather than refuse a server that may be right.
        try:
            policy = (await conn.info("memory")).get("maxmemory_policy")
        except _core.RedisCommandError:
            policy = None
        if policy is None:
            warning = (
                f"cannot read maxmemory-policy from Redis at {conn.server} ({_one_line(exc)}); "
                f"make sure it is {SAFE_POLICY}, or workflow state may be evicted"
            )
            if conn.server not in _WARNED:
                _WARNED.add(conn.server)
                log.warning(warning)
            warnings.append(warning)
    if policy is not None and policy != SAFE_POLICY:
        raise UnsafeRedisError(
            f"Redis at {conn.server} has maxmemory-policy {policy}, which can evict workflow "
            f"state; set it to {SAFE_POLICY} (CONFIG SET maxmemory-policy {SAFE_POLICY})"
        )
    try:
        version = (await conn.info("server")).get("redis_version")
    except _core.RedisCommandError:
        version = None
    if version is not None and _parse(version) < MIN_VERSION:
        raise UnsafeRedisError(
            f"Redis at {conn.server} is version {version}; flowcraft-fast needs 6.2 or newer"
        )
    return ServerFacts(version=version, maxmemory_policy=policy, warnings=tuple(warnings))


def _parse(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
