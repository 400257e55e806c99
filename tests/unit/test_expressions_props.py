"""Property-based tests of the safe expression language (flowcraft_fast.expressions)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcraft_fast.errors import ExpressionError
from flowcraft_fast.expressions import Expression, compile_expression

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BIG_LIMITS: dict[str, int] = {"max_length": 1_000_000, "max_depth": 100}

NAMES = ["a", "b", "x", "user", "result", "input", "_outputs", "_private", "$d"]
FLAT_KEYS = ["a.b", "_outputs.n1", "_outputs.n1.x", "user.tier"]
FIELDS = ["a", "b", "x", "n1", "tier", "output", "in", "not", "k0"]

# --------------------------------------------------------------------------------------------
# JSON values and scopes
# --------------------------------------------------------------------------------------------


def json_values(*, finite: bool) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),  # unbounded: exercises the 64-bit guards
        st.integers(min_value=-5, max_value=5),
        st.floats(allow_nan=not finite, allow_infinity=not finite),
        st.text(max_size=8),
        st.sampled_from(FIELDS),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=4)), children,
                            max_size=4),
        ),
        max_leaves=12,
    )  # fmt: skip


def scopes(*, finite: bool, flat_keys: bool) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(NAMES + FLAT_KEYS if flat_keys else NAMES)
    return st.dictionaries(keys, json_values(finite=finite), max_size=8)


def is_json_like(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or type(item) in (bool, int, float, str):
            continue
        if type(item) is list:
            stack.extend(item)
        elif type(item) is dict:
            if not all(type(key) is str for key in item):
                return False
            stack.extend(item.values())
        else:
            return False
    return True


# --------------------------------------------------------------------------------------------
# A generator of valid expressions: syntax trees rendered fully or minimally parenthesised
# --------------------------------------------------------------------------------------------

OR, AND, NOT, CMP, ADD, MUL, UNARY, POSTFIX, ATOM = range(1, 10)
BINARY_OPS: dict[str, int] = {
    "or": OR, "||": OR, "and": AND, "&&": AND,
    "==": CMP, "!=": CMP, "===": CMP, "!==": CMP, "<": CMP, "<=": CMP, ">": CMP, ">=": CMP,
    "in": CMP, "not in": CMP,
    "+": ADD, "-": ADD, "*": MUL, "/": MUL, "%": MUL,
}  # fmt: skip

Tree = tuple[Any, ...]


def quote(text: str, mark: str) -> str:
    out = [mark]
    for char in text:
        if char in ("\\", mark):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append(mark)
    return "".join(out)


literals = st.one_of(
    st.integers(min_value=0, max_value=2**63).map(str),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["true", "false", "null", "True", "False", "None", "0", "1", "2.5", "1e3"]),
    # no '_' at all, so no constant subscript key (even a folded one) starts with '_'
    st.builds(
        quote,
        st.text(st.characters(exclude_characters="_"), max_size=10),
        st.sampled_from(["'", '"']),
    ),
    st.sampled_from([r"'\u00e9'", r'"\ud83d\ude00"', r"'a\'b'", r'"\"\\"', r"'\/\b\f\r'"]),
).map(lambda source: ("lit", source))

names = st.one_of(
    st.sampled_from(NAMES),
    st.builds(lambda n, f: f"{n}.{f}", st.sampled_from(NAMES), st.sampled_from(FIELDS)),
).map(lambda source: ("name", source))


def extend(children: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    binary = st.tuples(st.just("bin"), st.sampled_from(sorted(BINARY_OPS)), children, children)
    return st.one_of(
        binary,
        binary,
        binary,
        st.tuples(st.just("not"), st.sampled_from(["not ", "!"]), children),
        st.tuples(st.just("neg"), st.sampled_from(["-", "+"]), children),
        st.tuples(st.just("field"), children, st.sampled_from(FIELDS)),
        st.tuples(st.just("index"), children, children),
        st.tuples(st.just("list"), st.lists(children, max_size=3)),
    )


trees: st.SearchStrategy[Tree] = st.recursive(
    st.one_of(names, literals, names), extend, max_leaves=20
).filter(lambda tree: 2 * height(tree) <= 100)  # full parenthesisation doubles the depth


def height(tree: Tree) -> int:
    kind = tree[0]
    if kind in ("lit", "name"):
        return 0
    if kind == "list":
        return 1 + max((height(item) for item in tree[1]), default=0)
    children = [part for part in tree[1:] if isinstance(part, tuple)]
    return 1 + max(height(child) for child in children)


def precedence(tree: Tree) -> int:
    kind = tree[0]
    if kind == "bin":
        return BINARY_OPS[tree[1]]
    return {"not": NOT, "neg": UNARY, "field": POSTFIX, "index": POSTFIX}.get(kind, ATOM)


def render(tree: Tree, *, minimal: bool) -> str:
    """Render ``tree``; ``minimal`` adds only the parentheses that precedence requires."""

    def sub(child: Tree, needed: int) -> str:
        text = render(child, minimal=minimal)
        if child[0] in ("lit", "name", "list"):
            return text
        if minimal and precedence(child) >= needed:
            return text
        return f"({text})"

    kind = tree[0]
    if kind in ("lit", "name"):
        return str(tree[1])
    if kind == "bin":
        op, left, right = tree[1], tree[2], tree[3]
        level = BINARY_OPS[op]
        left_needed = level + 1 if level == CMP else level  # no chained comparisons
        return f"{sub(left, left_needed)} {op} {sub(right, level + 1)}"
    if kind == "not":
        return f"{tree[1]}{sub(tree[2], NOT)}"
    if kind == "neg":
        return f"{tree[1]}{sub(tree[2], UNARY)}"
    if kind == "field":
        return f"{sub(tree[1], POSTFIX)}.{tree[2]}"
    if kind == "index":
        return f"{sub(tree[1], POSTFIX)}[{render(tree[2], minimal=minimal)}]"
    if kind == "list":
        return "[" + ", ".join(render(item, minimal=minimal) for item in tree[1]) + "]"
    raise AssertionError(kind)


def canonical(value: Any) -> str:
    """A representation that tells true from 1 and 1 from 1.0."""
    return json.dumps(value, sort_keys=True, allow_nan=True, default=repr)


# --------------------------------------------------------------------------------------------
# (1) arbitrary text either compiles or raises ExpressionError
# --------------------------------------------------------------------------------------------

GRAMMAR_CHARS = " ()[]'\"\\.,+-*/%<>=!&|:;{}@#_$0123456789eEabnotrulfsiNT\u00e9\n\t"


def compile_or_expression_error(source: str) -> Expression | None:
    try:
        expression = compile_expression(source)
    except ExpressionError as error:
        assert "at column " in str(error)
        return None
    assert isinstance(expression, Expression)
    assert isinstance(expression.names, frozenset)
    return expression


@SETTINGS
@given(st.text())
def test_arbitrary_text_compiles_or_raises_expression_error(source: str) -> None:
    expression = compile_or_expression_error(source)
    if expression is not None:
        assert is_json_like(expression.evaluate({}))


@SETTINGS
@given(st.text(alphabet=GRAMMAR_CHARS, max_size=60), scopes(finite=False, flat_keys=True))
def test_grammar_like_text_compiles_or_raises_expression_error(
    source: str, scope: dict[str, Any]
) -> None:
    expression = compile_or_expression_error(source)
    if expression is not None:
        assert is_json_like(expression.evaluate(scope))


@SETTINGS
@given(st.lists(st.sampled_from([
    "a", "x.y", "1", "2.5", "'s'", "null", "true", "(", ")", "[", "]", ",", ".", "and", "or",
    "not", "in", "!", "&&", "||", "==", "!=", "<", ">=", "+", "-", "*", "/", "%", "f(", "._p",
]), max_size=25))  # fmt: skip
def test_token_soup_compiles_or_raises_expression_error(parts: list[str]) -> None:
    expression = compile_or_expression_error(" ".join(parts))
    if expression is not None:
        assert is_json_like(expression.evaluate({"a": [1, {"b": 2}], "x": {"y": "z"}}))


# --------------------------------------------------------------------------------------------
# (2) + (3) generated valid expressions evaluate totally and return JSON-like values
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(trees, scopes(finite=False, flat_keys=True), st.booleans())
def test_generated_expressions_evaluate_without_raising(
    tree: Tree, scope: dict[str, Any], minimal: bool
) -> None:
    source = render(tree, minimal=minimal)
    expression = compile_expression(source, **BIG_LIMITS)
    result = expression.evaluate(scope)
    assert is_json_like(result)
    if tree[0] in ("bin", "neg") and tree[1] in ("+", "-", "*", "/", "%"):
        if isinstance(result, float):
            assert math.isfinite(result)
        if isinstance(result, int) and not isinstance(result, bool):
            assert -(2**63) <= result < 2**63
    if tree[0] in ("not",) or (tree[0] == "bin" and BINARY_OPS[tree[1]] == CMP):
        assert isinstance(result, bool)
    # evaluation is repeatable and does not mutate the scope
    before = canonical(scope)
    assert canonical(expression.evaluate(scope)) == canonical(result)
    assert canonical(scope) == before


@SETTINGS
@given(trees, scopes(finite=True, flat_keys=False))
def test_minimal_and_full_parenthesisation_agree(tree: Tree, scope: dict[str, Any]) -> None:
    full = compile_expression(render(tree, minimal=False), **BIG_LIMITS)
    minimal = compile_expression(render(tree, minimal=True), **BIG_LIMITS)
    assert full.names == minimal.names
    assert canonical(full.evaluate(scope)) == canonical(minimal.evaluate(scope))


# Arithmetic/logic-only trees, checked against an independent reference evaluator.

NUMERIC_OPS = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or", "&&"]
numeric_leaves = st.one_of(
    st.integers(min_value=0, max_value=12).map(lambda n: ("lit", str(n))),
    st.sampled_from(["0.5", "2.5", "1e3", "true", "false", "null", "9223372036854775807"]).map(
        lambda text: ("lit", text)
    ),
    st.sampled_from(["a", "b", "x"]).map(lambda name: ("name", name)),
)
numeric_trees: st.SearchStrategy[Tree] = st.recursive(
    numeric_leaves,
    lambda children: st.one_of(
        st.tuples(st.just("bin"), st.sampled_from(NUMERIC_OPS), children, children),
        st.tuples(st.just("bin"), st.sampled_from(["+", "*"]), children, children),
        st.tuples(st.just("not"), st.sampled_from(["not ", "!"]), children),
        st.tuples(st.just("neg"), st.sampled_from(["-", "+"]), children),
    ),
    max_leaves=12,
).filter(lambda tree: 2 * height(tree) <= 100)
numeric_scopes = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(
            st.integers(min_value=-20, max_value=20),
            st.integers(),
            st.sampled_from([2**62, 2**63 - 1, -(2**63), 2**63, 2**31, -(2**32), 3037000500]),
            st.sampled_from([1e308, -0.5, True, None]),
            st.floats(allow_nan=False, allow_infinity=False),
        )
        for name in ("a", "b", "x")
    },
)
LITERAL_VALUES: dict[str, Any] = {"true": True, "false": False, "null": None}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def in_range(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if -(2**63) <= value <= 2**63 - 1 else None


def reference(tree: Tree, scope: Mapping[str, Any]) -> Any:
    kind = tree[0]
    if kind == "lit":
        text = tree[1]
        if text in LITERAL_VALUES:
            return LITERAL_VALUES[text]
        return float(text) if any(c in text for c in ".e") else int(text)
    if kind == "name":
        return scope.get(tree[1])
    if kind == "not":
        return not reference(tree[2], scope)
    if kind == "neg":
        value = reference(tree[2], scope)
        return in_range(-value if tree[1] == "-" else value) if is_number(value) else None
    op, left = tree[1], reference(tree[2], scope)
    if op in ("and", "&&"):
        return reference(tree[3], scope) if left else left
    if op in ("or", "||"):
        return left if left else reference(tree[3], scope)
    right = reference(tree[3], scope)
    if op in ("==", "!="):
        same_kind = (is_number(left) and is_number(right)) or type(left) is type(right)
        return (same_kind and left == right) == (op == "==")
    both_numbers = is_number(left) and is_number(right)
    if op in ("<", "<=", ">", ">="):
        return both_numbers and {
            "<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right,
        }[op]  # fmt: skip
    if not both_numbers or (op in ("/", "%") and right == 0):
        return None
    try:
        if op == "+":
            return in_range(left + right)
        if op == "-":
            return in_range(left - right)
        if op == "*":
            return in_range(left * right)
        if op == "/":
            return in_range(left / right)
        return in_range(left % right)
    except OverflowError:
        return None


@SETTINGS
@given(numeric_trees, numeric_scopes, st.booleans())
def test_numeric_expressions_match_reference(
    tree: Tree, scope: dict[str, Any], minimal: bool
) -> None:
    expression = compile_expression(render(tree, minimal=minimal), **BIG_LIMITS)
    assert canonical(expression.evaluate(scope)) == canonical(reference(tree, scope))


@SETTINGS
@given(st.text(), st.sampled_from(["'", '"']))
def test_string_literals_round_trip(text: str, mark: str) -> None:
    assert compile_expression(quote(text, mark), max_length=10_000).evaluate({}) == text


@SETTINGS
@given(json_values(finite=True), json_values(finite=True))
def test_equality_is_reflexive_and_symmetric(left: Any, right: Any) -> None:
    equal = compile_expression("a == b")
    assert equal.evaluate({"a": left, "b": left}) is True
    assert equal.evaluate({"a": left, "b": right}) is equal.evaluate({"a": right, "b": left})
    assert compile_expression("a != b").evaluate({"a": left, "b": right}) is not equal.evaluate(
        {"a": left, "b": right}
    )


# --------------------------------------------------------------------------------------------
# (3) nothing executes code: scope objects are only touched through Mapping access
# --------------------------------------------------------------------------------------------

CALLS: list[str] = []


def _recorder(name: str) -> Any:
    def method(self: Any, *args: Any) -> Any:
        CALLS.append(name)
        return NotImplemented if name.startswith("__r") or name in _COMPARE else True

    return method


_COMPARE = {"__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"}
_DUNDERS = [
    *_COMPARE, "__bool__", "__len__", "__iter__", "__contains__", "__getitem__", "__index__",
    "__int__", "__float__", "__str__", "__format__", "__add__", "__radd__", "__sub__",
    "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__mod__", "__rmod__",
    "__neg__", "__pos__", "__call__",
]  # fmt: skip


class Spy:
    """Records every operator hook and every attribute lookup that is not found normally."""

    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        CALLS.append(f"getattr {name}")
        raise AttributeError(name)


for _name in _DUNDERS:
    setattr(Spy, _name, _recorder(_name))


class SpyMapping(Mapping[str, Any]):
    """A Mapping whose non-Mapping attribute lookups are recorded."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        CALLS.append(f"mapping getattr {name}")
        raise AttributeError(name)


def spy_scope() -> SpyMapping:
    spy = Spy()
    return SpyMapping(
        {
            "a": spy,
            "b": [spy, 1, "s"],
            "x": SpyMapping({"a": spy, "b": SpyMapping({"x": spy}), "k0": [spy]}),
            "user": {"tier": spy, "a": [spy]},
            "result": spy,
            "input": SpyMapping({"a": spy, "b": 2}),
            "_private": [[spy]],
            "$d": spy,
            "a.b": spy,
            "_outputs.n1": spy,
        }
    )


@SETTINGS
@given(trees, st.booleans())
def test_scope_objects_are_never_asked_to_run_code(tree: Tree, minimal: bool) -> None:
    expression = compile_expression(render(tree, minimal=minimal), **BIG_LIMITS)
    CALLS.clear()
    expression.evaluate(spy_scope())
    assert CALLS == []


def test_spy_detects_operator_use() -> None:
    # guard against a vacuous spy: the hooks do record when Python code uses them
    CALLS.clear()
    spy: Any = Spy()
    _ = spy == 1
    assert CALLS == ["__eq__"]
    with pytest.raises(AttributeError):
        _ = spy.missing
    assert CALLS == ["__eq__", "getattr missing"]


# --------------------------------------------------------------------------------------------
# (4) depth boundary: exactly the limit compiles, one more level raises
# --------------------------------------------------------------------------------------------

WRAPPERS: dict[str, tuple[str, int]] = {
    "paren": ("({})", 1),
    "list": ("[{}]", 1),
    "subscript": ("a[{}]", 1),
    "neg": ("-{}", 1),
    "plus": ("({} + 1)", 2),
    "not": ("(not {})", 2),
    "and": ("(x and {})", 2),
    "field": ("({}).b", 2),
}


def wrap(layers: list[str]) -> tuple[str, int]:
    source, depth = "x", 0
    for layer in layers:
        template, levels = WRAPPERS[layer]
        source, depth = template.format(source), depth + levels
    return source, depth


@SETTINGS
@given(st.lists(st.sampled_from(sorted(WRAPPERS)), min_size=1, max_size=60))
def test_depth_limit_boundary(layers: list[str]) -> None:
    source, depth = wrap(layers)
    if depth <= 100:
        expression = compile_expression(source, max_depth=depth)
        assert is_json_like(expression.evaluate({"x": 1, "a": [0, 1]}))
    if 1 <= depth - 1 <= 100:
        with pytest.raises(ExpressionError, match="nested too deeply"):
            compile_expression(source, max_depth=depth - 1)


@SETTINGS
@given(
    st.sampled_from([["+", "-"], ["*", "/", "%"], ["and", "&&"], ["or", "||"]]).flatmap(
        lambda ops: st.lists(st.sampled_from(ops), min_size=1, max_size=120)
    )
)
def test_left_spine_depth_boundary(ops: list[str]) -> None:
    # a left-associative chain is as deep as it is long, although the parser does not recurse
    source = "x" + "".join(f" {op} 1" for op in ops)
    if len(ops) <= 100:
        compile_expression(source, max_depth=len(ops))
    if len(ops) - 1 >= 1:
        with pytest.raises(ExpressionError, match="nested too deeply"):
            compile_expression(source, max_depth=min(len(ops) - 1, 100))


@SETTINGS
@given(st.integers(min_value=1, max_value=100), st.sampled_from(["(", "not ", "!", "-", "+"]))
def test_prefix_nesting_boundary(limit: int, opener: str) -> None:
    closer = ")" if opener == "(" else ""
    ok = opener * limit + "x" + closer * limit
    compile_expression(ok, max_depth=limit)
    over = opener * (limit + 1) + "x" + closer * (limit + 1)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        compile_expression(over, max_depth=limit)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        compile_expression(opener * 5000 + "x" + closer * 5000, max_length=50_000)
