"""`flowcraft-fast dashboard` as a process, and a small HTTP client for it (the dashboard and
webhook tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def dashboard_process(url: str, queue: str, *extra: str) -> Iterator[str]:
    """`flowcraft-fast dashboard --port 0` as a process; its base URL (from its first line)."""
    cmd = [sys.executable, "-m", "flowcraft_fast.cli", "dashboard", "--redis-url", url,
           "--queue", queue, "--port", "0", *extra]  # fmt: skip
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("dashboard on http://"), (
            line,
            process.stderr and process.stderr.read(),
        )
        yield line.split()[2].rstrip("/")
    finally:
        process.terminate()
        code = process.wait(10)
        assert code == 0, process.stderr.read() if process.stderr else code


def fetch(
    url: str, method: str = "GET", body: Any = None, raw: bytes | None = None, **headers: str
) -> tuple[int, Any]:
    """One request; (status, JSON answer). `body` is sent as JSON, `raw` as it is."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
