"""Running one node alone, outside any run (`FlowRuntime.execute_node`), for debugging.

It goes through the engine's step function (runtime/step.py), the very code a run's node goes
through: attempts, retries, timeouts, middleware and events are the same. Only the node's
fallback is left out (a debugging user wants the node's own error), and an input override
replaces what the node's `inputs` would resolve to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..blueprint import Blueprint
from ..errors import BlueprintError, FlowcraftError
from .buffered import BufferedContext
from .context import check_json_value
from .events import EventEmitter
from .graph import CompiledGraph, RunGraph
from .step import Activation, Failed, Finished, Parked, step
from .types import NodeResult
from .vocabulary import INPUTS_PREFIX

if TYPE_CHECKING:
    from .runtime import RuntimeOptions


async def execute_node_alone(
    options: RuntimeOptions,
    bp: Blueprint,
    node_id: str,
    context: Mapping[str, Any] | None,
    input_override: Any,
    overridden: bool,
) -> NodeResult:
    """See `FlowRuntime.execute_node`."""
    try:
        node = bp.node(node_id)
    except KeyError:
        raise BlueprintError(f"blueprint '{bp.id}' has no node '{node_id}'") from None
    data: dict[str, Any] = {}
    for key, value in (context or {}).items():
        check_json_value(value, f"context key {key!r}")
        data[str(key)] = value
    if overridden:
        check_json_value(input_override, "input_override")
        data[f"{INPUTS_PREFIX}{node_id}"] = input_override  # what a start activation reads
    alone = dataclasses.replace(
        node,
        inputs=None if overridden else node.inputs,
        config=dataclasses.replace(node.config, fallback=None),
    )
    bp = dataclasses.replace(bp, nodes=tuple(alone if n.id == node_id else n for n in bp.nodes))
    graph = RunGraph(CompiledGraph.from_blueprint(bp))
    run_id = f"execute-node-{uuid.uuid4().hex}"
    events = EventEmitter(options.event_bus, run_id, bp.id, options.logger)
    outcome = await step(
        options, graph, Activation(node_id, ()), BufferedContext(data), events,
        run_id=run_id, cancelled=asyncio.Event(),
    )  # fmt: skip
    if isinstance(outcome, Finished):
        assert outcome.result is not None
        return outcome.result
    if isinstance(outcome, Parked):
        return NodeResult(awaiting=True)
    assert isinstance(outcome, Failed)
    if outcome.exceptions:
        raise outcome.exceptions[0]
    error = outcome.errors[0]
    raise FlowcraftError(f"node {error.node_id}: {error.type}: {error.message}")
