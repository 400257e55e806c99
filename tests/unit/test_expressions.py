"""Example-based tests of the safe expression language (flowcraft_fast.expressions)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from flowcraft_fast.errors import BlueprintError, ExpressionError
from flowcraft_fast.expressions import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_LENGTH,
    Expression,
    compile_expression,
    truthy,
)

I64_MAX = 2**63 - 1

VALID: list[tuple[str, dict[str, Any], Any]] = [
    # conditions from the brief
    ("user.tier == 'gold' and user.spend >= 100", {"user": {"tier": "gold", "spend": 100}}, True),
    ("user.tier == 'gold' and user.spend >= 100", {"user": {"tier": "gold", "spend": 99}}, False),
    ("user.tier == 'gold' and user.spend >= 100", {"user": {"tier": "silver"}}, False),
    ("user.tier == 'gold' and user.spend >= 100", {}, False),
    ("result.output > 3", {"result": {"output": 4, "action": None}}, True),
    ("result.output > 3", {"result": {"output": 3}}, False),
    ("result.action == 'retry'", {"result": {"output": 1, "action": "retry"}}, True),
    ("input.n * 10", {"input": {"n": 4}}, 40),
    ("input.n * 10", {"input": {"n": 2.5}}, 25.0),
    ("x in [1,2]", {"x": 2}, True),
    ("x in [1,2]", {"x": 3}, False),
    ("x in [1,2]", {"x": 1.0}, True),
    ("x in [1,2]", {"x": True}, False),
    ("'a' not in s", {"s": "bcd"}, True),
    ("'a' not in s", {"s": "abc"}, False),
    ("!done && count < 3", {"done": False, "count": 2}, True),
    ("!done && count < 3", {"done": True, "count": 2}, False),
    ("!done && count < 3", {"done": False, "count": 3}, False),
    ("not done and count < 3", {"count": 0}, True),
    # flat dotted keys win over nested access (longest key first)
    ("_outputs.a", {"_outputs.a": 5}, 5),
    ("_outputs.a", {"_outputs.a": 5, "_outputs": {"a": 1}}, 5),
    ("_outputs.a", {"_outputs": {"a": 1}}, 1),
    ("_outputs.a.b", {"_outputs.a": {"b": 7}}, 7),
    ("_outputs.a.b", {"_outputs.a.b": 8, "_outputs.a": {"b": 7}}, 8),
    ("_outputs.a['b']", {"_outputs.a": {"b": 7}}, 7),
    ("_outputs.a == null", {"_outputs.a": None, "_outputs": {"a": 1}}, True),
    ("_outputs", {"_outputs": 3}, 3),
    # null propagation: missing keys, null, wrong types
    ("missing", {}, None),
    ("a.b.c.d", {}, None),
    ("a.b.c", {"a": None}, None),
    ("a.b.c", {"a": {"b": 3}}, None),
    ("a.b", {"a": [1, 2]}, None),
    ("a[0]", {"a": {"0": 1}}, None),
    ("a[5]", {"a": [1, 2]}, None),
    ("a['x']", {"a": "xyz"}, None),
    ("a[0]", {"a": "xyz"}, None),
    ("a[true]", {"a": [1, 2]}, None),
    ("a[1.0]", {"a": [1, 2]}, None),
    ("a[k]", {"a": {"x": 1}, "k": "x"}, 1),
    ("a[k]", {"a": {"_x": 1}, "k": "_x"}, None),
    ("a[k]", {"a": [1, 2], "k": 1}, 2),
    ("a[k]", {"a": [1, 2], "k": None}, None),
    ("a.b + 1", {}, None),
    ("a.b == null", {}, True),
    ("a.b != null", {"a": {"b": 0}}, True),
    # subscripts
    ("a[-1]", {"a": [1, 2, 3]}, 3),
    ("a[-3]", {"a": [1, 2, 3]}, 1),
    ("a[-4]", {"a": [1, 2, 3]}, None),
    ("a[0].b[1]", {"a": [{"b": [5, 6]}]}, 6),
    ('a["key"]', {"a": {"key": "v"}}, "v"),
    ("a[1 + 1]", {"a": [0, 1, 2]}, 2),
    ("a[b[0]]", {"a": [10, 20], "b": [1]}, 20),
    ("[1, 2, 3][1]", {}, 2),
    ("(a).b", {"a": {"b": 1}}, 1),
    ("x.in", {"x": {"in": 1}}, 1),
    ("$v + v_2", {"$v": 1, "v_2": 2}, 3),
    # literals
    ("1", {}, 1),
    ("2.5", {}, 2.5),
    ("1e3", {}, 1000.0),
    ("1.5E-1", {}, 0.15),
    ("'single'", {}, "single"),
    ('"double"', {}, "double"),
    (r"'it\'s'", {}, "it's"),
    (r'"say \"hi\""', {}, 'say "hi"'),
    (r"'a\\b'", {}, "a\\b"),
    (r"'line\nnext\ttab'", {}, "line\nnext\ttab"),
    (r"'\u00e9'", {}, "é"),
    (r"'\ud83d\ude00'", {}, "\U0001f600"),
    ("true", {}, True),
    ("True", {}, True),
    ("false", {}, False),
    ("False", {}, False),
    ("null", {}, None),
    ("None", {}, None),
    ("[]", {}, []),
    ("[1, 'a', [true], null]", {}, [1, "a", [True], None]),
    ("[1, 2,]", {}, [1, 2]),
    ("[x, y]", {"x": 1}, [1, None]),
    ("-9223372036854775808", {}, -(2**63)),
    # and / or return operands, short-circuit
    ("a or 'default'", {}, "default"),
    ("a or 'default'", {"a": "set"}, "set"),
    ("a || b", {"a": 0, "b": []}, []),
    ("a and b", {"a": 0, "b": 1}, 0),
    ("a && b", {"a": 1, "b": "x"}, "x"),
    ("a and b or c", {"c": 3}, 3),
    ("a or b and c", {"a": 0, "b": 1, "c": 2}, 2),
    ("not a", {"a": []}, True),
    ("not a", {"a": {"k": 1}}, False),
    ("!!a", {"a": "x"}, True),
    ("not not a", {}, False),
    # precedence
    ("1 + 2 * 3", {}, 7),
    ("(1 + 2) * 3", {}, 9),
    ("10 - 4 - 3", {}, 3),
    ("2 * 3 % 4", {}, 2),
    ("-2 * 3", {}, -6),
    ("- -2", {}, 2),
    ("+2", {}, 2),
    ("-a.b", {"a": {"b": 4}}, -4),
    ("1 + 1 == 2", {}, True),
    ("not 1 == 2", {}, True),
    ("not a == b", {"a": 1, "b": 1}, False),
    ("1 < 2 and 2 < 3", {}, True),
    ("(1 < 2) == true", {}, True),
    ("a == -1", {"a": -1}, True),
    ("a * -b", {"a": 2, "b": 3}, -6),
    ("a and (not b)", {"a": 1, "b": 0}, True),
    # equality is JSON equality
    ("1 == 1.0", {}, True),
    ("true == 1", {}, False),
    ("false == 0", {}, False),
    ("null == false", {}, False),
    ("'1' == 1", {}, False),
    ("a == b", {"a": [1, {"x": [True]}], "b": [1.0, {"x": [True]}]}, True),
    ("a == b", {"a": [1], "b": [True]}, False),
    ("a == b", {"a": {"x": 1}, "b": {"x": 1, "y": 2}}, False),
    ("a == b", {"a": {"x": 1}, "b": {"y": 1}}, False),
    ("a === 1", {"a": 1}, True),
    ("a !== 1", {"a": 1}, False),
    ("a != 1", {"a": 2}, True),
    # ordering
    ("2 < 10", {}, True),
    ("2.5 >= 2", {}, True),
    ("'b' > 'a'", {}, True),
    ("'10' < '9'", {}, True),
    ("'a' < 1", {}, False),
    ("null < 1", {}, False),
    ("null >= 0", {}, False),
    ("true > false", {}, False),
    ("[1] < [2]", {}, False),
    ("a <= b", {"a": 3, "b": 3}, True),
    # membership
    ("'k' in m", {"m": {"k": None}}, True),
    ("'z' in m", {"m": {"k": 1}}, False),
    ("1 in m", {"m": {"1": 1}}, False),
    ("'ell' in 'hello'", {}, True),
    ("1 in 'hello1'", {}, False),
    ("[1] in [[1.0], 2]", {}, True),
    ("x in null", {"x": 1}, False),
    ("x in 5", {"x": 5}, False),
    ("x not in [1, 2]", {"x": 3}, True),
    # arithmetic
    ("'a' + 'b'", {}, "ab"),
    ("[1] + [2, 3]", {}, [1, 2, 3]),
    ("a + b", {"a": [1], "b": [2]}, [1, 2]),
    ("'a' + 1", {}, None),
    ("[1] + 'a'", {}, None),
    ("null + 1", {}, None),
    ("true + 1", {}, None),
    ("'ab' * 3", {}, None),
    ("[1] * 3", {}, None),
    ("'a' - 'b'", {}, None),
    ("7 / 2", {}, 3.5),
    ("4 / 2", {}, 2.0),
    ("7 % 3", {}, 1),
    ("-7 % 3", {}, 2),
    ("7 % -3", {}, -2),
    ("7.5 % 2", {}, 1.5),
    ("1 / 0", {}, None),
    ("1 % 0", {}, None),
    ("1.0 / 0.0", {}, None),
    ("x / 0", {"x": 5}, None),
    ("-'a'", {}, None),
    ("-null", {}, None),
    ("-true", {}, None),
    ("+'a'", {}, None),
    ("9223372036854775807 + 1", {}, None),
    ("-9223372036854775807 - 2", {}, None),
    ("9223372036854775807 * 2", {}, None),
    ("x * x", {"x": 2**40}, None),
    ("x * x", {"x": 2**31}, 2**62),
    ("x * 0", {"x": 10**50}, 0),
    ("x + 1", {"x": I64_MAX}, None),
    ("-x", {"x": -(2**63)}, None),
    ("-x", {"x": 2**63}, -(2**63)),
    ("+x", {"x": 2**63}, None),
    ("-x", {"x": 1.5}, -1.5),
    ("x - 1", {"x": 10**30}, None),
    ("x + 0.5", {"x": 10**400}, None),
    ("x / 3", {"x": 10**400}, None),
    ("1e308 * 10", {}, None),
    ("x - x", {"x": float("inf")}, None),
    ("x + 1", {"x": float("inf")}, None),
    ("x", {"x": float("inf")}, float("inf")),  # scope values pass through untouched
]


@pytest.mark.parametrize(("source", "scope", "expected"), VALID)
def test_valid_expressions(source: str, scope: dict[str, Any], expected: Any) -> None:
    result = compile_expression(source).evaluate(scope)
    assert result == expected
    assert type(result) is type(expected)


REJECTED: list[tuple[str, str]] = [
    ("__import__('os').system('id')", "names starting with '__' are not allowed"),
    ("__builtins__", "names starting with '__' are not allowed"),
    ("a.__class__", "attribute names starting with '_' are not allowed"),
    ("x._secret", "attribute names starting with '_' are not allowed"),
    ("x['_secret']", "keys starting with '_' are not allowed"),
    ("x['_' + 'secret']", "keys starting with '_' are not allowed"),
    ("f(1)", "calls are not allowed"),
    ("f()", "calls are not allowed"),
    ("a.b.c()", "calls are not allowed"),
    ("'abc'.upper()", "calls are not allowed"),
    ("(a)(b)", "calls are not allowed"),
    ("a = 1", "assignment is not allowed"),
    ("a := 1", "unexpected character ':'"),
    ("lambda: 1", "lambda is not allowed"),
    ("x if y else z", "unexpected token 'if'"),
    ("import os", "'import' is a reserved word"),
    ("1 +", "unexpected end of expression at column 4"),
    ("a + )", "unexpected token ')' at column 5"),
    ("(1", "expected ')' but the expression ended"),
    ("[1, 2", "expected ',' or ']'"),
    ("[1 2]", "expected ',' or ']' but found '2'"),
    ("a[1", "expected ']'"),
    ("a.", "expected a field name after '.'"),
    ("a.1", "expected a field name after '.'"),
    ("a b", "unexpected token 'b' at column 3"),
    ("and", "unexpected token 'and'"),
    ("a not b", "unexpected token 'not'"),
    ("a ** 2", "unexpected token '*'"),
    ("a // 2", "unexpected token '/'"),
    ("a & b", "unexpected character '&'"),
    ("a | b", "unexpected character '|'"),
    ("a ; b", "unexpected character ';'"),
    ("{'a': 1}", "unexpected character '{'"),
    ("a @ b", "unexpected character '@'"),
    ("a < b < c", "chained comparison"),
    ("a == b == c", "chained comparison"),
    ("a < b == c", "chained comparison"),
    ("a in b in c", "chained comparison"),
    ("a == not b", "'not' must be parenthesised here"),
    ("-not a", "'not' must be parenthesised here"),
    ('"unterminated', "unterminated string at column 1"),
    ("'unterminated\\'", "unterminated string"),
    ("'bad \\q escape'", "invalid escape sequence"),
    ("'\\u12'", "invalid \\u escape"),
    ("1abc", "invalid number"),
    ("1e999", "out of range"),
    ("99999999999999999999999", "too large"),
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("é", "unexpected character 'é'"),
    ("a\u00a0b", "unexpected character"),
    ("a" * (DEFAULT_MAX_LENGTH + 1), "too long"),
    ("(" * 100 + "1" + ")" * 100, "nested too deeply"),
    ("not " * 100 + "x", "nested too deeply"),
    ("-" * 100 + "1", "nested too deeply"),
    ("1" + " + 1" * 100, "nested too deeply"),
    ("[" * 100 + "]" * 100, "nested too deeply"),
    ("a[" * 100 + "0" + "]" * 100, "nested too deeply"),
]


@pytest.mark.parametrize(("source", "fragment"), REJECTED)
def test_rejected_expressions(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    message = str(info.value)
    assert fragment in message
    assert "at column " in message
    assert "in expression " in message


def test_error_hierarchy() -> None:
    with pytest.raises(BlueprintError):
        compile_expression("f(1)")
    with pytest.raises(ValueError):
        compile_expression("f(1)")


def test_error_message_format() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("a + )")
    assert str(info.value) == "unexpected token ')' at column 5 in expression 'a + )'"


def test_error_message_truncates_long_source() -> None:
    source = "a + " * 30 + ")"
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    message = str(info.value)
    assert f"at column {len(source)}" in message
    assert source not in message
    assert "..." in message
    assert len(message) < 200


def test_first_error_in_reading_order_wins() -> None:
    # the call comes before the lexical error, so it is the one reported
    with pytest.raises(ExpressionError, match="calls are not allowed"):
        compile_expression("f(1) ; 'unterminated")


def test_length_limit_is_checked_before_tokenizing() -> None:
    source = "'" + "x" * DEFAULT_MAX_LENGTH  # unterminated, but too long first
    with pytest.raises(ExpressionError, match="too long"):
        compile_expression(source)
    ok = "1" + " " * (DEFAULT_MAX_LENGTH - 1)
    assert compile_expression(ok).evaluate({}) == 1
    with pytest.raises(ExpressionError, match="too long"):
        compile_expression("a + b", max_length=4)
    assert compile_expression("a + b", max_length=5).evaluate({"a": 1, "b": 2}) == 3


def _nest(kind: str, levels: int) -> str:
    if kind == "parens":
        return "(" * levels + "x" + ")" * levels
    if kind == "not":
        return "not " * levels + "x"
    if kind == "bang":
        return "!" * levels + "x"
    if kind == "minus":
        return "-" * levels + "x"
    if kind == "plus-chain":
        return "x" + " + 1" * levels
    if kind == "lists":
        return "[" * levels + "x" + "]" * levels
    if kind == "subscripts":
        return "a[" * levels + "x" + "]" * levels
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["parens", "not", "bang", "minus", "plus-chain", "lists", "subscripts"]
)
@pytest.mark.parametrize("limit", [1, 5, DEFAULT_MAX_DEPTH])
def test_depth_boundary(kind: str, limit: int) -> None:
    expression = compile_expression(_nest(kind, limit), max_depth=limit)
    expression.evaluate({"x": 1, "a": [1, 2]})
    with pytest.raises(ExpressionError, match="nested too deeply"):
        compile_expression(_nest(kind, limit + 1), max_depth=limit)


def test_access_chain_counts_as_one_level() -> None:
    source = "a" + ".b" * 200
    expression = compile_expression(source, max_depth=1)
    assert expression.evaluate({}) is None


def test_max_depth_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        compile_expression("1", max_depth=0)
    with pytest.raises(ValueError, match="max_depth"):
        compile_expression("1", max_depth=10_000)
    with pytest.raises(ValueError, match="max_length"):
        compile_expression("1", max_length=0)
    deep = "(" * 100 + "1" + ")" * 100
    assert compile_expression(deep, max_depth=100, max_length=10_000).evaluate({}) == 1


def test_names() -> None:
    assert compile_expression("result.output > 3").names == frozenset({"result"})
    assert compile_expression("user.tier == 'gold' and user.spend >= 100").names == {"user"}
    assert compile_expression("_outputs.node1.x").names == {"_outputs"}
    assert compile_expression("a[b.c] + d['e'] or not f").names == {"a", "b", "d", "f"}
    assert compile_expression("1 + 'x' == true").names == frozenset()
    assert compile_expression("x.in and y").names == {"x", "y"}


def test_expression_object() -> None:
    expression = compile_expression("a + 1")
    assert isinstance(expression, Expression)
    assert expression.source == "a + 1"
    assert "a + 1" in repr(expression)
    assert compile_expression("a + 1") is expression  # cached
    assert compile_expression("a + 1", max_depth=5) is not expression


def test_list_results_are_fresh_objects() -> None:
    expression = compile_expression("[1, 2]")
    first = expression.evaluate({})
    first.append(3)
    assert expression.evaluate({}) == [1, 2]


def test_scope_is_not_mutated() -> None:
    scope: dict[str, Any] = {"a": [1], "b": [2], "m": {"k": 1}}
    compile_expression("a + b").evaluate(scope)
    compile_expression("m.k + 1").evaluate(scope)
    assert scope == {"a": [1], "b": [2], "m": {"k": 1}}


def test_short_circuit_skips_right_operand() -> None:
    # the right operand would be null on evaluation anyway; check operand identity instead
    value: list[int] = [1]
    assert compile_expression("a or b").evaluate({"a": value, "b": 2}) is value
    assert compile_expression("a and b").evaluate({"a": [], "b": value}) == []


def test_huge_concatenations_are_null() -> None:
    big = "x" * 600_000
    assert compile_expression("a + a").evaluate({"a": big}) is None
    assert compile_expression("a + b").evaluate({"a": big, "b": "y"}) == big + "y"
    big_list = [0] * 600_000
    assert compile_expression("a + a").evaluate({"a": big_list}) is None


def test_deeply_nested_scope_values_compare_without_recursion() -> None:
    left: list[Any] = []
    right: list[Any] = []
    for _ in range(10_000):
        left, right = [left], [right]
    assert compile_expression("a == b").evaluate({"a": left, "b": right}) is True
    assert compile_expression("a in [b]").evaluate({"a": left, "b": right}) is True


def test_cyclic_scope_values_do_not_hang() -> None:
    a: dict[str, Any] = {}
    a["self"] = a
    b: dict[str, Any] = {}
    b["self"] = b
    assert compile_expression("a == b").evaluate({"a": a, "b": b}) is True


def test_non_mapping_scope_is_treated_as_empty() -> None:
    expression = compile_expression("a or 1")
    assert expression.evaluate(None) == 1  # type: ignore[arg-type]
    assert expression.evaluate([1, 2]) == 1  # type: ignore[arg-type]


def test_compile_rejects_non_string() -> None:
    with pytest.raises(ExpressionError, match="must be a string"):
        compile_expression(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        (True, True),
        (0, False),
        (0.0, False),
        (-1, True),
        (0.1, True),
        ("", False),
        ("0", True),
        ("false", True),
        ([], False),
        ([0], True),
        ({}, False),
        ({"a": None}, True),
        ((), False),
        (object(), True),
    ],
)
def test_truthy(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


def test_no_python_code_execution_primitives_are_used() -> None:
    import flowcraft_fast.expressions as module

    with open(module.__file__, encoding="utf-8") as handle:
        text = handle.read()
    calls = re.findall(r"(?<![\w.])(eval|exec|compile|getattr|__import__)\s*\(", text)
    assert calls == []
    assert re.search(r"^\s*(import ast|from ast)", text, re.MULTILINE) is None
