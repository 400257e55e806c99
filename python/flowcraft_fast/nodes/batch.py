"""`batch-scatter` / `batch-gather`: run a worker node once per item, then collect the outputs.

The scatter node adds one dynamic worker node per item (`<scatter id>#<i>`, input read from the
context key `_batch.<scatter id>.<i>`), all feeding the gather node. With `chunkSize`, it adds
only the first chunk of workers plus a continuation node (`<scatter id>#next@<index>`, also a
`batch-scatter`) that waits for that chunk and then adds the next one, so at most `chunkSize`
workers of the batch are in flight at once. The gather node (an `all` join over every worker
and continuation) lists the worker outputs in item order and writes them to `params.outputKey`.
"""

from __future__ import annotations

from typing import Any

from ..runtime.types import NodeContext, NodeResult
from ..runtime.vocabulary import BATCH_PREFIX, SCATTER_USES, batch_worker_id


def _required_str(params: dict[str, Any], key: str, node_id: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"batch node '{node_id}' needs params.{key} (a string)")
    return value


async def batch_scatter(ctx: NodeContext) -> NodeResult:
    params = ctx.params
    worker = _required_str(params, "workerUsesKey", ctx.node_id)
    gather = _required_str(params, "gatherNodeId", ctx.node_id)
    chunk = params.get("chunkSize")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"batch node '{ctx.node_id}': chunkSize must be an integer >= 1")
    root = params.get("batchId")
    if root is None:  # the scatter node itself (not a continuation): publish the items
        root = ctx.node_id
        items = [] if ctx.input is None else ctx.input
        if not isinstance(items, list):
            raise TypeError(
                f"batch scatter '{ctx.node_id}' needs a list as input, got {type(items).__name__}"
            )
        for index, item in enumerate(items):
            await ctx.context.set(f"{BATCH_PREFIX}{root}.{index}", item)
        count = len(items)
        start = 0
        await ctx.context.set(f"{BATCH_PREFIX}{gather}", {"root": root, "count": count})
    else:
        count = int(params["itemCount"])
        start = int(params["startIndex"])
    end = count if chunk is None else min(count, start + chunk)
    worker_ids = [batch_worker_id(root, i) for i in range(start, end)]
    nodes: list[dict[str, Any]] = [
        {
            "id": worker_ids[i - start],
            "uses": worker,
            "inputs": f"{BATCH_PREFIX}{root}.{i}",
            "predecessors": [ctx.node_id],
            "successors": [gather],
        }
        for i in range(start, end)
    ]
    if end < count:
        nodes.append(
            {
                "id": f"{root}#next@{end}",
                "uses": SCATTER_USES,
                "params": {**params, "batchId": root, "startIndex": end, "itemCount": count},
                "predecessors": worker_ids,
                "successors": [gather],
            }
        )
    output = {
        "gatherNodeId": gather,
        "batchId": root,
        "start": start,
        "end": end,
        "count": count,
        "hasMore": end < count,
    }
    return NodeResult(output=output, dynamic_nodes=nodes)


async def batch_gather(ctx: NodeContext) -> Any:
    gather_id = ctx.params.get("gatherNodeId") or ctx.node_id
    meta = await ctx.context.get(f"{BATCH_PREFIX}{gather_id}")
    if not isinstance(meta, dict):
        raise ValueError(
            f"batch gather '{ctx.node_id}' found no batch: is a batch-scatter naming "
            f"gatherNodeId '{gather_id}' upstream of it?"
        )
    root, count = meta["root"], int(meta["count"])
    outputs = [await ctx.context.get(f"_outputs.{batch_worker_id(root, i)}") for i in range(count)]
    output_key = ctx.params.get("outputKey")
    if isinstance(output_key, str) and output_key:
        await ctx.context.set(output_key, outputs)
    return outputs
