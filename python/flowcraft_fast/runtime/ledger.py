"""The ledger: which activations committed, which fired, and the join rule that decides it.

One contract, two implementations. `MemoryLedger` (here) keeps a run's ledger in a Python
structure for in-memory runs; the Redis one is `rust/src/scripts/commit.lua`, which must be
atomic and so is written in Lua. They apply the same rule, field for field:

- a node commits at most once (`done:<node key>`); a second commit is a duplicate;
- an arrival is recorded once per (target activation, predecessor), never counted twice;
- a target with one predecessor fires on its first arrival;
- a join fires once (`fired:<node key>`): `any` on the first finished arrival; `all` when as
  many distinct predecessors arrived as it has (the largest count any arrival knew of, so a
  set that grows with batch workers is waited for), with at least one finished;
- a target whose every arrival was a skip fires as a skip token (`SKIP`): a dead path passing
  through, which the step function turns into skip arrivals for its successors;
- the input of an `all` join with several predecessors is the mapping predecessor -> value of
  the finished ones, in the order the arrival listed them; otherwise the triggering value;
- `pending` counts activations fired and not yet committed: the run ends when it reaches 0.

`tests/integration/test_ledger_differential.py` drives both with the same random arrival
sequences (hypothesis, a real Redis) and requires identical decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..blueprint import JoinStrategy
from .vocabulary import OUTSIDE_LOOPS, Iteration, Sentinel, node_key

SKIPPED: Any = Sentinel("SKIPPED")
"""An arrival value (and a fired activation's input) meaning "skipped" (in Redis the marker is
the text `vocabulary.SKIP`)."""


@dataclass(slots=True)  # a value; not frozen, since frozen ones cost twice as much to build
class Arrival:
    """An edge arriving at one activation of `target` from `source`."""

    target: str
    iteration: Iteration
    source: str
    value: Any
    """What the edge carries, or `SKIPPED`."""
    strategy: JoinStrategy
    predecessors: tuple[str, ...]
    """The predecessors the target's join waits for in this activation, as the committer knew
    them."""

    @property
    def key(self) -> str:
        return node_key(self.target, self.iteration)


@dataclass(slots=True)  # a value; not frozen, since frozen ones cost twice as much to build
class Fired:
    """An activation a commit created: run `arrival.target` in `arrival.iteration` with
    `input` (`SKIPPED`: a skip token)."""

    arrival: Arrival
    input: Any


@dataclass(slots=True)  # a value; not frozen, since frozen ones cost twice as much to build
class Committed:
    duplicate: bool
    """The node had already committed: nothing changed."""
    fired: tuple[Fired, ...] = ()
    pending: int = 0
    """Activations still outstanding after this commit (the run ends at 0)."""


@dataclass(slots=True)
class MemoryLedger:
    """A run's ledger in memory: the same fields as the run record `commit.lua` keeps."""

    done: set[str] = field(default_factory=set)
    fired: set[str] = field(default_factory=set)
    arrivals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """target node key -> {predecessor: value or SKIPPED} (the joins hash)."""
    known_predecessors: dict[str, int] = field(default_factory=dict)  # np:
    arrived: dict[str, int] = field(default_factory=dict)  # n:
    finished: dict[str, int] = field(default_factory=dict)  # f:
    pending: int = 0
    awaiting: dict[str, str] = field(default_factory=dict)
    """node key -> node id of the activations parked until resumed (`await:`)."""

    def start(self, keys: Iterable[str]) -> None:
        """The run's start activations were created (start.lua)."""
        for key in keys:
            self.fired.add(key)
            self.pending += 1

    def commit(self, key: str, arrivals: Sequence[Arrival]) -> Committed:
        """Commit the activation `key` with the arrivals its routing decision produced."""
        if key in self.done:
            return Committed(duplicate=True, pending=self.pending)
        self.done.add(key)
        fired = []
        for a in arrivals:
            f = self._arrive(a)
            if f is not None:
                fired.append(f)
        self.pending += len(fired) - 1
        return Committed(False, tuple(fired), self.pending)

    def park(self, key: str, node_id: str) -> bool:
        """The activation awaits (a `wait` node): it commits when resumed. False if it had
        already committed."""
        if key in self.done:
            return False
        self.awaiting[key] = node_id
        return True

    def unpark(self, key: str) -> None:
        self.awaiting.pop(key, None)

    def _arrive(self, a: Arrival) -> Fired | None:
        it = a.iteration
        target = node_key(a.target, it) if it else OUTSIDE_LOOPS + a.target  # `a.key`, inline
        n_listed = len(a.predecessors)
        known = self.known_predecessors.get(target, 0)
        values = self.arrivals.setdefault(target, {})
        if n_listed == 1 and known <= 1:
            # one predecessor (most edges): no join to count; the arrival is still recorded
            values[a.source] = a.value
            if target in self.fired:
                return None
            self.fired.add(target)
            return Fired(a, a.value)
        if n_listed > known:
            self.known_predecessors[target] = n_listed
            n_preds = n_listed
        else:
            n_preds = known
        if a.source in values:
            return None  # this predecessor already arrived: a set, never a counter
        values[a.source] = a.value
        arrived = self.arrived[target] = self.arrived.get(target, 0) + 1
        finished = self.finished.get(target, 0)
        if a.value is not SKIPPED:
            finished = self.finished[target] = finished + 1
        if target in self.fired:
            return None
        if a.strategy == "any" and a.value is not SKIPPED:
            self.fired.add(target)
            return Fired(a, a.value)
        if arrived < n_preds or not (a.strategy == "all" or finished == 0):
            return None
        self.fired.add(target)
        if finished == 0:
            return Fired(a, SKIPPED)
        if a.strategy == "any":
            return Fired(a, a.value)
        mapping = {p: values[p] for p in a.predecessors if values.get(p, SKIPPED) is not SKIPPED}
        return Fired(a, mapping)

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        """The ledger as JSON (kept in an awaiting in-memory run's serialized context)."""
        return {
            "version": 2,
            "done": sorted(self.done),
            "fired": sorted(self.fired),
            "arrivals": {
                k: {p: _encode(v) for p, v in vs.items()} for k, vs in self.arrivals.items()
            },
            "np": self.known_predecessors,
            "n": self.arrived,
            "f": self.finished,
            "pending": self.pending,
            "awaiting": self.awaiting,
        }

    @classmethod
    def from_json(cls, raw: Any) -> MemoryLedger:
        if not isinstance(raw, dict) or raw.get("version") != 2:
            raise ValueError("the serialized context holds no flowcraft-fast ledger (version 2)")
        return cls(
            done=set(raw["done"]),
            fired=set(raw["fired"]),
            arrivals={
                k: {p: _decode(v) for p, v in vs.items()} for k, vs in raw["arrivals"].items()
            },
            known_predecessors=dict(raw["np"]),
            arrived=dict(raw["n"]),
            finished=dict(raw["f"]),
            pending=int(raw["pending"]),
            awaiting=dict(raw["awaiting"]),
        )


def _encode(value: Any) -> Any:
    return {"skipped": True} if value is SKIPPED else {"value": value}


def _decode(entry: Any) -> Any:
    return SKIPPED if entry.get("skipped") else entry.get("value")


def rebuilt_input(
    arrival_values: dict[str, Any], strategy: JoinStrategy, predecessors: Sequence[str]
) -> Any:
    """The input a fired activation got, from its recorded arrivals (for the reconciler, whose
    job was lost): the same rule as `MemoryLedger._arrive`, applied after the fact."""
    finished = {p: v for p, v in arrival_values.items() if v is not SKIPPED}
    if not finished:
        return SKIPPED
    if strategy == "all" and len(predecessors) > 1:
        return {p: finished[p] for p in predecessors if p in finished}
    return next(iter(finished.values()))
