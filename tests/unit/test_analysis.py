"""Blueprint analysis (flowcraft_fast.analysis), strict mode and `flowcraft-fast lint`.

Each finding on a crafted blueprint; the conformance blueprints give no error; what the analysis
says never runs is checked against what the in-memory engine runs (random graphs); a strict
runtime refuses blueprints with errors; the console script's output and exit codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conformance.vocabulary import make_registry

from flowcraft_fast import BlueprintError, FlowRuntime, create_flow
from flowcraft_fast import analysis as analysis_module
from flowcraft_fast.analysis import CODES, Finding, analyze, has_errors
from flowcraft_fast.blueprint import Blueprint, NodeConfig, NodeDefinition, load_blueprint
from flowcraft_fast.errors import BlueprintAnalysisError

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE = [
    Path("/work/shared/conformance/cases.json"),
    ROOT / "tests/conformance/cases.json",
    ROOT / "tests/conformance/engine_cases.json",
]


def one(ctx: Any) -> int:
    return 1


def blueprint(nodes: list[Any], edges: list[Any], **extra: Any) -> dict[str, Any]:
    return {"id": extra.pop("id", "bp"), "nodes": nodes, "edges": edges, **extra}


def node(node_id: str, uses: str = "f", **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "uses": uses, **fields}


def edge(source: str, target: str, **fields: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **fields}


def loop(node_id: str, condition: str = "false") -> dict[str, Any]:
    return node(node_id, "loop-controller", params={"condition": condition})


def found(findings: list[Finding]) -> list[tuple[str, str, str]]:
    """(code, path, node or edge) of each finding, in order."""
    return [(f.code, f.location.path, f.location.edge or f.location.node or "") for f in findings]


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


# ---------------------------------------------------------------- clean blueprints


def test_a_clean_blueprint_gives_no_finding() -> None:
    bp = blueprint(
        [
            node("load"),
            node("price", config={"maxRetries": 3, "fallback": "guess"}),
            node("guess"),
            node("check"),
            node("decide", inputs={"p": "price", "c": "check"}),
            node("ship"),
            node("hold"),
        ],
        [
            edge("load", "price"),
            edge("load", "check"),
            edge("price", "decide"),
            edge("check", "decide"),
            edge("decide", "ship", action="ship"),
            edge("decide", "hold", action="hold"),
            edge("load", "hold", condition="load.total > 100"),
        ],
    )
    assert analyze(bp) == []
    assert analyze(json.dumps(bp)) == []
    assert analyze(load_blueprint(bp)) == []


def test_builder_loops_batches_and_builtins_give_no_finding() -> None:
    flow = (
        create_flow("built")
        .node("init", one)
        .loop("L", start_node_id="body", end_node_id="body", condition="init < 3")
        .node("body", one)
        .batch("items", one, input_key="init", output_key="doubled", chunk_size=2)
        .sleep("nap", "1s")
        .wait("approve")
        .node("done", one)
        .edge("init", "L")
        .edge("L", "items", action="break")
        .edge("items", "nap")
        .edge("nap", "approve")
        .edge("approve", "done", action="yes")
        .edge("approve", "done", action="no")
    )
    assert analyze(flow.build(), flow.registry) == []


def test_the_example_blueprint_gives_no_error() -> None:
    text = (ROOT / "examples/blueprints/order-review.json").read_text()
    assert not has_errors(analyze(text))


def _conformance_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in CONFORMANCE:
        if path.exists():
            for case in json.loads(path.read_text())["cases"]:
                yield f"{path.parent.name}/{path.name}:{case['name']}", case


@pytest.mark.parametrize(("name", "case"), list(_conformance_cases()))
def test_conformance_blueprints_give_no_error(name: str, case: dict[str, Any]) -> None:
    """A conformance case that an analysis error flags would be a wrong rule, not a wrong case.
    The cases whose blueprint must be refused at load give the `invalid` error instead."""
    blueprints = [case["blueprint"], *case.get("extra_blueprints", [])]
    ids = [b["id"] for b in blueprints]
    for bp in blueprints:
        errors = [f for f in analyze(bp, blueprints=ids) if f.severity == "error"]
        if "raises" in case["expect"]:
            assert [f.code for f in errors] == ["invalid"], name
        else:
            assert errors == [], f"{name}: {errors}"
        # With the conformance registry, only the case about a missing implementation errs.
        errors = [f for f in analyze(bp, make_registry(), blueprints=ids) if f.severity == "error"]
        if case["name"] == "unknown_implementation":
            assert codes(errors) == {"unknown-uses"}
        elif "raises" not in case["expect"]:
            assert errors == [], f"{name}: {errors}"


def test_conformance_cycles_are_warnings() -> None:
    cases = {name.split(":")[1]: case for name, case in _conformance_cases()}
    for name in ("cycle_without_start", "cycle_entry_point"):
        assert found(analyze(cases[name]["blueprint"])) == [("cycle", "/edges/1", "B->A")]


# ---------------------------------------------------------------- findings


def test_invalid_blueprints_are_one_error_with_the_loaders_reason() -> None:
    (bad_json,) = analyze("{not json")
    assert (bad_json.code, bad_json.severity, bad_json.location.path) == ("invalid", "error", "/")
    assert bad_json.message.startswith("blueprint is not valid JSON: Expecting property name")
    (ghost,) = analyze(blueprint([node("a")], [edge("a", "ghost")]))
    assert ghost.code == "invalid"
    assert ghost.message == "blueprint 'bp': edge 0 ('a' -> 'ghost'): unknown target node 'ghost'"
    (no_continue,) = analyze(blueprint([node("a"), loop("L")], [edge("a", "L")]))
    assert "has no outgoing edge with action 'continue'" in no_continue.message
    (no_condition,) = analyze(blueprint([node("L", "loop-controller")], []))
    assert "needs params.condition" in no_condition.message


def test_dangling_fallback_is_reported_and_the_rest_still_analysed() -> None:
    bp = blueprint(
        [node("a", config={"fallback": "rescue"}), node("rescu"), node("b", joinStrategy="x")],
        [edge("a", "b"), edge("b", "rescu")],
    )
    bp["nodes"][2] = node("b", config={"joinStrategy": "any"})
    findings = analyze(bp)
    assert found(findings) == [
        ("dangling-fallback", "/nodes/0/config/fallback", "a"),
        ("single-predecessor-any-join", "/nodes/2/config", "b"),
    ]
    assert findings[0].message == (
        "node 'a' names fallback 'rescue', which is not a node of this blueprint "
        "(did you mean 'rescu'?)"
    )
    with pytest.raises(BlueprintError, match="names fallback 'rescue', which is not a node"):
        load_blueprint(bp)  # what the runtime does with it


def test_dangling_fallback_in_object_form_nodes_and_in_a_hand_built_blueprint() -> None:
    bp = {
        "id": "obj",
        "nodes": {"first": node("a", config={"fallback": "zz"}), "x/y": node("b")},
        "edges": {"e1": edge("a", "b")},
    }
    assert found(analyze(bp)) == [("dangling-fallback", "/nodes/first/config/fallback", "a")]
    hand_built = Blueprint(
        id="hand",
        nodes=(NodeDefinition("a", "f", config=NodeConfig(fallback="nowhere")),),
        edges=(),
    )
    assert found(analyze(hand_built)) == [("dangling-fallback", "/nodes/0/config/fallback", "a")]


def test_dangling_subflows() -> None:
    bp = blueprint(
        [
            node("a"),
            node("sub", "subflow", params={"blueprintId": "chld"}),
            node("bare", "subflow"),
        ],
        [edge("a", "sub"), edge("sub", "bare")],
    )
    findings = analyze(bp, blueprints=["child", "other"])
    assert found(findings) == [
        ("dangling-subflow", "/nodes/1/params/blueprintId", "sub"),
        ("dangling-subflow", "/nodes/2/params", "bare"),
    ]
    assert findings[0].message == (
        "subflow node 'sub' runs blueprint 'chld', which is not among the blueprints given "
        "(did you mean 'child'?)"
    )
    assert findings[1].message == "subflow node 'bare' names no blueprint (params.blueprintId)"
    # Without a blueprint set, only the subflow naming nothing is known to point nowhere.
    assert found(analyze(bp)) == [("dangling-subflow", "/nodes/2/params", "bare")]
    assert found(analyze(bp, blueprints={"chld": object()})) == found(analyze(bp))
    # A registry that replaces the built-in `subflow` key runs something else.
    assert analyze(bp, {"f": one, "subflow": one}, blueprints=[]) == []


def test_unknown_uses_needs_a_registry() -> None:
    bp = blueprint(
        [
            node("a", "fetch"),
            node("b", "fecth"),
            node("s", "batch-scatter", params={"workerUsesKey": "wrk", "gatherNodeId": "g"}),
            node("g", "batch-gather"),
        ],
        [edge("a", "b"), edge("b", "s"), edge("s", "g")],
    )
    assert analyze(bp) == []
    findings = analyze(bp, {"fetch": one, "work": one})
    assert found(findings) == [
        ("unknown-uses", "/nodes/1/uses", "b"),
        ("unknown-uses", "/nodes/2/params/workerUsesKey", "s"),
    ]
    assert findings[0].message == (
        "node 'b' uses 'fecth', which the registry does not hold (did you mean 'fetch'?)"
    )


def test_unreachable_nodes() -> None:
    # The run starts at 's' only (a node without incoming edges), so the cycle b <-> c is
    # never entered: the engine completes without running it.
    bp = blueprint([node("s"), node("b"), node("c")], [edge("b", "c"), edge("c", "b")], id="island")
    findings = analyze(bp)
    assert found(findings) == [
        ("unreachable", "/nodes/1", "b"),
        ("unreachable", "/nodes/2", "c"),
        ("cycle", "/edges/1", "c->b"),
    ]
    assert findings[0].message == (
        "node 'b' never runs: no path leads to it from a start node ('s')"
    )
    result = asyncio.run(FlowRuntime(registry={"f": one}).run(bp))
    assert result.status == "completed"
    assert "b" not in result.context and "c" not in result.context


def test_a_fallback_is_reached_through_its_owner() -> None:
    bp = blueprint(
        [node("a", config={"fallback": "fb"}), node("fb"), node("after_fb")],
        [edge("fb", "after_fb")],
    )
    assert analyze(bp) == []


def test_never_runs_when_no_incoming_action_is_ever_returned() -> None:
    bp = blueprint(
        [node("init"), loop("L"), node("body"), node("exit"), node("after")],
        [
            edge("init", "L"),
            edge("L", "body", action="continue"),
            edge("body", "L"),
            edge("L", "exit", action="brake"),
            edge("exit", "after"),
        ],
    )
    findings = analyze(bp)
    assert found(findings) == [
        ("never-runs", "/nodes/3", "exit"),
        ("unreachable", "/nodes/4", "after"),
    ]
    assert findings[0].message == (
        "node 'exit' never runs: no incoming edge can be taken (L->exit needs action 'brake', "
        "but 'L' (loop-controller) returns only 'break' or 'continue')"
    )
    assert findings[1].message == (
        "node 'after' never runs: it is reached only by edges that are never taken"
    )
    # The engine agrees: the loop breaks, nothing takes 'brake'.
    result = asyncio.run(FlowRuntime(registry={"f": one}).run(bp, {"n": 5}))
    assert result.status == "completed"
    assert "exit" not in result.context and "after" not in result.context


def test_actions_are_known_only_for_builtins_with_fixed_actions() -> None:
    def graph(uses: str, **params: Any) -> dict[str, Any]:
        return blueprint([node("a", uses, params=params), node("b")], [edge("a", "b", action="go")])

    assert codes(analyze(graph("batch-gather"))) == {"never-runs"}
    assert codes(analyze(graph("subflow", blueprintId="x"))) == {"never-runs"}
    assert analyze(graph("f")) == []  # a user's node may return any action
    assert analyze(graph("wait")) == []  # the resumer chooses the action
    assert analyze(graph("sleep", duration=5)) == []  # it returns its input, maybe a result
    # A registry that replaces a built-in key makes its actions unknown again.
    assert analyze(graph("batch-gather"), {"f": one, "batch-gather": one}) == []


def test_a_fallback_may_return_the_action_its_owner_never_returns() -> None:
    bp = blueprint(
        [node("g", "batch-gather", config={"fallback": "fb"}), node("fb"), node("b")],
        [edge("g", "b", action="rescued")],
    )
    assert analyze(bp) == []  # the fallback inherits g's edges and routes them by its action
    bp["nodes"][1] = node("fb", "batch-gather")
    (finding,) = analyze(bp)
    assert finding.message == (
        "node 'b' never runs: no incoming edge can be taken (g->b needs action 'rescued', but "
        "'g' (batch-gather, with its fallbacks) returns no action)"
    )


def test_a_loop_controllers_conditional_exit_is_taken_whatever_its_action() -> None:
    bp = blueprint(
        [node("init"), loop("L"), node("body"), node("early"), node("out")],
        [
            edge("init", "L"),
            edge("L", "body", action="continue"),
            edge("body", "L"),
            edge("L", "early", action="stop", condition="body > 10"),
            edge("L", "out", action="break"),
        ],
    )
    assert analyze(bp) == []


def test_dead_edge_into_a_node_that_runs_anyway() -> None:
    bp = blueprint(
        [node("a"), node("g", "batch-gather"), node("t")],
        [edge("a", "g"), edge("g", "t", action="done"), edge("a", "t")],
    )
    (finding,) = analyze(bp)
    assert found([finding]) == [("dead-edge", "/edges/1/action", "g->t")]
    assert finding.severity == "warning"
    assert finding.message == (
        "edge g->t needs action 'done', but 'g' (batch-gather) returns no action, so it is "
        "never taken"
    )


def test_an_all_join_on_a_cycle_never_runs() -> None:
    # 'a' waits for 's' and for 'b', and 'b' runs only after 'a': the engine never runs them.
    bp = blueprint(
        [node("s"), node("a"), node("b"), node("c")],
        [edge("s", "a"), edge("a", "b"), edge("b", "a"), edge("b", "c")],
    )
    findings = analyze(bp)
    assert found(findings) == [
        ("never-runs", "/nodes/1", "a"),
        ("unreachable", "/nodes/2", "b"),
        ("unreachable", "/nodes/3", "c"),
        ("cycle", "/edges/2", "b->a"),
    ]
    assert findings[0].message == (
        "node 'a' never runs: it joins with strategy 'all', so it waits for 'b', which can "
        "only run after 'a' itself (they are on a cycle that is not a loop); declare "
        "joinStrategy 'any', or use a loop-controller"
    )
    assert findings[1].message == "node 'b' never runs: every path to it passes through 'a'"
    result = asyncio.run(FlowRuntime(registry={"f": one}).run(bp))
    assert result.status == "completed" and set(result.context) == {"s", "_outputs.s"}
    # Declared `any`, the join fires on 's' and the cycle runs once: only the warning is left.
    bp["nodes"][1] = node("a", config={"joinStrategy": "any"})
    assert codes(analyze(bp)) == {"cycle"}


def test_cycles_outside_loops_are_warnings_and_loops_are_not_cycles() -> None:
    (self_loop,) = analyze(
        blueprint(
            [node("s"), node("a", config={"joinStrategy": "any"})], [edge("s", "a"), edge("a", "a")]
        )
    )
    assert found([self_loop]) == [("cycle", "/edges/1", "a->a")]
    assert self_loop.severity == "warning"
    assert self_loop.message.startswith("a -> a is a cycle outside any loop: each node on it")
    nested = blueprint(
        [
            node("init"),
            loop("O", "init < 2"),
            node("reset"),
            loop("I", "reset < 3"),
            node("inner"),
            node("outer"),
            node("done"),
        ],
        [
            edge("init", "O"),
            edge("O", "reset", action="continue"),
            edge("reset", "I"),
            edge("I", "inner", action="continue"),
            edge("inner", "I"),
            edge("I", "outer", action="break"),
            edge("outer", "O"),
            edge("O", "done", action="break"),
        ],
    )
    assert analyze(nested) == []
    # A cycle inside a loop's body that does not pass through its controller is one.
    body_cycle = blueprint(
        [
            node("init"),
            loop("L"),
            node("a", config={"joinStrategy": "any"}),
            node("b"),
            node("out"),
        ],
        [
            edge("init", "L"),
            edge("L", "a", action="continue"),
            edge("a", "b"),
            edge("b", "a"),
            edge("b", "L"),
            edge("L", "out", action="break"),
        ],
    )
    assert found(analyze(body_cycle)) == [("cycle", "/edges/3", "b->a")]


def test_a_loop_must_be_entered_from_outside() -> None:
    """The engine refuses such a loop at load (graph.py), so the analysis reports the load
    error: entered only through its body it would wait for itself and the run would end
    without it; started at, it has no iteration to number."""
    # Entered through its body: 'b' waits for the controller, which waits for 'b'.
    through_body = blueprint(
        [node("x"), loop("C"), node("b"), node("z")],
        [
            edge("x", "b"),
            edge("b", "C"),
            edge("C", "b", action="continue"),
            edge("C", "z", action="break"),
        ],
    )
    [finding] = analyze(through_body)
    assert (finding.code, finding.severity, finding.location.path) == ("invalid", "error", "/")
    assert finding.message.endswith(
        "loop controller 'C' has no entry edge: every edge into it comes back from its own "
        "body; add an edge into 'C' from a node outside its loop that the run reaches first"
    )
    # Every node has an incoming edge, so the run would start at the controller.
    at_start = blueprint(
        [loop("L"), node("b"), node("z")],
        [
            edge("L", "b", action="continue"),
            edge("b", "L"),
            edge("L", "z", action="break"),
            edge("z", "L"),
        ],
    )
    [finding] = analyze(at_start)
    assert finding.code == "invalid"
    assert finding.message.endswith(
        "loop controller 'L' is where the run starts (every node has an incoming edge, so the "
        "run starts at the first node of a cycle), but a loop runs only when an edge from "
        "outside enters it; add an edge into 'L' from a node outside its loop that the run "
        "reaches first"
    )
    for bp in (through_body, at_start):  # and the runtime refuses to load either
        with pytest.raises(BlueprintError, match="loop controller"):
            FlowRuntime(blueprints=[bp])


def test_single_predecessor_any_join() -> None:
    bp = blueprint(
        [
            node("a"),
            node("one", config={"joinStrategy": "any"}),
            node("two", config={"joinStrategy": "any"}),
            node("s", "batch-scatter", params={"workerUsesKey": "f", "gatherNodeId": "g"}),
            node("g", "batch-gather", config={"joinStrategy": "any"}),
        ],
        [edge("a", "one"), edge("a", "two"), edge("one", "two"), edge("a", "s"), edge("s", "g")],
    )
    (finding,) = analyze(bp)
    assert found([finding]) == [("single-predecessor-any-join", "/nodes/1/config", "one")]
    assert finding.severity == "warning"
    assert finding.message == (
        "node 'one' declares joinStrategy 'any' but has one predecessor ('a'), so there is "
        "nothing to join; 'any' changes nothing"
    )


def test_conditions_reading_keys_nothing_writes() -> None:
    bp = blueprint(
        [
            node("a"),
            node("setter", "set", params={"key": "total", "value": 1}),
            node("b"),
            loop("L", "result.output < 3 and total < 4 and tries < 2"),
            node("body"),
        ],
        [
            edge("a", "setter"),
            edge("setter", "b", condition="approved and a > 0 and total > 1 and _outputs.a"),
            edge("b", "L", condition="result.output > 0 and input > 1"),
            edge("L", "body", action="continue"),
            edge("body", "L"),
        ],
    )
    findings = analyze(bp)
    assert found(findings) == [
        ("unwritten-context-key", "/nodes/3/params/condition", "L"),
        ("unwritten-context-key", "/edges/1/condition", "setter->b"),
        ("unwritten-context-key", "/edges/2/condition", "b->L"),
    ]
    assert {f.severity for f in findings} == {"warning"}
    assert findings[0].message == (
        "the condition of loop controller 'L' reads 'result' and 'tries', which nothing in this "
        "blueprint writes (no node has those ids and no node's params name them); unless the "
        "initial context sets them, they are null (a loop condition sees only the context, "
        "not result)"
    )
    assert findings[1].message.startswith(
        "the condition of edge setter->b reads 'approved', which nothing in this blueprint "
        "writes (no node has that id and no node's params name it)"
    )
    assert findings[2].message.endswith("(a condition sees the context and result, not input)")


def test_findings_have_a_stable_code_severity_and_json_shape() -> None:
    bp = blueprint([node("s"), node("b"), node("c")], [edge("b", "c"), edge("c", "b")])
    for finding in analyze(bp):
        assert CODES[finding.code] == finding.severity
        assert "\n" not in finding.message
    first = analyze(bp)[0]
    assert first.to_json() == {
        "code": "unreachable",
        "severity": "error",
        "message": "node 'b' never runs: no path leads to it from a start node ('s')",
        "path": "/nodes/1",
        "node": "b",
        "edge": None,
    }
    assert str(first.location) == "/nodes/1 (b)"
    with pytest.raises(AttributeError):
        first.code = "x"  # type: ignore[misc]


# ---------------------------------------------------------------- against the engine

GRAPHS = st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=0, max_size=9),
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GRAPHS)
def test_what_never_runs_is_what_the_engine_does_not_run(graph: Any) -> None:
    """On graphs of plain nodes (any shape: cycles, joins either way), the nodes the analysis
    says never run are exactly those the in-memory engine does not run."""
    any_joins, pairs = graph
    bp = blueprint(
        [
            node(f"n{i}", config={"joinStrategy": "any"} if any_join else {})
            for i, any_join in enumerate(any_joins)
        ],
        [edge(f"n{s}", f"n{t}") for s, t in pairs],
    )
    try:
        load_blueprint(bp)
    except BlueprintError:
        return  # no start node: refused at load, by the analysis too
    result = asyncio.run(FlowRuntime(registry={"f": one}).run(bp))
    assert result.status == "completed"
    ran = {n["id"] for n in bp["nodes"] if f"_outputs.{n['id']}" in result.context}
    never = {f.location.node for f in analyze(bp) if f.code in ("unreachable", "never-runs")}
    assert ran == {n["id"] for n in bp["nodes"]} - never


LOOPY = st.integers(min_value=2, max_value=6).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from(["f", "f-any", "loop"]), min_size=n, max_size=n),
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.integers(0, n - 1),
                st.sampled_from([None, "continue", "break", "other"]),
            ),
            min_size=1,
            max_size=9,
        ),
    )
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LOOPY)
def test_no_error_on_what_the_engine_runs_and_no_silent_crash(graph: Any) -> None:
    """With loop controllers and actions: a node the analysis says never runs does not run,
    and a blueprint the engine cannot run at all has an error finding."""
    kinds, triples = graph
    nodes = [
        loop(f"n{i}", "false")
        if kind == "loop"
        else node(f"n{i}", config={"joinStrategy": "any"} if kind == "f-any" else {})
        for i, kind in enumerate(kinds)
    ]
    edges = [
        edge(f"n{s}", f"n{t}", **({"action": a} if a and kinds[s] == "loop" else {}))
        for s, t, a in triples
    ]
    bp = blueprint(nodes, edges)
    runtime = FlowRuntime(registry={"f": one}, logger=logging.getLogger("analysis-test-quiet"))
    try:
        runtime.load(bp)
    except BlueprintError:
        return
    findings = analyze(bp)
    try:
        result = asyncio.run(runtime.run(bp))
    except Exception:
        assert has_errors(findings), "the engine failed on a blueprint the analysis passed"
        return
    ran = {n["id"] for n in nodes if f"_outputs.{n['id']}" in result.context}
    never = {f.location.node for f in findings if f.code in ("unreachable", "never-runs")}
    assert not ran & never


# ---------------------------------------------------------------- strict mode

BROKEN = blueprint(
    [node("init"), loop("L"), node("body"), node("exit")],
    [
        edge("init", "L"),
        edge("L", "body", action="continue"),
        edge("body", "L"),
        edge("L", "exit", action="brake"),
    ],
    id="broken",
)
WARNS = blueprint(
    [node("a"), node("b", config={"joinStrategy": "any"})], [edge("a", "b")], id="warns"
)


def test_strict_refuses_a_blueprint_with_errors_at_registration() -> None:
    with pytest.raises(BlueprintAnalysisError) as caught:
        FlowRuntime(blueprints=[BROKEN], registry={"f": one}, strict=True)
    error = caught.value
    assert isinstance(error, BlueprintError)
    assert error.blueprint_id == "broken"
    assert [f.code for f in error.errors] == ["never-runs"]
    assert [f.code for f in error.findings] == ["never-runs"]
    assert str(error) == (
        "blueprint 'broken' refused by strict mode (1 error): /nodes/3 (exit): never-runs: "
        "node 'exit' never runs: no incoming edge can be taken (L->exit needs action 'brake', "
        "but 'L' (loop-controller) returns only 'break' or 'continue')"
    )
    runtime = FlowRuntime(registry={"f": one}, strict=True)
    with pytest.raises(BlueprintAnalysisError):
        runtime.register_blueprint(BROKEN)
    assert "broken" not in runtime.blueprints
    with pytest.raises(BlueprintAnalysisError):
        asyncio.run(runtime.run(BROKEN, {"n": 5}))


def test_without_strict_the_same_blueprint_runs_as_before() -> None:
    runtime = FlowRuntime(blueprints=[BROKEN], registry={"f": one})
    result = asyncio.run(runtime.run("broken", {"n": 5}))
    assert result.status == "completed"
    assert "exit" not in result.context


def test_strict_accepts_warnings_and_checks_registry_and_subflows() -> None:
    runtime = FlowRuntime(blueprints=[WARNS], registry={"f": one}, strict=True)
    assert asyncio.run(runtime.run("warns")).status == "completed"
    with pytest.raises(BlueprintAnalysisError, match="unknown-uses: node 'a' uses 'missing'"):
        runtime.register_blueprint(blueprint([node("a", "missing")], [], id="m"))
    # A parent listed before its child is fine: the blueprints given together are analysed
    # together. Registered later, a subflow must name one registered already.
    parent = blueprint([node("p", "subflow", params={"blueprintId": "child"})], [], id="parent")
    child = blueprint([node("c")], [], id="child")
    runtime = FlowRuntime(blueprints=[parent, child], registry={"f": one}, strict=True)
    assert asyncio.run(runtime.run("parent")).status == "completed"
    alone = FlowRuntime(registry={"f": one}, strict=True)
    with pytest.raises(BlueprintAnalysisError, match="dangling-subflow"):
        alone.register_blueprint(parent)


def test_strict_analyses_a_blueprint_object_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = analysis_module.analyze

    def counting(bp: Any, *args: Any, **kwargs: Any) -> list[Finding]:
        calls.append(bp.id)
        return real(bp, *args, **kwargs)

    monkeypatch.setattr(analysis_module, "analyze", counting)
    runtime = FlowRuntime(registry={"f": one}, strict=True)
    bp = load_blueprint(WARNS)
    for _ in range(3):
        asyncio.run(runtime.run(bp))
    assert calls == ["warns"]


# ---------------------------------------------------------------- the lint command


def _lint(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("flowcraft-fast")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flowcraft_fast.cli"]
    return subprocess.run(
        [*command, "lint", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return name


def test_lint_a_clean_file_exits_0(tmp_path: Path) -> None:
    result = _lint(str(ROOT / "examples/blueprints/order-review.json"))
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == "0 errors, 0 warnings in 1 file\n"


def test_lint_warnings_alone_exit_0(tmp_path: Path) -> None:
    name = _write(tmp_path, "warns.json", WARNS)
    result = _lint(name, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == (
        "warns.json:/nodes/1/config (b): warning single-predecessor-any-join: node 'b' declares "
        "joinStrategy 'any' but has one predecessor ('a'), so there is nothing to join; 'any' "
        "changes nothing\n"
    )
    assert result.stderr == "0 errors, 1 warning in 1 file\n"


def test_lint_errors_exit_1_with_one_line_each(tmp_path: Path) -> None:
    broken = _write(tmp_path, "broken.json", BROKEN)
    warns = _write(tmp_path, "warns.json", WARNS)
    result = _lint(broken, warns, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines == [
        "broken.json:/nodes/3 (exit): error never-runs: node 'exit' never runs: no incoming "
        "edge can be taken (L->exit needs action 'brake', but 'L' (loop-controller) returns "
        "only 'break' or 'continue')",
        lines[1],
    ]
    assert lines[1].startswith("warns.json:/nodes/1/config (b): warning single-predecessor")
    assert result.stderr == "1 error, 1 warning in 2 files\n"


def test_lint_json_format(tmp_path: Path) -> None:
    broken = _write(tmp_path, "broken.json", BROKEN)
    result = _lint("--format", "json", broken, cwd=tmp_path)
    assert result.returncode == 1
    (row,) = json.loads(result.stdout)
    assert row == {
        "file": "broken.json",
        "code": "never-runs",
        "severity": "error",
        "message": row["message"],
        "path": "/nodes/3",
        "node": "exit",
        "edge": None,
    }
    assert result.stderr == ""


def test_lint_resolves_subflows_among_the_files_given(tmp_path: Path) -> None:
    parent = blueprint([node("p", "subflow", params={"blueprintId": "child"})], [], id="parent")
    parent_file = _write(tmp_path, "parent.json", parent)
    child_file = _write(tmp_path, "child.json", blueprint([node("c")], [], id="child"))
    assert _lint(parent_file, child_file, cwd=tmp_path).returncode == 0
    alone = _lint(parent_file, cwd=tmp_path)
    assert alone.returncode == 1
    assert "error dangling-subflow: subflow node 'p' runs blueprint 'child'" in alone.stdout


def test_lint_an_invalid_blueprint_is_an_error_finding(tmp_path: Path) -> None:
    name = _write(tmp_path, "bad.json", blueprint([node("a")], [edge("a", "ghost")]))
    result = _lint(name, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == (
        "bad.json:/: error invalid: blueprint 'bp': edge 0 ('a' -> 'ghost'): unknown target "
        "node 'ghost'\n"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "error: missing.json: no such file"),
        (
            "{not json",
            "error: broken.json: invalid JSON at line 1 column 2: Expecting property name",
        ),
        ("", "error: broken.json: invalid JSON at line 1 column 1: Expecting value"),
    ],
)
def test_lint_unreadable_or_not_json_exits_2(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    name = "missing.json" if content is None else _write(tmp_path, "broken.json", content)
    good = _write(tmp_path, "good.json", WARNS)
    result = _lint(name, good, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith(reason)
    assert "warns" not in result.stderr
    assert "good.json:/nodes/1/config (b): warning" in result.stdout  # the others are linted


def test_lint_help() -> None:
    result = _lint("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: flowcraft-fast lint")
    for text in ("FILE:LOCATION: severity code: message", "--format", "--app", "Exits 0"):
        assert text in " ".join(result.stdout.split())
