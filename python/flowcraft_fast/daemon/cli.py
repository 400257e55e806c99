"""`flowcraft-fastd`: the worker daemon's command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowcraft-fastd",
        description="Serve the blueprints of a FlowRuntime from a Redis queue (worker daemon).",
    )
    parser.add_argument(
        "--app",
        default=os.environ.get("FLOWCRAFT_APP"),
        help="package.module:attribute naming a FlowRuntime or a zero-argument callable "
        "returning one (env FLOWCRAFT_APP)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("FLOWCRAFT_REDIS_URL") or os.environ.get("REDIS_URL"),
        help="redis://, rediss:// or unix:// URL (env FLOWCRAFT_REDIS_URL, then REDIS_URL)",
    )
    parser.add_argument(
        "--queue",
        default=os.environ.get("FLOWCRAFT_QUEUE", "flowcraft-queue"),
        help="queue name (env FLOWCRAFT_QUEUE; default flowcraft-queue)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("FLOWCRAFT_CONCURRENCY", "64")),
        help="nodes run at once per process (env FLOWCRAFT_CONCURRENCY; default 64)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.app:
        print("flowcraft-fastd: --app is required (or set FLOWCRAFT_APP)", file=sys.stderr)
        return 2
    print(
        "flowcraft-fastd: the distributed worker is not part of this build yet",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
