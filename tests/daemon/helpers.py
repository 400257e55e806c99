"""Shared pieces of the daemon tests: a fake NOTIFY_SOCKET, a clean environment, the command."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

DAEMON = [sys.executable, "-m", "flowcraft_fast.daemon"]

# Settings a developer's shell (or a systemd test host) might export; the daemon must not see them.
_SCRUB_PREFIXES = ("FLOWCRAFT_", "WATCHDOG_", "OTEL_")
_SCRUB = {"REDIS_URL", "NOTIFY_SOCKET", "JOURNAL_STREAM", "PYTHONPATH"}

TINY_APP = textwrap.dedent(
    """
    from flowcraft_fast.runtime import FlowRuntime

    async def hello(ctx):
        return {"output": "hello"}

    runtime = FlowRuntime(
        blueprints={"tiny": {"id": "tiny", "nodes": [{"id": "a", "uses": "hello"}], "edges": []}},
        registry={"hello": hello},
    )

    def make_runtime():
        return runtime

    not_a_runtime = 42
    """
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith(_SCRUB_PREFIXES)
    }
    env.update(extra)
    return env


def write_app(directory: Path, name: str = "tinyapp") -> str:
    (directory / f"{name}.py").write_text(TINY_APP)
    return f"{name}:runtime"


class FakeNotifySocket:
    """What systemd listens on: a unix datagram socket; `expect` reads until a key=value shows."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[dict[str, str]] = []

    def expect(self, key: str, value: str = "1", timeout: float = 20.0) -> dict[str, str]:
        for message in self.messages:
            if message.get(key) == value:
                return message
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key}={value} within {timeout}s; got {self.messages}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(message)
            if message.get(key) == value:
                return message

    def listen(self, seconds: float) -> None:
        """Collect whatever arrives during `seconds`."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            lines = data.decode().splitlines()
            self.messages.append(dict(line.split("=", 1) for line in lines if "=" in line))

    def count(self, key: str, value: str = "1") -> int:
        return sum(1 for m in self.messages if m.get(key) == value)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under ~100 bytes; tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="fcd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_daemon(args: list[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*DAEMON, *args],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_daemon(process: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str, str]:
    """SIGTERM (once) and the exit code, stdout and stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(
            f"daemon did not exit within {timeout}s after SIGTERM: {err}"
        ) from None
    return process.returncode, out, err


def wait_exit(process: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str, str]:
    """Wait (sending nothing) for the exit code, stdout and stderr."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"daemon did not exit within {timeout}s: {err}") from None
    return process.returncode, out, err


# The fake worker used by the lifecycle tests, installed through `sitecustomize` so it also
# reaches the children that `--processes N` starts. Behaviour comes from environment variables.
FAKE_ADAPTER = textwrap.dedent(
    """
    import asyncio, json, os, sys, types

    def _record(event, **fields):
        path = os.environ.get("FAKE_ADAPTER_LOG")
        if path:
            with open(path, "a") as handle:
                handle.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\\n")

    class RedisCoordinationStore:
        def __init__(self, conn, *, state_ttl_seconds, retry_deadline, key_prefix,
                     queue_prefix, wait_replicas, wait_timeout):
            self.conn = conn
            self.replica_wait = [wait_replicas, wait_timeout]
            self.prefixes = [key_prefix, queue_prefix]
            self.state_ttl_seconds = state_ttl_seconds
            self.retry_deadline = retry_deadline

    class BullMQAdapter:
        def __init__(self, *, runtime_options, coordination_store, connection, queue_name,
                     concurrency, lease_ms, stalled_interval_seconds, max_stalled_count,
                     worker_name, renew_ms, partitions, partition_set, history,
                     speculate):
            self.queue_name = queue_name
            self.concurrency = concurrency
            self.connection = connection
            self.blueprints = sorted(runtime_options.blueprints)
            self.recovery = {"lease_ms": lease_ms, "stalled_interval": stalled_interval_seconds,
                             "max_stalls": max_stalled_count, "name": worker_name,
                             "renew_ms": renew_ms,
                             "state_ttl": coordination_store.state_ttl_seconds,
                             "retry_deadline": coordination_store.retry_deadline,
                             "prefixes": coordination_store.prefixes,
                             "partitions": [partitions, partition_set], "history": history,
                             "speculate": speculate,
                             "replica_wait": coordination_store.replica_wait}

        async def start(self):
            failure = os.environ.get("FAKE_ADAPTER_START_FAIL")
            if failure:
                raise RuntimeError(failure)
            _record("start", queue=self.queue_name, concurrency=self.concurrency,
                    connection=self.connection, blueprints=self.blueprints, **self.recovery)

        async def close(self):
            _record("close-begin")
            await asyncio.sleep(float(os.environ.get("FAKE_ADAPTER_CLOSE_DELAY", "0")))
            _record("close-end")

        def metrics(self):
            return {"jobs_processed_total": 7, "jobs_failed_total": 1, "in_flight": 2}

    class _Stats:
        scanned_keys, stalled_runs, reconciled_runs, failed_runs = 3, 1, 1, 0

    class _Reconciler:
        def __init__(self, threshold):
            self.threshold = threshold

        async def run(self):
            _record("reconcile", threshold=self.threshold)
            return _Stats()

    def create_bullmq_reconciler(*, adapter, redis, stalled_threshold_seconds):
        return _Reconciler(stalled_threshold_seconds)

    reconciler = types.ModuleType("flowcraft_fast.distributed.reconciler")
    reconciler.create_bullmq_reconciler = create_bullmq_reconciler
    reconciler.ReconciliationStats = _Stats
    sys.modules[reconciler.__name__] = reconciler
    adapter = types.ModuleType("flowcraft_fast.distributed.adapter")
    adapter.BullMQAdapter = BullMQAdapter
    store = types.ModuleType("flowcraft_fast.distributed.store")
    store.RedisCoordinationStore = RedisCoordinationStore
    sys.modules[adapter.__name__] = adapter
    sys.modules[store.__name__] = store
    """
)


def install_fake_adapter(directory: Path) -> str:
    """A PYTHONPATH entry whose sitecustomize swaps in the fake adapter."""
    site = directory / "fakesite"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAKE_ADAPTER)
    return str(site)


# ------------------------------------------------------------------ metrics scrapes

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def wait_for(
    port: int, check: Callable[[Samples], bool], what: str, timeout: float = 40
) -> Samples:
    deadline = time.monotonic() + timeout
    samples: Samples = {}
    while time.monotonic() < deadline:
        try:
            samples = scrape(port)
        except (urllib.error.URLError, ConnectionError):
            samples = {}
        if samples and check(samples):
            return samples
        time.sleep(0.2)
    pytest.fail(f"{what}: not seen within {timeout}s; last scrape: {sorted(samples.items())}")
