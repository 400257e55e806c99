"""The demo's workflow: an order is priced, checked in parallel, and either shipped or held.

`runtime` is what `flowcraft-fastd --app demo_app:runtime` serves.
"""

from __future__ import annotations

from typing import Any

from flowcraft_fast import FlowRuntime, NodeContext, create_flow


async def load_order(ctx: NodeContext) -> dict[str, Any]:
    order = await ctx.context.get("order")
    return {"id": order["id"], "items": order["items"]}


async def price(ctx: NodeContext) -> float:
    return round(sum(item["qty"] * item["price"] for item in ctx.input["items"]), 2)


async def check_stock(ctx: NodeContext) -> bool:
    return all(item["qty"] <= 10 for item in ctx.input["items"])


async def check_fraud(ctx: NodeContext) -> bool:
    order = await ctx.context.get("order")
    return order.get("country") != "XX"


async def decide(ctx: NodeContext) -> dict[str, Any]:
    approved = bool(ctx.input["stock"] and ctx.input["fraud"])
    return {"output": {"approved": approved}, "action": "ship" if approved else "hold"}


async def ship(ctx: NodeContext) -> str:
    total = await ctx.context.get("price")
    return f"shipped, charged {total}"


async def hold(ctx: NodeContext) -> str:
    return "held for review"


flow = (
    create_flow("order")
    .node("load", load_order)
    .node("price", price)
    .node("stock", check_stock)
    .node("fraud", check_fraud)
    .node("decide", decide, inputs={"stock": "stock", "fraud": "fraud"})
    .node("ship", ship)
    .node("hold", hold)
    .edge("load", "price")
    .edge("load", "stock")
    .edge("load", "fraud")
    .edge("price", "decide")
    .edge("stock", "decide")
    .edge("fraud", "decide")
    .edge("decide", "ship", action="ship")
    .edge("decide", "hold", action="hold")
)

runtime = FlowRuntime(blueprints=[flow.to_blueprint()], registry=flow.registry)

ORDER = {
    "order": {
        "id": 7,
        "country": "NL",
        "items": [{"sku": "a", "qty": 2, "price": 9.5}, {"sku": "b", "qty": 1, "price": 20}],
    }
}
