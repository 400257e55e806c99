"""A distributed worker for a test: `start_worker` serves a runtime's blueprints from a Redis
(a `BullMQAdapter` in the caller's event loop) and records its events; `close()` stops it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from ..distributed.adapter import BullMQAdapter
from ..distributed.client import FlowClient
from ..runtime import FlowRuntime
from .recorder import EventRecorder
from .runs import TracedRun, wait_with_trace

DEFAULT_QUEUE = "flowcraft-queue"


class RunningWorker:
    """A started `BullMQAdapter` serving `runtime` on `url`, with a `FlowClient` for its queue.

    `recorder` records the events the worker emits (it is wrapped around the runtime's own
    bus, which still receives them). `await run(...)` starts a run and waits for it, with its
    trace. An async context manager: leaving it closes the worker.
    """

    def __init__(self, adapter: BullMQAdapter, url: str, recorder: EventRecorder) -> None:
        self.adapter = adapter
        self.url = url
        self.recorder = recorder
        self.queue_name = adapter.queue_name
        self.client = FlowClient(url, queue_name=self.queue_name)

    async def run(
        self,
        blueprint_id: str,
        context: Mapping[str, Any] | None = None,
        *,
        timeout: float = 30.0,
        **start_options: Any,
    ) -> TracedRun:
        """Start `blueprint_id` through the client (`start_options`: `run_id`, `priority`,
        ...), wait for its end up to `timeout` seconds, and return it with its trace."""
        run_id = await self.client.start(blueprint_id, dict(context or {}), **start_options)
        return await wait_with_trace(self.client, run_id, self.recorder, timeout=timeout)

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop claiming, let in-flight nodes finish (within `timeout`), stop."""
        await self.adapter.close(timeout)

    async def __aenter__(self) -> RunningWorker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<RunningWorker queue={self.queue_name!r} on {self.url}>"


async def start_worker(
    runtime: FlowRuntime,
    url: str,
    *,
    recorder: EventRecorder | None = None,
    queue_name: str = DEFAULT_QUEUE,
    **adapter_options: Any,
) -> RunningWorker:
    """Start a `BullMQAdapter` for `runtime`'s blueprints on `url`, in the running event loop.

    Its events go to `recorder` (a new one by default) and on to the runtime's own bus; when
    the runtime's bus is `recorder` already, they are recorded once. `adapter_options` go to
    `BullMQAdapter` (`concurrency`, `lease_ms`, ...).
    """
    recorder = recorder if recorder is not None else EventRecorder()
    options = runtime.options
    bus = recorder.wrap(options.event_bus)
    if bus is not options.event_bus:
        options = dataclasses.replace(options, event_bus=bus)
    adapter = BullMQAdapter(
        runtime_options=options, connection=url, queue_name=queue_name, **adapter_options
    )
    await adapter.start()
    return RunningWorker(adapter, url, recorder)
