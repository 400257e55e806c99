"""JSON text in and out of Redis, with limits.

Every value flowcraft-fast stores (context fields, job data, results) is JSON text: no pickle,
nothing a reader could execute. Encoding refuses what JSON cannot carry (NaN, sets, objects)
with a message naming the key; decoding refuses oversized or too deeply nested text.
"""

from __future__ import annotations

import json
from typing import Any, Final

MAX_VALUE_BYTES: Final = 16 * 1024 * 1024
"""Largest JSON text accepted for one value (a context field, a job payload)."""

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decoder = json.JSONDecoder()


class JSONLimitError(ValueError):
    """A JSON value is larger or deeper than flowcraft-fast accepts."""


def dumps(value: Any, *, what: str = "value", max_bytes: int = MAX_VALUE_BYTES) -> str:
    """Encode one value as compact JSON text; TypeError/ValueError name `what` on failure."""
    try:
        # the commonest values directly (the stdlib builds an encoder object for each non-str
        # value it encodes); bool and int subclasses take the general path
        if type(value) is int:
            text = int.__repr__(value)  # ValueError past the interpreter's digit limit
        elif value is None:
            return "null"
        else:
            text = _encoder.encode(value)
    except ValueError as exc:
        if "ircular reference" in str(exc):  # the stdlib's check_circular
            raise TypeError(
                f"{what} is not JSON-serialisable: a container that contains itself "
                "(a reference cycle)"
            ) from None
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None
    except TypeError as exc:
        raise type(exc)(f"{what} is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise JSONLimitError(f"{what} is nested too deeply to store") from None
    # A character is 1 to 4 bytes: a text of at most max/4 characters is under the limit.
    if len(text) * 4 > max_bytes and (size := utf8_size(text)) > max_bytes:
        raise JSONLimitError(f"{what} is {size} bytes of JSON, over the limit of {max_bytes}")
    return text


def utf8_size(text: str | bytes) -> int:
    """Bytes of `text` in UTF-8, what Redis stores (an ASCII text: its length, no encoding)."""
    if isinstance(text, bytes) or text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class EncodeOnce:
    """Encodes the values of one message, each object once: a node's output is stored under
    `_outputs.<id>` and `<id>`, carried by its edges and kept as its job's return value, and is
    the same object each time. Keyed by identity, so it must not outlive the values it saw."""

    __slots__ = ("_texts",)

    def __init__(self) -> None:
        self._texts: dict[int, str] = {}

    def __call__(self, value: Any, what: str = "value") -> str:
        text = self._texts.get(id(value))
        if text is None:
            text = self._texts[id(value)] = dumps(value, what=what)
        return text


def loads(text: str | bytes, *, what: str = "value", max_bytes: int = MAX_VALUE_BYTES) -> Any:
    """Decode JSON text written by flowcraft-fast or another client (TypeScript Flowcraft)."""
    if len(text) * 4 > max_bytes and (size := utf8_size(text)) > max_bytes:
        raise JSONLimitError(f"{what} is {size} bytes of JSON, over the limit of {max_bytes}")
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise JSONLimitError(f"{what} is nested too deeply to read") from None
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
