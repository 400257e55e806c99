"""The ``flowcraft-fast`` command line.

Each subcommand is parsed by argparse and handled by one small function found in `HANDLERS`
(subcommand name -> handler taking the parsed arguments and returning the exit code), so a handler
can be replaced without touching the parser. ``validate``, ``lint`` and ``graph`` work on
blueprint files; ``run``, ``status``, ``resume``, ``cancel``, ``inspect`` and ``reconcile`` talk to
the Redis queue that ``flowcraft-fastd`` workers serve, through the public `FlowClient` API (each
runs its own event loop with `asyncio.run`).

Exit codes: 0 success; 1 a command failed (invalid blueprint, unreadable file, Redis unreachable,
unknown run, run failed or cancelled, a lint error, ...); 2 usage error (bad arguments, an APP
that does not name a FlowRuntime, a blueprint the APP does not define; for ``lint``, a file that
cannot be read or is not JSON); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _core
from .analysis import Finding, analyze, has_errors
from .blueprint import Blueprint, load_blueprint, unknown_keys
from .errors import BlueprintError, FlowcraftError
from .mermaid import to_mermaid

if TYPE_CHECKING:
    from .distributed.client import FlowClient
    from .distributed.store import RedisCoordinationStore
    from .runtime import FlowRuntime
    from .runtime.types import WorkflowResult

__all__ = ["HANDLERS", "build_parser", "main"]

PROG = "flowcraft-fast"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "flowcraft-queue"
PROGRESS_INTERVAL = 5.0
"""Seconds between the progress lines of `run --wait` (it waits in slices this long)."""
DEFAULT_STALLED_THRESHOLD = 300.0
DEFAULT_INSPECT_LIMIT = 100
LIVE_STATUSES = ("running", "awaiting")
INTERNAL_PREFIXES = ("_inputs.", "_outputs.", "_batch.", "_subflowState.", "_dynamic.")
"""Context keys of the engine's bookkeeping: `run --wait` leaves them out unless `--full`."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A failure worth one line on stderr (no traceback)."""


class UsageError(CliError):
    """A bad argument found only when it is used (a malformed Redis URL or queue name)."""


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


def read_blueprint_file(path: str, *, strict: bool = False) -> Blueprint:
    """Load and validate the blueprint JSON at ``path`` (``-`` for stdin); ``strict`` also
    refuses keys of nodes, edges and configs that flowcraft-fast does not read.

    Raises `CliError` with a one-line message naming the file on any failure.
    """
    name = _file_name(path)
    data = read_json_file(path)
    try:
        bp = load_blueprint(data)
    except BlueprintError as exc:
        raise CliError(f"{name}: {exc}") from None
    problems = unknown_keys(data) if strict else []
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CliError(f"{name}: {problems[0]}{more}; --lenient accepts unknown keys")
    return bp


def _file_name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def read_json_file(path: str) -> Any:
    """The JSON document at ``path`` (``-`` for stdin); `CliError` with a one-line message
    naming the file when it cannot be read or is not JSON."""
    name = _file_name(path)
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
    return data


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _seconds_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number of seconds: {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds_value(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def _non_negative_seconds(text: str) -> float:
    value = _seconds_value(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


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
            bp = read_blueprint_file(path, strict=not args.lenient)
        except CliError as exc:
            _error(str(exc))
            status = 1
            continue
        print(f"ok: {bp.id} ({len(bp.nodes)} nodes, {len(bp.edges)} edges)")
    return status


def cmd_lint(args: argparse.Namespace) -> int:
    """Analyse every file; each file's subflows may name any blueprint of the others (and of
    the APP), since a runtime registers them together."""
    documents: list[tuple[str, Any]] = []
    unreadable = False
    for path in args.files:
        try:
            documents.append((_file_name(path), read_json_file(path)))
        except CliError as exc:
            _error(str(exc))
            unreadable = True
    known = {d["id"] for _, d in documents if isinstance(d, dict) and isinstance(d.get("id"), str)}
    registry: Mapping[str, Any] | None = None
    if args.app is not None:
        try:
            runtime = _load_app(args.app)
        except CliError as exc:
            _fail(str(exc))
            return EXIT_USAGE
        registry = runtime.options.registry
        known.update(runtime.blueprints)
    results = [(name, analyze(data, registry, blueprints=known)) for name, data in documents]
    if args.format == "json":
        rows = [{"file": name, **f.to_json()} for name, found in results for f in found]
        print(json.dumps(rows, indent=2))
    else:
        for name, found in results:
            for finding in found:
                print(_lint_line(name, finding))
        print(
            _lint_summary([f for _, found in results for f in found], len(args.files)),
            file=sys.stderr,
        )
    if unreadable:
        return EXIT_USAGE
    return EXIT_FAILED if any(has_errors(found) for _, found in results) else EXIT_OK


def _lint_line(name: str, finding: Finding) -> str:
    return f"{name}:{finding.location}: {finding.severity} {finding.code}: {finding.message}"


def _lint_summary(findings: list[Finding], files: int) -> str:
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors

    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    return f"{count(errors, 'error')}, {count(warnings, 'warning')} in {count(files, 'file')}"


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


# ---------------------------------------------------------------------------- distributed


def _fail(message: str) -> None:
    """One line on stderr for a distributed command that failed."""
    print(f"{PROG}: {_one_line(message)}", file=sys.stderr)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


_CORE_PREFIX = re.compile(r"^cannot (?:connect to|reach) Redis at \S+ ")


def _connection_cause(exc: BaseException) -> str:
    """The cause of a connection error, without the core's own "cannot connect to ..." prefix."""
    text = _one_line(exc) or type(exc).__name__
    return _CORE_PREFIX.sub("", text, count=1) or text


def redact_url(url: str) -> str:
    """`url` without its password (the daemon's redaction, so both print the same)."""
    from .daemon.checks import redact_url as redact

    return redact(url)


def _load_app(spec: str) -> FlowRuntime:
    """The FlowRuntime named by APP, or `CliError` with the loader's one-line message."""
    from .daemon.app import AppError, load_runtime

    try:
        return load_runtime(spec)
    except AppError as exc:
        raise CliError(f"APP {str(exc).removeprefix('--app ')}") from None


def _run_async(args: argparse.Namespace, body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run one command's coroutine; expected failures become one line and exit 1 (2 for usage)."""
    url = redact_url(args.redis_url)
    try:
        return asyncio.run(body())
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except CliError as exc:
        _fail(str(exc))
    except ConnectionError as exc:  # _core.RedisConnectionError and the OS's own
        _fail(f"cannot reach Redis at {url}: {_connection_cause(exc)}")
    except _core.RedisCommandError as exc:
        _fail(f"Redis at {url} refused a command: {exc}")
    except TimeoutError as exc:
        _fail(f"Redis at {url} did not answer in time: {_one_line(exc) or 'timeout'}")
    except FlowcraftError as exc:  # RunNotFound, "no worker serves ...", "not waiting at ..."
        _fail(str(exc))
    return EXIT_FAILED


def _client(args: argparse.Namespace) -> FlowClient:
    from .distributed.client import FlowClient

    try:
        return FlowClient(_store(args), queue_name=args.queue)
    except ValueError as exc:  # a malformed URL, queue name or $FLOWCRAFT_REDIS_RETRY_DEADLINE
        raise UsageError(str(exc)) from None


def _store(args: argparse.Namespace) -> RedisCoordinationStore:
    """The connection and key prefixes the connection options name (raises ValueError)."""
    from .distributed.store import RedisCoordinationStore

    return RedisCoordinationStore(
        args.redis_url,
        retry_deadline=args.retry_deadline,
        key_prefix=args.key_prefix,
        queue_prefix=args.queue_prefix,
    )


def _visible_context(context: Mapping[str, Any], full: bool) -> dict[str, Any]:
    """The run's context as `run --wait` shows it: without the engine's internal keys
    (`_inputs.*`, `_outputs.*`, ...) unless `full`."""
    if full:
        return dict(context)
    return {k: v for k, v in context.items() if not k.startswith(INTERNAL_PREFIXES)}


def _error_line(node_id: str | None, kind: str | None, message: object) -> str:
    where = f"node {node_id}" if node_id else "run"
    kind_text = f" ({kind})" if kind else ""
    return f"error at {where}{kind_text}: {_one_line(message)}"


def _print_result(result: WorkflowResult, *, full: bool = False, as_json: bool = False) -> None:
    context = _visible_context(result.context, full)
    if as_json:
        doc = {
            "run_id": result.run_id,
            "status": result.status,
            "context": context,
            "errors": [e.to_json() for e in result.errors],
        }
        print(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, default=str))
        return
    print(f"run {result.run_id}: {result.status}")
    print(json.dumps(context, indent=2, sort_keys=True, ensure_ascii=False, default=str))
    for error in result.errors:
        print(_error_line(error.node_id, error.type, error.message))


def _result_exit_code(status: str) -> int:
    return EXIT_OK if status in ("completed", "awaiting") else EXIT_FAILED


async def _wait_with_progress(
    client: FlowClient, run_id: str, timeout: float | None
) -> WorkflowResult:
    """`client.wait` in slices of `PROGRESS_INTERVAL`, one progress line on stderr per slice."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    while True:
        now = time.monotonic()
        slice_s = PROGRESS_INTERVAL if deadline is None else min(PROGRESS_INTERVAL, deadline - now)
        if slice_s <= 0:
            raise CliError(
                f"run {run_id} did not finish within {_seconds(timeout)} s; it goes on: "
                f"see '{PROG} status {run_id}'"
            )
        try:
            return await client.wait(run_id, timeout=slice_s)
        except TimeoutError:
            pass
        status = await client.status(run_id) or "unknown"
        elapsed = int(time.monotonic() - started)
        print(f"waiting for run {run_id}: {status}, {elapsed} s", file=sys.stderr, flush=True)


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def cmd_run(args: argparse.Namespace) -> int:
    for option, given in (("--timeout", args.timeout is not None), ("--full", args.full)):
        if given and not args.wait:
            print(f"{PROG} run: error: {option} only applies with --wait", file=sys.stderr)
            return EXIT_USAGE
    try:
        runtime = _load_app(args.app)
    except CliError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    if args.blueprint not in runtime.blueprints:
        ids = sorted(runtime.blueprints)
        available = ", ".join(ids) if ids else "none"
        _fail(f"APP {args.app} has no blueprint {args.blueprint!r}; available: {available}")
        return EXIT_USAGE

    async def body() -> int:
        client = _client(args)
        run_id = await client.start(args.blueprint, args.context)
        if not args.wait:
            print(json.dumps({"run_id": run_id}) if args.json else run_id)
            return EXIT_OK
        print(f"started run {run_id}", file=sys.stderr, flush=True)
        result = await _wait_with_progress(client, run_id, args.timeout)
        _print_result(result, full=args.full, as_json=args.json)
        return _result_exit_code(result.status)

    return _run_async(args, body)


ENDED_STATUSES = ("completed", "failed", "cancelled", "stalled")


def _iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def run_report(client: FlowClient, run_id: str) -> dict[str, Any] | None:
    """What `status` shows of a run (None: no such run): its status, blueprint, the nodes an
    awaiting run waits at, the errors of a failed one, and its timings (from the run's meta:
    `startedAt`, `endedAt`; a live run's duration is the time so far)."""
    from .runtime.vocabulary import AWAIT, split_node_key

    meta, raw_status = await (await client.queue_for(run_id)).run_info(run_id)
    status = meta.get("status")
    if status is None:
        return None
    payload: dict[str, Any] = {}
    if raw_status is not None:
        try:
            decoded = json.loads(raw_status)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            payload = decoded
    started = _int_field(meta, "startedAt")
    ended = _int_field(meta, "endedAt") if status in ENDED_STATUSES else None
    end = ended if ended is not None else int(time.time() * 1000)
    waiting = sorted(
        {split_node_key(k)[1] for k in meta if k.startswith(AWAIT)}
        if status == "awaiting"
        else set()
    )
    errors = [
        {
            "node_id": e.get("nodeId"),
            "type": e.get("type") or None,
            "message": str(e.get("message", "")),
        }
        for e in payload.get("errors", [])
        if isinstance(e, dict)
    ]
    return {
        "run_id": run_id,
        "status": status,
        "blueprint_id": meta.get("blueprintId"),
        "blueprint_version": meta.get("blueprintVersion") or None,
        "waiting_at": waiting,
        "errors": errors,
        "reason": payload.get("reason") if isinstance(payload.get("reason"), str) else None,
        "started_at": _iso_ms(started),
        "ended_at": _iso_ms(ended),
        "started_at_ms": started,
        "ended_at_ms": ended,
        "duration_seconds": None if started is None else max(0, end - started) / 1000,
        "pending_jobs": _int_field(meta, "pending") if status in LIVE_STATUSES else None,
    }


def _print_report(report: dict[str, Any]) -> None:
    print(f"run {report['run_id']}: {report['status']}")
    version = report["blueprint_version"]
    blueprint = report["blueprint_id"] or "?"
    print(f"blueprint: {blueprint}" + (f" (version {version})" if version else ""))
    if report["waiting_at"]:
        print("waiting at: " + ", ".join(report["waiting_at"]))
    print(f"started:  {report['started_at'] or '?'}")
    if report["ended_at"]:
        print(f"ended:    {report['ended_at']}")
    seconds = report["duration_seconds"]
    so_far = " so far" if report["status"] in LIVE_STATUSES else ""
    print(f"duration: {'?' if seconds is None else f'{seconds:.3f}'} s{so_far}")
    if report["pending_jobs"] is not None:
        print(f"pending jobs: {report['pending_jobs']}")
    for e in report["errors"]:
        print(_error_line(e["node_id"], e["type"], e["message"]))
    if not report["errors"] and report["status"] == "failed" and report["reason"]:
        print(f"reason: {_one_line(report['reason'])}")


def cmd_status(args: argparse.Namespace) -> int:
    async def body() -> int:
        report = await run_report(_client(args), args.run_id)
        if report is None:
            if args.json:
                print(json.dumps({"run_id": args.run_id, "status": None}))
            else:
                print("unknown")
            print(
                f"{PROG}: no run {args.run_id!r} on queue {args.queue!r} (never started, or "
                "its state expired)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        if args.json:
            print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        else:
            _print_report(report)
        return EXIT_OK

    return _run_async(args, body)


def cmd_resume(args: argparse.Namespace) -> int:
    async def body() -> int:
        await _client(args).resume(
            args.run_id, args.node_id, output=args.output, action=args.action
        )
        print(f"resumed run {args.run_id} at node {args.node_id}")
        return EXIT_OK

    return _run_async(args, body)


def cmd_cancel(args: argparse.Namespace) -> int:
    async def body() -> int:
        client = _client(args)
        if await client.cancel(args.run_id):
            print(f"cancelled run {args.run_id}")
            return EXIT_OK
        status = await client.status(args.run_id) or "ended"
        _fail(f"run {args.run_id} had already ended ({status}); nothing to cancel")
        return EXIT_FAILED

    return _run_async(args, body)


def _int_field(meta: dict[str, str], name: str) -> int | None:
    try:
        return int(meta[name])
    except (KeyError, ValueError):
        return None


async def _runs_in_flight(client: FlowClient, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` live runs, least recent progress first, and whether there are more (over
    every partition)."""
    runs: list[dict[str, Any]] = []
    more = False
    for queue in await client.queues():
        found, truncated = await _partition_in_flight(queue, limit)
        runs.extend(found)
        more = more or truncated
    runs.sort(key=lambda r: r["last_progress_ms"])
    if len(runs) > limit:
        runs, more = runs[:limit], True
    return runs, more


async def _partition_in_flight(queue: Any, limit: int) -> tuple[list[dict[str, Any]], bool]:
    runs: list[dict[str, Any]] = []
    offset = 0
    page = max(1, min(limit + 1, 200))
    now_ms = int(time.time() * 1000)
    while True:
        batch = await queue.stalled_runs(0, offset, page)
        if not batch:
            return runs, False
        offset += len(batch)
        for run_id, last_progress in batch:
            meta, _ = await queue.run_info(run_id)
            status = meta.get("status")
            if status not in LIVE_STATUSES:
                continue  # ended or expired, not yet swept from the index: not in flight
            if len(runs) == limit:
                return runs, True
            started = _int_field(meta, "startedAt")
            runs.append(
                {
                    "run_id": run_id,
                    "status": status,
                    "blueprint_id": meta.get("blueprintId"),
                    "blueprint_version": meta.get("blueprintVersion") or None,
                    "started_at_ms": started,
                    "age_seconds": None if started is None else max(0, now_ms - started) / 1000,
                    "last_progress_ms": last_progress,
                    "idle_seconds": max(0, now_ms - last_progress) / 1000,
                    "pending_jobs": _int_field(meta, "pending"),
                }
            )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def cmd_inspect(args: argparse.Namespace) -> int:
    async def body() -> int:
        client = _client(args)
        from .distributed.workers import mark_served

        counts = await client.counts()
        workers = await client.live_workers()
        limits = [
            {"group": name, "limit": limit, "running": running, "waiting": waiting}
            for name, limit, running, waiting in sorted(await client.limit_stats())
        ]
        runs, truncated = await _runs_in_flight(client, args.limit)
        mark_served(runs, workers)
        if args.json:
            report = {
                "queue": args.queue,
                "redis_url": redact_url(args.redis_url),
                "counts": counts,
                "workers": [w.to_json() for w in workers],
                "limits": limits,
                "runs": runs,
                "truncated": truncated,
            }
            print(json.dumps(report, indent=2))
            return EXIT_OK
        print(f"queue {args.queue} at {redact_url(args.redis_url)}")
        order = ("wait", "active", "delayed", "completed", "failed")
        keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
        print("jobs: " + ", ".join(f"{k} {counts[k]}" for k in keys))
        _print_workers(workers)
        if limits:
            print(f"concurrency groups: {len(limits)}")
            _print_table(
                [("GROUP", "LIMIT", "RUNNING", "WAITING")]
                + [(str(g["group"]), str(g["limit"]), str(g["running"]), str(g["waiting"]))
                   for g in limits]
            )  # fmt: skip
        more = f" (showing the first {len(runs)}; --limit to see more)" if truncated else ""
        print(f"runs in flight: {len(runs)}{'+' if truncated else ''}{more}")
        if runs:
            rows = [("RUN", "STATUS", "BLUEPRINT", "AGE", "IDLE", "PENDING", "")]
            for r in runs:
                pending = r["pending_jobs"]
                rows.append(
                    (
                        r["run_id"],
                        r["status"],
                        r["blueprint_id"] or "?",
                        _duration(r["age_seconds"]),
                        _duration(r["idle_seconds"]),
                        "?" if pending is None else str(pending),
                        "" if r["served"] else "no live worker serves its blueprint",
                    )
                )
            _print_table(rows)
        return EXIT_OK

    return _run_async(args, body)


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_workers(workers: list[Any]) -> None:
    """The live workers (their heartbeat records, distributed/workers.py), one row each."""
    print(f"live workers: {len(workers)}")
    if not workers:
        return
    now_ms = int(time.time() * 1000)
    rows = [("WORKER", "HOST", "PID", "VERSION", "IN FLIGHT", "UP", "LAST BEAT", "BLUEPRINTS")]
    for w in workers:
        served = ", ".join(f"{b}@{v}" if v else b for b, v in sorted(w.blueprints.items()))
        rows.append(
            (
                w.name or w.id,
                w.host,
                str(w.pid),
                w.version,
                f"{w.in_flight}/{w.concurrency}",
                _duration(max(0, now_ms - w.started_ms) / 1000),
                _duration(max(0, now_ms - w.last_beat_ms) / 1000) + " ago",
                served or "-",
            )
        )
    _print_table(rows)


def cmd_runs(args: argparse.Namespace) -> int:
    from .runs_listing import RunFilter, recent_runs

    async def body() -> int:
        client = _client(args)
        f = RunFilter(frozenset(args.status or ()), args.blueprint, args.since_ms, args.limit)
        runs, more = await recent_runs(await client.queues(), f)
        if args.json:
            print(json.dumps({"queue": args.queue, "runs": runs, "truncated": more}, indent=2))
            return EXIT_OK
        if not runs:
            print(f"no runs on queue {args.queue} match")
            return EXIT_OK
        rows = [("RUN", "STATUS", "BLUEPRINT", "STARTED", "DURATION")]
        for r in runs:
            version = r["blueprint_version"]
            blueprint = (r["blueprint_id"] or "?") + (f"@{version}" if version else "")
            rows.append(
                (
                    r["run_id"],
                    r["status"],
                    blueprint,
                    (r["started_at"] or "?").replace("+00:00", "Z"),
                    _duration(r["duration_seconds"]),
                )
            )
        _print_table(rows)
        if more:
            print(f"(the {len(runs)} most recent; --limit to see more)")
        return EXIT_OK

    return _run_async(args, body)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard.server import serve_dashboard

    try:
        _client(args)  # a malformed URL or queue name fails here, with its reason
        return serve_dashboard(lambda: _client(args), args)
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE


def cmd_reconcile(args: argparse.Namespace) -> int:
    try:
        runtime = _load_app(args.app)
    except CliError as exc:
        _fail(str(exc))
        return EXIT_USAGE

    async def body() -> int:
        from .distributed.adapter import BullMQAdapter
        from .distributed.reconciler import create_bullmq_reconciler

        try:  # built, never started: it only lends the reconciler its runtime and queue
            adapter = BullMQAdapter(
                runtime_options=runtime.options,
                coordination_store=_store(args),
                queue_name=args.queue,
            )
        except ValueError as exc:  # a malformed URL, queue name or retry deadline
            raise UsageError(str(exc)) from None
        reconciler = create_bullmq_reconciler(
            adapter=adapter, stalled_threshold_seconds=args.stalled_threshold, mode=args.mode
        )
        print(
            f"reconciling queue {args.queue}: runs idle for more than "
            f"{_seconds(args.stalled_threshold)} s",
            file=sys.stderr,
            flush=True,
        )
        stats = await reconciler.run()
        print(
            f"scanned {stats.scanned_keys} runs: {stats.stalled_runs} stalled, "
            f"{stats.reconciled_runs} reconciled, {stats.failed_runs} failed, "
            f"{stats.forgotten_runs} ended"
        )
        return EXIT_FAILED if stats.failed_runs else EXIT_OK

    return _run_async(args, body)


HANDLERS: dict[str, Handler] = {
    "validate": cmd_validate,
    "lint": cmd_lint,
    "graph": cmd_graph,
    "run": cmd_run,
    "status": cmd_status,
    "resume": cmd_resume,
    "cancel": cmd_cancel,
    "inspect": cmd_inspect,
    "reconcile": cmd_reconcile,
    "runs": cmd_runs,
    "dashboard": cmd_dashboard,
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
    group.add_argument(
        "--retry-deadline",
        metavar="S",
        type=_non_negative_seconds,
        default=None,
        help=(
            "seconds each Redis call keeps retrying while Redis is loading, busy or "
            "unreachable (0: no retries); default: $FLOWCRAFT_REDIS_RETRY_DEADLINE, else 30"
        ),
    )
    group.add_argument(
        "--key-prefix",
        metavar="PREFIX",
        default=os.environ.get("FLOWCRAFT_KEY_PREFIX", ""),
        help="prefix of the run keys, as the workers' --key-prefix; default: "
        "$FLOWCRAFT_KEY_PREFIX, else none",
    )
    group.add_argument(
        "--queue-prefix",
        metavar="PREFIX",
        default=os.environ.get("FLOWCRAFT_QUEUE_PREFIX") or None,
        help="BullMQ prefix of the queue's keys, as the workers' --queue-prefix; default: "
        "$FLOWCRAFT_QUEUE_PREFIX, else bull (<key-prefix>bull with a key prefix)",
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
    p.add_argument(
        "--lenient",
        action="store_true",
        help="accept keys flowcraft-fast does not read in nodes, edges and config (e.g. "
        "tool-specific extras); by default they are errors, naming the closest known key",
    )

    p = sub.add_parser(
        "lint",
        help="find mistakes in blueprint JSON files that a run would only show by misbehaving",
        description=(
            "Analyse each blueprint JSON file (or - for stdin): cycles outside loops, nodes "
            "that never run, edges never taken, fallbacks and subflows that point nowhere, "
            "'any' joins with one predecessor, conditions reading context keys nothing writes "
            "(docs/analysis.md lists every finding). Prints one line per finding, "
            "'FILE:LOCATION: severity code: message', LOCATION being a path into the file "
            "(/nodes/3, /edges/5/condition; / for the whole file) and the node or edge. A "
            "subflow may name any blueprint of the files given (or of the APP). Exits 0 when "
            "there is no error (warnings alone pass), 1 when there is one, 2 when a file "
            "cannot be read or is not JSON."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="blueprint JSON file, or - for stdin")
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one line per finding, and a count on stderr (default); json: one array "
        "of findings, each with file, code, severity, message, path, node and edge",
    )
    p.add_argument(
        "--app",
        metavar="APP",
        default=None,
        help="package.module:attribute naming a FlowRuntime (or a factory): also check each "
        "node's uses against its registry (unknown-uses), and let subflows name its blueprints",
    )

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
            "print its run id (or, with --wait, its status, context and errors; the context "
            "without the engine's internal _inputs.*/_outputs.* keys unless --full)."
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
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the run to finish, then print its status, context and errors (exit 0 "
        "when it completed or awaits, 1 when it failed or was cancelled); progress goes to "
        f"stderr every {PROGRESS_INTERVAL:g} s",
    )
    p.add_argument(
        "--timeout",
        metavar="S",
        type=_positive_seconds,
        default=None,
        help="with --wait, give up after S seconds (exit 1; the run goes on); default: no limit",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="with --wait, print the whole context, the internal _inputs.*/_outputs.* keys too",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: {run_id} (with --wait: {run_id, status, context, errors})",
    )

    p = sub.add_parser(
        "status",
        parents=[conn],
        help="show a run's status, errors and timings",
        description=(
            "Show a run: its status (running, awaiting, completed, failed, cancelled), "
            "blueprint, the node(s) an awaiting run waits at, the errors of a failed run with "
            "their types and messages, and when it started and ended and how long it took. "
            "Exits 1 for an unknown run."
        ),
    )
    p.add_argument("run_id", metavar="RUN", help="run id")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

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

    p = sub.add_parser(
        "inspect",
        parents=[conn],
        help="show queue counts and runs in flight",
        description=(
            "Show the queue's job counts and the runs in flight (running or awaiting) with "
            "their status, blueprint, age and time since their last progress, least recent "
            "progress first."
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--limit",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_INSPECT_LIMIT,
        help=f"list at most N runs (default: {DEFAULT_INSPECT_LIMIT})",
    )

    p = sub.add_parser(
        "reconcile",
        parents=[conn],
        help="find stalled runs and resume them",
        description=(
            "Scan once for stalled runs (unfinished, no progress for longer than the threshold) "
            "and re-enqueue their lost nodes. APP names the FlowRuntime the workers serve; the "
            "CLI does not start a worker. Exits 1 if some stalled run could not be repaired."
        ),
    )
    p.add_argument(
        "app", metavar="APP", help="package.module:attribute naming a FlowRuntime or a factory"
    )
    p.add_argument(
        "--stalled-threshold",
        metavar="S",
        type=_non_negative_seconds,
        default=DEFAULT_STALLED_THRESHOLD,
        help=(
            "seconds without progress after which a run counts as stalled "
            f"(default: {DEFAULT_STALLED_THRESHOLD:g})"
        ),
    )
    p.add_argument(
        "--mode",
        choices=("index", "scan"),
        default="index",
        help=(
            "index: page through the queue's index of unfinished runs (default); scan: SCAN "
            "the runs' keys instead, finding live runs the index lost (slower)"
        ),
    )
    _add_operator_commands(sub, conn)
    _add_dashboard(sub, conn)
    return parser


def _since_value(text: str) -> int:
    from .runs_listing import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_operator_commands(sub: Any, conn: argparse.ArgumentParser) -> None:
    """`runs`: recent runs, from the indexes of unfinished and ended runs."""
    from .runs_listing import STATUSES

    p = sub.add_parser(
        "runs",
        parents=[conn],
        help="list recent runs",
        description=(
            "List the queue's recent runs, most recent activity first (a live run's last "
            "progress, an ended run's end): runs in flight and ended runs whose state has not "
            "expired (at most the last 10,000 ended)."
        ),
    )
    p.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help="only runs with this status (repeat for several)",
    )
    p.add_argument("--blueprint", metavar="ID", help="only runs of this blueprint")
    p.add_argument(
        "--since",
        dest="since_ms",
        metavar="WHEN",
        type=_since_value,
        default=None,
        help="only runs active since WHEN: a duration back from now (15m, 2h, 1d) or an ISO "
        "8601 time",
    )
    p.add_argument(
        "--limit",
        metavar="N",
        type=_positive_int,
        default=50,
        help="list at most N runs (default: 50)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _add_dashboard(sub: Any, conn: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dashboard",
        parents=[conn],
        help="serve a web page showing the queue, its workers, runs and their graphs",
        description=(
            "Serve the operator dashboard: the queue's job counts, live workers, runs in "
            "flight and recent runs, and a page per run drawing its blueprint graph with each "
            "node's state and error; a JSON API under /api/ (/api/queues, /api/runs, "
            "/api/runs/RUN). Read-only unless --allow-actions. Stop it with Ctrl-C or SIGTERM."
        ),
    )
    p.add_argument(
        "--bind",
        metavar="ADDR",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; the page has no login: bind another "
        "address only behind an authenticating proxy)",
    )
    p.add_argument(
        "--port",
        metavar="P",
        type=int,
        default=8642,
        help="port to listen on (default: 8642; 0: any free port, printed at start)",
    )
    p.add_argument(
        "--allow-actions",
        action="store_true",
        help="allow cancelling and resuming runs from the page; refused (403) otherwise",
    )


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
