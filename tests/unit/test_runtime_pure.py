"""The pure pieces of the engine: joins, routing, retry backoff, inputs, context, durations."""

from __future__ import annotations

import random
from typing import Any

import pytest
from runtime_helpers import blueprint

from flowcraft_fast.blueprint import NodeConfig, load_blueprint
from flowcraft_fast.nodes.sleep import parse_duration_ms
from flowcraft_fast.runtime.context import MemoryContext
from flowcraft_fast.runtime.graph import CompiledGraph, RunGraph
from flowcraft_fast.runtime.inputs import resolve_input, resolve_source
from flowcraft_fast.runtime.joins import FIRE, SKIP, WAIT, join_decision, join_input
from flowcraft_fast.runtime.retry import backoff_delay_ms, should_retry
from flowcraft_fast.runtime.routing import route
from flowcraft_fast.runtime.state import Arrival, RunState, apply_arrivals


class TestJoinDecision:
    def test_all_waits_then_fires_once(self) -> None:
        preds = ["a", "b"]
        assert join_decision("all", preds, {"a"}, set(), fired=False) is WAIT
        assert join_decision("all", preds, {"a", "b"}, set(), fired=False) is FIRE
        assert join_decision("all", preds, {"a", "b"}, set(), fired=True) is WAIT

    def test_all_fires_when_the_rest_was_skipped(self) -> None:
        assert join_decision("all", ["a", "b"], {"a"}, {"b"}, fired=False) is FIRE

    def test_all_skipped_when_every_predecessor_skipped(self) -> None:
        assert join_decision("all", ["a", "b"], set(), {"a", "b"}, fired=False) is SKIP

    def test_any_fires_on_first_finished(self) -> None:
        assert join_decision("any", ["a", "b"], {"b"}, set(), fired=False) is FIRE
        assert join_decision("any", ["a", "b"], set(), {"a"}, fired=False) is WAIT
        assert join_decision("any", ["a", "b"], set(), {"a", "b"}, fired=False) is SKIP

    def test_arrival_sets_are_idempotent(self) -> None:
        # a re-delivered arrival is the same set member: it cannot fire a join twice
        finished = {"a"} | {"a"}
        assert join_decision("all", ["a", "b"], finished, set(), fired=False) is WAIT

    def test_join_input(self) -> None:
        values = {"a": 1, "b": 2}
        assert join_input("all", ["a", "b", "c"], values, "b") == {"a": 1, "b": 2}
        assert join_input("any", ["a", "b"], values, "b") == 2
        assert join_input("all", ["a"], values, "a") == 1


def _graph(raw: dict[str, Any]) -> RunGraph:
    return RunGraph(CompiledGraph.from_blueprint(load_blueprint(raw)))


class TestRouting:
    def test_action_edges_then_default_edges(self) -> None:
        g = _graph(
            blueprint(
                "r",
                [{"id": n, "uses": "x"} for n in "sabc"],
                [
                    {"source": "s", "target": "a", "action": "go"},
                    {"source": "s", "target": "b"},
                    {"source": "s", "target": "c", "action": "stop"},
                ],
            )
        )
        d = route(g, "s", 1, "go", {})
        assert [t.target for t in d.taken] == ["a"]
        assert sorted(t for _, t in d.skipped) == ["b", "c"]
        d = route(g, "s", 1, "unknown", {})  # no action edge taken: default edges
        assert [t.target for t in d.taken] == ["b"]
        d = route(g, "s", 1, None, {})
        assert [t.target for t in d.taken] == ["b"]

    def test_condition_sees_result_and_context_and_transform(self) -> None:
        g = _graph(
            blueprint(
                "r",
                [{"id": n, "uses": "x"} for n in "sab"],
                [
                    {"source": "s", "target": "a", "condition": "result.output > limit"},
                    {"source": "s", "target": "b", "transform": "input * context.k"},
                ],
            )
        )
        d = route(g, "s", 5, None, {"limit": 3, "k": 10})
        assert {t.target: t.value for t in d.taken} == {"a": 5, "b": 50}
        assert [e.result for e in d.evaluations] == [True]
        d = route(g, "s", 1, None, {"limit": 3, "k": 10})
        assert [t.target for t in d.taken] == ["b"]
        assert d.skipped == (("s", "a"),)

    def test_fallback_inherits_edges(self) -> None:
        g = _graph(
            blueprint(
                "r",
                [
                    {"id": "f", "uses": "x", "config": {"fallback": "fb"}},
                    {"id": "fb", "uses": "x"},
                    {"id": "n", "uses": "x"},
                ],
                [("f", "n")],
            )
        )
        d = route(g, "fb", "v", None, {}, inherit_from=["f"])
        assert [(t.source, t.target, t.value) for t in d.taken] == [("f", "n", "v")]


class TestDeadPath:
    def test_skips_propagate_until_a_live_join(self) -> None:
        # s -> (L | R); R -> r2 -> j; L -> j; r2 -> k (k only behind R)
        g = _graph(
            blueprint(
                "d",
                [{"id": n, "uses": "x"} for n in ["s", "L", "R", "r2", "j", "k"]],
                [("s", "L"), ("s", "R"), ("R", "r2"), ("r2", "j"), ("L", "j"), ("r2", "k")],
            )
        )
        state = RunState(started={"s"})
        progress = apply_arrivals(g, state, [Arrival("s", "L", 1), Arrival("s", "R", skipped=True)])
        assert progress.fire == [("L", 1)]
        assert progress.skipped == ["R", "r2", "k"]
        progress = apply_arrivals(g, state, [Arrival("L", "j", "l")])
        assert progress.fire == [("j", {"L": "l"})]


class TestBackoff:
    def test_exponential_with_equal_jitter(self) -> None:
        config = NodeConfig(max_retries=5, retry_delay_ms=100)
        rng = random.Random(1)
        for attempt, full in [(1, 100), (2, 200), (3, 400), (4, 800)]:
            delay = backoff_delay_ms(config, attempt, rng)
            assert full / 2 <= delay <= full

    def test_capped_and_zero(self) -> None:
        assert backoff_delay_ms(NodeConfig(retry_delay_ms=1000), 40, cap_ms=5000) <= 5000
        assert backoff_delay_ms(NodeConfig(retry_delay_ms=0), 3) == 0

    def test_should_retry(self) -> None:
        config = NodeConfig(max_retries=3)
        assert should_retry(config, 2) and not should_retry(config, 3)


class TestInputs:
    def test_sources(self) -> None:
        ctx = {"_outputs.a": {"b": [1, 2]}, "k": 7, "deep.key": 1, "_x": 9}
        assert resolve_source("a", ctx) == {"b": [1, 2]}
        assert resolve_source("a.b", ctx) == [1, 2]
        assert resolve_source("a.b.1", ctx) == 2
        assert resolve_source("k", ctx) == 7
        assert resolve_source("deep.key", ctx) == 1
        assert resolve_source("_x", ctx) == 9
        assert resolve_source("missing.path", ctx) is None

    def test_mapping_and_default(self) -> None:
        bp = load_blueprint(
            blueprint("i", [{"id": "n", "uses": "x", "inputs": {"p": "a", "q": "k"}}], [])
        )
        assert resolve_input(bp.nodes[0], {"_outputs.a": 1, "k": 2}, "edge") == {"p": 1, "q": 2}
        bare = load_blueprint(blueprint("j", [{"id": "n", "uses": "x"}], []))
        assert resolve_input(bare.nodes[0], {}, "edge") == "edge"


class TestContext:
    @pytest.mark.asyncio
    async def test_operations(self) -> None:
        c = MemoryContext()
        await c.set("a", {"b": [1, None, "x"]})
        assert await c.get("a") == {"b": [1, None, "x"]}
        assert await c.has("a") and not await c.has("z")
        assert await c.get("z", 5) == 5
        assert await c.delete("a") is True
        assert await c.delete("a") is False
        await c.patch([("set", "x", 1), {"op": "set", "key": "y", "value": 2}, ("delete", "x")])
        assert await c.to_dict() == {"y": 2}

    @pytest.mark.asyncio
    async def test_non_json_value_names_the_key(self) -> None:
        c = MemoryContext()
        with pytest.raises(TypeError, match="'bad'"):
            await c.set("bad", {1, 2})
        with pytest.raises(TypeError):
            await c.patch([("set", "ok", 1), ("set", "bad", object())])
        assert await c.to_dict() == {}  # a patch is checked before anything is applied


class TestDurations:
    @pytest.mark.parametrize(
        ("raw", "ms"),
        [
            (150, 150.0),
            ("250", 250.0),
            ("10s", 10_000.0),
            ("5m", 300_000.0),
            ("1h", 3_600_000.0),
            ("2d", 172_800_000.0),
            (0, 0.0),
        ],
    )
    def test_valid(self, raw: Any, ms: float) -> None:
        assert parse_duration_ms(raw) == ms

    @pytest.mark.parametrize("raw", [-1, "10x", "s", True, None, float("inf"), [1]])
    def test_invalid(self, raw: Any) -> None:
        with pytest.raises(ValueError, match="duration"):
            parse_duration_ms(raw)
