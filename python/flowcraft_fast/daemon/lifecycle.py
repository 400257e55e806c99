"""One worker process from start to exit: check Redis, consume, report, drain on a signal.

Order of events: Redis checks -> `adapter.start()` -> READY=1 (and the watchdog, metrics and
reconciler tasks) -> first SIGTERM/SIGINT -> STOPPING=1 -> `adapter.close()` bounded by
`--drain-timeout` -> exit 0. A second signal exits at once with 128 + the signal number.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .checks import RedisFacts, RedisUnreachableError, StartupError, check_redis, redact_url
from .config import WORKER_INDEX_ENV, DaemonConfig, default_worker_name
from .metrics import (
    CHILD_ENV,
    MULTIPROC_ENV,
    MetricsEndpoint,
    WorkerMetrics,
    worker_registry,
)
from .notify import Notifier, watchdog_interval
from .otel import configure_tracing

if TYPE_CHECKING:
    from ..runtime import FlowRuntime

__all__ = ["StopSignals", "run_async", "run_worker", "wait_for_redis"]

log = logging.getLogger("flowcraft_fast.daemon")

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CLOSE_GRACE = 5.0  # beyond --drain-timeout, for an adapter that enforces the timeout itself
BOOT_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds between boot tries; the last repeats
EXTEND_MARGIN = 30.0  # EXTEND_TIMEOUT_USEC covers the next step plus this much


class StopSignals:
    """The first SIGTERM/SIGINT sets `requested`; a second one ends the process on the spot."""

    def __init__(self, on_second: Callable[[int], object] | None = None) -> None:
        self.requested = asyncio.Event()
        self.signum: int | None = None
        self._on_second = on_second

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._handle, signum)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)

    def _handle(self, signum: int) -> None:
        if not self.requested.is_set():
            self.signum = signum
            self.requested.set()
            return
        if self._on_second is not None:
            self._on_second(signum)
        exit_now(signum)


def exit_now(signum: int) -> None:
    """Leave without draining: work in flight is redelivered once its lease expires."""
    log.critical("second %s: exiting without draining", signal.Signals(signum).name)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(128 + signum)


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None (with `work` cancelled) when a stop is requested first."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


async def run_worker(
    config: DaemonConfig, runtime: FlowRuntime, notifier: Notifier | None = None
) -> int:
    """Serve `runtime`'s blueprints from the queue until a stop signal; the exit code."""
    notifier = notifier or Notifier.from_env()
    stop = StopSignals(on_second=lambda _: notifier.status("exiting without draining"))
    stop.install()
    where = redact_url(config.redis_url)
    interval = watchdog_interval()
    watchdog = asyncio.create_task(_watchdog(notifier, interval)) if interval else None
    reconcile: asyncio.Task[None] | None = None
    metrics: _Metrics | None = None
    end_tracing = configure_tracing()
    try:
        notifier.status(f"connecting to Redis at {where}")
        facts = await wait_for_redis(config, notifier, stop.requested)
        if facts is None:
            return 0
        adapter = _make_adapter(config, runtime)
        metrics = _start_metrics(config, adapter)
        if await unless_stopped(_start(adapter, config.queue), stop.requested) is None:
            await _drain(adapter, config.drain_timeout)
            return 0
        if metrics is not None:
            metrics.recorder.consuming(True)
        version = facts.version or "unknown"
        notifier.ready(f"consuming queue {config.queue} on Redis {version} at {where}")
        log.info(
            "consuming queue %r on Redis %s at %s (concurrency %d)",
            config.queue, version, where, config.concurrency,
            extra={"queue": config.queue, "pid": os.getpid()},
        )  # fmt: skip
        if config.reconcile_interval > 0:
            recorder = metrics.recorder if metrics is not None else None
            reconcile = asyncio.create_task(_reconcile_forever(adapter, config, recorder))

        await stop.requested.wait()

        name = signal.Signals(stop.signum or signal.SIGTERM).name
        if metrics is not None:
            metrics.recorder.draining_now()
        # A drain longer than the unit's TimeoutStopSec would be cut short by SIGKILL.
        notifier.stopping(
            f"draining (up to {config.drain_timeout:g}s) after {name}",
            extend_seconds=config.drain_timeout + CLOSE_GRACE + EXTEND_MARGIN,
        )
        log.info("%s: draining in-flight work (up to %gs)", name, config.drain_timeout)
        await _cancel(reconcile)
        drained = await _drain(adapter, config.drain_timeout)
        log.info("stopped" if drained else "stopped before in-flight work finished")
        return 0
    except StartupError as exc:
        log.error("%s", exc)
        notifier.status(f"failed: {exc}")
        return 1
    finally:
        await _cancel(reconcile)
        if metrics is not None:
            await metrics.close()
        await _cancel(watchdog)
        if end_tracing is not None:
            end_tracing()  # the spans still batched are exported before the process exits
        stop.uninstall()


async def wait_for_redis(
    config: DaemonConfig, notifier: Notifier, stop: asyncio.Event
) -> RedisFacts | None:
    """Redis's facts once it answers; None when a stop is requested first.

    A Redis that does not answer is tried again after 1, 2, 4 ... 30 s (each try logged, the
    status and EXTEND_TIMEOUT_USEC sent so systemd's start timeout does not fire), for ever or
    until `--redis-wait` seconds have passed: a unit started before Redis converges. An unsafe
    Redis (evicting) fails at once: waiting would not change it.
    """
    where = redact_url(config.redis_url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await unless_stopped(check_redis(config.redis_url, retry_deadline=0), stop)
        except RedisUnreachableError as exc:
            delay = BOOT_BACKOFF[min(attempt, len(BOOT_BACKOFF)) - 1]
            if config.redis_wait is not None:
                left = config.redis_wait - (loop.time() - started)
                if left <= 0:
                    raise
                delay = min(delay, left)
            reason = str(exc)
            log.warning(
                "Redis at %s not reachable (%s); retrying in %g s (attempt %d)",
                where, reason, delay, attempt,
            )  # fmt: skip
            notifier.extend_timeout(
                delay + EXTEND_MARGIN,
                f"waiting for Redis at {where} (attempt {attempt}, next in {delay:g} s)",
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            log.info("stop requested while waiting for Redis")
            return None


def _make_adapter(config: DaemonConfig, runtime: FlowRuntime) -> Any:
    # Imported here: the daemon's modules load (for --help and --check) without the worker.
    try:
        adapter_module = importlib.import_module("flowcraft_fast.distributed.adapter")
        store_module = importlib.import_module("flowcraft_fast.distributed.store")
    except ImportError as exc:
        raise StartupError(
            f"the distributed worker is not available in this build: {exc}"
        ) from None
    try:
        store = store_module.RedisCoordinationStore(
            config.redis_url,
            state_ttl_seconds=config.state_ttl,
            retry_deadline=config.retry_deadline,
            key_prefix=config.key_prefix,
            queue_prefix=config.queue_prefix,
            wait_replicas=config.wait_replicas,
            wait_timeout=config.wait_timeout,
        )
        return adapter_module.BullMQAdapter(
            runtime_options=runtime.options,
            coordination_store=store,
            connection=config.redis_url,
            queue_name=config.queue,
            concurrency=config.concurrency,
            lease_ms=int(config.lease * 1000),
            stalled_interval_seconds=config.stalled_interval,
            max_stalled_count=config.max_stalls,
            worker_name=config.name or default_worker_name(os.environ),
            renew_ms=int((config.renew_interval or 0) * 1000),
            partitions=config.partitions,
            partition_set=config.partition_set,
            history=config.history or None,
            speculate=config.speculate,
        )
    except Exception as exc:
        log.debug("creating the adapter failed", exc_info=True)
        raise StartupError(f"cannot create the worker: {_one_line(exc)}") from None


async def _start(adapter: Any, queue: str) -> bool:
    try:
        await adapter.start()
    except Exception as exc:
        log.debug("adapter.start() failed", exc_info=True)
        raise StartupError(f"cannot start consuming queue {queue!r}: {_one_line(exc)}") from None
    return True


async def _drain(adapter: Any, timeout: float) -> bool:
    """Stop claiming and let in-flight nodes finish; False when `timeout` cut them short."""
    close = adapter.close
    try:
        # An adapter whose close() takes the timeout winds down on its own (committing what
        # finished); wait_for is then only the backstop.
        own_timeout = "timeout" in inspect.signature(close).parameters
    except (TypeError, ValueError):
        own_timeout = False
    try:
        if own_timeout:
            await asyncio.wait_for(close(timeout=timeout), timeout=timeout + CLOSE_GRACE)
        else:
            await asyncio.wait_for(close(), timeout=timeout)
    except TimeoutError:
        log.warning(
            "drain timed out after %gs; unfinished jobs are redelivered when their lease expires",
            timeout,
        )
        return False
    except Exception as exc:
        log.error("closing the worker failed: %s", _one_line(exc))
        log.debug("adapter.close() failed", exc_info=True)
        return False
    return True


async def _watchdog(notifier: Notifier, interval: float) -> None:
    # Sent from the event loop itself: a loop blocked by a runaway sync node stops the pings
    # and systemd restarts the worker, which is the point of the watchdog.
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


class _Metrics:
    """This worker's metrics: recorded by a task, served here (one worker) or by the
    supervisor (a child of `--processes N`, whose figures go to the multiprocess directory)."""

    def __init__(self, recorder: WorkerMetrics, endpoint: MetricsEndpoint | None) -> None:
        self.recorder = recorder
        self.endpoint = endpoint
        self.task = asyncio.create_task(recorder.run())

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self.recorder.sync()  # the last figures, for a supervisor that scrapes after we exit
        if self.endpoint is not None:
            self.endpoint.close()


def _start_metrics(config: DaemonConfig, adapter: Any) -> _Metrics | None:
    address = config.metrics_address
    child = bool(os.environ.get(CHILD_ENV)) and bool(os.environ.get(MULTIPROC_ENV))
    if address is None and not child:
        return None
    primary = os.environ.get(WORKER_INDEX_ENV, "0") == "0"
    registry = None if child else worker_registry()
    recorder = WorkerMetrics(adapter, config.queue, registry, primary)
    endpoint = None
    if registry is not None and address is not None:
        endpoint = MetricsEndpoint(address, registry)
    return _Metrics(recorder, endpoint)


async def _reconcile_forever(
    adapter: Any, config: DaemonConfig, metrics: WorkerMetrics | None = None
) -> None:
    from ..distributed.connection import open_connection
    from ..distributed.reconciler import create_bullmq_reconciler

    reconciler = create_bullmq_reconciler(
        adapter=adapter,
        redis=open_connection(config.redis_url, retry_deadline=config.retry_deadline),
        stalled_threshold_seconds=config.stalled_threshold,
    )
    while True:
        await asyncio.sleep(config.reconcile_interval)
        began = time.monotonic()
        try:
            stats = await reconciler.run()
        except Exception as exc:
            log.warning("reconciler pass failed: %s", _one_line(exc))
            log.debug("reconciler pass failed", exc_info=True)
            if metrics is not None:
                metrics.reconciled(None, time.monotonic() - began)
            continue
        if metrics is not None:
            metrics.reconciled(stats, time.monotonic() - began)
        stalled = getattr(stats, "stalled_runs", 0)
        log.log(
            logging.INFO if stalled else logging.DEBUG,
            "reconciler: %s stalled, %s reconciled, %s failed of %s runs scanned",
            stalled,
            getattr(stats, "reconciled_runs", 0),
            getattr(stats, "failed_runs", 0),
            getattr(stats, "scanned_keys", 0),
        )


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed, else on asyncio's default loop."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if sys.platform != "win32":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            pass
        else:
            loop_factory = uvloop.new_event_loop
    # (A core thread still handing a result to the loop at exit is waited for by the core's own
    # atexit hook, `_core.settle_at_exit`.)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
