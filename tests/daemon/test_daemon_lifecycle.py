"""The daemon's life as a real process: READY=1, WATCHDOG=1, SIGTERM -> STOPPING=1 -> exit 0.

Most tests use a fake worker (installed via `sitecustomize`, see helpers.FAKE_ADAPTER) so the
daemon's own behaviour (signals, drain timeout, notify, metrics, supervision) is tested apart
from the real BullMQAdapter; the last test starts the real one.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowcraft_fast.devserver import free_port

from .helpers import (
    FakeNotifySocket,
    clean_env,
    install_fake_adapter,
    short_tmpdir,
    start_daemon,
    stop_daemon,
    value,
    wait_exit,
    wait_for,
    write_app,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


@pytest.fixture
def notify(workdir: Path) -> Iterator[FakeNotifySocket]:
    listener = FakeNotifySocket(str(workdir / "notify.sock"))
    yield listener
    listener.close()


def _fake_env(workdir: Path, notify: FakeNotifySocket, **extra: str) -> dict[str, str]:
    return clean_env(
        PYTHONPATH=install_fake_adapter(workdir),
        NOTIFY_SOCKET=notify.path,
        FAKE_ADAPTER_LOG=str(workdir / "events.jsonl"),
        **extra,
    )


def _events(workdir: Path) -> list[dict[str, object]]:
    path = workdir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ready_then_sigterm_drains_and_exits_0(
    redis_url: str, workdir: Path, notify: FakeNotifySocket
) -> None:
    app = write_app(workdir)
    env = _fake_env(workdir, notify, FAKE_ADAPTER_CLOSE_DELAY="0.5")
    args = ["--app", app, "--redis-url", redis_url, "--queue", "q1", "--concurrency", "5",
            "--reconcile-interval", "0", "--lease", "4.5", "--stalled-interval", "2",
            "--max-stalls", "3", "--state-ttl", "600", "--name", "w1",
            "--renew-interval", "1", "--retry-deadline", "7.5",
            "--key-prefix", "t1:", "--partitions", "6", "--partition-set", "0-2,5",
            "--wait-replicas", "1", "--wait-timeout", "0.25", "--speculate", "off"]  # fmt: skip
    process = start_daemon(args, workdir, env)
    try:
        ready = notify.expect("READY", timeout=30)
        assert "consuming queue q1" in ready["STATUS"]
        start = _events(workdir)[0]
        assert start["queue"] == "q1"
        assert start["concurrency"] == 5
        assert start["connection"] == redis_url
        assert start["blueprints"] == ["tiny"]
        assert (start["lease_ms"], start["stalled_interval"]) == (4500, 2.0)
        assert (start["max_stalls"], start["state_ttl"]) == (3, 600)
        assert (start["name"], start["renew_ms"]) == ("w1", 1000)
        assert start["retry_deadline"] == 7.5
        assert start["prefixes"] == ["t1:", None]  # the store derives t1:bull
        assert start["partitions"] == [6, "0-2,5"]
        assert start["replica_wait"] == [1, 0.25]
        assert start["speculate"] is False
    finally:
        code, _, err = stop_daemon(process)
    assert notify.expect("STOPPING", timeout=5)
    assert code == 0, err
    assert [e["event"] for e in _events(workdir)] == ["start", "close-begin", "close-end"]
    assert "draining" in err


def test_drain_timeout_bounds_the_stop(
    redis_url: str, workdir: Path, notify: FakeNotifySocket
) -> None:
    app = write_app(workdir)
    env = _fake_env(workdir, notify, FAKE_ADAPTER_CLOSE_DELAY="60")
    args = ["--app", app, "--redis-url", redis_url, "--drain-timeout", "0.5",
            "--reconcile-interval", "0"]  # fmt: skip
    process = start_daemon(args, workdir, env)
    notify.expect("READY", timeout=30)
    began = time.monotonic()
    code, _, err = stop_daemon(process, timeout=20)
    assert code == 0, err
    assert time.monotonic() - began < 10
    assert "drain timed out after 0.5s" in err


def test_second_signal_exits_at_once_non_zero(
    redis_url: str, workdir: Path, notify: FakeNotifySocket
) -> None:
    app = write_app(workdir)
    env = _fake_env(workdir, notify, FAKE_ADAPTER_CLOSE_DELAY="60")
    process = start_daemon(["--app", app, "--redis-url", redis_url], workdir, env)
    notify.expect("READY", timeout=30)
    process.send_signal(signal.SIGTERM)
    notify.expect("STOPPING", timeout=10)
    process.send_signal(signal.SIGINT)
    code, _, err = wait_exit(process, timeout=10)
    assert code == 128 + signal.SIGINT
    assert "without draining" in err


def test_watchdog_pings_and_json_logs(
    redis_url: str, workdir: Path, notify: FakeNotifySocket
) -> None:
    app = write_app(workdir)
    env = _fake_env(workdir, notify, WATCHDOG_USEC="200000", FLOWCRAFT_LOG_FORMAT="json")
    process = start_daemon(["--app", app, "--redis-url", redis_url], workdir, env)
    try:
        notify.expect("READY", timeout=30)
        deadline = time.monotonic() + 10
        while notify.count("WATCHDOG") < 3 and time.monotonic() < deadline:
            notify.listen(0.3)
        assert notify.count("WATCHDOG") >= 3
    finally:
        code, _, err = stop_daemon(process)
    assert code == 0
    entries = [json.loads(line) for line in err.splitlines()]
    consuming = next(e for e in entries if e["message"].startswith("consuming queue"))
    assert consuming["level"] == "info"
    assert consuming["logger"] == "flowcraft_fast.daemon"
    assert consuming["queue"] == "flowcraft-queue"
    assert {"ts", "pid"} <= consuming.keys()


def test_watchdog_pid_of_another_process_keeps_quiet(
    redis_url: str, workdir: Path, notify: FakeNotifySocket
) -> None:
    app = write_app(workdir)
    env = _fake_env(workdir, notify, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    process = start_daemon(["--app", app, "--redis-url", redis_url], workdir, env)
    try:
        notify.expect("READY", timeout=30)
        notify.listen(0.6)
    finally:
        stop_daemon(process)
    assert notify.count("WATCHDOG") == 0


def test_metrics_endpoint_and_reconciler(
    redis_url: str, workdir: Path, notify: FakeNotifySocket
) -> None:
    app = write_app(workdir)
    port = free_port()
    env = _fake_env(workdir, notify)
    args = ["--app", app, "--redis-url", redis_url, "--metrics-port", str(port),
            "--reconcile-interval", "0.2", "--stalled-threshold", "7"]  # fmt: skip
    process = start_daemon(args, workdir, env)
    try:
        notify.expect("READY", timeout=30)
        q = {"queue": "flowcraft-queue"}
        samples = wait_for(
            port, lambda s: value(s, "flowcraft_reconciler_passes_total", result="ok", **q),
            "a reconciler pass",
        )  # fmt: skip
        assert value(samples, "flowcraft_up", **q) == 1  # consuming; the fake has no probe
        assert value(samples, "flowcraft_jobs_processed_total", **q) == 7
        assert value(samples, "flowcraft_jobs_failed_total", **q) == 1
        assert value(samples, "flowcraft_in_flight", **q) == 2
        passes = value(samples, "flowcraft_reconciler_passes_total", result="ok", **q) or 0
        assert value(samples, "flowcraft_reconciler_runs_total", kind="stalled", **q) == passes
        assert value(samples, "flowcraft_reconciler_runs_total", kind="scanned", **q) == 3 * passes
        deadline = time.monotonic() + 10
        while not any(e["event"] == "reconcile" for e in _events(workdir)):
            assert time.monotonic() < deadline, "the reconciler never ran"
            time.sleep(0.1)
        assert next(e for e in _events(workdir) if e["event"] == "reconcile")["threshold"] == 7
    finally:
        code, _, err = stop_daemon(process)
    assert code == 0, err


def test_adapter_start_failure_is_one_line(
    redis_url: str, workdir: Path, notify: FakeNotifySocket
) -> None:
    app = write_app(workdir)
    env = _fake_env(workdir, notify, FAKE_ADAPTER_START_FAIL="scripts would not load")
    process = start_daemon(["--app", app, "--redis-url", redis_url], workdir, env)
    code, _, err = wait_exit(process, timeout=30)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert (
        "cannot start consuming queue 'flowcraft-queue': RuntimeError: scripts would not load"
        in err
    )
    assert notify.count("READY") == 0


def test_processes_supervises_restarts_and_stops(
    redis_url: str, workdir: Path, notify: FakeNotifySocket
) -> None:
    app = write_app(workdir)
    env = _fake_env(workdir, notify, FAKE_ADAPTER_CLOSE_DELAY="0.2")
    args = ["--app", app, "--redis-url", redis_url, "--processes", "2",
            "--reconcile-interval", "0"]  # fmt: skip
    process = start_daemon(args, workdir, env)
    try:
        ready = notify.expect("READY", timeout=60)
        assert ready["STATUS"].startswith("2/2 workers consuming")
        pids = {int(str(e["pid"])) for e in _events(workdir) if e["event"] == "start"}
        assert len(pids) == 2 and process.pid not in pids
        os.kill(min(pids), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len({e["pid"] for e in _events(workdir) if e["event"] == "start"}) < 3:
            assert time.monotonic() < deadline, "the killed worker was not restarted"
            time.sleep(0.1)
    finally:
        code, _, err = stop_daemon(process, timeout=60)
    assert code == 0, err
    assert notify.expect("STOPPING", timeout=5)
    assert "restarting in" in err
    closed = {e["pid"] for e in _events(workdir) if e["event"] == "close-end"}
    assert len(closed) == 2  # both live workers drained


def test_real_adapter_ready_and_stop(redis_url: str, tmp_path: Path) -> None:
    try:
        importlib.import_module("flowcraft_fast.distributed.adapter")
        importlib.import_module("flowcraft_fast.distributed.store")
    except ImportError:
        pytest.skip("BullMQAdapter not built yet")
    with short_tmpdir() as short:
        listener = FakeNotifySocket(str(short / "notify.sock"))
        try:
            app = write_app(tmp_path)
            env = clean_env(NOTIFY_SOCKET=listener.path)
            process = start_daemon(["--app", app, "--redis-url", redis_url], tmp_path, env)
            flow_error: BaseException | None = None
            try:
                listener.expect("READY", timeout=60)
                try:
                    result = asyncio.run(_run_tiny_flow(redis_url))
                except Exception as exc:  # reported below, with the daemon's log
                    flow_error = exc
            finally:
                code, _, err = stop_daemon(process, timeout=60)
            assert flow_error is None, (
                f"the flow did not finish: {flow_error!r}; daemon log:\n{err}"
            )
            assert result.status == "completed", result
            assert result.context.get("a") == "hello"
            listener.expect("STOPPING", timeout=5)
            assert code == 0, err
        finally:
            listener.close()


async def _run_tiny_flow(redis_url: str) -> Any:
    from flowcraft_fast.distributed.client import FlowClient

    client = FlowClient(redis_url)
    run_id = await client.start("tiny", {})
    return await client.wait(run_id, timeout=30)
