"""`wait-for-event`: park the run until a named event arrives (`params.event`).

An event is sent with `FlowClient.send_event(run_id, name, payload)` (or the webhook endpoint,
docs/events.md) distributed, and `FlowRuntime.send_event` in memory. Whenever it is sent,
before the run reaches the node, while it runs, or after it parked, the node finishes with the
payload as its output (one event per wait; the latest of a name sent before the wait wins):

- sent before: it is buffered in the run's state (`_events.<name>`), and the node takes it;
- sent while the node parks: the park commit is refused because the state changed since the
  node read it (commit.lua, mode "await-event"), and the node runs again and takes it;
- sent after: the node waits (`_evwait.<name>` holds its activation's key) and the event
  resumes it.

With `params.timeout` (ms or "30s", "5m", ...), a node still waiting when it passes finishes
with output null and the action "timeout" (route on it with an edge `"action": "timeout"`):
distributed, a delayed job made with the park does it unless the event came first (commit.lua,
claim.lua); in memory the run waits in process for the event or the timeout (runtime.py).
"""

from __future__ import annotations

from typing import Any

from ..runtime.types import NodeContext, NodeResult
from ..runtime.vocabulary import EVENT, EVENT_WAIT, node_key
from .sleep import parse_duration_ms

MAX_EVENT_NAME = 200
_ABSENT: Any = object()


def event_timeout_ms(params: Any, node_id: str) -> float | None:
    """The node's optional `params.timeout` (ms, or a string like "30s", "5m"), checked."""
    raw = params.get("timeout") if hasattr(params, "get") else None
    if raw is None:
        return None
    try:
        return parse_duration_ms(raw)
    except ValueError as exc:
        raise ValueError(f"wait-for-event node '{node_id}': timeout: {exc}") from None


def event_name(params: Any, node_id: str) -> str:
    """The node's `params.event`, checked: 1-200 characters, no control characters."""
    name = params.get("event") if hasattr(params, "get") else None
    if not isinstance(name, str) or not name or len(name) > MAX_EVENT_NAME:
        raise ValueError(
            f"wait-for-event node '{node_id}' needs params.event, a name of 1-"
            f"{MAX_EVENT_NAME} characters, not {name!r}"
        )
    if any(ord(c) < 32 for c in name):
        raise ValueError(
            f"wait-for-event node '{node_id}': event name {name!r} has control characters"
        )
    return name


async def wait_for_event_node(ctx: NodeContext) -> NodeResult:
    name = event_name(ctx.params, ctx.node_id)
    event_timeout_ms(ctx.params, ctx.node_id)
    payload = await ctx.context.get(EVENT + name, _ABSENT)
    if payload is not _ABSENT:
        await ctx.context.delete(EVENT + name)  # taken: the next wait needs a new event
        return NodeResult(output=payload)
    await ctx.context.set(EVENT_WAIT + name, node_key(ctx.node_id, ctx.iterations))
    return NodeResult(output=None, awaiting=True)
