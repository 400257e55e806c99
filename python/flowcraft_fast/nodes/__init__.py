"""Built-in node implementations, registered under Flowcraft's registry keys."""

from __future__ import annotations

from typing import Any

from ..runtime.vocabulary import GATHER_USES, SCATTER_USES, WAIT_FOR_EVENT_USES
from .batch import batch_gather, batch_scatter
from .loop import loop_controller
from .sleep import parse_duration_ms, sleep_node
from .subflow import subflow_node
from .wait import wait_node
from .wait_event import wait_for_event_node

BUILTIN_NODES: dict[str, Any] = {
    "wait": wait_node,
    WAIT_FOR_EVENT_USES: wait_for_event_node,
    "sleep": sleep_node,
    "subflow": subflow_node,
    SCATTER_USES: batch_scatter,
    GATHER_USES: batch_gather,
    "loop-controller": loop_controller,
}
"""Registry key -> implementation. A runtime's own registry overrides these keys."""

BUILTIN_ACTIONS: dict[str, frozenset[str]] = {
    "loop-controller": frozenset({"continue", "break"}),
    WAIT_FOR_EVENT_USES: frozenset(),
    "subflow": frozenset(),
    SCATTER_USES: frozenset(),
    GATHER_USES: frozenset(),
}
"""Registry key -> every action the built-in's result can carry, for the built-ins whose
actions are fixed (`analysis` finds edges no result can take with it). Absent: `wait` (whoever
resumes it chooses the action) and `sleep` (it returns its input, and an input shaped like a
result, `{"output": ..., "action": ...}`, is read as one)."""

__all__ = ["BUILTIN_ACTIONS", "BUILTIN_NODES", "parse_duration_ms"]
