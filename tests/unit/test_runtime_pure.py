"""The pure pieces of the engine: the ledger's join rule, routing, loop activations, start
nodes, retry backoff, inputs, context, durations."""

from __future__ import annotations

import random
from typing import Any

import pytest
from runtime_helpers import blueprint

from flowcraft_fast.blueprint import NodeConfig, load_blueprint, start_node_ids
from flowcraft_fast.errors import BlueprintError
from flowcraft_fast.nodes.sleep import parse_duration_ms
from flowcraft_fast.runtime.context import MemoryContext
from flowcraft_fast.runtime.graph import CompiledGraph, RunGraph
from flowcraft_fast.runtime.inputs import resolve_input, resolve_source
from flowcraft_fast.runtime.ledger import SKIPPED, Arrival, MemoryLedger, rebuilt_input
from flowcraft_fast.runtime.retry import backoff_delay_ms, should_retry
from flowcraft_fast.runtime.routing import route


def _arrive(
    ledger: MemoryLedger, committer: str, source: str, value: Any, strategy: Any = "all",
    preds: tuple[str, ...] = ("a", "b"),
) -> list[Any]:  # fmt: skip
    committed = ledger.commit(f"0|{committer}", [Arrival("j", (), source, value, strategy, preds)])
    return [f.input for f in committed.fired]


class TestLedger:
    def test_all_waits_then_fires_once(self) -> None:
        ledger = MemoryLedger()
        assert _arrive(ledger, "a", "a", 1) == []
        assert _arrive(ledger, "b", "b", 2) == [{"a": 1, "b": 2}]
        assert _arrive(ledger, "c", "a", 3) == []  # later arrivals do nothing

    def test_all_fires_when_the_rest_was_skipped(self) -> None:
        ledger = MemoryLedger()
        assert _arrive(ledger, "a", "a", 1) == []
        assert _arrive(ledger, "b", "b", SKIPPED) == [{"a": 1}]

    def test_all_skipped_when_every_predecessor_skipped(self) -> None:
        ledger = MemoryLedger()
        assert _arrive(ledger, "a", "a", SKIPPED) == []
        assert _arrive(ledger, "b", "b", SKIPPED) == [SKIPPED]

    def test_any_fires_on_first_finished(self) -> None:
        ledger = MemoryLedger()
        assert _arrive(ledger, "a", "a", SKIPPED, "any") == []
        assert _arrive(ledger, "b", "b", 2, "any") == [2]
        both = MemoryLedger()
        assert _arrive(both, "a", "a", SKIPPED, "any") == []
        assert _arrive(both, "b", "b", SKIPPED, "any") == [SKIPPED]

    def test_arrivals_are_a_set_and_commits_happen_once(self) -> None:
        ledger = MemoryLedger()
        assert _arrive(ledger, "a", "a", 1) == []
        assert _arrive(ledger, "a2", "a", 1) == []  # the same predecessor again: not counted
        assert ledger.commit("0|a", []).duplicate  # the same node again: a duplicate
        assert _arrive(ledger, "b", "b", 2) == [{"a": 1, "b": 2}]

    def test_growing_predecessor_set_is_waited_for(self) -> None:
        ledger = MemoryLedger()
        assert _arrive(ledger, "s", "s", 0, preds=("s", "w0", "w1")) == []
        assert _arrive(ledger, "w0", "w0", 1, preds=("s", "w0")) == []  # a stale, smaller view
        assert _arrive(ledger, "w1", "w1", 2, preds=("s", "w0", "w1")) == [
            {"s": 0, "w0": 1, "w1": 2}
        ]

    def test_pending_counts_outstanding_activations(self) -> None:
        ledger = MemoryLedger()
        ledger.start(["0|s"])
        committed = ledger.commit("0|s", [Arrival("t", (), "s", 1, "all", ("s",))])
        assert committed.pending == 1 and [f.input for f in committed.fired] == [1]
        assert ledger.commit("0|t", []).pending == 0

    def test_round_trips_through_json(self) -> None:
        ledger = MemoryLedger()
        _arrive(ledger, "a", "a", SKIPPED)
        ledger.park("0|w", "w")
        again = MemoryLedger.from_json(ledger.to_json())
        assert again == ledger
        assert _arrive(again, "b", "b", SKIPPED) == [SKIPPED]

    def test_rebuilt_input(self) -> None:
        assert rebuilt_input({"a": 1, "b": 2}, "all", ["a", "b", "c"]) == {"a": 1, "b": 2}
        assert rebuilt_input({"b": SKIPPED, "a": 1}, "any", ["a", "b"]) == 1
        assert rebuilt_input({"a": SKIPPED}, "all", ["a", "b"]) is SKIPPED


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


class TestLoopsAndStarts:
    def _nested(self) -> RunGraph:
        return _graph(
            blueprint(
                "n",
                [
                    {"id": "O", "uses": "loop-controller", "params": {"condition": "true"}},
                    {"id": "I", "uses": "loop-controller", "params": {"condition": "true"}},
                    *({"id": n, "uses": "x"} for n in ["init", "ib", "ob", "done"]),
                ],
                [
                    ("init", "O"),
                    {"source": "O", "target": "I", "action": "continue"},
                    {"source": "I", "target": "ib", "action": "continue"},
                    ("ib", "I"),
                    {"source": "I", "target": "ob", "action": "break"},
                    ("ob", "O"),
                    {"source": "O", "target": "done", "action": "break"},
                ],
            )
        )

    def test_nested_loop_activations(self) -> None:
        g = self._nested()
        assert g.enclosing_loops("ib") == ("O", "I")
        assert g.enclosing_loops("I") == ("O", "I")
        assert g.enclosing_loops("ob") == ("O",)
        assert g.enclosing_loops("done") == ()
        assert g.target_iteration("init", (), False, "O") == (0,)
        assert g.target_iteration("O", (0,), True, "I") == (1, 0)  # the inner loop is entered
        assert g.target_iteration("I", (1, 0), True, "ib") == (1, 1)
        assert g.target_iteration("ib", (1, 1), False, "I") == (1, 1)
        assert g.target_iteration("I", (1, 3), False, "ob") == (1,)
        assert g.target_iteration("ob", (1,), False, "O") == (1,)
        assert g.target_iteration("O", (2,), True, "I") == (3, 0)  # entered again: from 0
        assert g.target_iteration("O", (2,), False, "done") == ()
        assert list(g.join_predecessors("I", (3, 0))) == ["O"]  # entry edge on each entry
        assert list(g.join_predecessors("I", (3, 1))) == ["ib"]

    def test_overlapping_loops_are_refused(self) -> None:
        with pytest.raises(BlueprintError, match="overlap"):
            _graph(
                blueprint(
                    "o",
                    [
                        {"id": "A", "uses": "loop-controller", "params": {"condition": "true"}},
                        {"id": "B", "uses": "loop-controller", "params": {"condition": "true"}},
                        {"id": "s", "uses": "x"},
                        {"id": "m", "uses": "x"},
                    ],
                    [
                        ("s", "A"),
                        {"source": "A", "target": "m", "action": "continue"},
                        ("m", "B"),
                        {"source": "B", "target": "A", "action": "continue"},
                        ("A", "B"),
                    ],
                )
            )

    def test_cycle_entry_points(self) -> None:
        nodes = [{"id": n, "uses": "x"} for n in ["a", "b", "c", "d"]]
        edges = [("a", "b"), ("b", "a"), ("c", "d"), ("d", "c"), ("b", "c")]
        assert start_node_ids(load_blueprint(blueprint("c", nodes, edges))) == ("a",)
        raw = blueprint("c", nodes, edges)
        raw["metadata"] = {"cycleEntryPoints": ["b"]}
        assert start_node_ids(load_blueprint(raw)) == ("b",)
        two = blueprint("t", nodes, [("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")])
        assert start_node_ids(load_blueprint(two)) == ("a", "c")
        with pytest.raises(BlueprintError, match="no start node"):
            load_blueprint(
                blueprint(
                    "f",
                    [
                        {"id": "p", "uses": "x", "config": {"fallback": "q"}},
                        {"id": "q", "uses": "x", "config": {"fallback": "p"}},
                    ],
                    [],
                )
            )

    def test_conditional_loop_exit_ends_the_loop(self) -> None:
        g = _graph(
            blueprint(
                "e",
                [
                    {"id": "L", "uses": "loop-controller", "params": {"condition": "true"}},
                    *({"id": n, "uses": "x"} for n in ["s", "body", "out", "special"]),
                ],
                [
                    ("s", "L"),
                    {"source": "L", "target": "body", "action": "continue"},
                    ("body", "L"),
                    {"source": "L", "target": "out", "action": "break"},
                    {"source": "L", "target": "special", "condition": "n == 5"},
                ],
            )
        )
        d = route(g, "L", None, "continue", {"n": 4})
        assert d.continues and [t.target for t in d.taken] == ["body"]
        assert d.skipped == ()  # exits stay pending while the loop goes on
        d = route(g, "L", None, "continue", {"n": 5})
        assert not d.continues and [t.target for t in d.taken] == ["special"]
        assert sorted(t for _, t in d.skipped) == ["body", "out"]


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
