"""The commands the README and docs/ show, run as written from the repository root.

Runnable verbatim: the `flowcraft-fast validate/lint/graph` lines, `--version`/`--help`, the config
doc generator's `--check`. The daemon line names the machine's Redis on 6379, which tests never
use: it runs with only its URL swapped for the private server's and `--check` added, which
imports the app exactly as the README's command does and verifies the Redis.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VERBATIM = (
    "flowcraft-fast validate ",
    "flowcraft-fast lint ",
    "flowcraft-fast graph ",
    "flowcraft-fast --help",
    "flowcraft-fast --version",
    "flowcraft-fastd --version",
    "flowcraft-fastd --help",
    "python scripts/gen_config_doc.py",
)
README_REDIS = "redis://localhost:6379/0"


def _sh_lines(path: Path) -> list[str]:
    lines: list[str] = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", path.read_text(), re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def _run(command: str) -> subprocess.CompletedProcess[str]:
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCRAFT_")}
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _verbatim() -> list[str]:
    return [c for path in DOCS for c in _sh_lines(path) if c.startswith(VERBATIM)]


def test_the_docs_show_runnable_commands() -> None:
    commands = _verbatim()
    assert "flowcraft-fast validate examples/blueprints/order-review.json" in commands
    assert "flowcraft-fast graph examples/blueprints/order-review.json" in commands
    assert "flowcraft-fast lint examples/blueprints/order-review.json" in commands


@pytest.mark.parametrize("command", _verbatim())
def test_command_runs_verbatim(command: str) -> None:
    result = _run(command)
    assert result.returncode == 0, f"{command}: {result.stderr}"


@pytest.mark.redis
def test_the_readme_daemon_command_imports_its_app(redis_url: str) -> None:
    daemon = [c for c in _sh_lines(ROOT / "README.md") if c.startswith("flowcraft-fastd --app")]
    assert daemon, "the README shows no flowcraft-fastd command"
    for command in daemon:
        assert README_REDIS in command
        result = _run(command.replace(README_REDIS, redis_url) + " --check")
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "check passed" in result.stdout
