"""The dashboard's HTTP server: the standard library's threading server in front of one asyncio
loop (its own thread) that owns the queue's client, so every request's Redis reads run where
the client lives.

Defaults are the safe ones: 127.0.0.1, read-only. Bound to loopback, requests whose Host
header is not a loopback name are refused (a web page elsewhere cannot reach the API through
DNS rebinding);
a POST needs `--allow-actions`, a JSON body and the `X-Flowcraft-Action` header (which a form
on another site cannot send without the browser asking first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from .. import _core
from ..distributed.client import FlowClient, RunNotFound
from ..distributed.webhooks import DELIVERY_HEADERS, MAX_WEBHOOK_BODY
from ..distributed.webhooks import deliver as deliver_webhook
from ..errors import FlowcraftError
from . import api
from .page import PAGE

T = TypeVar("T")

MAX_BODY = 1 << 20
"""The largest POST body accepted (a resume output), bytes."""
REQUEST_TIMEOUT = 30.0
ACTION_HEADER = "X-Flowcraft-Action"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Dashboard:
    """What the handler needs: the client on its loop, the queue's name, the allowed hosts."""

    def __init__(self, make_client: Callable[[], FlowClient], queue: str, actions: bool) -> None:
        self.queue = queue
        self.actions = actions
        self.hosts: set[str] | None = set()
        """Host headers accepted; None: any (bound beyond loopback, behind a proxy)."""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.client: FlowClient = self.call(_make(make_client))

    def call(self, work: Awaitable[T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(_await(work), self.loop)
        return future.result(REQUEST_TIMEOUT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


async def _make(make_client: Callable[[], FlowClient]) -> FlowClient:
    return make_client()


async def _await(work: Awaitable[T]) -> T:
    return await work


class Handler(BaseHTTPRequestHandler):
    server_version = "flowcraft-fast-dashboard"
    dashboard: Dashboard  # set on the subclass `serve` makes

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per request on stderr is noise for an operator's page

    # ------------------------------------------------------------------ routing

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        path = url.path
        if path == "/" or path.startswith("/runs/"):
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/config":
            self._json(
                HTTPStatus.OK, {"queue": self.dashboard.queue, "actions": self.dashboard.actions}
            )
        elif path == "/api/queues":
            self._answer(lambda: api.queues(self.dashboard.client, self.dashboard.queue))
        elif path == "/api/runs":
            try:
                f = api.run_filter(parse_qs(url.query))
            except api.BadRequest as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            self._answer(lambda: api.runs(self.dashboard.client, f))
        elif path.startswith("/api/runs/") and path.count("/") == 3:
            run_id = unquote(path.rsplit("/", 1)[1])
            self._answer(lambda: api.run_detail(self.dashboard.client, run_id), run_id)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        parts = urlsplit(self.path).path.split("/")
        if len(parts) == 3 and parts[1] == "webhooks":
            self._webhook(unquote(parts[2]))
            return
        if (
            len(parts) != 5
            or parts[:3] != ["", "api", "runs"]
            or parts[4] not in ("cancel", "resume")
        ):
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such action"})
            return
        if not self.dashboard.actions:
            self._json(
                HTTPStatus.FORBIDDEN,
                {"error": "actions are off: start the dashboard with --allow-actions"},
            )
            return
        if self.headers.get(ACTION_HEADER) != "1":
            self._json(
                HTTPStatus.FORBIDDEN, {"error": f"a POST needs the header {ACTION_HEADER}: 1"}
            )
            return
        body = self._body()
        if body is None:
            return
        run_id, action = unquote(parts[3]), parts[4]
        client = self.dashboard.client
        try:
            if action == "cancel":
                done = self.dashboard.call(client.cancel(run_id))
                self._json(HTTPStatus.OK, {"cancelled": done})
            else:
                node = body.get("node")
                if not isinstance(node, str) or not node:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": 'resume needs a node id ("node")'})
                    return
                self.dashboard.call(
                    client.resume(
                        run_id, node, output=body.get("output"), action=body.get("action")
                    )
                )
                self._json(HTTPStatus.OK, {"resumed": node})
        except RunNotFound as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except (FlowcraftError, TypeError, ValueError) as exc:
            self._json(HTTPStatus.CONFLICT, {"error": str(exc)})
        except (ConnectionError, TimeoutError, _core.RedisCommandError) as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"Redis: {exc}"})

    def _webhook(self, token: str) -> None:
        """`POST /webhooks/<token>`: the body is the event's payload (distributed/webhooks.py);
        the token authorises it (no --allow-actions, no action header)."""
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_WEBHOOK_BODY:
            self.close_connection = True  # the body is not read
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"body over {MAX_WEBHOOK_BODY} bytes"},
            )
            return
        body = self.rfile.read(length) if length else b""
        delivery = next((self.headers[h] for h in DELIVERY_HEADERS if self.headers.get(h)), None)
        status, document = self.dashboard.call(
            deliver_webhook(self.dashboard.client, token, body, delivery)
        )
        self._json(status, document)

    # ------------------------------------------------------------------ helpers

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        if self.dashboard.hosts is None or host in self.dashboard.hosts:
            return True
        self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": f"unexpected Host {host!r}"})
        return False

    def _body(self) -> dict[str, Any] | None:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"}
            )
            return None
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"})
            return None
        if not isinstance(body, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON object"})
            return None
        return body

    def _answer(self, make: Callable[[], Awaitable[Any]], run_id: str | None = None) -> None:
        try:
            document = self.dashboard.call(make())
        except (ConnectionError, TimeoutError, _core.RedisCommandError) as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"Redis: {exc}"})
            return
        if document is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no run {run_id!r}"})
        else:
            self._json(HTTPStatus.OK, document)

    def _json(self, status: HTTPStatus, document: Any) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        )
        self.end_headers()
        self.wfile.write(body)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_dashboard(make_client: Callable[[], FlowClient], args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the exit code. Prints the URL once it listens."""
    dashboard = Dashboard(make_client, args.queue, args.allow_actions)
    handler = type("BoundHandler", (Handler,), {"dashboard": dashboard})
    try:
        server = ThreadingHTTPServer((args.bind, args.port), handler)
    except OSError as exc:
        dashboard.close()
        print(
            f"flowcraft-fast: cannot listen on {args.bind}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    server.daemon_threads = True
    port = server.server_address[1]
    if args.bind in LOOPBACK:
        dashboard.hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}
    else:
        dashboard.hosts = None
    signal.signal(signal.SIGTERM, _stop)
    mode = "cancel and resume allowed" if args.allow_actions else "read-only"
    print(f"dashboard on http://{args.bind}:{port}/ (queue {args.queue}, {mode})", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        dashboard.close()
    return 0
