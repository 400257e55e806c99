"""The TypeScript Flowcraft as a benchmark peer: installed from the npm registry into
`benches/ts/node_modules` when `npm` is on PATH (pinned in `benches/ts/package.json`).

`ensure_installed()` returns the folder to run `node` in, or None with the reason printed, so a
machine without Node.js skips the peer instead of failing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TS_DIR = Path(__file__).resolve().parent / "ts"


def ensure_installed() -> Path | None:
    """Install the pinned npm packages once; None (and why, on stdout) when it cannot."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        print("TypeScript peer skipped: node/npm is not on PATH")
        return None
    if not (TS_DIR / "node_modules" / "flowcraft" / "package.json").exists():
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            print(f"TypeScript peer skipped: npm install failed: {done.stderr.strip()[-500:]}")
            return None
    return TS_DIR


def reconcile_pass(
    redis_url: str, queue: str, *, extra_args: Sequence[str] = (), timeout: float = 600
) -> dict[str, Any] | None:
    """One timed pass of the TypeScript reconciler (`ts/reconcile.mjs`, whose header says what
    it does per key) over the runs of `queue`; its JSON line as a dict, or None (and why, on
    stdout) without Node.js. Its untimed prepare step changes the data: re-seed afterwards."""
    where = ensure_installed()
    if where is None:
        return None
    done = subprocess.run(
        ["node", "reconcile.mjs", redis_url, queue, *extra_args],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reconcile.mjs failed ({done.returncode}): {done.stderr[-1000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
