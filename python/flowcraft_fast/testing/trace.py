"""A run's events as a test sees them: `RecordedEvent`, and `Trace`, an ordered sequence of
them that filters (`names`, `for_node`, `for_run`, `of_type`) and renders one line per event."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

_NODE_FIELDS = ("nodeId", "sourceNode", "source", "scatterNodeId", "gatherNodeId")
"""Payload fields naming the node an event is about, in order of preference: node and job
events carry `nodeId`, `context:change` its `sourceNode`, `edge:evaluate` the edge's `source`,
`batch:start` / `batch:finish` their scatter / gather node."""

_UNRENDERED = frozenset({"runId", "blueprintId"})
"""Carried by every payload; the trace's header says them once."""

VALUE_WIDTH = 60
"""How many characters of one payload value a rendered line shows."""
PAYLOAD_WIDTH = 140
"""How many characters of a whole payload a rendered line shows."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One event as the runtime emitted it (`{"type": ..., "payload": {...}}`), its payload
    copied when it was recorded, so values that node code changes later stay as they were."""

    type: str
    payload: Mapping[str, Any]

    @classmethod
    def from_emitted(cls, event: Mapping[str, Any]) -> RecordedEvent:
        payload = event.get("payload")
        if not isinstance(payload, Mapping):
            payload = {}
        try:
            snapshot: Mapping[str, Any] = copy.deepcopy(dict(payload))
        except Exception:  # a value that cannot be copied is kept as it is
            snapshot = dict(payload)
        return cls(str(event.get("type")), snapshot)

    @property
    def run_id(self) -> str | None:
        value = self.payload.get("runId")
        return None if value is None else str(value)

    @property
    def blueprint_id(self) -> str | None:
        value = self.payload.get("blueprintId")
        return None if value is None else str(value)

    @property
    def node_id(self) -> str | None:
        """The node the event is about (see `_NODE_FIELDS`); None for run-level events."""
        for name in _NODE_FIELDS:
            value = self.payload.get(name)
            if value is not None:
                return str(value)
        return None

    def summary(self) -> str:
        """The payload without the run and blueprint ids and the node id, as `key=value`
        pairs (values as compact JSON), shortened to fit a line."""
        node_field = next((f for f in _NODE_FIELDS if self.payload.get(f) is not None), None)
        parts = [
            f"{key}={_short(value)}"
            for key, value in self.payload.items()
            if key not in _UNRENDERED and key != node_field
        ]
        return _shorten(" ".join(parts), PAYLOAD_WIDTH)


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):  # keys that are not strings, a circular value
        text = repr(value)
    return _shorten(text, VALUE_WIDTH)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def in_run(event: RecordedEvent, run_id: str) -> bool:
    """Whether `event` belongs to run `run_id` or to one of its subflows' runs (a subflow's
    child run id is `<parent run id>/<subflow node id>`)."""
    event_run = event.run_id
    return event_run is not None and (event_run == run_id or event_run.startswith(run_id + "/"))


class Trace(Sequence[RecordedEvent]):
    """An ordered, immutable sequence of recorded events; `str(trace)` renders it.

    `run_id` is the run the trace is about (None for whatever a recorder holds): the header
    names it, and the node of an event from one of its subflows' runs is shown as
    `<subflow node>/<node>`. A trace of several runs (a recorder's) shows each event's run.
    """

    __slots__ = ("_events", "run_id")

    def __init__(self, events: Iterable[RecordedEvent] = (), run_id: str | None = None) -> None:
        self._events = tuple(events)
        self.run_id = run_id

    @overload
    def __getitem__(self, index: int) -> RecordedEvent: ...

    @overload
    def __getitem__(self, index: slice) -> Trace: ...

    def __getitem__(self, index: int | slice) -> RecordedEvent | Trace:
        if isinstance(index, slice):
            return Trace(self._events[index], self.run_id)
        return self._events[index]

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[RecordedEvent]:
        return iter(self._events)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trace):
            return self._events == other._events
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal traces need not share a run id

    def __repr__(self) -> str:
        return f"<Trace run_id={self.run_id!r}: {len(self)} events>"

    # ------------------------------------------------------------------ filters

    def names(self) -> list[str]:
        """The event types in order, e.g. `["workflow:start", "node:start", ...]`."""
        return [event.type for event in self._events]

    def for_node(self, node_id: str) -> Trace:
        """The events about node `node_id` (its start, finish, errors, retries, context
        writes, the conditional edges leaving it, its jobs)."""
        return Trace((e for e in self._events if e.node_id == node_id), self.run_id)

    def for_run(self, run_id: str, *, subflows: bool = True) -> Trace:
        """The events of run `run_id`, and of its subflows' runs unless `subflows=False`."""
        if subflows:
            return Trace((e for e in self._events if in_run(e, run_id)), run_id)
        return Trace((e for e in self._events if e.run_id == run_id), run_id)

    def of_type(self, *types: str) -> Trace:
        """The events whose type is one of `types` (`"node:finish"`, ...)."""
        wanted = frozenset(types)
        return Trace((e for e in self._events if e.type in wanted), self.run_id)

    # ------------------------------------------------------------------ rendering

    def render(self) -> str:
        """A header, then one line per event: index, type, node, short payload."""
        blueprints = list(dict.fromkeys(e.blueprint_id for e in self._events if e.blueprint_id))
        about = f"run {self.run_id}" if self.run_id else "recorded events"
        if blueprints:
            about += f" (blueprint {', '.join(blueprints)})"
        if not self._events:
            return f"{about}: no events recorded (none emitted, or not on this event bus)"
        several_runs = self.run_id is None and len({e.run_id for e in self._events}) > 1
        rows = [
            (e.type, self._node_label(e, show_run=several_runs), e.summary()) for e in self._events
        ]
        index_width = len(str(len(rows) - 1))
        type_width = max(len(row[0]) for row in rows)
        node_width = max(len(row[1]) for row in rows)
        lines = [f"{about}, {len(rows)} events:"]
        for index, (kind, node, summary) in enumerate(rows):
            kind_and_node = f"{kind:<{type_width}}  {node:<{node_width}}"
            lines.append(f"  {index:>{index_width}}  {kind_and_node}  {summary}".rstrip())
        return "\n".join(lines)

    __str__ = render

    def _node_label(self, event: RecordedEvent, *, show_run: bool) -> str:
        """The event's node; in a trace of one run, a subflow's node as `<subflow>/<node>`;
        in a trace of several, `<run id>:<node>` (a long run id shortened)."""
        node = event.node_id or ""
        run = event.run_id
        if show_run:
            label = run or "?"
            return f"{label if len(label) <= 12 else label[:8] + '…'}:{node}"
        if self.run_id and run and run != self.run_id and in_run(event, self.run_id):
            return f"{run[len(self.run_id) + 1 :]}/{node}"  # a subflow's run
        return node
