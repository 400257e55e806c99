"""The in-memory engine: one routing/join/retry core shared with the distributed worker.

Modules, one job each: `graph` (compiled blueprint shape), `routing` (which edges a finished
node takes), `joins` (when a join fires, what it receives), `state` (run bookkeeping; applying
arrivals), `inputs` (input resolution), `retry` (attempts and backoff), `executor` (running a
node: attempts, timeout, middleware, events), `scheduler` (the sliding window of one run),
`runtime` (`FlowRuntime`), `context`, `events`, `types`, `base_node`.
"""

from __future__ import annotations

from .base_node import BaseNode
from .runtime import FlowRuntime, ResumeError, RuntimeOptions
from .types import NodeContext, NodeResult, WorkflowError, WorkflowResult

__all__ = [
    "BaseNode",
    "FlowRuntime",
    "NodeContext",
    "NodeResult",
    "ResumeError",
    "RuntimeOptions",
    "WorkflowError",
    "WorkflowResult",
]
