"""The value limit counts UTF-8 bytes (what Redis stores), not characters."""

from __future__ import annotations

import pytest

from flowcraft_fast.jsoncodec import JSONLimitError, dumps, loads, utf8_size


def test_multibyte_text_is_measured_in_bytes() -> None:
    value = "é" * 600  # 600 characters, 1,200 bytes (+2 quotes)
    assert utf8_size(dumps(value, max_bytes=10_000)) == 1202
    with pytest.raises(JSONLimitError, match="1202 bytes of JSON, over the limit of 1000"):
        dumps(value, what="context key 'k'", max_bytes=1000)
    with pytest.raises(JSONLimitError, match="1202 bytes"):
        loads('"' + value + '"', max_bytes=1000)
    with pytest.raises(JSONLimitError, match="1202 bytes"):
        loads(('"' + value + '"').encode(), max_bytes=1000)


def test_at_the_limit_passes() -> None:
    text = dumps("€" * 333, max_bytes=1001)  # 999 bytes + 2 quotes = 1001
    assert utf8_size(text) == 1001
    assert loads(text, max_bytes=1001) == "€" * 333
    assert dumps("a" * 998, max_bytes=1000) == '"' + "a" * 998 + '"'
    assert utf8_size("😀") == 4


@pytest.mark.parametrize(
    "value", [0, -7, 2**70, None, True, False, 1.25, "é\n", [1, None, True], {"k": [0]}]
)
def test_dumps_writes_what_the_stdlib_writes(value: object) -> None:
    """The direct paths for ints and None give the stdlib's compact text."""
    import json

    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_an_int_past_the_digit_limit_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"not JSON-serialisable: .*digits"):
        dumps(10**5000)
