from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowcraft_fast.blueprint import Blueprint, NodeConfig
from flowcraft_fast.builder import FlowBuilder, create_flow, uses_key_for
from flowcraft_fast.errors import BlueprintError


def fetch(ctx: Any) -> list[int]:
    return [1, 2, 3]


def work(ctx: Any) -> int:
    return 1


def finish(ctx: Any) -> str:
    return "done"


def body(ctx: Any) -> int:
    return 0


class Greeter:
    """Stands in for a BaseNode subclass: any class is keyed by module.qualname."""

    def __init__(self, params: Any, node_id: str) -> None:
        self.params = params

    class Inner:
        pass

    def method(self, ctx: Any) -> int:
        return 1


def _edges(bp: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(e["source"], e["target"], e.get("action")) for e in bp["edges"]]


def _node(bp: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in bp["nodes"] if n["id"] == node_id)


# ---------------------------------------------------------------- uses keys


def test_function_and_class_keys_are_module_qualname() -> None:
    assert uses_key_for(fetch) == f"{__name__}.fetch"
    assert uses_key_for(Greeter) == f"{__name__}.Greeter"
    assert uses_key_for(Greeter.Inner) == f"{__name__}.Greeter.Inner"
    assert uses_key_for("subflow") == "subflow"


def test_registry_maps_keys_to_impls() -> None:
    flow = create_flow("f").node("a", fetch).node("b", Greeter).edge("a", "b")
    assert flow.registry == {f"{__name__}.fetch": fetch, f"{__name__}.Greeter": Greeter}
    bp = flow.to_blueprint()
    assert [n["uses"] for n in bp["nodes"]] == [f"{__name__}.fetch", f"{__name__}.Greeter"]
    # registry is a copy: mutating it does not change the builder
    flow.registry.clear()
    assert len(flow.registry) == 2


def test_string_impl_is_not_registered() -> None:
    flow = create_flow("f").node("a", "subflow", params={"blueprintId": "child"})
    assert flow.registry == {}
    assert flow.to_blueprint()["nodes"][0] == {
        "id": "a",
        "uses": "subflow",
        "params": {"blueprintId": "child"},
    }


def test_same_function_twice_shares_one_key() -> None:
    flow = create_flow("f").node("a", work).node("b", work).edge("a", "b")
    assert list(flow.registry) == [f"{__name__}.work"]
    assert {n["uses"] for n in flow.to_blueprint()["nodes"]} == {f"{__name__}.work"}


def test_bound_methods_of_one_object_do_not_collide() -> None:
    g = Greeter({}, "x")
    flow = create_flow("f").node("a", g.method).node("b", g.method).edge("a", "b")
    assert list(flow.registry) == [f"{__name__}.Greeter.method"]


def test_two_lambdas_collide_with_a_clear_error() -> None:
    flow = create_flow("f").node("a", lambda ctx: 1)
    with pytest.raises(BlueprintError, match=r"<lambda>.*named .*function"):
        flow.node("b", lambda ctx: 2)


def test_one_lambda_is_fine_and_keyed_by_qualname() -> None:
    flow = create_flow("f").node("a", lambda ctx: 1)
    (key,) = flow.registry
    assert key.startswith(f"{__name__}.") and "<lambda>" in key


def test_nested_functions_with_same_name_collide() -> None:
    def make() -> Any:
        def step(ctx: Any) -> int:
            return 1

        return step

    flow = create_flow("f").node("a", make())
    with pytest.raises(BlueprintError, match="already taken"):
        flow.node("b", make())


def test_uses_override_resolves_lambda_collisions() -> None:
    first, second = (lambda ctx: 1), (lambda ctx: 2)
    flow = create_flow("f").node("a", first, uses="one").node("b", second, uses="two")
    assert flow.registry == {"one": first, "two": second}
    assert [n["uses"] for n in flow.to_blueprint()["nodes"]] == ["one", "two"]


def test_callable_without_qualname_needs_a_key() -> None:
    class Callable_:
        def __call__(self, ctx: Any) -> int:
            return 1

    with pytest.raises(BlueprintError, match="stable uses key"):
        create_flow("f").node("a", Callable_())
    flow = create_flow("f").node("a", Callable_(), uses="my-callable")
    assert list(flow.registry) == ["my-callable"]


def test_non_callable_impl_is_rejected() -> None:
    with pytest.raises(BlueprintError, match="function, a class or a string"):
        create_flow("f").node("a", 42)  # type: ignore[arg-type]


def test_keys_are_stable_across_processes(tmp_path: Path) -> None:
    mod = tmp_path / "stable_mod.py"
    mod.write_text(
        "def a(ctx):\n    return 1\n\n\ndef b(ctx):\n    return 2\n\n\nclass K:\n    pass\n"
    )
    script = (
        "import json, stable_mod as m\n"
        "from flowcraft_fast.builder import create_flow\n"
        "def build(order):\n"
        "    f = create_flow('s')\n"
        "    for name in order:\n"
        "        f.node(name, getattr(m, name))\n"
        "    return sorted((n['id'], n['uses']) for n in f.to_blueprint()['nodes'])\n"
        "print(json.dumps(build(ORDER)))\n"
    )
    outputs = []
    for order in (["a", "b", "K"], ["K", "b", "a"]):
        proc = subprocess.run(
            [sys.executable, "-c", script.replace("ORDER", repr(order))],
            capture_output=True,
            text=True,
            check=True,
            # the installed package (as a user has it), plus the module under test
            env={**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONHASHSEED": "random"},
        )
        outputs.append(json.loads(proc.stdout))
    assert (
        outputs[0]
        == outputs[1]
        == [
            ["K", "stable_mod.K"],
            ["a", "stable_mod.a"],
            ["b", "stable_mod.b"],
        ]
    )


# ---------------------------------------------------------------- nodes, edges, config


def test_node_params_inputs_and_edges() -> None:
    bp = (
        create_flow("f")
        .node("a", fetch, params={"n": [1, 2]})
        .node("b", work, inputs={"items": "a"})
        .node("c", finish, inputs="b")
        .edge("a", "b", action="ok", condition="result.output != null", transform="input")
        .edge("b", "c")
        .to_blueprint()
    )
    assert bp["id"] == "f"
    assert _node(bp, "a")["params"] == {"n": [1, 2]}
    assert _node(bp, "b")["inputs"] == {"items": "a"}
    assert _node(bp, "c")["inputs"] == "b"
    assert bp["edges"][0] == {
        "source": "a",
        "target": "b",
        "action": "ok",
        "condition": "result.output != null",
        "transform": "input",
    }
    assert bp["edges"][1] == {"source": "b", "target": "c"}


def test_config_accepts_camel_and_snake_case() -> None:
    bp = (
        create_flow("f")
        .node("a", fetch, config={"maxRetries": 3, "retryDelay": 10, "fallback": "fb"})
        .node(
            "b",
            work,
            config={"max_retries": 2, "retry_delay": 5, "timeout": 1000, "join_strategy": "any"},
        )
        .node("fb", finish)
        .edge("a", "b")
        .to_blueprint()
    )
    assert _node(bp, "a")["config"] == {"maxRetries": 3, "retryDelay": 10, "fallback": "fb"}
    assert _node(bp, "b")["config"] == {
        "maxRetries": 2,
        "retryDelay": 5,
        "timeout": 1000,
        "joinStrategy": "any",
    }
    built = create_flow("f").node("a", fetch, config={"max_retries": 4}).build()
    assert built.nodes[0].config.max_retries == 4


def test_config_accepts_node_config_object() -> None:
    bp = create_flow("f").node("a", fetch, config=NodeConfig(max_retries=2)).to_blueprint()
    assert bp["nodes"][0]["config"] == {"maxRetries": 2}


def test_config_rejects_unknown_and_doubled_keys() -> None:
    with pytest.raises(BlueprintError, match="unknown config key 'retries'"):
        create_flow("f").node("a", fetch, config={"retries": 3})
    with pytest.raises(BlueprintError, match="maxRetries twice"):
        create_flow("f").node("a", fetch, config={"maxRetries": 3, "max_retries": 2})


def test_invalid_config_values_fail_at_build() -> None:
    flow = create_flow("f").node("a", fetch, config={"join_strategy": "some"})
    with pytest.raises(BlueprintError, match="joinStrategy"):
        flow.to_blueprint()


def test_params_must_be_json_serialisable() -> None:
    with pytest.raises(BlueprintError, match="JSON-serialisable"):
        create_flow("f").node("a", fetch, params={"x": object()})


def test_duplicate_node_id() -> None:
    flow = create_flow("f").node("a", fetch)
    with pytest.raises(BlueprintError, match="duplicate node id 'a'"):
        flow.node("a", work)
    with pytest.raises(BlueprintError, match="duplicate node id 'a'"):
        flow.wait("a")


def test_empty_flow() -> None:
    with pytest.raises(BlueprintError, match="no nodes"):
        create_flow("f").to_blueprint()
    with pytest.raises(BlueprintError, match="no nodes"):
        create_flow("f").build()


def test_edge_to_unknown_node_fails_validation() -> None:
    flow = create_flow("f").node("a", fetch).edge("a", "ghost")
    with pytest.raises(BlueprintError, match="ghost"):
        flow.to_blueprint()


def test_bad_condition_fails_validation() -> None:
    flow = create_flow("f").node("a", fetch).node("b", work).edge("a", "b", condition="a ==")
    with pytest.raises(BlueprintError):
        flow.to_blueprint()


def test_metadata_is_carried() -> None:
    bp = create_flow("f", metadata={"version": "3"}).node("a", fetch).build()
    assert bp.version == "3"


def test_to_blueprint_is_repeatable_and_does_not_share_state() -> None:
    flow = (
        create_flow("f")
        .node("a", fetch, params={"deep": {"x": [1]}})
        .batch("b", work, input_key="a")
        .node("c", finish)
        .node("d", body)
        .loop("L", start_node_id="d", end_node_id="d", condition="n < 3")
        .edge("a", "b")
        .edge("b", "L")
        .edge("L", "c")
    )
    first = flow.to_blueprint()
    second = flow.to_blueprint()
    assert first == second
    first["nodes"][0]["params"]["deep"]["x"].append(2)
    first["edges"].clear()
    assert flow.to_blueprint() == second


def test_build_returns_blueprint() -> None:
    bp = create_flow("f").node("a", fetch).node("b", work).edge("a", "b").build()
    assert isinstance(bp, Blueprint)
    assert [n.id for n in bp.nodes] == ["a", "b"]
    assert (
        bp.to_json()
        == create_flow("f").node("a", fetch).node("b", work).edge("a", "b").to_blueprint()
    )


def test_methods_chain() -> None:
    flow = create_flow("f")
    assert flow.node("a", fetch) is flow
    assert flow.wait("w") is flow
    assert flow.sleep("s", 5) is flow
    assert flow.edge("a", "w") is flow
    assert isinstance(flow, FlowBuilder)
    assert "FlowBuilder('f'" in repr(flow)


# ---------------------------------------------------------------- batch


def test_batch_nodes_params_and_rewiring() -> None:
    flow = (
        create_flow("f")
        .node("a", fetch)
        .batch("b", work, input_key="a", output_key="results", chunk_size=10)
        .node("c", finish)
        .edge("a", "b")
        .edge("b", "c")
    )
    bp = flow.to_blueprint()
    assert _node(bp, "b_scatter") == {
        "id": "b_scatter",
        "uses": "batch-scatter",
        "inputs": "a",
        "params": {
            "workerUsesKey": f"{__name__}.work",
            "gatherNodeId": "b_gather",
            "outputKey": "results",
            "chunkSize": 10,
        },
    }
    assert _node(bp, "b_gather") == {
        "id": "b_gather",
        "uses": "batch-gather",
        "params": {"outputKey": "results", "gatherNodeId": "b_gather"},
    }
    assert sorted(_edges(bp)) == sorted(
        [("b_scatter", "b_gather", None), ("a", "b_scatter", None), ("b_gather", "c", None)]
    )
    assert all(n["id"] != "b" for n in bp["nodes"])
    assert flow.registry[f"{__name__}.work"] is work


def test_batch_defaults() -> None:
    bp = create_flow("f").batch("b", work, input_key="items").to_blueprint()
    scatter = _node(bp, "b_scatter")
    assert scatter["params"] == {
        "workerUsesKey": f"{__name__}.work",
        "gatherNodeId": "b_gather",
        "outputKey": "b_gather",
    }
    assert _node(bp, "b_gather")["params"]["outputKey"] == "b_gather"


def test_batch_with_string_worker() -> None:
    flow = create_flow("f").batch("b", "my-worker", input_key="items")
    assert flow.registry == {}
    assert _node(flow.to_blueprint(), "b_scatter")["params"]["workerUsesKey"] == "my-worker"


def test_batch_id_collisions() -> None:
    flow = create_flow("f").node("b_scatter", fetch)
    with pytest.raises(BlueprintError, match="b_scatter"):
        flow.batch("b", work, input_key="x")
    flow = create_flow("f").batch("b", work, input_key="x")
    with pytest.raises(BlueprintError, match="duplicate node id 'b'"):
        flow.node("b", fetch)
    with pytest.raises(BlueprintError, match="duplicate node id 'b_gather'"):
        flow.node("b_gather", fetch)


def test_batch_bad_chunk_size() -> None:
    with pytest.raises(BlueprintError, match="chunk_size"):
        create_flow("f").batch("b", work, input_key="x", chunk_size=0)


# ---------------------------------------------------------------- loop


def test_loop_nodes_and_edges() -> None:
    bp = (
        create_flow("f")
        .node("init", fetch)
        .node("step", body)
        .node("check", work)
        .node("after", finish)
        .loop("L", start_node_id="step", end_node_id="check", condition="count < 5")
        .edge("init", "L")
        .edge("step", "check")
        .edge("L", "after")
        .edge("L", "after", action="custom")
        .to_blueprint()
    )
    assert _node(bp, "L") == {
        "id": "L",
        "uses": "loop-controller",
        "params": {"condition": "count < 5", "maxIterations": 100},
        "config": {"joinStrategy": "any"},
    }
    edges = _edges(bp)
    assert ("check", "L", None) in edges
    assert ("L", "step", "continue") in edges
    assert ("L", "after", "break") in edges
    assert ("L", "after", "custom") in edges
    assert ("init", "L", None) in edges


def test_loop_max_iterations() -> None:
    bp = (
        create_flow("f")
        .node("s", body)
        .loop("L", start_node_id="s", end_node_id="s", condition="true", max_iterations=7)
        .node("entry", fetch)
        .edge("entry", "L")
        .to_blueprint()
    )
    assert _node(bp, "L")["params"]["maxIterations"] == 7
    with pytest.raises(BlueprintError, match="max_iterations"):
        create_flow("f").loop(
            "L", start_node_id="s", end_node_id="s", condition="x", max_iterations=0
        )


@pytest.mark.parametrize(
    ("start", "end", "missing"), [("nope", "s", "nope"), ("s", "gone", "gone")]
)
def test_loop_unknown_start_or_end(start: str, end: str, missing: str) -> None:
    flow = (
        create_flow("f")
        .node("entry", fetch)
        .node("s", body)
        .loop("L", start_node_id=start, end_node_id=end, condition="x")
        .edge("entry", "L")
    )
    with pytest.raises(BlueprintError, match=f"loop 'L' references unknown .* node '{missing}'"):
        flow.to_blueprint()


def test_loop_bad_condition() -> None:
    flow = (
        create_flow("f")
        .node("entry", fetch)
        .node("s", body)
        .loop("L", start_node_id="s", end_node_id="s", condition="x <")
        .edge("entry", "L")
    )
    with pytest.raises(BlueprintError, match="loop 'L' condition"):
        flow.to_blueprint()


def test_loop_around_a_batch() -> None:
    bp = (
        create_flow("f")
        .node("entry", fetch)
        .batch("b", work, input_key="items")
        .loop("L", start_node_id="b", end_node_id="b", condition="more")
        .edge("entry", "L")
        .to_blueprint()
    )
    edges = _edges(bp)
    assert ("b_gather", "L", None) in edges
    assert ("L", "b_scatter", "continue") in edges


# ---------------------------------------------------------------- sleep and wait


def test_sleep_and_wait() -> None:
    bp = (
        create_flow("f")
        .node("a", fetch)
        .sleep("s", "10s")
        .sleep("t", 250)
        .sleep("u", datetime.timedelta(minutes=1))
        .wait("w")
        .edge("a", "s")
        .edge("s", "t")
        .edge("t", "u")
        .edge("u", "w")
        .to_blueprint()
    )
    assert _node(bp, "s") == {"id": "s", "uses": "sleep", "params": {"duration": "10s"}}
    assert _node(bp, "t")["params"] == {"duration": 250}
    assert _node(bp, "u")["params"] == {"duration": 60000}
    assert _node(bp, "w") == {"id": "w", "uses": "wait"}


@pytest.mark.parametrize("bad", ["10 seconds", "", "-5s", -1, True, float("nan")])
def test_sleep_rejects_bad_durations(bad: Any) -> None:
    with pytest.raises(BlueprintError, match="duration"):
        create_flow("f").sleep("s", bad)


def test_builder_to_mermaid() -> None:
    text = create_flow("f").node("a", fetch).node("b", work).edge("a", "b").to_mermaid()
    assert text.startswith("flowchart TD\n")
    assert "n0 --> n1" in text
