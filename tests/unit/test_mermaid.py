from __future__ import annotations

import re
from typing import Any

import pytest

from flowcraft_fast.blueprint import load_blueprint
from flowcraft_fast.errors import BlueprintError
from flowcraft_fast.mermaid import escape_label, to_mermaid

# A node line: `n<k>` then an opening shape, a double-quoted label, the matching close.
NODE_RE = re.compile(r'^    (n\d+)(\[|\(\[|\{|\[/|\[\\|\[\[)"([^"]*)"(\]|\]\)|\}|/\]|\\\]|\]\])$')
# An edge line: plain, or labelled `-->|"..."|`, or a dotted fallback edge.
EDGE_RE = re.compile(r'^    (n\d+) (?:-->|-->\|"([^"]*)"\||-\.->\|"([^"]*)"\|) (n\d+)$')

SPECIAL_IDS = [
    'say "hi"',
    "a<b>&c",
    "pipe|id",
    "hash#1",
    "multi\nline",
    "semi;colon [x] {y} (z)",
    "tick`s",
    "end",
    "graph",
    "-->",
]


def _check_syntax(text: str) -> tuple[dict[str, str], list[tuple[str, str | None, str]]]:
    """Parse every line; fail on any line that is not a well-formed, quoted declaration."""
    lines = text.split("\n")
    assert lines[0] == "flowchart TD"
    assert lines[-1] == ""
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str | None, str]] = []
    for line in lines[1:-1]:
        node = NODE_RE.match(line)
        edge = EDGE_RE.match(line)
        assert node or edge, f"unparseable Mermaid line: {line!r}"
        if node:
            nodes[node.group(1)] = node.group(3)
        elif edge:
            edges.append((edge.group(1), edge.group(2) or edge.group(3), edge.group(4)))
    for label in list(nodes.values()) + [e[1] for e in edges if e[1] is not None]:
        assert '"' not in label
        assert "\n" not in label
        # every '#' starts an entity; raw <, > and & appear only as part of the <br/> we add
        assert re.fullmatch(r"(?:[^#&<>|`]|#\w+;|<br/>)*", label), label
    return nodes, edges


def _special_blueprint() -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": nid, "uses": f'uses "{i}" <x>'} for i, nid in enumerate(SPECIAL_IDS)
    ]
    edges = [
        {
            "source": SPECIAL_IDS[i],
            "target": SPECIAL_IDS[i + 1],
            "action": f'act"{i}|x',
            "condition": 'status == "ok" and count < 3 or name != "a|b#c"',
            "transform": 'input["k"]',
        }
        for i in range(len(SPECIAL_IDS) - 1)
    ]
    nodes[1]["config"] = {"fallback": SPECIAL_IDS[-1]}
    return {"id": "special", "nodes": nodes, "edges": edges}


def test_simple_blueprint() -> None:
    text = to_mermaid(
        {
            "id": "bp",
            "nodes": [{"id": "A", "uses": "a"}, {"id": "B", "uses": "b"}],
            "edges": [{"source": "A", "target": "B"}],
        }
    )
    assert text == (
        'flowchart TD\n    n0["A<br/>uses: a"]\n    n1["B<br/>uses: b"]\n    n0 --> n1\n'
    )


def test_edge_label_combines_action_condition_transform() -> None:
    text = to_mermaid(
        {
            "id": "bp",
            "nodes": [{"id": "A", "uses": "a"}, {"id": "B", "uses": "b"}],
            "edges": [
                {
                    "source": "A",
                    "target": "B",
                    "action": "success",
                    "condition": 'status == "ok"',
                    "transform": "input.value",
                }
            ],
        }
    )
    # The original printed `A -- "success | status == "ok"" --> B` (broken); we escape.
    assert '    n0 -->|"success, if status == #quot;ok#quot;, transform: input.value"| n1' in text
    _check_syntax(text)


def test_special_characters_are_escaped_in_every_label() -> None:
    text = to_mermaid(_special_blueprint())
    nodes, edges = _check_syntax(text)
    assert len(nodes) == len(SPECIAL_IDS)
    assert len(edges) == len(SPECIAL_IDS)  # chain edges + one fallback
    assert nodes["n0"].startswith("say #quot;hi#quot;<br/>")
    assert nodes["n1"].startswith("a#lt;b#gt;#amp;c<br/>")
    assert nodes["n2"].startswith("pipe#124;id<br/>")
    assert nodes["n3"].startswith("hash#35;1<br/>")
    assert nodes["n4"].startswith("multi line<br/>")
    assert nodes["n6"].startswith("tick#96;s<br/>")


def test_fallback_is_a_dotted_edge() -> None:
    text = to_mermaid(
        {
            "id": "bp",
            "nodes": [
                {"id": "A", "uses": "a", "config": {"fallback": "F"}},
                {"id": "F", "uses": "f"},
                {"id": "B", "uses": "b"},
            ],
            "edges": [{"source": "A", "target": "B"}],
        }
    )
    assert '    n0 -.->|"fallback"| n1' in text
    _check_syntax(text)


def test_builtin_shapes() -> None:
    text = to_mermaid(
        {
            "id": "bp",
            "nodes": [
                {"id": "L", "uses": "loop-controller", "params": {"condition": "x"}},
                {"id": "W", "uses": "wait"},
                {"id": "S", "uses": "subflow", "params": {"blueprintId": "c"}},
            ],
            "edges": [{"source": "L", "target": "W", "action": "break"}],
        }
    )
    assert '    n0{"L<br/>uses: loop-controller"}' in text
    assert '    n1(["W<br/>uses: wait"])' in text
    assert '    n2[["S<br/>uses: subflow"]]' in text
    _check_syntax(text)


def test_output_is_stable() -> None:
    raw = _special_blueprint()
    first = to_mermaid(raw)
    assert to_mermaid(raw) == first
    assert to_mermaid(load_blueprint(raw)) == first
    assert to_mermaid(load_blueprint(raw).to_json()) == first


def test_accepts_json_text_and_rejects_invalid() -> None:
    text = '{"id": "bp", "nodes": [{"id": "A", "uses": "a"}]}'
    assert to_mermaid(text) == 'flowchart TD\n    n0["A<br/>uses: a"]\n'
    with pytest.raises(BlueprintError):
        to_mermaid({"id": "bp", "nodes": []})


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ('"', "#quot;"),
        ("#quot;", "#35;quot;"),
        ("a\r\nb", "a b"),
        ("<&>", "#lt;#amp;#gt;"),
        ("plain text", "plain text"),
    ],
)
def test_escape_label(raw: str, escaped: str) -> None:
    assert escape_label(raw) == escaped
