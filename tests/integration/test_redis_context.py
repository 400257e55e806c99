"""RedisContext against a real redis-server: JSON round-trips, atomic patch, clear errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from flowcraft_fast import RedisContext
from flowcraft_fast._core import RedisCommandError, RedisConnectionError
from flowcraft_fast.devserver import RedisServer, free_port

JSON_VALUES: list[Any] = [
    "text",
    "",
    "ünïcødé ✓ \u0000 nul",
    0,
    -17,
    2**62,
    3.25,
    -1e-9,
    True,
    False,
    None,
    [],
    [1, "two", None, [3.5, {"k": False}]],
    {},
    {"nested": {"deep": [1, 2, {"x": None}]}, "emoji": "🚀"},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=lambda v: type(v).__name__)
async def test_every_json_type_round_trips(redis_url: str, value: Any) -> None:
    ctx = RedisContext(redis_url, "run-rt")
    await ctx.set("k", value)
    assert await ctx.has("k")
    got = await ctx.get("k")
    assert got == value
    assert type(got) is type(value)
    # What other clients see is plain JSON text in the hash field.
    raw = redis.Redis.from_url(redis_url).hget("workflow:state:run-rt", "k")
    assert raw is not None
    assert json.loads(raw) == value


async def test_none_is_stored_as_json_null(redis_url: str) -> None:
    ctx = RedisContext(redis_url, "run-null")
    await ctx.set("nothing", None)
    assert redis.Redis.from_url(redis_url).hget("workflow:state:run-null", "nothing") == b"null"
    assert await ctx.has("nothing")
    assert await ctx.get("nothing", "default") is None
    assert await ctx.get("missing", "default") == "default"


async def test_field_written_by_another_client_is_read_back(redis_url: str) -> None:
    other = redis.Redis.from_url(redis_url)
    other.hset(
        "workflow:state:run-ts",
        mapping={"_outputs.a": json.dumps({"total": 12}), "flag": "true", "name": '"x"'},
    )
    ctx = RedisContext(redis_url, "run-ts")
    assert await ctx.get("_outputs.a") == {"total": 12}
    assert await ctx.get("flag") is True
    assert await ctx.to_dict() == {"_outputs.a": {"total": 12}, "flag": True, "name": "x"}


async def test_delete_reports_whether_the_key_existed(redis_url: str) -> None:
    ctx = RedisContext(redis_url, "run-del")
    await ctx.set("a", 1)
    assert await ctx.delete("a") is True
    assert await ctx.delete("a") is False
    assert not await ctx.has("a")


async def test_non_json_values_are_refused_with_the_key_named(redis_url: str) -> None:
    ctx = RedisContext(redis_url, "run-bad")
    with pytest.raises(TypeError, match="'when'"):
        await ctx.set("when", object())
    with pytest.raises(ValueError, match="'nan'"):
        await ctx.set("nan", float("nan"))
    assert await ctx.to_dict() == {}


async def test_patch_applies_sets_and_deletes(redis_url: str) -> None:
    ctx = RedisContext(redis_url, "run-patch")
    await ctx.set("gone", 1)
    await ctx.patch(
        [
            {"op": "set", "key": "a", "value": 1},
            ("set", "b", [2]),
            {"op": "delete", "key": "gone"},
            ("set", "a", "last wins"),
        ]
    )
    assert await ctx.to_dict() == {"a": "last wins", "b": [2]}
    with pytest.raises(ValueError, match="'set' or 'delete'"):
        await ctx.patch([{"op": "incr", "key": "a"}])
    await ctx.patch([])  # no-op, no error


async def test_patch_is_atomic_for_a_concurrent_reader(redis_url: str) -> None:
    """A reader polling HGETALL never sees half of a patch."""
    fields = [f"f{i}" for i in range(50)]
    ctx = RedisContext(redis_url, "run-atomic")
    await ctx.patch([("set", f, "a") for f in fields])

    stop = threading.Event()
    torn: list[dict[bytes, bytes]] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        client = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            snap = client.hgetall("workflow:state:run-atomic")
            reads += 1
            values = set(snap.values())
            # Either every field holds one generation, or the extra field marks generation b.
            if len(values) != 1 or (b'"b"' in values) != (b"marker" in snap):
                torn.append(snap)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            gen = "b" if i % 2 == 0 else "a"
            ops: list[Any] = [("set", f, gen) for f in fields]
            ops.append(("set", "marker", "b") if gen == "b" else ("delete", "marker"))
            await ctx.patch(ops)
    finally:
        stop.set()
        thread.join()
    assert reads > 0
    assert torn == []


async def test_accepts_redis_py_clients(redis_url: str) -> None:
    sync_client = redis.Redis.from_url(redis_url)
    ctx = RedisContext(sync_client, "run-py")
    await ctx.set("x", {"a": 1})
    async_client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await RedisContext(async_client, "run-py").get("x") == {"a": 1}
    finally:
        await async_client.aclose()


async def test_unix_socket_url(redis_factory: Any, tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = redis_factory(extra_args=("--unixsocket", str(sock), "--unixsocketperm", "700"))
    ctx = RedisContext(f"unix://{sock}", "run-unix")
    await ctx.set("via", "socket")
    assert redis.Redis.from_url(server.url).hget("workflow:state:run-unix", "via") == b'"socket"'
    # And through a redis-py client configured for the socket.
    assert await RedisContext(redis.Redis(unix_socket_path=str(sock)), "run-unix").get("via") == (
        "socket"
    )


async def test_acl_user_from_url(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "flow", enabled=True, passwords=["+s3cret-pw"], keys=["workflow:*"], commands=["+@all"]
    )
    host_port = redis_url.removeprefix("redis://").removesuffix("/0")
    ctx = RedisContext(f"redis://flow:s3cret-pw@{host_port}/0", "run-acl")
    await ctx.set("who", "flow")
    assert await ctx.get("who") == "flow"
    # The same user through a redis-py client with username/password.
    client = redis.Redis.from_url(redis_url, username="flow", password="s3cret-pw")
    assert await RedisContext(client, "run-acl").get("who") == "flow"
    # A wrong password fails with an error that does not echo the password.
    bad = RedisContext(f"redis://flow:wrong-pw@{host_port}/0", "run-acl")
    with pytest.raises((RedisCommandError, RedisConnectionError)) as info:
        await bad.get("who")
    assert "wrong-pw" not in str(info.value)
    # ACL confines the user to its keys.
    denied = RedisContext(f"redis://flow:s3cret-pw@{host_port}/0", "x", key_prefix="other:")
    with pytest.raises(RedisCommandError, match=r"NOPERM|permission"):
        await denied.set("k", 1)


async def test_stopped_redis_raises_a_clear_error_without_the_password() -> None:
    port = free_port()  # nothing listens here
    ctx = RedisContext(f"redis://user:hunter2@127.0.0.1:{port}/0", "run-down", retry_deadline=1)
    with pytest.raises(RedisConnectionError) as info:
        await asyncio.wait_for(ctx.get("k"), timeout=20)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "hunter2" not in message
    assert "***" in message
    assert "gave up after" in message  # it retried until its deadline (1 s)


async def test_redis_stopped_mid_session_raises_then_recovers(redis_factory: Any) -> None:
    server: RedisServer = redis_factory()
    ctx = RedisContext(server.url, "run-restart", retry_deadline=1)
    await ctx.set("a", 1)
    server.stop()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(ctx.get("a"), timeout=30)
    server.start()
    # The connection comes back by itself (no persistence: the value is gone, the link is not).
    for _ in range(50):
        try:
            assert await ctx.get("a") is None
            break
        except RedisConnectionError:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("RedisContext did not reconnect after the server came back")


@pytest.mark.parametrize(
    "url", ["", "http://example.com", "redis://host:notaport", "not a url at all"]
)
def test_bad_url_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match=r"invalid Redis URL|Redis URL"):
        RedisContext(url, "run")


def test_bad_run_id() -> None:
    with pytest.raises(ValueError, match="run_id"):
        RedisContext("redis://127.0.0.1:1/0", "")


def _make_tls_material(tmp: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (tmp / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-out", "server.crt", "-extfile", "ext.cnf")  # fmt: skip


async def test_tls_with_a_private_ca(
    redis_server: RedisServer, redis_factory: Any, tmp_path: Path
) -> None:
    if not redis_server.supports_tls:
        pytest.skip(f"{redis_server.binary} (Redis {redis_server.version}) is built without TLS")
    _make_tls_material(tmp_path)
    tls_port = free_port()
    redis_factory(
        extra_args=(
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(tmp_path / "server.crt"),
            "--tls-key-file", str(tmp_path / "server.key"),
            "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
            "--tls-auth-clients", "no",
        )
    )  # fmt: skip
    ca = str(tmp_path / "ca.crt")
    ctx = RedisContext(
        redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=ca), "run-tls"
    )
    await ctx.set("secure", True)
    assert await ctx.get("secure") is True
    # Without the private CA the server's certificate is refused.
    untrusted = RedisContext(f"rediss://127.0.0.1:{tls_port}/0", "run-tls")
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(untrusted.get("secure"), timeout=20)
