"""Prometheus metrics on 127.0.0.1:<port>/metrics: a tiny asyncio HTTP/1.0 responder.

The counters come from the adapter's optional `metrics()` (a dict, or an awaitable of one);
without it only the daemon's own gauges are served. Keys ending in `_total` are counters, the
rest gauges; each is exported as `flowcraft_<key>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["MetricsServer", "adapter_metrics", "render_metrics"]

log = logging.getLogger("flowcraft_fast.daemon")

PREFIX = "flowcraft_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 5.0

HELP = {
    "up": "1 while the worker is consuming, 0 while it starts or drains",
    "jobs_processed_total": "jobs this worker finished",
    "jobs_failed_total": "jobs this worker moved to failed",
    "in_flight": "jobs this worker is running now",
    "draining": "1 once a stop signal arrived",
}

MetricsSource = Callable[[], Awaitable[Mapping[str, object]]]


def render_metrics(values: Mapping[str, object], labels: Mapping[str, str]) -> str:
    """Prometheus text exposition of the numeric `values`; others are skipped."""
    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    selector = f"{{{label_text}}}" if label_text else ""
    lines: list[str] = []
    for key, value in values.items():
        number = _number(value)
        name = PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", key)
        if number is None:
            continue
        lines.append(f"# HELP {name} {HELP.get(key, key.replace('_', ' '))}")
        lines.append(f"# TYPE {name} {'counter' if key.endswith('_total') else 'gauge'}")
        lines.append(f"{name}{selector} {_format(number)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves GET /metrics; anything else gets 404 (or 405 for other methods)."""

    def __init__(self, port: int, source: MetricsSource, labels: Mapping[str, str]) -> None:
        self.port = port
        self._source = source
        self._labels = dict(labels)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = request_line.partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await self._reply(writer, "405 Method Not Allowed", "method not allowed\n", method)
            elif path != "/metrics":
                await self._reply(writer, "404 Not Found", "see /metrics\n", method)
            else:
                body = render_metrics(await self._source(), self._labels)
                await self._reply(writer, "200 OK", body, method)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # a client that sent no complete request gets no answer
        except Exception:
            log.exception("metrics request failed")
            await self._reply(writer, "500 Internal Server Error", "error\n", "GET")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: str, body: str, method: str) -> None:
        data = body.encode()
        head = (
            f"HTTP/1.0 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + (b"" if method == "HEAD" else data))
        with contextlib.suppress(OSError):
            await writer.drain()


async def adapter_metrics(adapter: object) -> dict[str, object]:
    """The adapter's counters via its optional `metrics()`, sync or async; {} without one."""
    method = getattr(adapter, "metrics", None)
    if not callable(method):
        return {}
    result = method()
    if inspect.isawaitable(result):
        result = await result
    return dict(result) if isinstance(result, Mapping) else {}


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not math.isnan(value):
        return float(value)
    return None


def _format(number: float) -> str:
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return str(int(number)) if number.is_integer() else repr(number)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
