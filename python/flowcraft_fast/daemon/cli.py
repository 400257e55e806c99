"""`flowcraft-fastd`: the worker daemon's command line (argparse -> config -> run or check).

Exit codes: 0 clean stop or check passed; 1 startup failed (Redis unreachable or unsafe, the
worker could not start) or a check failed; 2 invalid settings or `--app`, a usage error that a
restart cannot fix (the unit file sets RestartPreventExitStatus=2); 128+N after a second
signal N.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .app import AppError, load_runtime
from .checks import StartupError, check_redis, redact_url
from .config import (
    CONFIG_ENV,
    OPTIONS,
    WORKER_INDEX_ENV,
    ConfigError,
    DaemonConfig,
    resolve_config,
)
from .lifecycle import run_async, run_worker
from .logs import configure_logging
from .supervisor import Supervisor

__all__ = ["build_parser", "main"]

PROG = "flowcraft-fastd"
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Serve the blueprints of a FlowRuntime from a Redis queue (worker daemon). "
        "Every option can also come from an environment variable or a TOML config file; "
        "precedence is flag > environment > config file > default.",
        epilog="Config file: a [flowcraft-fastd] table (or top-level keys) with the flag names "
        'as keys, e.g. redis-url = "redis://10.0.0.5:6379/0" and concurrency = 128.',
    )
    for option in OPTIONS:
        parser.add_argument(
            option.flag,
            dest=option.field,
            default=None,
            metavar=option.metavar,
            help=f"{option.help}; env {' then '.join(option.env)}",
        )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"TOML config file (env {CONFIG_ENV})",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    parser.add_argument(
        "--check",
        action="store_true",
        help="import the app, connect to Redis, verify its eviction policy, report its "
        "version and exit (0 when all is well, 1 with the reason otherwise)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli_values = {option.field: getattr(args, option.field) for option in OPTIONS}
    try:
        config = resolve_config(cli_values, os.environ, args.config or os.environ.get(CONFIG_ENV))
    except ConfigError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    configure_logging(
        config.log_format, config.log_level, worker_index=os.environ.get(WORKER_INDEX_ENV)
    )
    if not config.app:
        return _fail(
            "error: --app is required (or FLOWCRAFT_APP, or app in the config file)", EXIT_USAGE
        )
    if args.check:
        return _check(config)
    try:
        runtime = load_runtime(config.app)
    except AppError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    if config.processes > 1:
        return run_async(Supervisor(config).run())
    return run_async(run_worker(config, runtime))


def _check(config: DaemonConfig) -> int:
    assert config.app is not None
    try:
        runtime = load_runtime(config.app)
    except AppError as exc:
        return _fail(f"check failed: {exc}", EXIT_FAILED)
    ids = sorted(runtime.blueprints)
    shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
    print(
        f"{PROG}: app {config.app}: FlowRuntime with {len(ids)} blueprint(s)"
        + (f": {shown}" if ids else "")
    )
    try:
        facts = run_async(check_redis(config.redis_url))
    except StartupError as exc:
        return _fail(f"check failed: {exc}", EXIT_FAILED)
    policy = facts.maxmemory_policy or "unknown (could not read it)"
    print(
        f"{PROG}: Redis {facts.version or 'version unknown'} at "
        f"{redact_url(config.redis_url)}: reachable, maxmemory-policy {policy}"
    )
    print(f"{PROG}: check passed" + (" with warnings" if facts.warnings else ""))
    return 0


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("flowcraft-fast")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
