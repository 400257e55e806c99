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
