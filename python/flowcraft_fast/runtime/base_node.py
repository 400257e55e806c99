"""`BaseNode`: the class form of a node implementation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .types import NodeContext


class BaseNode:
    """Subclass and override `exec` (and any other lifecycle method).

    A fresh instance is made for every execution of the node, with `(params, node_id)`. The
    engine calls `prep` once, `exec` once per attempt (only `exec` is retried and timed out),
    `fallback` when the last attempt failed, `post` on the result, and `recover` whenever an
    attempt failed (even if `fallback` or a later attempt recovered); errors raised by
    `recover` are logged and swallowed.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, node_id: str | None = None):
        self.params: dict[str, Any] = dict(params or {})
        self.node_id = node_id

    async def prep(self, ctx: NodeContext) -> Any:
        """Prepare the input of `exec`; by default the node's input."""
        return ctx.input

    async def exec(self, prep_result: Any, ctx: NodeContext) -> Any:
        """The node's work. Retried up to `config.maxRetries` attempts."""
        raise NotImplementedError(f"{type(self).__name__}.exec is not implemented")

    async def post(self, exec_result: Any, ctx: NodeContext) -> Any:
        """Turn the result of `exec` (or `fallback`) into the node's result; by default as is."""
        return exec_result

    async def fallback(self, error: Exception, ctx: NodeContext) -> Any:
        """Called with the last error when every attempt failed; by default re-raises it."""
        raise error

    async def recover(self, error: Exception, ctx: NodeContext) -> None:
        """Clean up after a failed attempt (called once, with the first error)."""
        return None


def is_class_node(impl: Any) -> bool:
    """A class with an `exec` method is a class node (Flowcraft's rule); anything else callable
    is a function node."""
    return isinstance(impl, type) and callable(getattr(impl, "exec", None))
