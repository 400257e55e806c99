"""`subflow`: run another registered blueprint as one node of this one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..blueprint import Blueprint, NodeDefinition, thaw
from ..errors import FlowcraftError
from ..runtime.graph import CompiledGraph
from ..runtime.inputs import resolve_source, start_input_key
from ..runtime.types import NodeContext, NodeResult, WorkflowResult
from ..runtime.vocabulary import SUBFLOW_STATE_PREFIX

if TYPE_CHECKING:
    from ..runtime.buffered import BufferedContext
    from ..runtime.runtime import FlowRuntime, RuntimeOptions


class SubflowError(FlowcraftError):
    """The child run of a subflow node did not complete."""


def _runtime(ctx_deps: Mapping[str, Any], node_id: str) -> FlowRuntime:
    from ..runtime.runtime import FlowRuntime

    runtime = ctx_deps.get("runtime")
    if not isinstance(runtime, FlowRuntime):
        raise FlowcraftError(f"subflow node '{node_id}' needs the runtime in dependencies")
    return runtime


async def subflow_node(ctx: NodeContext) -> NodeResult:
    """Run `params.blueprintId` to its end.

    The child's initial context: with `params.inputs` {child key: parent source}, each child
    key gets the parent's value (a context key, else a node output, as in `inputs`);
    otherwise every child start node gets this node's input. The output: with
    `params.outputs` {parent key: child node or key}, each parent key is set to the child's
    output of that node (or its context key) and the output is that mapping; otherwise the
    output of the child's single terminal node, or a mapping terminal id -> output.
    """
    runtime = _runtime(ctx.dependencies, ctx.node_id)
    blueprint_id = ctx.params.get("blueprintId")
    if not isinstance(blueprint_id, str) or not blueprint_id:
        raise ValueError(f"subflow node '{ctx.node_id}' needs params.blueprintId")
    child = runtime.get_blueprint(blueprint_id)
    initial: dict[str, Any] = {}
    inputs = ctx.params.get("inputs")
    if isinstance(inputs, Mapping) and inputs:
        parent = await ctx.context.to_dict()
        for child_key, source in inputs.items():
            initial[child_key] = (
                parent[source] if source in parent else resolve_source(str(source), parent)
            )
    else:
        for start in CompiledGraph.from_blueprint(child).start_nodes:
            initial[start_input_key(start)] = ctx.input
    result = await runtime.run(
        child, initial, cancel=ctx.cancelled, run_id=f"{ctx.run_id}/{ctx.node_id}"
    )
    if result.status == "awaiting":
        await ctx.context.set(f"{SUBFLOW_STATE_PREFIX}{ctx.node_id}", result.serialized_context)
        return NodeResult(awaiting=True)
    output, writes = _outputs_of(ctx.node_id, child, result, ctx.params.get("outputs"))
    for key, value in writes.items():
        await ctx.context.set(key, value)
    return NodeResult(output=output)


def child_awaits(node_id: str, context: Mapping[str, Any]) -> bool:
    """Whether the subflow node `node_id` parked its run because its child awaits."""
    return f"{SUBFLOW_STATE_PREFIX}{node_id}" in context


async def resume_subflow(
    options: RuntimeOptions,
    node: NodeDefinition,
    context: BufferedContext,
    resume: Mapping[str, Any],
) -> NodeResult:
    """Resume the awaiting child of subflow `node` with `resume` (its first awaiting node)."""
    runtime = _runtime(options.dependencies, node.id)
    params = thaw(node.params)
    child = runtime.get_blueprint(params["blueprintId"])
    key = f"{SUBFLOW_STATE_PREFIX}{node.id}"
    result = await runtime.resume(child, context.view()[key], resume)
    if result.status == "awaiting":
        context.write(key, result.serialized_context)
        return NodeResult(awaiting=True)
    context.write_delete(key)
    output, writes = _outputs_of(node.id, child, result, params.get("outputs"))
    for write_key, value in writes.items():
        context.write(write_key, value)
    return NodeResult(output=output)


def _outputs_of(
    node_id: str, child_bp: Blueprint, result: WorkflowResult, mapping: Any
) -> tuple[Any, dict[str, Any]]:
    """(node output, parent context writes) of a finished child run."""
    if result.status != "completed":
        first = result.errors[0].message if result.errors else "no error recorded"
        raise SubflowError(
            f"subflow '{node_id}' (blueprint '{child_bp.id}') ended {result.status}: {first}"
        )
    child = result.context
    if isinstance(mapping, Mapping) and mapping:
        writes = {
            str(parent_key): child.get(f"_outputs.{source}", child.get(source))
            for parent_key, source in mapping.items()
        }
        return writes, writes
    finished = {
        t: child[f"_outputs.{t}"]
        for t in CompiledGraph.from_blueprint(child_bp).terminal_nodes
        if f"_outputs.{t}" in child
    }
    if len(finished) == 1:
        return next(iter(finished.values())), {}
    return finished, {}
