"""`--processes N`: this process supervises N worker children, each `python -m` of the daemon.

Each child gets the fully resolved settings as flags (so it never re-reads env or file), its
own session (a terminal's Ctrl-C reaches only the supervisor, which forwards it once), and its
own private notify socket: the children speak the same systemd protocol to the supervisor,
which announces READY=1 once all of them consume, relays STOPPING=1, pings systemd's watchdog,
and kills a child whose own watchdog pings stop. A child that dies unexpectedly is restarted
with exponential backoff; one that exits 2 (a configuration error) stops the whole service.
Only child 0 runs the reconciler. With `--metrics-bind`/`--metrics-port` the supervisor
serves one /metrics for all: the children write theirs to a private directory
(prometheus-client's multiprocess mode) and a dead child's live gauges are dropped from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, replace

from .checks import StartupError
from .config import WORKER_INDEX_ENV, DaemonConfig, default_worker_name, to_cli_args
from .lifecycle import StopSignals, wait_for_redis
from .metrics import CHILD_ENV, MULTIPROC_ENV, MetricsEndpoint, mark_process_dead, serve_children
from .notify import Notifier, watchdog_interval

__all__ = ["Supervisor"]

log = logging.getLogger("flowcraft_fast.daemon")

CHILD_WATCHDOG_SECONDS = 20.0  # a ready child that sends no WATCHDOG=1 for this long is killed
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
HEALTHY_AFTER = 30.0  # a child that lived this long resets the backoff
STOP_GRACE = 10.0  # beyond --drain-timeout, before leftover children are killed
EXIT_USAGE = 2


@dataclass
class _Child:
    index: int
    config: DaemonConfig
    notify_path: str
    sock: socket.socket
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    started_at: float = 0.0
    last_ping: float = 0.0
    quick_deaths: int = 0


class Supervisor:
    def __init__(self, config: DaemonConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier.from_env()
        self.children: list[_Child] = []
        self.exit_code = 0
        self._announced = False
        self._stop = StopSignals(on_second=self._kill_all)
        self._metrics_dir: str | None = None

    async def run(self) -> int:
        self._stop.install()
        tmpdir = tempfile.mkdtemp(prefix="flowcraft-fastd-")  # mode 0700: only we may notify
        interval = watchdog_interval()
        watchdog = asyncio.create_task(self._ping_systemd(interval)) if interval else None
        endpoint: MetricsEndpoint | None = None
        try:
            self.notifier.status("checking Redis")
            try:
                # Fail once, with one line, rather than N children in a restart loop.
                facts = await wait_for_redis(self.config, self.notifier, self._stop.requested)
                if facts is None:
                    return 0
                endpoint = self._serve_metrics(tmpdir)
            except StartupError as exc:
                log.error("%s", exc)
                return 1
            self._open_children(tmpdir)
            watchers = [asyncio.create_task(self._keep_running(c)) for c in self.children]
            health = asyncio.create_task(self._check_children())
            await self._stop.requested.wait()
            health.cancel()
            await self._stop_children()
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, health, return_exceptions=True)
            return self.exit_code
        finally:
            if endpoint is not None:
                endpoint.close()
            if watchdog is not None:
                watchdog.cancel()
            self._close_sockets()
            shutil.rmtree(tmpdir, ignore_errors=True)
            self._stop.uninstall()

    @property
    def stopping(self) -> bool:
        return self._stop.requested.is_set()

    # ------------------------------------------------------------------ children

    def _open_children(self, tmpdir: str) -> None:
        loop = asyncio.get_running_loop()
        for index in range(self.config.processes):
            path = os.path.join(tmpdir, f"worker-{index}.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.bind(path)
            sock.setblocking(False)
            child = _Child(index, self._child_config(index), path, sock)
            loop.add_reader(sock.fileno(), self._on_message, child)
            self.children.append(child)

    def _child_config(self, index: int) -> DaemonConfig:
        base = self.config.name or default_worker_name(os.environ)
        return replace(
            self.config,
            processes=1,
            name=None if base is None else f"{base}.{index}",  # one name per child
            reconcile_interval=self.config.reconcile_interval if index == 0 else 0.0,
            metrics_port=None,  # the supervisor serves the children's metrics
            metrics_bind=None,
        )

    def _serve_metrics(self, tmpdir: str) -> MetricsEndpoint | None:
        address = self.config.metrics_address
        if address is None:
            return None
        self._metrics_dir = os.path.join(tmpdir, "metrics")
        os.mkdir(self._metrics_dir, 0o700)
        return serve_children(address, self._metrics_dir, self._child_figures)

    def _child_figures(self) -> list[tuple[int, int | None, bool]]:
        """(index, pid, ready) per child, read by the metrics thread at scrape time."""
        figures = []
        for child in list(self.children):
            process = child.process
            alive = process is not None and process.returncode is None
            figures.append((child.index, process.pid if alive and process else None, child.ready))
        return figures

    async def _spawn(self, child: _Child) -> None:
        env = dict(os.environ)
        env.pop("WATCHDOG_PID", None)
        env.update(
            NOTIFY_SOCKET=child.notify_path,
            WATCHDOG_USEC=str(int(CHILD_WATCHDOG_SECONDS * 1_000_000)),
            **{WORKER_INDEX_ENV: str(child.index)},
        )
        if self._metrics_dir is not None:
            env.update({MULTIPROC_ENV: self._metrics_dir, CHILD_ENV: "1"})
        args = [sys.executable, "-m", "flowcraft_fast.daemon", *to_cli_args(child.config)]
        child.process = await asyncio.create_subprocess_exec(
            *args, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
        )
        child.ready = False
        child.started_at = child.last_ping = time.monotonic()
        log.info("worker %d started (pid %d)", child.index, child.process.pid)

    async def _keep_running(self, child: _Child) -> None:
        """Start `child`, and start it again each time it dies while we are not stopping."""
        while not self.stopping:
            try:
                await self._spawn(child)
            except OSError as exc:
                log.error("cannot start worker %d: %s", child.index, exc)
                self.exit_code = 1
                self._stop.requested.set()
                return
            assert child.process is not None
            code = await child.process.wait()
            child.ready = False
            if self._metrics_dir is not None:  # its counters stay, its live gauges go
                mark_process_dead(child.process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
            if self.stopping:
                return
            if code == EXIT_USAGE:
                log.error("worker %d exited with a configuration error; stopping", child.index)
                self.exit_code = EXIT_USAGE
                self._stop.requested.set()
                return
            lived = time.monotonic() - child.started_at
            child.quick_deaths = 0 if lived >= HEALTHY_AFTER else child.quick_deaths + 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(child.quick_deaths - 1, 0))
            log.warning(
                "worker %d (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                child.index, child.process.pid, _describe_exit(code), lived, delay,
            )  # fmt: skip
            self._report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.requested.wait(), timeout=delay)

    async def _check_children(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for child in self.children:
                process = child.process
                if not child.ready or process is None or process.returncode is not None:
                    continue
                if now - child.last_ping > CHILD_WATCHDOG_SECONDS:
                    log.error(
                        "worker %d (pid %d) sent no watchdog ping for %gs; killing it",
                        child.index, process.pid, CHILD_WATCHDOG_SECONDS,
                    )  # fmt: skip
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()

    async def _stop_children(self) -> None:
        name = signal.Signals(self._stop.signum or signal.SIGTERM).name
        self.notifier.stopping(
            f"draining {len(self.children)} workers after {name}",
            extend_seconds=self.config.drain_timeout + STOP_GRACE + 30.0,
        )
        log.info("%s: stopping %d workers", name, len(self.children))
        alive = [c.process for c in self.children if c.process and c.process.returncode is None]
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in alive]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=self.config.drain_timeout + STOP_GRACE)
        for process in alive:
            if process.returncode is None:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.gather(*waits, return_exceptions=True)
        if pending or any(p.returncode != 0 for p in alive):
            self.exit_code = self.exit_code or 1

    def _kill_all(self, signum: int) -> None:
        """Second signal: pass it on (children exit at once too), then the caller exits."""
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signum)

    # ------------------------------------------------------------------ notify

    def _on_message(self, child: _Child) -> None:
        while True:
            try:
                data = child.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for line in data.decode(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key == "WATCHDOG" and value == "1":
                    child.last_ping = time.monotonic()
                elif key == "READY" and value == "1":
                    child.ready = True
                    child.last_ping = time.monotonic()
                    self._report()

    def _report(self) -> None:
        if self.stopping:
            return
        ready = sum(c.ready for c in self.children)
        total = len(self.children)
        status = f"{ready}/{total} workers consuming queue {self.config.queue}"
        if ready == total and not self._announced:
            self._announced = True
            self.notifier.ready(status)
            log.info("all %d workers consuming queue %r", total, self.config.queue)
        else:
            self.notifier.status(status)

    async def _ping_systemd(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _close_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for child in self.children:
            loop.remove_reader(child.sock.fileno())
            child.sock.close()


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
