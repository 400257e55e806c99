"""`loop-controller`: decide whether a loop runs its body again (`continue`) or exits (`break`)."""

from __future__ import annotations

from ..errors import FlowcraftError
from ..expressions import compile_expression, truthy
from ..runtime.types import NodeContext, NodeResult

DEFAULT_MAX_ITERATIONS = 100


class LoopLimitExceeded(FlowcraftError):
    """A loop wanted to run its body more than `params.maxIterations` times."""


async def loop_controller(ctx: NodeContext) -> NodeResult:
    """Evaluate `params.condition` over the context: truthy -> action `continue`, else
    `break`. The input passes through either way, so the body receives the value of the
    previous iteration and the exit edge the last one.

    `ctx.iteration` counts the body runs so far; one more than `params.maxIterations` fails.
    """
    condition = ctx.params.get("condition")
    if not isinstance(condition, str):
        raise ValueError(f"loop controller '{ctx.node_id}' needs params.condition")
    max_iterations = ctx.params.get("maxIterations", DEFAULT_MAX_ITERATIONS)
    scope = await ctx.context.to_dict()
    runtime = ctx.dependencies.get("runtime")
    evaluate = getattr(runtime, "evaluate_expression", None)
    value = (
        evaluate(condition, scope)
        if evaluate is not None
        else compile_expression(condition).evaluate(scope)
    )
    if not truthy(value):
        return NodeResult(output=ctx.input, action="break")
    if ctx.iteration >= max_iterations:
        raise LoopLimitExceeded(
            f"loop '{ctx.node_id}' exceeded maxIterations ({max_iterations}): its condition "
            f"{condition!r} was still true"
        )
    return NodeResult(output=ctx.input, action="continue")
