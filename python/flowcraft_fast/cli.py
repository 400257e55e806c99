"""The ``flowcraft-fast`` command line.

Each subcommand is parsed by argparse and handled by one small function found in `HANDLERS`
(subcommand name -> handler taking the parsed arguments and returning the exit code), so a handler
can be replaced without touching the parser. ``validate`` and ``graph`` work on blueprint files;
``run``, ``status``, ``resume``, ``cancel``, ``inspect`` and ``reconcile`` need the distributed
layer.

Exit codes: 0 success, 1 a command failed (invalid blueprint, unreadable file), 2 usage error or
a command that is not available in this build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from .blueprint import Blueprint, load_blueprint
from .errors import BlueprintError
from .mermaid import to_mermaid

__all__ = ["HANDLERS", "build_parser", "main"]

PROG = "flowcraft-fast"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "flowcraft-queue"

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A failure worth one line on stderr (no traceback)."""


def package_version() -> str:
    try:
        return metadata.version("flowcraft-fast")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def default_redis_url() -> str:
    return os.environ.get("FLOWCRAFT_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def default_queue() -> str:
    return os.environ.get("FLOWCRAFT_QUEUE") or DEFAULT_QUEUE


# ---------------------------------------------------------------------------- helpers


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def read_blueprint_file(path: str) -> Blueprint:
    """Load and validate the blueprint JSON at ``path`` (``-`` for stdin).

    Raises `CliError` with a one-line message naming the file on any failure.
    """
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{name}: is a directory, not a blueprint file") from None
    except PermissionError:
        raise CliError(f"{name}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CliError(f"{name}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise CliError(f"{name}: JSON is nested too deeply") from None
    try:
        return load_blueprint(data)
    except BlueprintError as exc:
        raise CliError(f"{name}: {exc}") from None


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _json_object(text: str) -> dict[str, Any]:
    value = _json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"key\": 1}'")
    return value


# ---------------------------------------------------------------------------- handlers


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            bp = read_blueprint_file(path)
        except CliError as exc:
            _error(str(exc))
            status = 1
            continue
        print(f"ok: {bp.id} ({len(bp.nodes)} nodes, {len(bp.edges)} edges)")
    return status


def cmd_graph(args: argparse.Namespace) -> int:
    try:
        text = to_mermaid(read_blueprint_file(args.file))
    except CliError as exc:
        _error(str(exc))
        return 1
    if args.output is None or args.output == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        _error(f"{args.output}: cannot write: {exc.strerror or exc}")
        return 1
    return 0


def _not_available(command: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        print(
            f"{PROG} {command}: needs the distributed layer, not available in this build",
            file=sys.stderr,
        )
        return 2

    handler.__name__ = f"cmd_{command}"
    handler.__qualname__ = handler.__name__
    return handler


HANDLERS: dict[str, Handler] = {
    "validate": cmd_validate,
    "graph": cmd_graph,
    "run": _not_available("run"),
    "status": _not_available("status"),
    "resume": _not_available("resume"),
    "cancel": _not_available("cancel"),
    "inspect": _not_available("inspect"),
    "reconcile": _not_available("reconcile"),
}
"""Subcommand -> handler. Replace an entry to implement a subcommand."""


# ---------------------------------------------------------------------------- parser


def _connection_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--redis-url",
        metavar="URL",
        default=default_redis_url(),
        help=(
            "Redis URL (redis://, rediss://, unix://); default: $FLOWCRAFT_REDIS_URL, "
            f"else $REDIS_URL, else {DEFAULT_REDIS_URL}"
        ),
    )
    group.add_argument(
        "--queue",
        metavar="NAME",
        default=default_queue(),
        help=f"queue name; default: $FLOWCRAFT_QUEUE, else {DEFAULT_QUEUE}",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (environment defaults are read when it is built)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Validate, draw and operate flowcraft-fast workflows.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    conn = _connection_parent()

    p = sub.add_parser(
        "validate",
        help="check blueprint JSON files",
        description=(
            "Load each blueprint JSON file (or - for stdin) and validate it. Prints "
            "'ok: <id> (N nodes, M edges)' per valid file; exits 1 if any file is invalid."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="blueprint JSON file, or - for stdin")

    p = sub.add_parser(
        "graph",
        help="print a blueprint as a Mermaid flowchart",
        description="Render a blueprint JSON file (or - for stdin) as a Mermaid flowchart.",
    )
    p.add_argument("file", metavar="FILE", help="blueprint JSON file, or - for stdin")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write the Mermaid text to FILE instead of stdout"
    )

    p = sub.add_parser(
        "run",
        parents=[conn],
        help="start a run of a blueprint on the workers",
        description=(
            "Start a distributed run of BLUEPRINT, served by the FlowRuntime named by APP, and "
            "print its run id (or, with --wait, its result)."
        ),
    )
    p.add_argument(
        "app", metavar="APP", help="package.module:attribute naming a FlowRuntime or a factory"
    )
    p.add_argument("blueprint", metavar="BLUEPRINT", help="blueprint id")
    p.add_argument(
        "--context",
        metavar="JSON",
        type=_json_object,
        default={},
        help="initial context as a JSON object (default: {})",
    )
    p.add_argument("--wait", action="store_true", help="wait for the run to finish")

    p = sub.add_parser(
        "status",
        parents=[conn],
        help="show the status of a run",
        description="Print a run's status: running, completed, failed, awaiting or cancelled.",
    )
    p.add_argument("run_id", metavar="RUN", help="run id")

    p = sub.add_parser(
        "resume",
        parents=[conn],
        help="resume a run awaiting at a node",
        description="Resume a run awaiting at NODE (a wait node) with an output and an action.",
    )
    p.add_argument("run_id", metavar="RUN", help="run id")
    p.add_argument("node_id", metavar="NODE", help="id of the awaiting node")
    p.add_argument(
        "--output", metavar="JSON", type=_json_value, default=None, help="the node's output (JSON)"
    )
    p.add_argument("--action", metavar="A", default=None, help="action to route on")

    p = sub.add_parser(
        "cancel",
        parents=[conn],
        help="cancel a run",
        description="Cancel a run; it ends 'cancelled' and keeps its partial context.",
    )
    p.add_argument("run_id", metavar="RUN", help="run id")

    sub.add_parser(
        "inspect",
        parents=[conn],
        help="show queue counts and runs in flight",
        description="Show the queue's job counts and the runs in flight.",
    )
    sub.add_parser(
        "reconcile",
        parents=[conn],
        help="find stalled runs and resume them",
        description="Scan for stalled runs once and re-enqueue their frontier.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowcraft-fast`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return _exit_code(exc.code)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        return 130


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
