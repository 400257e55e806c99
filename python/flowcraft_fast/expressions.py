"""The safe expression language used by edge conditions, transforms and loop conditions.

Expressions are parsed by a hand-written tokenizer and a depth-limited precedence-climbing
(Pratt) parser, then turned into nested Python closures.  Python's ``eval``/``exec``/``compile``
and the ``ast`` module are never used, and evaluation never calls ``getattr`` on scope values:
values are only read through ``Mapping``/``Sequence`` access.

Grammar and semantics
---------------------
Literals
    Integers (``1``, at most 2**63 in magnitude), decimals (``2.5``, ``1e3``, ``1.5E-2``;
    non-finite values are rejected), strings in single or double quotes with the escapes
    ``\\\\ \\' \\" \\n \\t \\r \\b \\f \\/ \\uXXXX`` (surrogate pairs are combined),
    ``true``/``false``/``null`` and ``True``/``False``/``None``, and list literals
    ``[1, "a", x]`` (a trailing comma is allowed).  There are no dict literals.
Names
    ``[A-Za-z_$][A-Za-z0-9_$]*`` (ASCII).  A top-level name starting with ``__`` is rejected; a
    single leading ``_`` is allowed (``_outputs.node1``).  The Python keywords listed in
    ``_RESERVED`` (``lambda``, ``if``, ``import``, ...) are rejected as names.
Access
    ``.field`` and ``[expr]``.  String keys read mappings, integer keys index lists (negative
    indexes count from the end).  Accessing a missing key, ``null``, or a value of the wrong
    type yields ``null``.  Field names and constant string keys starting with ``_`` are rejected
    at compile time; a *computed* string key starting with ``_`` yields ``null`` at run time.
    After a dot any word is a valid field name, keywords included (``x.in``).
Name resolution
    For a chain ``a.b.c`` (the dot parts written directly after the name) the longest dotted
    key present in the scope wins: ``"a.b.c"``, then ``"a.b"``, then ``"a"``; the remaining parts
    are field accesses.  Unknown names are ``null``.  ``Expression.names`` holds the first part
    of every name (``{"_outputs"}`` for ``_outputs.node1``).
Operators, loosest first (Python precedence)
    ``or ||`` < ``and &&`` < ``not !`` < comparisons ``== != === !== < <= > >= in``,
    ``not in`` < ``+ -`` < ``* / %`` < unary ``- +`` < postfix access.  Binary operators are
    left-associative.  Comparison chaining (``a < b < c``) is rejected; ``not``/``!`` must be
    parenthesised when it appears where a tighter operand is expected (``a == (not b)``).
Semantics (total: evaluation never raises and never hangs on JSON-like scopes)
    ``and``/``or`` short-circuit and return an operand, like Python; ``not`` returns a bool.
    ``==`` is JSON equality: ``1 == 1.0`` is true, ``true == 1`` is false (bools are not
    numbers), lists and mappings compare structurally.  ``===``/``!==`` are aliases of
    ``==``/``!=``.  Ordering compares two numbers or two strings, anything else is false.
    ``in`` tests a string key in a mapping, an element (JSON equality) in a list, or a substring
    in a string; anything else is false.  ``+`` adds numbers or concatenates two strings or two
    lists (``null`` when the result would exceed 1,000,000 elements); ``- * / %`` take numbers
    only; ``/`` is true division; ``%`` follows Python (sign of the divisor); division or modulo
    by zero, a non-finite float result, or an integer result outside the signed 64-bit range is
    ``null``; any other type mismatch is ``null``.  Unary ``-``/``+`` on a non-number is
    ``null``.  Truthiness (``truthy``) is Python's for JSON values: ``null``, ``false``, ``0``,
    ``""``, ``[]`` and ``{}`` are false.
Limits
    The source length is checked before tokenizing (``max_length`` characters).  The syntax
    tree may nest at most ``max_depth`` levels: each operator, parenthesis pair, list literal and
    access chain adds one level to its deepest operand (names and literals are level 0).  Every
    problem raises ``ExpressionError`` naming the problem and its 1-based column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, NoReturn

from flowcraft_fast.errors import ExpressionError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_LENGTH",
    "Expression",
    "compile_expression",
    "truthy",
]

DEFAULT_MAX_LENGTH: Final = 1000
"""Maximum length of an expression source, in characters."""

DEFAULT_MAX_DEPTH: Final = 32
"""Maximum nesting depth of an expression's syntax tree."""

_HARD_MAX_DEPTH: Final = 100
"""Largest accepted ``max_depth``; keeps parsing and evaluation far from Python's stack limit."""

MAX_SEQUENCE_LENGTH: Final = 1_000_000
"""Largest string or list that ``+`` may build."""

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_LITERAL_INT_MAX: Final = 2**63  # so that -9223372036854775808 can be written

_Scope = Mapping[str, Any]
_Fn = Callable[[_Scope], Any]

# --------------------------------------------------------------------------------------------
# Value helpers (all total: they never raise for JSON-like values)
# --------------------------------------------------------------------------------------------

_NULL, _BOOL, _NUM, _STR, _LIST, _MAP, _OTHER = range(7)
_EXACT_KINDS: Final[dict[type, int]] = {
    bool: _BOOL,
    int: _NUM,
    float: _NUM,
    str: _STR,
    list: _LIST,
    tuple: _LIST,
    dict: _MAP,
    type(None): _NULL,
}


def _kind(value: Any) -> int:
    kind = _EXACT_KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, (int, float)):
        return _NUM
    if isinstance(value, str):
        return _STR
    if isinstance(value, Mapping):
        return _MAP
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray, memoryview)):
        return _LIST
    return _OTHER


def _is_num(value: Any) -> bool:
    t = type(value)
    if t is int or t is float:
        return True
    return t is not bool and isinstance(value, (int, float))


def _is_list(value: Any) -> bool:
    t = type(value)
    if t is list or t is tuple:
        return True
    return _kind(value) == _LIST


def truthy(value: Any) -> bool:
    """Return the truthiness of a JSON-like value, as used by conditions.

    ``null``, ``false``, ``0``, ``0.0``, ``""``, ``[]`` and ``{}`` are false; every other JSON
    value is true.  Values of other types are true (they are never asked for ``__bool__``).
    """
    kind = _kind(value)
    if kind == _NULL:
        return False
    if kind in (_BOOL, _NUM, _STR):
        return bool(value)
    if kind in (_LIST, _MAP):
        return len(value) != 0
    return True


def _json_equal(left: Any, right: Any) -> bool:
    """JSON equality, iterative so that deeply nested values cannot exhaust the stack."""
    stack: list[tuple[Any, Any]] = [(left, right)]
    seen: set[tuple[int, int]] = set()
    while stack:
        a, b = stack.pop()
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            return False
        if ka == _NULL:
            continue
        if ka in (_NUM, _STR, _BOOL):
            if a != b:
                return False
        elif ka in (_LIST, _MAP):
            if a is b:
                continue
            pair = (id(a), id(b))
            if pair in seen:
                continue
            seen.add(pair)
            if len(a) != len(b):
                return False
            if ka == _LIST:
                stack.extend(zip(a, b, strict=True))
            else:
                for key in a:
                    if key not in b:
                        return False
                    stack.append((a[key], b[key]))
        elif a is not b:
            return False
    return True


def _fix_number(value: Any) -> Any:
    """Return an arithmetic result, or ``None`` when it is out of range or not finite."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        return value if _INT_MIN <= value <= _INT_MAX else None
    return None


def _op_add(a: Any, b: Any) -> Any:
    if _is_num(a) and _is_num(b):
        try:
            return _fix_number(a + b)
        except OverflowError:
            return None
    ka, kb = _kind(a), _kind(b)
    if ka != kb or (ka != _STR and ka != _LIST):
        return None
    if len(a) + len(b) > MAX_SEQUENCE_LENGTH:
        return None
    if ka == _STR:
        return str(a) + str(b)
    return [*a, *b]


def _op_sub(a: Any, b: Any) -> Any:
    if not (_is_num(a) and _is_num(b)):
        return None
    try:
        return _fix_number(a - b)
    except OverflowError:
        return None


def _op_mul(a: Any, b: Any) -> Any:
    if not (_is_num(a) and _is_num(b)):
        return None
    if isinstance(a, int) and isinstance(b, int):
        if a == 0 or b == 0:
            return 0
        # |a*b| >= 2**(bits(a)+bits(b)-2): skip computing products that are surely too large.
        if a.bit_length() + b.bit_length() > 130:
            return None
    try:
        return _fix_number(a * b)
    except OverflowError:
        return None


def _op_div(a: Any, b: Any) -> Any:
    if not (_is_num(a) and _is_num(b)) or b == 0:
        return None
    try:
        return _fix_number(a / b)
    except (OverflowError, ZeroDivisionError):
        return None


def _op_mod(a: Any, b: Any) -> Any:
    if not (_is_num(a) and _is_num(b)) or b == 0:
        return None
    try:
        return _fix_number(a % b)
    except (OverflowError, ZeroDivisionError, ValueError):
        return None


def _op_eq(a: Any, b: Any) -> bool:
    return _json_equal(a, b)


def _op_ne(a: Any, b: Any) -> bool:
    return not _json_equal(a, b)


def _orderable(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return True
    return _kind(a) == _STR and _kind(b) == _STR


def _op_lt(a: Any, b: Any) -> bool:
    return _orderable(a, b) and bool(a < b)


def _op_le(a: Any, b: Any) -> bool:
    return _orderable(a, b) and bool(a <= b)


def _op_gt(a: Any, b: Any) -> bool:
    return _orderable(a, b) and bool(a > b)


def _op_ge(a: Any, b: Any) -> bool:
    return _orderable(a, b) and bool(a >= b)


def _op_in(a: Any, b: Any) -> bool:
    kb = _kind(b)
    if kb == _MAP:
        return _kind(a) == _STR and a in b
    if kb == _LIST:
        return any(_json_equal(a, item) for item in b)
    if kb == _STR:
        return _kind(a) == _STR and str(a) in str(b)
    return False


def _op_not_in(a: Any, b: Any) -> bool:
    return not _op_in(a, b)


def _op_neg(a: Any) -> Any:
    return _fix_number(-a) if _is_num(a) else None


def _op_pos(a: Any) -> Any:
    return _fix_number(+a) if _is_num(a) else None


def _op_not(a: Any) -> bool:
    return not truthy(a)


def _get_field(container: Any, key: str) -> Any:
    """``container.key`` / ``container["key"]`` for a key known to be a safe string."""
    if type(container) is dict:
        return container.get(key)
    if _kind(container) == _MAP:
        return container.get(key)
    return None


def _get_index(container: Any, index: int) -> Any:
    if _kind(container) != _LIST:
        return None
    size = len(container)
    if -size <= index < size:
        return container[index]
    return None


def _get_item(container: Any, key: Any) -> Any:
    """``container[key]`` for a key computed at run time."""
    kind = _kind(key)
    if kind == _STR:
        if str(key).startswith("_"):
            return None
        return _get_field(container, key)
    if kind == _NUM and isinstance(key, int):
        return _get_index(container, key)
    return None


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

_NUMBER_RE: Final = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?", re.ASCII)
_IDENT_RE: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*", re.ASCII)
_IDENT_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_WHITESPACE: Final = frozenset(" \t\r\n")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_ESCAPES: Final = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "/": "/",
}
_OPERATORS_3: Final = frozenset({"===", "!=="})
_OPERATORS_2: Final = frozenset({"==", "!=", "<=", ">=", "&&", "||"})
_OPERATORS_1: Final = frozenset("<>+-*/%()[].,!")
_CONSTANTS: Final[dict[str, Any]] = {
    "true": True,
    "True": True,
    "false": False,
    "False": False,
    "null": None,
    "None": None,
}
_RESERVED: Final = frozenset(
    {
        "lambda", "if", "else", "elif", "for", "while", "import", "from", "def", "class", "is",
        "del", "global", "nonlocal", "return", "yield", "await", "async", "with", "as", "assert",
        "raise", "try", "except", "finally", "pass", "exec", "eval",
    }
)  # fmt: skip

_NUM_TOKEN, _STR_TOKEN, _NAME_TOKEN, _OP_TOKEN, _EOF_TOKEN, _ERROR_TOKEN = range(6)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: int
    value: Any  # the number, the decoded string, the word, the operator or the error message
    column: int  # 1-based
    text: str  # the source text of the token, for messages


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(problem: str, column: int, source: str) -> NoReturn:
    raise ExpressionError(f"{problem} at column {column} in expression {_clip(source, 80)!r}")


def _tokenize(source: str) -> list[_Token]:
    """Split ``source`` into tokens.

    A lexical error does not raise here: it becomes a final error token so that the parser
    reports whichever problem comes first in reading order.
    """
    tokens: list[_Token] = []
    pos = 0
    end = len(source)

    def error(message: str, at: int) -> list[_Token]:
        tokens.append(_Token(_ERROR_TOKEN, message, at + 1, source[at : at + 1]))
        return tokens

    while pos < end:
        char = source[pos]
        if char in _WHITESPACE:
            pos += 1
            continue
        start = pos
        if "0" <= char <= "9":
            match = _NUMBER_RE.match(source, pos)
            assert match is not None
            text = match.group()
            pos = match.end()
            if pos < end and source[pos] in _IDENT_CHARS:
                return error(f"invalid number {_clip(source[start : pos + 1], 20)!r}", start)
            number: int | float
            if match.group(1) is None and match.group(2) is None:
                if len(text.lstrip("0")) > 20 or int(text) > _LITERAL_INT_MAX:
                    return error(f"integer literal {_clip(text, 20)!r} is too large", start)
                number = int(text)
            else:
                number = float(text)
                if not math.isfinite(number):
                    return error(f"number literal {_clip(text, 20)!r} is out of range", start)
            tokens.append(_Token(_NUM_TOKEN, number, start + 1, text))
        elif char in "'\"":
            decoded: list[str] = []
            pos += 1
            while True:
                if pos >= end:
                    return error("unterminated string", start)
                char2 = source[pos]
                if char2 == char:
                    pos += 1
                    break
                if char2 != "\\":
                    decoded.append(char2)
                    pos += 1
                    continue
                escape = source[pos + 1 : pos + 2]
                if escape in _ESCAPES:
                    decoded.append(_ESCAPES[escape])
                    pos += 2
                elif escape == "u":
                    digits = source[pos + 2 : pos + 6]
                    if len(digits) != 4 or not all(d in _HEX for d in digits):
                        return error("invalid \\u escape (expected 4 hex digits)", pos)
                    code = int(digits, 16)
                    pos += 6
                    if 0xD800 <= code <= 0xDBFF and source[pos : pos + 2] == "\\u":
                        low_digits = source[pos + 2 : pos + 6]
                        if len(low_digits) == 4 and all(d in _HEX for d in low_digits):
                            low = int(low_digits, 16)
                            if 0xDC00 <= low <= 0xDFFF:
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                                pos += 6
                    decoded.append(chr(code))
                elif escape == "":
                    return error("unterminated string", start)
                else:
                    return error(f"invalid escape sequence {chr(92) + escape!r}", pos)
            tokens.append(_Token(_STR_TOKEN, "".join(decoded), start + 1, source[start:pos]))
        elif char in _IDENT_CHARS:  # digits were handled above
            match = _IDENT_RE.match(source, pos)
            assert match is not None
            pos = match.end()
            word = match.group()
            tokens.append(_Token(_NAME_TOKEN, word, start + 1, word))
        else:
            three = source[pos : pos + 3]
            two = source[pos : pos + 2]
            if three in _OPERATORS_3:
                op = three
            elif two in _OPERATORS_2:
                op = two
            elif char in _OPERATORS_1:
                op = char
            elif char == "=":
                return error("assignment is not allowed ('=')", start)
            elif char in "&|":
                return error(f"unexpected character {char!r} (use {char * 2!r})", start)
            else:
                return error(f"unexpected character {char!r}", start)
            pos += len(op)
            tokens.append(_Token(_OP_TOKEN, op, start + 1, op))
    tokens.append(_Token(_EOF_TOKEN, None, end + 1, ""))
    return tokens


# --------------------------------------------------------------------------------------------
# Parser and closure builder
# --------------------------------------------------------------------------------------------

_BP_OR: Final = 1
_BP_AND: Final = 2
_BP_NOT: Final = 3
_BP_COMPARE: Final = 4
_BP_ADD: Final = 5
_BP_MUL: Final = 6

_BINARY: Final[dict[str, tuple[int, Callable[[Any, Any], Any]]]] = {
    "==": (_BP_COMPARE, _op_eq),
    "===": (_BP_COMPARE, _op_eq),
    "!=": (_BP_COMPARE, _op_ne),
    "!==": (_BP_COMPARE, _op_ne),
    "<": (_BP_COMPARE, _op_lt),
    "<=": (_BP_COMPARE, _op_le),
    ">": (_BP_COMPARE, _op_gt),
    ">=": (_BP_COMPARE, _op_ge),
    "in": (_BP_COMPARE, _op_in),
    "not in": (_BP_COMPARE, _op_not_in),
    "+": (_BP_ADD, _op_add),
    "-": (_BP_ADD, _op_sub),
    "*": (_BP_MUL, _op_mul),
    "/": (_BP_MUL, _op_div),
    "%": (_BP_MUL, _op_mod),
}
_LOGICAL: Final[dict[str, int]] = {"or": _BP_OR, "||": _BP_OR, "and": _BP_AND, "&&": _BP_AND}


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled sub-expression."""

    fn: _Fn
    depth: int
    constant: bool = False  # fn ignores the scope and always returns ``value``
    value: Any = None
    comparison: bool = False  # an unparenthesised comparison (to reject chaining)


def _constant(value: Any, depth: int = 0) -> _Node:
    return _Node(lambda _scope: value, depth, True, value)


# An accessor is a constant string key, a constant integer index, or a computed key.
_Accessor = tuple[int, Any]
_FIELD, _INDEX, _COMPUTED = range(3)


def _apply_accessors(value: Any, accessors: tuple[_Accessor, ...], scope: _Scope) -> Any:
    for how, key in accessors:
        if value is None:
            return None
        if how == _FIELD:
            value = _get_field(value, key)
        elif how == _INDEX:
            value = _get_index(value, key)
        else:
            value = _get_item(value, key(scope))
    return value


_MISSING: Final = object()


def _name_reader(parts: list[str], rest: tuple[_Accessor, ...]) -> _Fn:
    """Read a name chain ``parts[0].parts[1]...`` (+ ``rest``) with longest-flat-key lookup."""
    if len(parts) == 1 and not rest:
        name = parts[0]

        def read_name(scope: _Scope) -> Any:
            return scope.get(name)

        return read_name

    # Candidates, longest dotted key first, each with the accessors that remain after it.
    candidates: tuple[tuple[str, tuple[_Accessor, ...]], ...] = tuple(
        (".".join(parts[:n]), tuple((_FIELD, p) for p in parts[n:]) + rest)
        for n in range(len(parts), 0, -1)
    )

    def read_chain(scope: _Scope) -> Any:
        for key, accessors in candidates:
            value = scope.get(key, _MISSING)
            if value is not _MISSING:
                return _apply_accessors(value, accessors, scope) if accessors else value
        return None

    return read_chain


class _Parser:
    def __init__(self, source: str, max_depth: int) -> None:
        self.source = source
        self.max_depth = max_depth
        self.tokens = _tokenize(source)
        self.pos = 0
        self.names: set[str] = set()

    # -- token helpers ---------------------------------------------------------------------

    def fail(self, problem: str, column: int) -> NoReturn:
        _fail(problem, column, self.source)

    def peek(self, offset: int = 0) -> _Token:
        token = self.tokens[min(self.pos + offset, len(self.tokens) - 1)]
        if token.kind == _ERROR_TOKEN and offset == 0:
            self.fail(token.value, token.column)
        return token

    def advance(self) -> _Token:
        token = self.peek()
        self.pos += 1
        return token

    def is_op(self, token: _Token, op: str) -> bool:
        return token.kind == _OP_TOKEN and token.value == op

    def unexpected(self, token: _Token) -> NoReturn:
        if token.kind == _EOF_TOKEN:
            self.fail("unexpected end of expression", token.column)
        self.fail(f"unexpected token {_clip(token.text, 20)!r}", token.column)

    def expect(self, op: str) -> _Token:
        token = self.peek()
        if not self.is_op(token, op):
            if token.kind == _EOF_TOKEN:
                self.fail(f"expected {op!r} but the expression ended", token.column)
            self.fail(f"expected {op!r} but found {_clip(token.text, 20)!r}", token.column)
        return self.advance()

    def check_depth(self, depth: int, column: int) -> None:
        if depth > self.max_depth:
            self.fail(f"expression is nested too deeply (limit {self.max_depth})", column)

    # -- grammar ---------------------------------------------------------------------------

    def parse(self) -> _Node:
        if self.peek().kind == _EOF_TOKEN:
            self.fail("empty expression", 1)
        node = self.expression(0, 0)
        token = self.peek()
        if token.kind != _EOF_TOKEN:
            self.unexpected(token)
        return node

    def infix(self) -> tuple[str, int] | None:
        """The infix operator at the cursor and how many tokens it spans, if any."""
        token = self.peek()
        if token.kind == _OP_TOKEN and (token.value in _BINARY or token.value in _LOGICAL):
            return token.value, 1
        if token.kind == _NAME_TOKEN:
            if token.value in ("and", "or", "in"):
                return token.value, 1
            if token.value == "not":
                following = self.peek(1)
                if following.kind == _NAME_TOKEN and following.value == "in":
                    return "not in", 2
        return None

    def expression(self, min_bp: int, depth: int) -> _Node:
        """Parse operators that bind tighter than ``min_bp``; ``depth`` enclosing levels."""
        self.check_depth(depth, self.peek().column)
        left = self.prefix(min_bp, depth)
        while True:
            found = self.infix()
            if found is None:
                return left
            op, width = found
            bp = _LOGICAL[op] if op in _LOGICAL else _BINARY[op][0]
            if bp <= min_bp:
                return left
            column = self.peek().column
            if bp == _BP_COMPARE and left.comparison:
                self.fail(
                    f"chained comparison {op!r} is not supported (combine with 'and')", column
                )
            self.pos += width
            right = self.expression(bp, depth + 1)
            left = self.binary(op, left, right, column)

    def prefix(self, min_bp: int, depth: int) -> _Node:
        token = self.advance()
        if (token.kind == _NAME_TOKEN and token.value == "not") or self.is_op(token, "!"):
            if min_bp >= _BP_NOT:
                self.fail(f"{token.text!r} must be parenthesised here", token.column)
            operand = self.expression(_BP_NOT - 1, depth + 1)
            return self.unary(_op_not, operand, token.column)
        if self.is_op(token, "-") or self.is_op(token, "+"):
            operand = self.expression(_BP_MUL, depth + 1)
            return self.unary(_op_neg if token.value == "-" else _op_pos, operand, token.column)
        return self.postfix(self.primary(token, depth), depth, token)

    def primary(self, token: _Token, depth: int) -> _Node | list[str]:
        """An atom; a name is returned as its list of dot parts for ``postfix`` to resolve."""
        if token.kind == _NUM_TOKEN or token.kind == _STR_TOKEN:
            return _constant(token.value)
        if token.kind == _NAME_TOKEN:
            word: str = token.value
            if word in _CONSTANTS:
                return _constant(_CONSTANTS[word])
            if word == "lambda":
                self.fail("lambda is not allowed", token.column)
            if word in _RESERVED:
                self.fail(f"{word!r} is a reserved word and is not allowed", token.column)
            if word in ("and", "or", "in", "not"):
                self.unexpected(token)
            if word.startswith("__"):
                self.fail(f"names starting with '__' are not allowed ({word!r})", token.column)
            self.names.add(word)
            return [word]
        if self.is_op(token, "("):
            inner = self.expression(0, depth + 1)
            self.expect(")")
            return self.wrap(inner, token.column)
        if self.is_op(token, "["):
            return self.list_literal(token, depth)
        self.unexpected(token)

    def list_literal(self, opening: _Token, depth: int) -> _Node:
        items: list[_Node] = []
        while not self.is_op(self.peek(), "]"):
            items.append(self.expression(0, depth + 1))
            token = self.peek()
            if self.is_op(token, ","):
                self.advance()
            elif not self.is_op(token, "]"):
                if token.kind == _EOF_TOKEN:
                    self.fail("expected ',' or ']' but the expression ended", token.column)
                found = _clip(token.text, 20)
                self.fail(f"expected ',' or ']' but found {found!r}", token.column)
        self.advance()
        item_depth = 1 + max((item.depth for item in items), default=0)
        self.check_depth(item_depth, opening.column)
        fns = tuple(item.fn for item in items)

        def build_list(scope: _Scope) -> Any:
            return [fn(scope) for fn in fns]

        return _Node(build_list, item_depth)

    def postfix(self, base: _Node | list[str], depth: int, first: _Token) -> _Node:
        parts = base if isinstance(base, list) else None
        accessors: list[_Accessor] = []
        sub_depth = 0
        while True:
            token = self.peek()
            if self.is_op(token, "."):
                self.advance()
                name_token = self.advance()
                if name_token.kind != _NAME_TOKEN:
                    if name_token.kind == _EOF_TOKEN:
                        self.fail("expected a field name after '.'", name_token.column)
                    found = _clip(name_token.text, 20)
                    self.fail(
                        f"expected a field name after '.' but found {found!r}", name_token.column
                    )
                field: str = name_token.value
                if field.startswith("_"):
                    self.fail(
                        f"attribute names starting with '_' are not allowed ({field!r})",
                        name_token.column,
                    )
                if parts is not None and not accessors:
                    parts.append(field)
                else:
                    accessors.append((_FIELD, field))
            elif self.is_op(token, "["):
                self.advance()
                key = self.expression(0, depth + 1)
                self.expect("]")
                sub_depth = max(sub_depth, key.depth)
                accessors.append(self.accessor(key, token.column))
            elif self.is_op(token, "("):
                self.fail("calls are not allowed", token.column)
            else:
                break
        if parts is not None:
            has_access = len(parts) > 1 or bool(accessors)
            node_depth = 1 + sub_depth if has_access else 0
            self.check_depth(node_depth, first.column)
            return _Node(_name_reader(parts, tuple(accessors)), node_depth)
        assert isinstance(base, _Node)
        if not accessors:
            return base
        node_depth = 1 + max(base.depth, sub_depth)
        self.check_depth(node_depth, first.column)
        base_fn = base.fn
        chain = tuple(accessors)

        def access(scope: _Scope) -> Any:
            return _apply_accessors(base_fn(scope), chain, scope)

        if base.constant and all(how != _COMPUTED for how, _ in chain):
            value = access({})
            if not isinstance(value, list):
                return _constant(value, node_depth)
        return _Node(access, node_depth)

    def accessor(self, key: _Node, column: int) -> _Accessor:
        if key.constant:
            value = key.value
            if isinstance(value, str):
                if value.startswith("_"):
                    self.fail(f"keys starting with '_' are not allowed ({value!r})", column)
                return (_FIELD, value)
            if isinstance(value, int) and not isinstance(value, bool):
                return (_INDEX, value)
            return (_FIELD, _MISSING)  # never a key of a JSON mapping: always null
        return (_COMPUTED, key.fn)

    # -- node builders ---------------------------------------------------------------------

    def wrap(self, inner: _Node, column: int) -> _Node:
        """A parenthesised expression: one level deeper, no longer a bare comparison."""
        depth = inner.depth + 1
        self.check_depth(depth, column)
        return _Node(inner.fn, depth, inner.constant, inner.value)

    def unary(self, op: Callable[[Any], Any], operand: _Node, column: int) -> _Node:
        depth = operand.depth + 1
        self.check_depth(depth, column)
        if operand.constant:
            return _constant(op(operand.value), depth)
        fn = operand.fn

        def apply_unary(scope: _Scope) -> Any:
            return op(fn(scope))

        return _Node(apply_unary, depth)

    def binary(self, op: str, left: _Node, right: _Node, column: int) -> _Node:
        depth = 1 + max(left.depth, right.depth)
        self.check_depth(depth, column)
        lfn, rfn = left.fn, right.fn
        fn: _Fn
        if op in ("and", "&&"):

            def logical_and(scope: _Scope) -> Any:
                value = lfn(scope)
                return rfn(scope) if truthy(value) else value

            fn = logical_and
        elif op in ("or", "||"):

            def logical_or(scope: _Scope) -> Any:
                value = lfn(scope)
                return value if truthy(value) else rfn(scope)

            fn = logical_or
        else:
            operator = _BINARY[op][1]

            def apply_binary(scope: _Scope) -> Any:
                return operator(lfn(scope), rfn(scope))

            fn = apply_binary
        comparison = op in _BINARY and _BINARY[op][0] == _BP_COMPARE
        if left.constant and right.constant:
            value = fn({})
            if not isinstance(value, list):
                return _Node(lambda _scope: value, depth, True, value, comparison)
        return _Node(fn, depth, comparison=comparison)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class Expression:
    """A compiled expression.  Immutable; safe to share between threads and runs."""

    __slots__ = ("_fn", "names", "source")

    source: str
    names: frozenset[str]

    def __init__(self, source: str, names: frozenset[str], fn: _Fn) -> None:
        self.source = source
        self.names = names
        self._fn = fn

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """Evaluate against ``scope``.  Never raises for a JSON-like scope."""
        if type(scope) is not dict and not isinstance(scope, Mapping):
            scope = {}
        return self._fn(scope)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile_expression(
    source: str,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Expression:
    """Parse ``source`` once and return an :class:`Expression`.

    Raises ``ExpressionError`` for any problem with the source (syntax, forbidden construct,
    length, depth).  ``ValueError`` is raised for invalid limits (``max_depth`` must be in
    ``1..100``, ``max_length`` at least 1).  Results are cached per ``(source, limits)``.
    """
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be a string, not {type(source).__name__}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, not {max_length!r}")
    if (
        isinstance(max_depth, bool)
        or not isinstance(max_depth, int)
        or not 1 <= max_depth <= _HARD_MAX_DEPTH
    ):
        raise ValueError(f"max_depth must be an integer in 1..{_HARD_MAX_DEPTH}, not {max_depth!r}")
    return _compile_cached(source, max_length, max_depth)


@lru_cache(maxsize=2048)
def _compile_cached(source: str, max_length: int, max_depth: int) -> Expression:
    if len(source) > max_length:
        _fail(
            f"expression is too long ({len(source)} characters, limit {max_length})",
            max_length + 1,
            source,
        )
    parser = _Parser(source, max_depth)
    node = parser.parse()
    return Expression(source, frozenset(parser.names), node.fn)
