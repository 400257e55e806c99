"""The data that crosses the engine's boundaries: node context, node result, run result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .vocabulary import PAUSED_PREFIX

RunStatus = Literal["completed", "failed", "awaiting", "cancelled", "stalled"]

RESULT_KEYS: frozenset[str] = frozenset({"output", "action", "dynamic_nodes"})
"""A dict returned by a node is a result (not an output) when its keys are a non-empty subset."""


class AsyncContext(Protocol):
    """The run's shared state as node code sees it (`ctx.context`). Every call is async."""

    async def get(self, key: str, default: Any = None) -> Any: ...

    async def set(self, key: str, value: Any) -> None: ...

    async def has(self, key: str) -> bool: ...

    async def delete(self, key: str) -> bool: ...

    async def to_dict(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class NodeResult:
    """What a node returns: its output, an optional routing action and dynamic nodes.

    `awaiting` is set by the `wait` built-in (and by a subflow whose child is awaiting): the node
    does not finish; the run becomes `awaiting` until `FlowRuntime.resume` supplies its result.
    """

    output: Any = None
    action: str | None = None
    dynamic_nodes: Sequence[Mapping[str, Any]] | None = None
    awaiting: bool = False


@dataclass(frozen=True, slots=True)
class WorkflowError:
    """One error recorded by a run: the node at fault and the original exception's message/type."""

    node_id: str | None
    message: str
    type: str

    def to_json(self) -> dict[str, Any]:
        return {"nodeId": self.node_id, "message": self.message, "type": self.type}

    @classmethod
    def from_exception(cls, node_id: str | None, exc: BaseException) -> WorkflowError:
        return cls(node_id=node_id, message=str(exc), type=type(exc).__name__)


class WorkflowResult:
    """The outcome of `FlowRuntime.run` / `resume` (and `FlowClient.wait`).

    `serialized_context` is the context as JSON text (for an awaiting run, with what `resume`
    needs); given as a callable, it is made on first use, so a run whose result is never
    serialized does not pay for it.
    """

    __slots__ = ("_serialized", "context", "errors", "run_id", "status")

    def __init__(
        self,
        status: RunStatus,
        context: dict[str, Any],
        serialized_context: str | Callable[[], str],
        errors: list[WorkflowError],
        run_id: str,
    ) -> None:
        self.status = status
        self.context = context
        self._serialized = serialized_context
        self.errors = errors
        self.run_id = run_id

    @property
    def serialized_context(self) -> str:
        if not isinstance(self._serialized, str):
            self._serialized = self._serialized()
        return self._serialized

    def __repr__(self) -> str:
        return (
            f"WorkflowResult(status={self.status!r}, context={self.context!r}, "
            f"errors={self.errors!r}, run_id={self.run_id!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkflowResult):
            return NotImplemented
        return (self.status, self.context, self.errors, self.run_id) == (
            other.status,
            other.context,
            other.errors,
            other.run_id,
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True)
class NodeContext:
    """The single argument of function nodes and of class node lifecycle methods."""

    context: AsyncContext
    input: Any
    params: dict[str, Any]
    dependencies: Mapping[str, Any]
    run_id: str
    node_id: str
    attempt: int = 1
    """1-based number of the attempt being run."""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the run is cancelled or failed elsewhere; long-running nodes should watch it."""
    blueprint_id: str = ""
    iteration: int = 0
    """How many times this node's loop has been re-entered (0 outside loops, and on the first
    pass). Distributed job ids carry it."""
    iterations: tuple[int, ...] = ()
    """The iteration of every loop around this node, outermost first (`iteration` is the
    last): with `node_id`, the activation's key (`vocabulary.node_key`)."""

    async def pause(self, reason: str = "") -> NodeResult:
        """Park this node's run, as the `wait` built-in does: `return await ctx.pause("...")`.

        The run becomes `awaiting`; resuming it at this node (`FlowRuntime.resume`,
        `FlowClient.resume`) finishes the node with the output (and action) given then. The
        reason is kept in the context as `_paused.<node id>` (shown while the run waits, left
        out of a finished run's context) and carried by the `workflow:pause` event."""
        if not isinstance(reason, str):
            raise TypeError(f"pause reason must be a string, not {type(reason).__name__}")
        await self.context.set(f"{PAUSED_PREFIX}{self.node_id}", reason)
        return NodeResult(output=None, awaiting=True)
