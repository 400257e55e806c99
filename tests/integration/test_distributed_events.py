"""Distributed runs emit the adapter-level events of SPEC section 3 to the runtime's bus."""

from __future__ import annotations

from typing import Any

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext

BP = {
    "id": "ev",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "c", "uses": "one"}],
    "edges": [{"source": "a", "target": "c"}],
}
FAILS = {
    "id": "ev-fail",
    "nodes": [{"id": "x", "uses": "boom"}],
    "edges": [],
}


class Bus:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of(self, run_id: str, kind: str) -> list[dict[str, Any]]:
        return [
            e["payload"]
            for e in self.events
            if e["type"] == kind and e["payload"].get("runId") == run_id
        ]


async def one(ctx: NodeContext) -> int:
    return 1


async def boom(ctx: NodeContext) -> None:
    raise ValueError("kaput")


async def test_job_and_workflow_events(redis_url: str) -> None:
    bus = Bus()
    rt = FlowRuntime(
        blueprints=[BP, FAILS],
        registry={"one": one, "boom": boom},
        event_bus=bus,
    )
    adapter = BullMQAdapter(runtime_options=rt.options, connection=redis_url, queue_name="ev")
    await adapter.start()
    try:
        client = FlowClient(redis_url, queue_name="ev")
        ok = await client.start("ev", {})
        assert (await client.wait(ok, timeout=10)).status == "completed"
        bad = await client.start("ev-fail", {})
        assert (await client.wait(bad, timeout=10)).status == "failed"
    finally:
        await adapter.close()

    processed = bus.of(ok, "job:processed")
    assert sorted(p["nodeId"] for p in processed) == ["a", "c"]
    assert all(p["success"] and p["blueprintId"] == "ev" for p in processed)
    assert [p["nodeId"] for p in bus.of(ok, "job:enqueued")] == ["c"]
    assert [p["status"] for p in bus.of(ok, "workflow:finish")] == ["completed"]
    assert [p["nodeId"] for p in bus.of(ok, "node:start")] == ["a", "c"]  # from the executor

    failed = bus.of(bad, "job:failed")
    assert [(p["nodeId"], p["error"]) for p in failed] == [("x", "kaput")]
    assert [p["status"] for p in bus.of(bad, "workflow:finish")] == ["failed"]
