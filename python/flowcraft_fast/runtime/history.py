"""Run history: what a run did, recorded entry by entry, and its context rebuilt from it.

Off by default. When on (`FlowRuntime(history=N)`, the daemon's `--history N`), every run keeps
its last N entries: a list per run in memory, a Redis Stream per run distributed
(`<run prefix>workflow:history:<runId>`, rust/src/history.rs). The entries come from the events
the engine already emits (`HistoryTee` sits in front of the user's event bus), plus the run's
initial context:

- `workflow:start`: `{"blueprintId", "context"}` (the initial context);
- `node:start`: `{"nodeId", "input", "attempt"}`;
- `node:finish`: `{"nodeId", "result": {"output", "action"}}`;
- `node:error`: `{"nodeId", "error": {"message", "type"}}`;
- `context:change`: `{"sourceNode", "key", "op", "value"?}`: every write of a finished node
  (its own writes, its input and outputs).

`replay_entries` rebuilds the context at any entry; `fork_point` finds the context and input a
fork starts from. Both modes share them. See docs/history.md.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import jsoncodec
from ..errors import FlowcraftError
from .vocabulary import INPUTS_PREFIX

RECORDED = frozenset({"node:start", "node:finish", "node:error", "context:change"})
"""The event types a history keeps (besides `workflow:start`, which the runtime or the client
records with the initial context)."""
START = "workflow:start"
DEFAULT_MAX_RUNS = 1000
"""In memory: how many runs' histories a runtime keeps (the oldest run's goes first)."""

Sink = Callable[[str, str], None]
"""Receives (entry type, JSON text of its data)."""


class HistoryError(FlowcraftError):
    """A history cannot answer: no such run or entry, or the history does not reach back to the
    run's start (trimmed to its bound, or recorded without its initial context)."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recorded entry. `id` orders the entries of a run: "1", "2", ... in memory, the
    stream entry id ("<ms>-<seq>") distributed."""

    id: str
    type: str
    data: Mapping[str, Any]

    @property
    def node_id(self) -> str | None:
        """The node the entry is about (the writer, for a `context:change`)."""
        node = self.data.get("nodeId", self.data.get("sourceNode"))
        return node if isinstance(node, str) else None


def encode(data: Mapping[str, Any]) -> str:
    """An entry's data as JSON text, taken now (a node may mutate its output later); a value
    JSON cannot carry is recorded as its repr rather than losing the entry."""
    try:
        return jsoncodec.dumps(data, what="history entry")
    except (TypeError, ValueError):
        return jsoncodec.dumps({k: _plain(v) for k, v in data.items()}, what="history entry")


def _plain(value: Any) -> Any:
    try:
        jsoncodec.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def decode(entry_id: str, kind: str, text: str) -> HistoryEntry:
    data = jsoncodec.loads(text, what=f"history entry {entry_id}")
    return HistoryEntry(entry_id, kind, data if isinstance(data, dict) else {})


class HistoryTee:
    """An event bus in front of the user's (`bus`, may be None): the events a history keeps go
    to `sink` as they are emitted, and every event goes on to `bus`."""

    __slots__ = ("bus", "sink")

    def __init__(self, bus: Any, sink: Sink) -> None:
        self.bus = bus
        self.sink = sink

    def emit(self, event: Mapping[str, Any]) -> Any:
        kind = event["type"]
        if kind in RECORDED:
            payload = event["payload"]
            self.sink(kind, encode({k: v for k, v in payload.items() if k not in _PER_RUN_FIELDS}))
        return None if self.bus is None else self.bus.emit(event)


_PER_RUN_FIELDS = ("runId", "blueprintId")
"""Payload fields every event of a run carries: the stream (or list) already says them."""


class MemoryHistory:
    """The histories of a runtime's in-memory runs: the last `max_entries` entries per run, for
    the last `max_runs` runs started."""

    def __init__(self, max_entries: int, max_runs: int = DEFAULT_MAX_RUNS) -> None:
        check_max_entries(max_entries)
        if max_runs < 1:
            raise ValueError(f"history max_runs must be at least 1, got {max_runs}")
        self.max_entries = max_entries
        self.max_runs = max_runs
        self._runs: OrderedDict[str, tuple[deque[tuple[str, str, str]], list[int]]] = OrderedDict()

    def sink(self, run_id: str) -> Sink:
        """Where the entries of `run_id` go (its list, made now when it has none)."""
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = (deque(maxlen=self.max_entries), [0])
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        entries, counter = run

        def record(kind: str, text: str) -> None:
            counter[0] += 1
            entries.append((str(counter[0]), kind, text))

        return record

    def entries(self, run_id: str) -> list[HistoryEntry]:
        run = self._runs.get(run_id)
        if run is None:
            raise HistoryError(f"no history of run {run_id!r} (history off, or forgotten)")
        return [decode(*raw) for raw in run[0]]


def check_max_entries(max_entries: int) -> None:
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ValueError(f"history must be a number of entries >= 1, got {max_entries!r}")


def replay_entries(
    entries: Sequence[HistoryEntry], until: str | None = None, *, run_id: str = ""
) -> dict[str, Any]:
    """The run's context after the entry `until` (every entry when None): its initial context
    with every recorded write up to there applied, bookkeeping keys included."""
    _check_complete(entries, run_id)
    context: dict[str, Any] = {}
    for entry in entries:
        _apply(context, entry)
        if entry.id == until:
            return context
    if until is not None:
        raise HistoryError(f"run {run_id!r} has no history entry {until!r}")
    return context


def _apply(context: dict[str, Any], entry: HistoryEntry) -> None:
    data = entry.data
    if entry.type == START:
        initial = data.get("context")
        if isinstance(initial, dict) and not context:  # a start sent again adds an entry too
            context.update(initial)
    elif entry.type == "context:change":
        key = data.get("key")
        if not isinstance(key, str):
            return
        if data.get("op") == "delete":
            context.pop(key, None)
        else:
            context[key] = data.get("value")


def _check_complete(entries: Sequence[HistoryEntry], run_id: str) -> None:
    if not entries:
        raise HistoryError(f"run {run_id!r} has no history (history off, or expired)")
    if entries[0].type != START:
        raise HistoryError(
            f"the history of run {run_id!r} does not reach back to its start (trimmed to its "
            "bound, or the run was started without history): its context cannot be rebuilt"
        )


@dataclass(frozen=True, slots=True)
class ForkPoint:
    """Where a fork starts: the blueprint, the context as recorded just before `node_id` first
    started (its input under `_inputs.<node_id>`, which a start activation reads)."""

    blueprint_id: str
    node_id: str
    context: dict[str, Any]


def fork_point(entries: Sequence[HistoryEntry], node_id: str, *, run_id: str = "") -> ForkPoint:
    """The context just before the first `node:start` of `node_id`, with the input it was
    given then, for a new run starting at `node_id`."""
    _check_complete(entries, run_id)
    blueprint_id = entries[0].data.get("blueprintId")
    context: dict[str, Any] = {}
    for entry in entries:
        if entry.type == "node:start" and entry.node_id == node_id:
            node_input = entry.data.get("input")
            if node_input is not None:
                context[f"{INPUTS_PREFIX}{node_id}"] = node_input
            else:
                context.pop(f"{INPUTS_PREFIX}{node_id}", None)
            return ForkPoint(str(blueprint_id or ""), node_id, context)
        _apply(context, entry)
    raise HistoryError(f"node {node_id!r} never started in run {run_id!r} (as far as recorded)")


def start_entry(blueprint_id: str, context: Mapping[str, Any]) -> str:
    """The JSON text of a run's `workflow:start` entry."""
    return encode({"blueprintId": blueprint_id, "context": dict(context)})
