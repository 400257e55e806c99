from __future__ import annotations

import asyncio
import io
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from flowcraft_fast import cli
from flowcraft_fast.cli import HANDLERS, build_parser, main

GOOD = {
    "id": "demo",
    "nodes": [{"id": "A", "uses": "a"}, {"id": "B", "uses": "b"}, {"id": "C", "uses": "c"}],
    "edges": [{"source": "A", "target": "B"}, {"source": "B", "target": "C"}],
}

DISTRIBUTED = ["run", "status", "resume", "cancel", "inspect", "reconcile", "runs", "dashboard"]
ALL_COMMANDS = ["validate", "lint", "graph", *DISTRIBUTED]


def _write(tmp_path: Path, data: Any, name: str = "bp.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# ---------------------------------------------------------------- validate


def test_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: demo (3 nodes, 2 edges)\n"
    assert err == ""


def test_validate_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(GOOD)))
    assert main(["validate", "-"]) == 0
    assert capsys.readouterr().out == "ok: demo (3 nodes, 2 edges)\n"


def test_validate_invalid_blueprint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = dict(GOOD, edges=[{"source": "A", "target": "ghost"}])
    path = _write(tmp_path, bad)
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ")
    assert "ghost" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "invalid JSON at line 1 column 2"),
        ("", "invalid JSON"),
        ("[1, 2]", "must be a mapping"),
        ('{"id": "x", "nodes": []}', "no nodes"),
        (
            '{"id": "x", "nodes": [{"id": "A", "uses": "a"}], "edges": [{"source": "A", '
            '"target": "A", "condition": "a =="}]}',
            "condition",
        ),
    ],
)
def test_validate_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = _write(tmp_path, content)
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {path}: ")
    assert expected in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    assert main(["validate", str(missing)]) == 1
    assert capsys.readouterr().err == f"error: {missing}: no such file\n"


def test_validate_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err


def test_validate_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "UTF-8" in err and err.count("\n") == 1


def test_validate_several_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, GOOD, "good.json")
    bad = _write(tmp_path, "{", "bad.json")
    assert main(["validate", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == "ok: demo (3 nodes, 2 edges)\n"
    assert err.startswith(f"error: {bad}: invalid JSON")


def test_validate_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 2
    assert "FILE" in capsys.readouterr().err


# ---------------------------------------------------------------- graph


def test_graph_prints_mermaid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    assert main(["graph", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart TD\n")
    assert "    n0 --> n1\n" in out


def test_graph_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    target = tmp_path / "out.mmd"
    assert main(["graph", str(path), "--output", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text().startswith("flowchart TD\n")


def test_graph_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    target = tmp_path / "no-such-dir" / "out.mmd"
    assert main(["graph", str(path), "-o", str(target)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {target}: cannot write")


def test_graph_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(tmp_path / "missing.json")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ")


# ---------------------------------------------------------------- distributed: argument errors


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run"], "APP"),
        (["run", "m:rt"], "BLUEPRINT"),
        (["run", "m:rt", "bp", "--wait", "--timeout", "0"], "more than 0"),
        (["run", "m:rt", "bp", "--wait", "--timeout", "-3"], "more than 0"),
        (["run", "m:rt", "bp", "--wait", "--timeout", "soon"], "not a number"),
        (["run", "m:rt", "bp", "--wait", "--timeout", "nan"], "finite"),
        (["status"], "RUN"),
        (["resume", "r1"], "NODE"),
        (["resume", "r1", "n", "--output", "{bad"], "not valid JSON"),
        (["cancel"], "RUN"),
        (["inspect", "--limit", "0"], "at least 1"),
        (["inspect", "--limit", "x"], "whole number"),
        (["inspect", "extra"], "unrecognized arguments"),
        (["reconcile"], "APP"),
        (["reconcile", "m:rt", "--stalled-threshold", "-1"], "0 seconds or more"),
        (["status", "r1", "--redis-url"], "--redis-url"),
    ],
)
def test_distributed_argument_errors(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in err
    assert "Traceback" not in err


def test_run_timeout_needs_wait(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "m:rt", "bp", "--timeout", "5"]) == 2
    assert (
        capsys.readouterr().err == "flowcraft-fast run: error: --timeout only applies with --wait\n"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nocolon", "APP 'nocolon' must look like package.module:attribute"),
        ("no_such_module_for_cli_tests:rt", "no module named 'no_such_module_for_cli_tests'"),
        ("json:nothing_here", "has no attribute 'nothing_here'"),
        ("json:__doc__", "is a str, not a FlowRuntime"),
    ],
)
@pytest.mark.parametrize("command", ["run", "reconcile"])
def test_bad_app_is_a_one_line_usage_error(
    command: str, spec: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, spec, "bp"] if command == "run" else [command, spec]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("flowcraft-fast: APP ")
    assert expected in err
    assert err.count("\n") == 1


def test_unknown_blueprint_lists_the_app_blueprints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cli_unit_app.py").write_text(
        "from flowcraft_fast import FlowRuntime\n"
        f"runtime = FlowRuntime(blueprints=[{GOOD!r}], registry={{}})\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "cli_unit_app", raising=False)
    assert main(["run", "cli_unit_app:runtime", "other"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "flowcraft-fast: APP cli_unit_app:runtime has no blueprint 'other'; available: demo\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "r1", "--queue", "a:b"],
        ["inspect", "--queue", ""],
        ["cancel", "r1", "--redis-url", "foo://nowhere"],
    ],
)
def test_bad_queue_or_url_is_a_one_line_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("flowcraft-fast: ") and err.count("\n") == 1


def test_connection_cause_drops_the_core_prefix() -> None:
    exc = ConnectionError(
        "cannot connect to Redis at redis://u:***@127.0.0.1:1/0: connection refused (is "
        "redis-server running?)"
    )
    assert cli._connection_cause(exc) == "connection refused (is redis-server running?)"
    assert cli._connection_cause(ConnectionError("reset by peer")) == "reset by peer"
    assert cli._connection_cause(ConnectionError()) == "ConnectionError"


def test_redact_url_hides_the_password() -> None:
    assert cli.redact_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert cli.redact_url("redis://host:1/0") == "redis://host:1/0"


class _FakeClient:
    """Times out `timeouts` times, then returns a result."""

    def __init__(self, timeouts: int) -> None:
        self.timeouts = timeouts
        self.slices: list[float | None] = []

    async def wait(self, run_id: str, timeout: float | None = 30.0) -> Any:
        self.slices.append(timeout)
        if len(self.slices) <= self.timeouts:
            await asyncio.sleep(timeout or 0)
            raise TimeoutError
        return "result"

    async def status(self, run_id: str) -> str | None:
        return "running"


def test_wait_prints_progress_each_slice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "PROGRESS_INTERVAL", 0.01)
    client = _FakeClient(timeouts=2)
    result: Any = asyncio.run(cli._wait_with_progress(client, "r1", None))  # type: ignore[arg-type]
    assert result == "result"
    assert client.slices == [0.01, 0.01, 0.01]
    err = capsys.readouterr().err
    assert err == "waiting for run r1: running, 0 s\n" * 2


def test_wait_gives_up_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "PROGRESS_INTERVAL", 0.02)
    client = _FakeClient(timeouts=1000)
    with pytest.raises(cli.CliError, match=r"did not finish within 0.05 s"):
        asyncio.run(cli._wait_with_progress(client, "r1", 0.05))  # type: ignore[arg-type]
    assert all(s is not None and s <= 0.02 for s in client.slices)
    assert 2 <= len(client.slices) <= 4


def test_run_arguments_are_parsed() -> None:
    args = build_parser().parse_args(
        ["run", "pkg.mod:rt", "bp", "--context", '{"a": [1]}', "--wait", "--queue", "q"]
    )
    assert (args.app, args.blueprint, args.context, args.wait, args.queue) == (
        "pkg.mod:rt",
        "bp",
        {"a": [1]},
        True,
        "q",
    )
    args = build_parser().parse_args(["run", "pkg.mod:rt", "bp"])
    assert args.context == {} and args.wait is False and args.timeout is None
    args = build_parser().parse_args(["run", "pkg.mod:rt", "bp", "--wait", "--timeout", "2.5"])
    assert args.timeout == 2.5


def test_inspect_and_reconcile_arguments_are_parsed() -> None:
    args = build_parser().parse_args(["inspect"])
    assert (args.json, args.limit) == (False, 100)
    args = build_parser().parse_args(["inspect", "--json", "--limit", "5"])
    assert (args.json, args.limit) == (True, 5)
    args = build_parser().parse_args(["reconcile", "pkg.mod:rt"])
    assert (args.app, args.stalled_threshold) == ("pkg.mod:rt", 300.0)
    args = build_parser().parse_args(["reconcile", "pkg.mod:rt", "--stalled-threshold", "0"])
    assert args.stalled_threshold == 0.0


def test_resume_arguments_are_parsed() -> None:
    args = build_parser().parse_args(["resume", "r1", "n1", "--output", "[1, 2]", "--action", "go"])
    assert (args.run_id, args.node_id, args.output, args.action) == ("r1", "n1", [1, 2], "go")


def test_bad_json_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "m:rt", "bp", "--context", "{nope"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["run", "m:rt", "bp", "--context", "[1]"]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_redis_url_and_queue_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FLOWCRAFT_REDIS_URL", "REDIS_URL", "FLOWCRAFT_QUEUE"):
        monkeypatch.delenv(var, raising=False)
    args = build_parser().parse_args(["status", "r"])
    assert args.redis_url == "redis://127.0.0.1:6379/0"
    assert args.queue == "flowcraft-queue"

    monkeypatch.setenv("REDIS_URL", "redis://other:1/2")
    assert build_parser().parse_args(["inspect"]).redis_url == "redis://other:1/2"
    monkeypatch.setenv("FLOWCRAFT_REDIS_URL", "redis://mine:3/4")
    monkeypatch.setenv("FLOWCRAFT_QUEUE", "my-queue")
    args = build_parser().parse_args(["reconcile", "m:rt"])
    assert (args.redis_url, args.queue) == ("redis://mine:3/4", "my-queue")
    args = build_parser().parse_args(["cancel", "r", "--redis-url", "unix:///s.sock"])
    assert args.redis_url == "unix:///s.sock"


def test_handlers_are_replaceable(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake_status(args: Any) -> int:
        seen.append(args.run_id)
        return 0

    monkeypatch.setitem(HANDLERS, "status", fake_status)
    assert main(["status", "run-9"]) == 0
    assert seen == ["run-9"]


def test_every_command_has_a_handler() -> None:
    assert sorted(HANDLERS) == sorted(ALL_COMMANDS)


# ---------------------------------------------------------------- help and version


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: flowcraft-fast {command}")
    if command in DISTRIBUTED:
        assert "--redis-url" in out and "--queue" in out
        assert "FLOWCRAFT_REDIS_URL" in out


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ALL_COMMANDS:
        assert command in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: flowcraft-fast" in capsys.readouterr().err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowcraft-fast ")
    assert out.strip() == f"flowcraft-fast {cli.package_version()}"


def test_version_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert cli.package_version() == "0.0.0+unknown"
