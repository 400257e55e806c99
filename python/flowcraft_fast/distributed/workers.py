"""Live workers: the heartbeat record each worker keeps on its queue, and reading them back.

The keys are Rust's (rust/src/keys.rs: one hash per worker,
`<prefix>:<queue>:flowcraft:worker:<id>`, expiring unless the worker beats again, and the index
`<prefix>:<queue>:flowcraft:workers`; written by rust/src/scripts/beat.lua); this module owns
the record's fields, with one writer (`Worker`, from its stalled-check loop) and the readers
(`flowcraft-fast inspect`, `status`, the dashboard). A worker's id is its lease token prefix, so
the lock of every job it holds starts with it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _core

HEARTBEAT_MIN_TTL_S = 15.0
"""A record outlives a missed beat or two: its TTL is the larger of this and three intervals."""


def heartbeat_ttl(interval_s: float) -> float:
    """Seconds a worker's record lives after its last beat (one beat per stalled interval)."""
    return max(HEARTBEAT_MIN_TTL_S, 3 * interval_s)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """What one worker process says of itself at each beat."""

    id: str
    """The worker's lease token prefix (`<name>@<incarnation>`, or the incarnation alone)."""
    queue: str
    host: str
    pid: int
    version: str
    """flowcraft-fast's version."""
    blueprints: dict[str, str]
    """The blueprints it serves: id -> version ("" for none)."""
    concurrency: int
    in_flight: int
    started_ms: int
    name: str | None = None
    """Its stable name (`--name`), when it has one."""
    last_beat_ms: int = 0
    """Redis time of the last beat (set by Redis, not by the worker)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Fields this version does not know (written by a newer worker)."""

    def fields(self) -> list[tuple[str, str]]:
        """The record as hash fields (Redis adds `lastBeat`)."""
        pairs = [
            ("id", self.id),
            ("queue", self.queue),
            ("host", self.host),
            ("pid", str(self.pid)),
            ("version", self.version),
            ("blueprints", json.dumps(self.blueprints, sort_keys=True)),
            ("concurrency", str(self.concurrency)),
            ("inFlight", str(self.in_flight)),
            ("started", str(self.started_ms)),
        ]
        if self.name is not None:
            pairs.append(("name", self.name))
        return pairs

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> WorkerRecord:
        """A record as read back; tolerant of missing or malformed fields (another version
        of the worker may have written it)."""
        known = {
            "id", "queue", "host", "pid", "version", "blueprints", "concurrency", "inFlight",
            "started", "name", "lastBeat",
        }  # fmt: skip
        try:
            decoded = json.loads(raw.get("blueprints", "{}"))
        except ValueError:
            decoded = {}
        blueprints = (
            {str(k): str(v) for k, v in decoded.items()} if isinstance(decoded, dict) else {}
        )
        return cls(
            id=raw.get("id", "?"),
            queue=raw.get("queue", ""),
            host=raw.get("host", "?"),
            pid=_int(raw.get("pid")),
            version=raw.get("version", "?"),
            blueprints=blueprints,
            concurrency=_int(raw.get("concurrency")),
            in_flight=_int(raw.get("inFlight")),
            started_ms=_int(raw.get("started")),
            name=raw.get("name"),
            last_beat_ms=_int(raw.get("lastBeat")),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def serves(self, blueprint_id: str, version: str | None = None) -> bool:
        """Whether this worker takes jobs of the blueprint (at that version, when the run
        was started with one: workers claim only jobs of the version they serve)."""
        if blueprint_id not in self.blueprints:
            return False
        return not version or self.blueprints[blueprint_id] == version

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "blueprints": self.blueprints,
            "concurrency": self.concurrency,
            "in_flight": self.in_flight,
            "started_ms": self.started_ms,
            "last_beat_ms": self.last_beat_ms,
        }


def own_record(
    worker_id: str,
    queue: str,
    blueprints: Mapping[str, str],
    concurrency: int,
    in_flight: int,
    started_ms: int,
    name: str | None,
) -> WorkerRecord:
    """This process's record."""
    from .. import __version__

    return WorkerRecord(
        id=worker_id,
        queue=queue,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=__version__,
        blueprints=dict(blueprints),
        concurrency=concurrency,
        in_flight=in_flight,
        started_ms=started_ms,
        name=name,
    )


async def live_workers(queue: _core.Queue) -> list[WorkerRecord]:
    """The queue's live workers (their record has not expired), least recent beat first."""
    return [WorkerRecord.parse(raw) for raw in await queue.live_workers()]


def serving(
    workers: Iterable[WorkerRecord], blueprint_id: str, version: str | None = None
) -> list[WorkerRecord]:
    """The workers that take jobs of the blueprint (at that version)."""
    return [w for w in workers if w.serves(blueprint_id, version)]


def mark_served(runs: Iterable[dict[str, Any]], workers: Sequence[WorkerRecord]) -> None:
    """Set `served` on each listed run (`blueprint_id`, `blueprint_version`): whether a live
    worker takes its jobs (`inspect` and the dashboard flag the runs nobody serves)."""
    for r in runs:
        bp = r["blueprint_id"]
        r["served"] = bp is not None and bool(serving(workers, bp, r["blueprint_version"]))


def unknown_blueprint(reason: str, served: Sequence[str]) -> str | None:
    """The served blueprint id a claim's rejection says is not published (claim.lua:
    `blueprint "<id>" not found (no worker on this queue publishes it)`), else None."""
    head = "blueprint "
    tail = " not found (no worker on this queue publishes it)"
    if not (reason.startswith(head) and reason.endswith(tail)):
        return None
    try:
        blueprint_id = json.loads(reason[len(head) : -len(tail)])
    except ValueError:
        return None
    return blueprint_id if isinstance(blueprint_id, str) and blueprint_id in served else None


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


__all__ = [
    "WorkerRecord",
    "heartbeat_ttl",
    "live_workers",
    "mark_served",
    "own_record",
    "serving",
    "unknown_blueprint",
]
