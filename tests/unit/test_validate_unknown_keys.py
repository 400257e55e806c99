"""`flowcraft-fast validate` refuses keys it does not read (a typo like `condtion` would make
an edge unconditional), naming where and the closest known key; `--lenient` accepts them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flowcraft_fast.blueprint import load_blueprint, unknown_keys

BP = {
    "id": "typo",
    "nodes": [
        {"id": "a", "uses": "f", "config": {"maxRetires": 3}},
        {"id": "b", "uses": "g", "colour": "red"},
    ],
    "edges": [{"source": "a", "target": "b", "condtion": "result.output > 1"}],
}


def test_unknown_keys_name_the_place_and_the_closest_key() -> None:
    problems = unknown_keys(BP)
    assert len(problems) == 3
    assert problems[0].startswith(
        "blueprint 'typo': node 'a' config: unknown key 'maxRetires' (did you mean 'maxRetries'?)"
    )
    assert problems[1].startswith("blueprint 'typo': node 'b': unknown key 'colour';")
    assert "known keys: id, uses, params, inputs, config" in problems[1]
    assert problems[2].startswith(
        "blueprint 'typo': edge 0 ('a' -> 'b'): unknown key 'condtion' (did you mean 'condition'?)"
    )
    load_blueprint(BP)  # the library itself still loads it (blueprints may carry extras)


def _validate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bp.json"
    path.write_text(json.dumps(BP))
    return subprocess.run(
        [sys.executable, "-m", "flowcraft_fast.cli", "validate", *args, str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_validate_refuses_and_lenient_accepts(tmp_path: Path) -> None:
    strict = _validate(tmp_path)
    assert strict.returncode == 1
    line = strict.stderr.strip()
    assert "unknown key 'maxRetires' (did you mean 'maxRetries'?)" in line
    assert "(and 2 more); --lenient accepts unknown keys" in line
    lenient = _validate(tmp_path, "--lenient")
    assert lenient.returncode == 0, lenient.stderr
    assert lenient.stdout.strip() == "ok: typo (2 nodes, 1 edges)"
