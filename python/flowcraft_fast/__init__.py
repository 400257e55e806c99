"""flowcraft-fast: Flowcraft workflows in memory or distributed over Redis, with a Rust hot path.

The names below are the public API (SPEC section 4); everything else is internal.
"""

from __future__ import annotations

from .builder import create_flow
from .distributed.adapter import BullMQAdapter
from .distributed.client import FlowClient
from .distributed.context import RedisContext
from .distributed.reconciler import ReconciliationStats, create_bullmq_reconciler
from .distributed.store import RedisCoordinationStore
from .errors import BlueprintError
from .runtime import (
    BaseNode,
    FlowRuntime,
    NodeContext,
    NodeResult,
    WorkflowResult,
)

__all__ = [
    "BaseNode",
    "BlueprintError",
    "BullMQAdapter",
    "FlowClient",
    "FlowRuntime",
    "NodeContext",
    "NodeResult",
    "ReconciliationStats",
    "RedisContext",
    "RedisCoordinationStore",
    "WorkflowResult",
    "create_bullmq_reconciler",
    "create_flow",
]
