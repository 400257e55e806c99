"""Running a node: one attempt, and the attempt loop with retries, timeouts and middleware.

This module holds no run state and does no I/O of its own beyond calling user code, sleeping
between attempts and emitting events, so the distributed worker runs the very same code: it calls
`execute_node` with `attempts=[job_attempt]` (one attempt per job; the queue does the retrying,
using `retry.backoff_delay_ms`), while the in-memory scheduler lets it run every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..blueprint import NodeDefinition
from ..errors import FlowcraftError
from .base_node import is_class_node
from .context import check_json_value
from .events import EventEmitter
from .retry import RandomSource, backoff_delay_ms
from .types import RESULT_KEYS, NodeContext, NodeResult, WorkflowError

_T = TypeVar("_T")

Sleep = Callable[[float], Awaitable[None]]
"""`asyncio.sleep`-like: waits the given number of seconds (injectable for tests)."""


class ImplementationNotFound(FlowcraftError):
    """A node's `uses` key names nothing in the registry."""


class MiddlewareError(FlowcraftError):
    """A middleware hook broke the node execution protocol."""


@dataclass(frozen=True, slots=True)
class ExecutorServices:
    """What node execution needs from the runtime; shared by every run of a runtime."""

    registry: Mapping[str, Any]
    middleware: Sequence[Any] = ()
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("flowcraft_fast"))
    sleep: Sleep = asyncio.sleep
    rng: RandomSource | None = None
    async_uses: dict[str, bool] = field(default_factory=dict)
    """`uses` key -> whether its implementation is an async callable (asked once per key)."""


@dataclass(slots=True)
class NodeOutcome:
    """How a node execution ended: a result, or an error (with the exception kept)."""

    result: NodeResult | None
    error: WorkflowError | None = None
    exception: BaseException | None = None
    attempts: int = 0
    """Number of the last attempt run (1-based); 0 when no attempt ran."""

    @property
    def ok(self) -> bool:
        return self.error is None


def normalise_result(value: Any) -> NodeResult:
    """A NodeResult, or a dict whose keys are a non-empty subset of output/action/dynamic_nodes,
    is a result; any other value is the output."""
    if isinstance(value, NodeResult):
        return value
    if type(value) is dict and value and value.keys() <= RESULT_KEYS:
        action = value.get("action")
        if action is not None and not isinstance(action, str):
            raise TypeError(f"a node result's action must be a string, not {action!r}")
        return NodeResult(
            output=value.get("output"), action=action, dynamic_nodes=value.get("dynamic_nodes")
        )
    return NodeResult(value)


def resolve_implementation(registry: Mapping[str, Any], node: NodeDefinition) -> Any:
    impl = registry.get(node.uses)
    if impl is None:
        raise ImplementationNotFound(
            f"node '{node.id}': no implementation registered for uses '{node.uses}'"
        )
    return impl


async def execute_node(
    services: ExecutorServices,
    events: EventEmitter,
    node: NodeDefinition,
    ctx: NodeContext,
    *,
    attempts: Sequence[int] | None = None,
) -> NodeOutcome:
    """Run `node` with `ctx`: node:start, middleware around the attempts, node:finish/error.

    `attempts` are the 1-based attempt numbers to run (default: all of `config.maxRetries`);
    backoff sleeps separate them. A class node's `fallback` runs only when the last of them is
    the node's final attempt. Task cancellation (`asyncio.CancelledError`) propagates.
    """
    numbers = (
        attempts if attempts is not None else _ALL_ATTEMPTS.get(node.config.max_retries)
    ) or list(range(1, node.config.max_retries + 1))
    if not numbers:
        raise ValueError("execute_node needs at least one attempt number")
    ctx.attempt = numbers[0]
    if events.enabled:
        await events.emit("node:start", nodeId=node.id, input=ctx.input, attempt=numbers[0])
    try:
        impl = services.registry.get(node.uses)
        if impl is None:
            impl = resolve_implementation(services.registry, node)  # raises, naming the node
        if services.middleware:

            async def core() -> NodeResult:
                return await _attempts(services, events, node, ctx, impl, numbers)

            result = await _with_middleware(services, ctx, node.id, core)
        elif events.trace is None and _plain_call(services, node, len(numbers)) is not None:
            # the common case, without the layers it does not need: one attempt of an async
            # function node (exactly what `_attempts` would do for it)
            result = plain_result(node.id, await impl(ctx))
        else:
            result = await _attempts(services, events, node, ctx, impl, numbers)
    except Exception as exc:  # CancelledError is a BaseException and propagates
        error = WorkflowError.from_exception(node.id, exc)
        if events.enabled:
            await events.emit(
                "node:error", nodeId=node.id, error={"message": error.message, "type": error.type}
            )
        return NodeOutcome(None, error, exc, ctx.attempt)
    if events.enabled:
        await events.emit(
            "node:finish",
            nodeId=node.id,
            result={"output": result.output, "action": result.action},
        )
    return NodeOutcome(result, attempts=ctx.attempt)


_PLAIN_OUTPUTS = frozenset({int, str, bool, type(None)})
"""Output types that are JSON as they are (a float may not be finite)."""


def direct_impl(
    services: ExecutorServices,
    events: EventEmitter,
    node: NodeDefinition,
    attempts: Sequence[int] | None,
) -> Any | None:
    """The implementation to await as it is when nothing wraps the run of `node` (no event
    observers, no trace, no middleware, one attempt, no timeout, an async function):
    `execute_node` reduced to the call, which the step function then makes itself. None
    otherwise."""
    if events.enabled or events.trace is not None or services.middleware:
        return None
    n_attempts = len(attempts) if attempts is not None else node.config.max_retries
    return _plain_call(services, node, n_attempts)


def _plain_call(services: ExecutorServices, node: NodeDefinition, n_attempts: int) -> Any | None:
    """The implementation of `node` when running it is one call: one attempt, no timeout, an
    async function (what `execute_node` and the step function then await as it is)."""
    if n_attempts != 1 or node.config.timeout_ms is not None:
        return None
    impl = services.registry.get(node.uses)
    if impl is None or not (services.async_uses.get(node.uses) or _async_uses(services, node)):
        return None
    return impl


def plain_result(node_id: str, value: Any) -> NodeResult:
    """The result of one attempt that returned `value`, normalised and checked."""
    if type(value) in _PLAIN_OUTPUTS:  # nothing to normalise or check
        return NodeResult(value)
    result = normalise_result(value)
    check_result(node_id, result)
    return result


_ALL_ATTEMPTS: dict[int, Sequence[int]] = {n: tuple(range(1, n + 1)) for n in range(1, 11)}
"""Attempt numbers of the usual `maxRetries` values, built once."""


async def _attempts(
    services: ExecutorServices,
    events: EventEmitter,
    node: NodeDefinition,
    ctx: NodeContext,
    impl: Any,
    numbers: Sequence[int],
) -> NodeResult:
    if is_class_node(impl):
        return await _class_node(services, events, node, ctx, impl, numbers)

    async def attempt() -> NodeResult:
        result = normalise_result(await _timed(node, ctx.attempt, lambda: _call(impl, ctx)))
        check_result(node.id, result)
        return result

    return await _retrying(services, events, node, ctx, numbers, attempt)


async def _class_node(
    services: ExecutorServices,
    events: EventEmitter,
    node: NodeDefinition,
    ctx: NodeContext,
    cls: Any,
    numbers: Sequence[int],
) -> NodeResult:
    instance = cls(ctx.params, node.id)
    failures: list[Exception] = []
    first_error: Exception | None = None
    try:
        prepared = await instance.prep(ctx)

        async def attempt() -> Any:
            return await _timed(node, ctx.attempt, lambda: instance.exec(prepared, ctx))

        try:
            executed = await _retrying(services, events, node, ctx, numbers, attempt, failures)
        except Exception as exc:
            if numbers[-1] < node.config.max_retries:
                raise  # not the final attempt: the caller (the queue) retries
            executed = await instance.fallback(exc, ctx)
        result = normalise_result(await instance.post(executed, ctx))
        check_result(node.id, result)
        return result
    except Exception as exc:
        first_error = first_error or exc
        raise
    finally:
        error = failures[0] if failures else first_error
        if error is not None:
            try:
                await instance.recover(error, ctx)
            except Exception:
                services.logger.warning(
                    "recover() of node %r raised; ignored", node.id, exc_info=True
                )


async def _retrying(
    services: ExecutorServices,
    events: EventEmitter,
    node: NodeDefinition,
    ctx: NodeContext,
    numbers: Sequence[int],
    attempt: Callable[[], Awaitable[_T]],
    failures: list[Exception] | None = None,
) -> _T:
    """Run `attempt` once per attempt number until one succeeds; re-raise the last error.

    A failed attempt's context writes are rolled back before the next one (a buffered context
    commits only with the node), as when each attempt is a job of its own. When the run is
    traced, each attempt is a span of its own.
    """
    trace = events.trace
    last_index = len(numbers) - 1
    rollback = getattr(ctx.context, "rollback", None)
    mark = ctx.context.mark() if rollback is not None and last_index else None  # type: ignore[attr-defined]
    for index, number in enumerate(numbers):
        ctx.attempt = number
        try:
            if trace is None:
                result = await attempt()
            else:
                with trace.attempt(node.id, number):
                    result = await attempt()
        except Exception as exc:
            if failures is not None:
                failures.append(exc)
            if index == last_index or ctx.cancelled.is_set():
                raise
            if rollback is not None:
                rollback(mark)
            delay_ms = backoff_delay_ms(node.config, number, services.rng)
            services.logger.info(
                "node %r attempt %d failed (%s: %s); retrying in %.0f ms",
                node.id,
                number,
                type(exc).__name__,
                exc,
                delay_ms,
            )
            await events.emit(
                "node:retry",
                nodeId=node.id,
                attempt=number,
                delayMs=delay_ms,
                error={"message": str(exc), "type": type(exc).__name__},
            )
            if delay_ms > 0:
                await services.sleep(delay_ms / 1000.0)
        else:
            return result
    raise AssertionError("unreachable")  # pragma: no cover


async def _timed(node: NodeDefinition, attempt: int, call: Callable[[], Awaitable[Any]]) -> Any:
    """Run one attempt under the node's timeout; a timeout is the builtin TimeoutError."""
    timeout_ms = node.config.timeout_ms
    if timeout_ms is None:
        return await call()
    deadline = asyncio.timeout(timeout_ms / 1000.0)
    try:
        async with deadline:
            return await call()
    except TimeoutError:
        if not deadline.expired():
            raise  # the node's own TimeoutError, not ours
        raise TimeoutError(
            f"node '{node.id}' attempt {attempt} timed out after {timeout_ms:g} ms"
        ) from None


async def _call(impl: Any, ctx: NodeContext) -> Any:
    if _is_async_callable(impl):
        return await impl(ctx)
    # A plain function runs off the event loop. Cancellation (a timeout, a cancelled run)
    # stops waiting for it, but the thread itself runs to its end.
    value = await asyncio.to_thread(impl, ctx)
    if inspect.isawaitable(value):
        value = await value
    return value


def _async_uses(services: ExecutorServices, node: NodeDefinition) -> bool:
    known = services.async_uses.get(node.uses)
    if known is None:
        known = services.async_uses[node.uses] = _is_async_callable(
            resolve_implementation(services.registry, node)
        )
    return known


def _is_async_callable(impl: Any) -> bool:
    try:
        return _ASYNC_IMPLS[impl]
    except (KeyError, TypeError):  # TypeError: an unhashable implementation
        pass
    found = inspect.iscoroutinefunction(impl) or (
        not is_class_node(impl) and inspect.iscoroutinefunction(getattr(impl, "__call__", None))  # noqa: B004
    )
    with contextlib.suppress(TypeError):  # an implementation that cannot be weakly referenced
        _ASYNC_IMPLS[impl] = found
    return found


_ASYNC_IMPLS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
"""Whether each implementation is an async callable (asked once, not per node)."""


def check_result(node_id: str, result: NodeResult) -> None:
    """Outputs and dynamic nodes must be JSON data (they are stored in the run's context)."""
    check_json_value(result.output, f"output of node '{node_id}'")
    if result.dynamic_nodes is not None:
        check_json_value(list(result.dynamic_nodes), f"dynamic_nodes of node '{node_id}'")


async def _with_middleware(
    services: ExecutorServices,
    ctx: NodeContext,
    node_id: str,
    core: Callable[[], Awaitable[NodeResult]],
) -> NodeResult:
    middleware = services.middleware
    if not middleware:
        return await core()

    async def innermost() -> NodeResult:
        for m in middleware:
            hook = getattr(m, "before_node", None)
            if hook is not None:
                await _maybe_await(hook(ctx, node_id))
        result: NodeResult | None = None
        error: BaseException | None = None
        try:
            result = await core()
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            for m in middleware:
                hook = getattr(m, "after_node", None)
                if hook is None:
                    continue
                try:
                    await _maybe_await(hook(ctx, node_id, result, error))
                except Exception:
                    if error is not None:
                        services.logger.warning(
                            "after_node of %r raised while node %r was failing; ignored",
                            m,
                            node_id,
                            exc_info=True,
                        )
                    else:
                        raise

    chain: Callable[[], Awaitable[NodeResult]] = innermost
    for m in reversed(middleware):  # the first middleware ends up outermost
        hook = getattr(m, "around_node", None)
        if hook is not None:
            chain = _around(hook, ctx, node_id, chain)
    return await chain()


def _around(
    hook: Callable[..., Any],
    ctx: NodeContext,
    node_id: str,
    inner: Callable[[], Awaitable[NodeResult]],
) -> Callable[[], Awaitable[NodeResult]]:
    async def step() -> NodeResult:
        called = False
        inner_result: NodeResult | None = None

        async def next_() -> NodeResult:
            nonlocal called, inner_result
            called = True
            inner_result = await inner()
            return inner_result

        returned = await _maybe_await(hook(ctx, node_id, next_))
        if returned is None:
            if not called or inner_result is None:
                raise MiddlewareError(
                    f"middleware around node '{node_id}' did not call next() and did not "
                    "return a result"
                )
            return inner_result
        result = normalise_result(returned)
        check_result(node_id, result)
        return result

    return step


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
