"""flowcraft-fast: Flowcraft workflows in memory or distributed over Redis, with a Rust hot path.

The names below are the public API (SPEC section 4); everything else is internal.
"""

from __future__ import annotations

from .builder import create_flow
from .distributed.context import RedisContext
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
    "FlowRuntime",
    "NodeContext",
    "NodeResult",
    "RedisContext",
    "WorkflowResult",
    "create_flow",
]
