"""Emitting lifecycle events to the user's event bus without letting the bus break a run."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..tracing import RunTrace


class EventEmitter:
    """Sends `{"type": ..., "payload": {...}}` to `bus.emit`; every payload carries the run id
    (`runId`) and the blueprint id (`blueprintId`).

    `emit` may be sync or async. A bus that raises is logged and otherwise ignored.
    `trace` is the run's OpenTelemetry trace (None when nobody traces): the other observer of a
    run, handed along with the bus to everything that runs nodes.
    """

    __slots__ = ("_blueprint_id", "_bus", "_logger", "_run_id", "enabled", "trace")

    def __init__(
        self,
        bus: Any,
        run_id: str,
        blueprint_id: str,
        logger: logging.Logger,
        trace: RunTrace | None = None,
    ) -> None:
        self._bus = bus
        self._run_id = run_id
        self._blueprint_id = blueprint_id
        self._logger = logger
        self.enabled = bus is not None
        """Whether anyone listens (callers skip building events nobody receives)."""
        self.trace = trace

    async def emit(self, event_type: str, **payload: Any) -> None:
        if self._bus is None:
            return
        payload["runId"] = self._run_id
        payload["blueprintId"] = self._blueprint_id
        try:
            outcome = self._bus.emit({"type": event_type, "payload": payload})
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:  # a broken bus must not break the run
            self._logger.exception("event bus failed to emit %s", event_type)
