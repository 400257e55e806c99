"""`wait`: pause the run until `FlowRuntime.resume` (or `FlowClient.resume`) supplies a result."""

from __future__ import annotations

from ..runtime.types import NodeContext, NodeResult


async def wait_node(ctx: NodeContext) -> NodeResult:
    """The run becomes `awaiting`; resuming at this node gives it an output and an optional
    action, which routes like any other action."""
    return NodeResult(output=None, awaiting=True)
