"""Pure pieces: the notify protocol, the watchdog interval, logging formats, metrics, --app."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcraft_fast.daemon.app import AppError, load_runtime
from flowcraft_fast.daemon.checks import redact_url
from flowcraft_fast.daemon.logs import JsonFormatter, TextFormatter, stream_is_journal
from flowcraft_fast.daemon.metrics import WorkerMetrics, worker_registry
from flowcraft_fast.daemon.notify import Notifier, watchdog_interval

from .helpers import short_tmpdir, write_app


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


def test_notify_to_a_socket_path(short_dir: Path) -> None:
    path = str(short_dir / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert notifier.ready("consuming\nqueue q")
        assert listener.recv(4096) == b"READY=1\nSTATUS=consuming queue q"
        assert notifier.watchdog()
        assert listener.recv(4096) == b"WATCHDOG=1"
        notifier.close()


def test_notify_to_the_abstract_namespace() -> None:
    name = f"fcd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        notifier = Notifier("@" + name)
        assert notifier.stopping("draining")
        assert listener.recv(4096) == b"STOPPING=1\nSTATUS=draining"
        notifier.close()


def test_notify_without_socket_or_listener(short_dir: Path) -> None:
    assert not Notifier.from_env({}).ready("x")
    assert not Notifier(str(short_dir / "nobody.sock")).status("x")  # warns once, never raises


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, pid=7) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "flowcraft_fast.daemon", logging.WARNING, "f", 1, "hi %s", ("x",), None
    )
    record.__dict__.update(extra)
    return record


def test_json_log_lines() -> None:
    entry = json.loads(JsonFormatter().format(_record(queue="q", pid=12)))
    assert entry["level"] == "warning"
    assert entry["logger"] == "flowcraft_fast.daemon"
    assert entry["message"] == "hi x"
    assert entry["ts"].endswith("+00:00")
    assert (entry["queue"], entry["pid"]) == ("q", 12)


def test_text_log_lines_leave_the_timestamp_to_journald() -> None:
    plain = TextFormatter(journal=False).format(_record(queue="q"))
    assert plain.endswith("WARNING flowcraft_fast.daemon: hi x queue=q")
    assert plain[:4].isdigit()  # starts with the date
    journal = TextFormatter(journal=True).format(_record())
    assert journal == "<4>WARNING flowcraft_fast.daemon: hi x"


def test_journal_stream_detection(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as handle:
        stat = os.fstat(handle.fileno())
        assert stream_is_journal(handle, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
        assert not stream_is_journal(handle, {"JOURNAL_STREAM": "1:2"})
        assert not stream_is_journal(handle, {})
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


class _Adapter:
    """What the daemon reads of an adapter: its figures, the queue's counts, the groups."""

    def __init__(self) -> None:
        self.figures = {"jobs_processed_total": 7, "in_flight": 2, "name": "not a number"}
        self.groups = [("tenant-a", 2, 2, 5), ("tenant-b", 3, 1, 0)]
        self.observer = None
        self.reachable = True

    def metrics(self) -> dict[str, object]:
        return dict(self.figures)

    def observe_steps(self, observer) -> None:  # type: ignore[no-untyped-def]
        self.observer = observer

    async def queue_counts(self) -> dict[str, int]:
        if not self.reachable:
            raise ConnectionError("Connection refused")
        return {"wait": 4, "active": 1}

    async def limit_groups(self) -> list[tuple[str, int, int, int]]:
        return list(self.groups)


def test_worker_metrics_turn_adapter_figures_into_prometheus_series() -> None:
    adapter = _Adapter()
    registry = worker_registry()
    metrics = WorkerMetrics(adapter, "q", registry, primary=True)

    def get(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"queue": "q", **labels})

    metrics.sync()
    assert get("flowcraft_jobs_processed_total") == 7
    assert get("flowcraft_in_flight") == 2
    adapter.figures["jobs_processed_total"] = 10
    metrics.sync()
    assert get("flowcraft_jobs_processed_total") == 10  # the growth, not the figure again
    assert adapter.observer is not None
    adapter.observer("chain", 0.003, "completed")
    adapter.observer("chain", 2.0, "failed")
    assert get("flowcraft_step_duration_seconds_count", blueprint="chain") == 2
    assert get("flowcraft_step_duration_seconds_bucket", blueprint="chain", le="0.005") == 1
    assert get("flowcraft_steps_total", blueprint="chain", outcome="failed") == 1

    assert get("flowcraft_up") == 0  # not consuming yet
    metrics.consuming(True)
    asyncio.run(metrics.probe(limits=True))
    assert get("flowcraft_up") == 1
    assert get("flowcraft_queue_jobs", state="wait") == 4
    assert get("flowcraft_limit_waiting_jobs") == 5
    assert get("flowcraft_limit_group_jobs", group="tenant-a", kind="waiting") == 5
    adapter.groups = adapter.groups[1:]  # tenant-a is gone: its series go too
    asyncio.run(metrics.probe(limits=True))
    assert get("flowcraft_limit_group_jobs", group="tenant-a", kind="waiting") is None
    assert get("flowcraft_limit_group_jobs", group="tenant-b", kind="limit") == 3

    adapter.reachable = False
    asyncio.run(metrics.probe(limits=False))
    assert get("flowcraft_up") == 0
    assert get("flowcraft_redis_errors_total") == 1
    metrics.draining_now()
    assert get("flowcraft_draining") == 1


def test_redact_url() -> None:
    assert redact_url("redis://u:secret@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    write_app(tmp_path / "pkg", "appmod")
    (tmp_path / "broken.py").write_text("import not_installed_anywhere_xyz\n")
    (tmp_path / "raising.py").write_text("def make():\n    raise RuntimeError('boom')\n")
    yield tmp_path
    for name in ("pkg", "pkg.appmod", "broken", "raising"):
        sys.modules.pop(name, None)


def test_load_runtime_from_cwd(app_dir: Path) -> None:
    from flowcraft_fast.runtime import FlowRuntime

    assert isinstance(load_runtime("pkg.appmod:runtime"), FlowRuntime)
    assert load_runtime("pkg.appmod:make_runtime") is load_runtime("pkg.appmod:runtime")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("pkg.nothere:runtime", "no module named 'pkg.nothere'"),
        ("pkg.appmod:missing", "has no attribute 'missing'"),
        ("pkg.appmod:not_a_runtime", "is a int, not a FlowRuntime"),
        ("broken:runtime", "ModuleNotFoundError: No module named 'not_installed_anywhere_xyz'"),
        ("raising:make", "calling it failed: RuntimeError: boom"),
        ("pkg.appmod:TINY", "has no attribute"),
    ],
)
def test_load_runtime_errors(app_dir: Path, spec: str, fragment: str) -> None:
    with pytest.raises(AppError) as info:
        load_runtime(spec)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
