"""flowcraft-fast: Flowcraft workflows in memory or distributed over Redis, with a Rust hot path.

The names below are the public API (SPEC section 4); everything else is internal.
"""

from __future__ import annotations

from importlib import metadata as _metadata

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

try:
    # The version lives in Cargo.toml only; maturin writes it into the package metadata.
    __version__ = _metadata.version("flowcraft-fast")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"

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
    "__version__",
    "create_bullmq_reconciler",
    "create_flow",
]
