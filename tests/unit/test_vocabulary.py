"""The engine's vocabulary is written once per language: `runtime/vocabulary.py` for Python and
`lib.lua` (prepended to every script) for Lua. This checks that the two say the same."""

from __future__ import annotations

import re

import pytest

from flowcraft_fast import _core
from flowcraft_fast.runtime import vocabulary

LUA_TO_PYTHON = {
    "SKIP": "SKIP",
    "SEP": "ARRIVAL_SEPARATOR",
    "DONE": "DONE",
    "FIRED": "FIRED",
    "AWAIT": "AWAIT",
    "JOIN_PREDS": "JOIN_PREDS",
    "JOIN_ARRIVED": "JOIN_ARRIVED",
    "JOIN_FINISHED": "JOIN_FINISHED",
    "PENDING": "PENDING",
    "STATE_VERSION": "STATE_VERSION",
    "RUNNING": "RUNNING",
    "AWAITING": "AWAITING",
    "EVENT": "EVENT",
    "EVENT_WAIT": "EVENT_WAIT",
    "EVENT_TIMER": "EVENT_TIMER",
    "DELIVERY": "DELIVERY",
}


def _lua_string(literal: str) -> str:
    """A single-quoted Lua literal with decimal escapes (`'\\31'`) as Python text."""
    body = literal[1:-1]
    return re.sub(r"\\(\d{1,3})", lambda m: chr(int(m.group(1))), body)


def lua_constants() -> dict[str, str]:
    constants: dict[str, str] = {}
    for line in _core.script_source("lib").splitlines():
        match = re.match(r"local ([A-Z_, ]+) = ((?:'[^']*'(?:, )?)+)", line)
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            values = re.findall(r"'[^']*'", match.group(2))
            assert len(names) == len(values), line
            constants.update(zip(names, (_lua_string(v) for v in values), strict=True))
    return constants


def test_lua_and_python_vocabularies_agree() -> None:
    lua = lua_constants()
    assert set(lua) == set(LUA_TO_PYTHON), "a constant was added on one side only"
    for lua_name, py_name in LUA_TO_PYTHON.items():
        assert lua[lua_name] == getattr(vocabulary, py_name), lua_name


def test_every_script_carries_the_library() -> None:
    lib = _core.script_source("lib")
    for name in ["claim", "commit", "retry", "renew", "stalled", "start", "cancel", "resume"]:
        assert _core.script_source(name).startswith(lib)
    with pytest.raises(KeyError):
        _core.script_source("nope")


@pytest.mark.parametrize(
    ("iteration", "text", "json"),
    [
        ((), "0", 0),
        ((0,), "0", 0),
        ((3,), "3", 3),
        ((1, 2), "1.2", "1.2"),
        ((0, 0, 4), "0.0.4", "0.0.4"),
    ],
)
def test_iteration_encodings(iteration: tuple[int, ...], text: str, json: object) -> None:
    assert vocabulary.iteration_text(iteration) == text
    assert vocabulary.iteration_json(iteration) == json
    assert vocabulary.parse_iteration(json, len(iteration)) == iteration
    assert vocabulary.parse_iteration(text, len(iteration)) == iteration
    assert vocabulary.node_key("n", iteration) == f"{text}|n"


@pytest.mark.parametrize(("raw", "depth"), [(3, 0), ("1.2", 1), ("x", 1), (-1, 1), (True, 1)])
def test_iterations_that_do_not_fit(raw: object, depth: int) -> None:
    with pytest.raises(ValueError):
        vocabulary.parse_iteration(raw, depth)
