"""Recent runs of a queue, for `flowcraft-fast runs` and the dashboard.

Two indexes hold them (rust/src/keys.rs): the unfinished runs (`flowcraft:runs`, scored by
their last progress) and the ended ones (`flowcraft:runs:ended`, scored by their end, written
by the script that ends a run and bounded to the runs whose keys have not expired, at most
10,000). A listing reads both, newest activity first, a page at a time, with the run meta's
listed fields in the same round trip (`Queue.list_runs`); filters by status and blueprint are
applied here, so a filter that matches few runs reads more pages (at most the bounded index).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import _core

LIVE_STATUSES = ("running", "awaiting")
ENDED_STATUSES = ("completed", "failed", "cancelled", "stalled")
STATUSES = LIVE_STATUSES + ENDED_STATUSES

PAGE = 200
"""Index entries read per round trip."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    status: frozenset[str] = frozenset()
    """Statuses to list (empty: all)."""
    blueprint: str | None = None
    since_ms: int | None = None
    """Only runs active (progress or end) at or after this time, ms since the epoch."""
    limit: int = 50


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_since(text: str, now_ms: int | None = None) -> int:
    """`--since`: a duration back from now ("90s", "15m", "2h", "1d", "1h30m") or an ISO 8601
    time ("2026-12-03T18:00:00Z"; without a zone: UTC); ms since the epoch. ValueError else."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    compact = text.strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if parts and "".join(n + u for n, u in parts) == compact:
        return now - int(sum(float(n) * _UNIT_MS[u] for n, u in parts))
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration (90s, 15m, 2h, 1d) or an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _int(fields: dict[str, str], name: str) -> int | None:
    try:
        return int(fields[name])
    except (KeyError, ValueError):
        return None


def summary(run_id: str, score: int, fields: dict[str, str], now_ms: int) -> dict[str, Any]:
    """One listed run (the JSON shape of `runs --json` and `/api/runs`)."""
    status = fields.get("status", "")
    started = _int(fields, "startedAt")
    ended = _int(fields, "endedAt") if status in ENDED_STATUSES else None
    end = ended if ended is not None else now_ms
    return {
        "run_id": run_id,
        "status": status,
        "blueprint_id": fields.get("blueprintId"),
        "blueprint_version": fields.get("blueprintVersion") or None,
        "started_at": iso_ms(started),
        "ended_at": iso_ms(ended),
        "started_at_ms": started,
        "ended_at_ms": ended,
        "last_activity_ms": score,
        "duration_seconds": None if started is None else max(0, end - started) / 1000,
        "pending_jobs": _int(fields, "pending") if status in LIVE_STATUSES else None,
    }


async def _from_index(
    queue: _core.Queue, ended: bool, f: RunFilter, now_ms: int
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `f.limit` matching runs of one index, newest first, and whether more matched."""
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await queue.list_runs(ended, f.since_ms, None, offset, PAGE)
        offset += len(page)
        for run_id, score, fields in page:
            status = fields.get("status")
            if status is None:
                continue  # its keys expired: gone
            if (status in ENDED_STATUSES) != ended:
                continue  # between indexes (it ended after this page was read)
            if f.status and status not in f.status:
                continue
            if f.blueprint is not None and fields.get("blueprintId") != f.blueprint:
                continue
            if len(found) == f.limit:
                return found, True
            found.append(summary(run_id, score, fields, now_ms))
        if len(page) < PAGE:
            return found, False


async def recent_runs(
    queues: _core.Queue | Sequence[_core.Queue], f: RunFilter
) -> tuple[list[dict[str, Any]], bool]:
    """The runs matching `f` (in a queue, or in all partitions of one), most recent activity
    first (a live run's last progress, an ended run's end), at most `f.limit`, and whether
    more matched."""
    now_ms = int(time.time() * 1000)
    runs: list[dict[str, Any]] = []
    more = False
    for queue in [queues] if isinstance(queues, _core.Queue) else queues:
        for ended, statuses in ((False, LIVE_STATUSES), (True, ENDED_STATUSES)):
            if f.status and not f.status & set(statuses):
                continue
            found, truncated = await _from_index(queue, ended, f, now_ms)
            runs.extend(found)
            more = more or truncated
    runs.sort(key=lambda r: r["last_activity_ms"], reverse=True)
    if len(runs) > f.limit:
        runs, more = runs[: f.limit], True
    return runs, more
