"""Pure pieces: the notify protocol, the watchdog interval, logging formats, metrics, --app."""

from __future__ import annotations

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
from flowcraft_fast.daemon.metrics import render_metrics
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


def test_prometheus_rendering() -> None:
    text = render_metrics(
        {"up": 1, "jobs_processed_total": 7, "in_flight": 2.5, "name": "not a number"},
        {"queue": 'q"1'},
    )
    assert "# TYPE flowcraft_jobs_processed_total counter" in text
    assert 'flowcraft_jobs_processed_total{queue="q\\"1"} 7' in text
    assert "# TYPE flowcraft_in_flight gauge" in text
    assert 'flowcraft_in_flight{queue="q\\"1"} 2.5' in text
    assert 'flowcraft_up{queue="q\\"1"} 1' in text
    assert "name" not in text


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
