"""The engine both modes run: every rule lives here once, and `FlowRuntime` (in memory).

The shared rules, one job per module: `step` (one activation to one outcome: the function the
in-memory loop and the distributed worker both call), `ledger` (which activations fire: the
join rule, mirrored by `commit.lua` and proven equal by a differential test), `graph` (the
compiled blueprint: predecessors, start nodes, loops and which activation an edge reaches),
`routing` (which edges a finished node takes), `inputs` (a node's input), `retry` (attempts
and backoff), `executor` (running a node: attempts, timeout, middleware, events), `buffered`
(a node's writes, committed with it), `vocabulary` (keys and field names).

In memory only: `scheduler` (the sliding window of one run over a `MemoryLedger`), `runtime`
(`FlowRuntime`), `context` (`MemoryContext`). The distributed loops are in `..distributed`.
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
