"""The version is set once (Cargo.toml); the package, the core and both commands report it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import flowcraft_fast
from flowcraft_fast import _core

ROOT = Path(__file__).resolve().parents[2]


def test_one_version_everywhere() -> None:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in pyproject and "version" in pyproject["dynamic"]
    assert flowcraft_fast.__version__ == cargo
    assert _core.__version__ == cargo
    for module, prog in (
        ("flowcraft_fast.cli", "flowcraft-fast"),
        ("flowcraft_fast.daemon", "flowcraft-fastd"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", module, "--version"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == f"{prog} {cargo}", out


def test_changelog_and_license() -> None:
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert re.search(r"^## \[Unreleased\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
