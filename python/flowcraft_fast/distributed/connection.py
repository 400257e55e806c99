"""Turn what users pass as `conn` (a URL or a redis-py client) into one native connection.

Every call to Redis goes through such a connection (the package never talks to Redis through
redis-py; a redis-py client only lends its connection parameters), and retries the same way:
when Redis answers LOADING (loading its dataset after a restart) or BUSY (a script running too
long), or the connection is refused, drops or times out, the call is sent again after pauses of
50 ms doubling to 1 s (with jitter) until its retry deadline, then raises `RedisConnectionError`
or `RedisCommandError` saying how long it tried (rust/src/retry.rs). The deadline is
`retry_deadline` seconds (0: no retries), by default $FLOWCRAFT_REDIS_RETRY_DEADLINE, else 30.
"""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import quote, urlencode

from .. import _core

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RETRY_DEADLINE = 30.0
"""Seconds a call to Redis keeps retrying LOADING, BUSY and connection failures."""
RETRY_DEADLINE_ENV = "FLOWCRAFT_REDIS_RETRY_DEADLINE"


def resolve_retry_deadline(value: float | None = None) -> float:
    """The retry deadline in seconds: `value`, else $FLOWCRAFT_REDIS_RETRY_DEADLINE, else 30.

    Raises ValueError for a negative or non-numeric value (naming where it came from).
    """
    where = "retry_deadline"
    if value is None:
        raw = os.environ.get(RETRY_DEADLINE_ENV, "").strip()
        if not raw:
            return DEFAULT_RETRY_DEADLINE
        where = f"${RETRY_DEADLINE_ENV}"
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{where} must be a number of seconds >= 0, not {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number of seconds >= 0, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _sentinel_url(pool: Any) -> str:
    """`redis+sentinel://` for a redis-py `Sentinel(...).master_for(name)` client's pool."""
    kwargs: dict[str, Any] = dict(getattr(pool, "connection_kwargs", None) or {})
    hosts, sentinel_auth = [], None
    for sentinel in pool.sentinel_manager.sentinels:
        skw = sentinel.connection_pool.connection_kwargs
        host = str(skw.get("host", "127.0.0.1"))
        hosts.append(f"[{host}]:{skw.get('port', 26379)}" if ":" in host else
                     f"{host}:{skw.get('port', 26379)}")  # fmt: skip
        sentinel_auth = sentinel_auth or (skw.get("username"), skw.get("password"))
    user, password = kwargs.get("username"), kwargs.get("password")
    auth = ""
    if user or password:
        auth = quote(user or "", safe="") + (":" + quote(password, safe="") if password else "")
        auth += "@"
    scheme = (
        "rediss+sentinel"
        if kwargs.get("ssl") or "SSL" in str(getattr(pool, "connection_class", ""))
        else "redis+sentinel"
    )
    url = f"{scheme}://{auth}{','.join(hosts)}/{quote(pool.service_name, safe='')}/"
    url += str(int(kwargs.get("db") or 0))
    query = {}
    if sentinel_auth and sentinel_auth[0]:
        query["sentinel_username"] = sentinel_auth[0]
    if sentinel_auth and sentinel_auth[1]:
        query["sentinel_password"] = sentinel_auth[1]
    return url + (f"?{urlencode(query)}" if query else "")


def url_from_redis_py(client: Any) -> tuple[str, dict[str, str | None]]:
    """The URL and TLS files equivalent to a redis-py client's connection parameters.

    Works for `redis.Redis` and `redis.asyncio.Redis` (TCP, TLS and unix-socket pools), and
    for a client of `redis.sentinel.Sentinel(...).master_for(name)` (sync or asyncio): the
    primary its sentinels name (`redis+sentinel://`), followed through failovers.
    """
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = dict(getattr(pool, "connection_kwargs", None) or {})
    if not kwargs and pool is None:
        raise TypeError(f"expected a Redis URL or a redis-py client, got {type(client).__name__}")
    tls_files = {
        "ca_certs": kwargs.get("ssl_ca_certs"),
        "certfile": kwargs.get("ssl_certfile"),
        "keyfile": kwargs.get("ssl_keyfile"),
    }
    if hasattr(pool, "sentinel_manager") and hasattr(pool, "service_name"):
        return _sentinel_url(pool), tls_files
    user = kwargs.get("username")
    password = kwargs.get("password")
    db = int(kwargs.get("db") or 0)
    path = kwargs.get("path")
    if path:
        query: dict[str, str] = {"db": str(db)}
        if user:
            query["user"] = user
        if password:
            query["pass"] = password
        return f"unix://{quote(path)}?{urlencode(query)}", tls_files
    cls_name = getattr(getattr(pool, "connection_class", None), "__name__", "")
    scheme = "rediss" if "SSL" in cls_name else "redis"
    auth = ""
    if user or password:
        auth = quote(user or "", safe="") + (":" + quote(password, safe="") if password else "")
        auth += "@"
    host = kwargs.get("host", "127.0.0.1")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = int(kwargs.get("port", 6379))
    return f"{scheme}://{auth}{host}:{port}/{db}", tls_files


def open_connection(
    conn: str | Any,
    *,
    connect_timeout: float = 5.0,
    response_timeout: float = 30.0,
    retry_deadline: float | None = None,
    ca_certs: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    wait_replicas: int = 0,
    wait_timeout: float = 1.0,
) -> _core.RedisConnection:
    """A native connection for a URL, a redis-py client, or an existing RedisConnection (which
    keeps its own settings). `retry_deadline`: see the module docstring. `wait_replicas` > 0:
    every script call (start, claim, commit...) is acknowledged only once that many replicas
    hold its writes, or `wait_timeout` seconds passed (Redis WAIT)."""
    if isinstance(conn, _core.RedisConnection):
        return conn
    deadline = resolve_retry_deadline(retry_deadline)
    if isinstance(conn, str):
        url = conn
    else:
        url, files = url_from_redis_py(conn)
        ca_certs = ca_certs or files["ca_certs"]
        certfile = certfile or files["certfile"]
        keyfile = keyfile or files["keyfile"]
    return _core.RedisConnection(
        url,
        connect_timeout=connect_timeout,
        response_timeout=response_timeout,
        retry_deadline=deadline,
        ca_certs=ca_certs,
        certfile=certfile,
        keyfile=keyfile,
        wait_replicas=wait_replicas,
        wait_timeout=wait_timeout,
    )
