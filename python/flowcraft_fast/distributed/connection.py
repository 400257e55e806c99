"""Turn what users pass as `conn` (a URL or a redis-py client) into one native connection."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from .. import _core

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def url_from_redis_py(client: Any) -> tuple[str, dict[str, str | None]]:
    """The URL and TLS files equivalent to a redis-py client's connection parameters.

    Works for `redis.Redis` and `redis.asyncio.Redis` (TCP, TLS and unix-socket pools).
    """
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = dict(getattr(pool, "connection_kwargs", None) or {})
    if not kwargs and pool is None:
        raise TypeError(f"expected a Redis URL or a redis-py client, got {type(client).__name__}")
    user = kwargs.get("username")
    password = kwargs.get("password")
    db = int(kwargs.get("db") or 0)
    tls_files = {
        "ca_certs": kwargs.get("ssl_ca_certs"),
        "certfile": kwargs.get("ssl_certfile"),
        "keyfile": kwargs.get("ssl_keyfile"),
    }
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
    ca_certs: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> _core.RedisConnection:
    """A native connection for a URL, a redis-py client, or an existing RedisConnection."""
    if isinstance(conn, _core.RedisConnection):
        return conn
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
        ca_certs=ca_certs,
        certfile=certfile,
        keyfile=keyfile,
    )
