"""Tools of the chaos tests: worker subprocesses, bounded waits, a MONITOR recorder, and the
size of a chaos run ($FLOWCRAFT_CHAOS_SCALE)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

from waiting import wait_until

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "chaos_worker.py"

SCALE_ENV = "FLOWCRAFT_CHAOS_SCALE"


def chaos_scale() -> float:
    """How big a chaos run is: $FLOWCRAFT_CHAOS_SCALE, a float > 0; unset or empty means 1.

    1 is the CI size (what plain `pytest` runs); 10 is the long version. Tests multiply their
    run counts, trial counts and fault counts by it (`scaled`), and their time limits too.
    """
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${SCALE_ENV} must be a number > 0, not {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"${SCALE_ENV} must be a number > 0, not {raw!r}")
    return value


def scaled(count: float, minimum: int = 1) -> int:
    """`count` times the chaos scale, rounded, and at least `minimum`."""
    return max(minimum, round(count * chaos_scale()))


class WorkerProcess:
    """`chaos_worker.py` in a subprocess; stdout/stderr go to files that the test can read."""

    def __init__(
        self,
        redis_url: str,
        lease_ms: int = 1000,
        stalled_s: float = 0.5,
        concurrency: int = 8,
        *,
        ledger_url: str | None = None,
        partitions: int = 1,
    ) -> None:
        self._dir = tempfile.mkdtemp(prefix="chaos-worker-")
        self.out_path = Path(self._dir) / "stdout"
        self.err_path = Path(self._dir) / "stderr"
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env["CHAOS_PARTITIONS"] = str(partitions)
        if ledger_url is not None:
            env["CHAOS_LEDGER_URL"] = ledger_url
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER_SCRIPT),
                    redis_url,
                    str(lease_ms),
                    str(stalled_s),
                    str(concurrency),
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.pid = self.proc.pid
        self.stopped = False

    async def ready(self, timeout: float = 20.0) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.pid} exited early:\n{self.stderr()}")
            return "READY" in self.out_path.read_text()

        await wait_until(check, timeout, f"worker {self.pid} to be ready")

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        """SIGKILL (after SIGCONT if stopped) and reap; safe to call more than once."""
        if self.proc.poll() is None:
            if self.stopped:
                os.kill(self.pid, signal.SIGCONT)
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL is not ignorable
            self.proc.wait(timeout=10)


_SCRIPT_CALL = re.compile(r'"(?:EVALSHA|EVAL|evalsha|eval)" "[^"]*" "(\d+)"')


class Monitor:
    """Records every command Redis executes (MONITOR) in a background thread.

    `script_calls(containing)` returns the recorded EVAL/EVALSHA lines that carry `containing`
    (e.g. a lease token), with their number of keys: the commit script has 13 or more keys, the
    renew script none, the claim script 6.
    """

    def __init__(self, redis_url: str) -> None:
        u = urlparse(redis_url)
        self._sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), 5)
        self._buf = b""
        if u.password:
            self._sock.sendall(f"AUTH {u.password}\r\n".encode())
            self._readline()
        self._sock.sendall(b"MONITOR\r\n")
        self._stop = threading.Event()
        self.lines: list[str] = []
        self._lock = threading.Lock()
        first = self._readline()
        if first != "+OK":
            raise RuntimeError(f"MONITOR refused: {first!r}")
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _readline(self) -> str:
        while b"\r\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("MONITOR connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                line = self._readline()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.lines.append(line)

    def script_calls(self, containing: str) -> list[tuple[int, str]]:
        with self._lock:
            lines = list(self.lines)
        found = []
        for line in lines:
            if containing not in line:
                continue
            m = _SCRIPT_CALL.search(line)
            if m:
                found.append((int(m.group(1)), line))
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
