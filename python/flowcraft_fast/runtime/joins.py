"""When a node with several incoming edges runs, and what input it gets.

Everything here is a pure function over arrival SETS (which predecessors finished, which were
skipped), never over counters, so a re-delivered arrival cannot fire a join twice. The in-memory
scheduler and the distributed commit step both call these.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ..blueprint import JoinStrategy


class JoinDecision(enum.Enum):
    FIRE = "fire"
    """Run the node now."""
    SKIP = "skip"
    """Every predecessor was skipped: the node is skipped and passes "skipped" on."""
    WAIT = "wait"
    """Not decided yet (or already fired: later arrivals do nothing)."""


FIRE = JoinDecision.FIRE
SKIP = JoinDecision.SKIP
WAIT = JoinDecision.WAIT


def join_decision(
    strategy: JoinStrategy,
    predecessors: Collection[str],
    finished: Collection[str],
    skipped: Collection[str],
    fired: bool,
) -> JoinDecision:
    """Decide a join from the sets of predecessors that finished and that were skipped.

    - `all`: fires once every predecessor finished or was skipped and at least one finished.
    - `any`: fires on the first finished predecessor.
    - both: skipped when every predecessor was skipped; nothing happens once fired.

    Arrivals from nodes that are not in `predecessors` are ignored. A node without
    predecessors never fires through a join (start nodes are scheduled directly).
    """
    if fired or not predecessors:
        return WAIT
    n_finished = sum(1 for p in predecessors if p in finished)
    if strategy == "any":
        if n_finished:
            return FIRE
    else:
        n_skipped = sum(1 for p in predecessors if p in skipped and p not in finished)
        if n_finished + n_skipped == len(predecessors):
            return FIRE if n_finished else SKIP
        return WAIT
    if all(p in skipped for p in predecessors):
        return SKIP
    return WAIT


def join_input(
    strategy: JoinStrategy,
    predecessors: Sequence[str],
    values: Mapping[str, Any],
    trigger: str,
) -> Any:
    """The value a node receives from its incoming edges (before any `inputs` declaration).

    An `all` join with several predecessors gets a mapping predecessor id -> value of the ones
    that finished (skipped ones are left out); an `any` join and a single-predecessor node get
    the value carried by the edge that triggered them.
    """
    if strategy == "all" and len(predecessors) > 1:
        return {p: values[p] for p in predecessors if p in values}
    return values.get(trigger)


def dead_path_targets(targets: Sequence[str]) -> list[str]:
    """A skipped node passes "skipped" to every successor (each target once, in edge order)."""
    return list(dict.fromkeys(targets))
