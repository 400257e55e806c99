"""A run's engine bookkeeping and the one place where arrivals turn into fired/skipped nodes.

`RunState` is plain data (JSON round-trip through `to_json`/`from_json`), kept in the run's
context under the reserved key `_flowcraft` while a run is awaiting, so `resume` can rebuild it.
`apply_arrivals` applies edge arrivals with the join rule of `joins.py` and propagates dead
paths with a work list (no recursion, so any depth of skipped chain is fine).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .graph import RunGraph
from .joins import FIRE, SKIP, dead_path_targets, join_decision, join_input

STATE_KEY = "_flowcraft"
"""Reserved context key holding `RunState.to_json()` while a run is awaiting."""
AWAITING_KEY = "_awaitingNodeIds"
"""Reserved context key: the ids of the nodes a run is awaiting (Flowcraft's name)."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """An edge arriving at `target` from `source`: finished with `value`, or skipped."""

    source: str
    target: str
    value: Any = None
    skipped: bool = False


@dataclass(slots=True)
class Progress:
    """What a batch of arrivals decided."""

    fire: list[tuple[str, Any]] = field(default_factory=list)
    """(node id, value from its incoming edges) of the nodes to run now."""
    skipped: list[str] = field(default_factory=list)
    """Nodes that became skipped (dead path), in propagation order."""


@dataclass(slots=True)
class RunState:
    """Per-run progress: which nodes finished, were skipped or fired, and join arrivals.

    State is per activation: re-entering a loop resets the body's entries and bumps each body
    node's `iterations` count, so a node can run once per iteration.
    """

    finished: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    started: set[str] = field(default_factory=set)
    """Fired in the current activation (queued, running, awaiting or done)."""
    arrived: dict[str, dict[str, Any]] = field(default_factory=dict)
    """target -> {source: value} for the edges that arrived finished."""
    arrived_skipped: dict[str, set[str]] = field(default_factory=dict)
    iterations: dict[str, int] = field(default_factory=dict)
    awaiting: list[str] = field(default_factory=list)

    def iteration(self, node_id: str) -> int:
        return self.iterations.get(node_id, 0)

    def decided(self, node_id: str) -> bool:
        return node_id in self.started or node_id in self.skipped

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "finished": sorted(self.finished),
            "skipped": sorted(self.skipped),
            "started": sorted(self.started),
            "arrived": self.arrived,
            "arrivedSkipped": {k: sorted(v) for k, v in self.arrived_skipped.items()},
            "iterations": self.iterations,
        }

    @classmethod
    def from_json(cls, raw: Any, awaiting: Iterable[str] = ()) -> RunState:
        if not isinstance(raw, dict) or raw.get("version") != 1:
            raise ValueError("the serialized context holds no flowcraft-fast run state")
        return cls(
            finished=set(raw.get("finished", ())),
            skipped=set(raw.get("skipped", ())),
            started=set(raw.get("started", ())),
            arrived={k: dict(v) for k, v in raw.get("arrived", {}).items()},
            arrived_skipped={k: set(v) for k, v in raw.get("arrivedSkipped", {}).items()},
            iterations=dict(raw.get("iterations", {})),
            awaiting=list(awaiting),
        )


def apply_arrivals(graph: RunGraph, state: RunState, arrivals: Iterable[Arrival]) -> Progress:
    """Record arrivals, decide each target's join, and propagate skips through dead paths."""
    progress = Progress()
    queue: deque[Arrival] = deque(arrivals)
    while queue:
        arrival = queue.popleft()
        target = arrival.target
        if state.decided(target):
            continue  # already fired or skipped in this activation: later arrivals do nothing
        if arrival.skipped:
            state.arrived_skipped.setdefault(target, set()).add(arrival.source)
        else:
            state.arrived.setdefault(target, {})[arrival.source] = arrival.value
        strategy = graph.join_strategy(target)
        preds = graph.join_predecessors(target, state.iteration(target))
        values = state.arrived.get(target, {})
        decision = join_decision(
            strategy, preds, values, state.arrived_skipped.get(target, ()), fired=False
        )
        if decision is FIRE:
            state.started.add(target)
            progress.fire.append((target, join_input(strategy, preds, values, arrival.source)))
        elif decision is SKIP:
            state.skipped.add(target)
            progress.skipped.append(target)
            for successor in dead_path_targets([e.target for e in graph.outgoing(target)]):
                queue.append(Arrival(target, successor, skipped=True))
    return progress


def reset_loop(graph: RunGraph, state: RunState, controller: str) -> None:
    """Start a new iteration of `controller`'s loop: its body and itself may run again.

    Arrivals from inside the loop are forgotten; arrivals from outside it are kept (those
    nodes do not run again).
    """
    members = graph.loop_body(controller) | {controller}
    for node in members:
        state.finished.discard(node)
        state.skipped.discard(node)
        state.started.discard(node)
        state.iterations[node] = state.iterations.get(node, 0) + 1
        arrived = state.arrived.get(node)
        if arrived:
            for source in [s for s in arrived if s in members]:
                del arrived[source]
        skipped = state.arrived_skipped.get(node)
        if skipped:
            skipped.difference_update(members)
