"""The engine's vocabulary on the Python side: activation keys, reserved context keys and the
run-record field names that the in-memory ledger and the Redis scripts share.

Its twin for the scripts is `rust/src/scripts/lib.lua` (prepended to every script) and
`rust/src/vocabulary.rs`; `tests/unit/test_vocabulary.py` checks that the three agree.
"""

from __future__ import annotations

from typing import Any, Final

Iteration = tuple[int, ...]
"""Where an activation of a node sits in its loops: one count per enclosing loop, outermost
first (`()` outside loops). A loop controller's own loop is the last entry of its iteration:
the number of times its body has run in the current activation of the loop."""

NO_ITERATION: Final[Iteration] = ()

# ---------------------------------------------------------------- activation keys


def iteration_text(iteration: Iteration) -> str:
    """`()` -> "0", `(3,)` -> "3", `(1, 2)` -> "1.2" (the first two as in every release)."""
    if not iteration:
        return "0"
    if len(iteration) == 1:
        return str(iteration[0])
    return ".".join(map(str, iteration))


class Sentinel:
    """A marker value that is none of the JSON values a node can produce (compared with `is`)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


OUTSIDE_LOOPS = "0|"
"""The node-key prefix of an activation outside any loop (`node_key(n, ())`)."""


def node_key(node_id: str, iteration: Iteration) -> str:
    """How the ledger (and the run record in Redis) names one activation of a node."""
    if not iteration:
        return OUTSIDE_LOOPS + node_id
    return f"{iteration_text(iteration)}|{node_id}"


def split_node_key(key: str) -> tuple[str, str]:
    """`"1.2|node"` -> ("1.2", "node")."""
    text, _, node_id = key.partition("|")
    return text, node_id


def parse_iteration(raw: Any, depth: int) -> Iteration:
    """An iteration as job data or a node key carries it (an int, or "1.2" when nested), for a
    node inside `depth` loops. Raises ValueError when it does not fit."""
    if isinstance(raw, bool):
        raise ValueError(f"iteration {raw!r} is not a number")
    if isinstance(raw, int):
        parts: list[int] = [raw]
    elif isinstance(raw, str) and raw:
        try:
            parts = [int(p) for p in raw.split(".")]
        except ValueError:
            raise ValueError(f"iteration {raw!r} is not a number or a dotted list") from None
    elif raw is None:
        parts = [0]
    else:
        raise ValueError(f"iteration {raw!r} is not a number")
    if any(p < 0 for p in parts):
        raise ValueError(f"iteration {raw!r} is negative")
    if depth == 0:
        if parts != [0]:
            raise ValueError(f"iteration {raw!r} given to a node outside loops")
        return NO_ITERATION
    if len(parts) != depth:
        raise ValueError(f"iteration {raw!r} does not match the node's {depth} enclosing loop(s)")
    return tuple(parts)


def iteration_json(iteration: Iteration) -> int | str:
    """The job data's `iteration`: an int up to one enclosing loop, "1.2" when nested."""
    if len(iteration) <= 1:
        return iteration[0] if iteration else 0
    return iteration_text(iteration)


# ---------------------------------------------------------------- reserved context keys

OUTPUTS_PREFIX: Final = "_outputs."
INPUTS_PREFIX: Final = "_inputs."
AWAITING_KEY: Final = "_awaitingNodeIds"
"""The ids of the nodes a run awaits (Flowcraft's name)."""
LEDGER_KEY: Final = "_flowcraft"
"""In an awaiting in-memory run's serialized context: the ledger, so `resume` can go on."""
DYNAMIC_PREFIX: Final = "_dynamic."
"""`_dynamic.<node key>`: the nodes a node added while the run goes (batch workers)."""
BATCH_PREFIX: Final = "_batch."
SCATTER_USES: Final = "batch-scatter"
GATHER_USES: Final = "batch-gather"
"""The batch built-ins (nodes/batch.py); the step emits `batch:start`/`batch:finish` for them."""


def batch_worker_id(root: str, index: int) -> str:
    """The id of the dynamic node a batch `root` runs item `index` with."""
    return f"{root}#{index}"


SUBFLOW_STATE_PREFIX: Final = "_subflowState."
"""`_subflowState.<node id>`: an awaiting child run's serialized context."""
PAUSED_PREFIX: Final = "_paused."
"""`_paused.<node id>`: why a node parked its run (`NodeContext.pause`)."""
EVENT: Final = "_events."
"""`_events.<name>`: an event sent to the run before a node waited for it (its payload)."""
EVENT_WAIT: Final = "_evwait."
"""`_evwait.<name>`: the key of the `wait-for-event` activation parked waiting for that event."""
EVENT_TIMER: Final = "_evtimer."
"""`_evtimer.<name>`: the timeout job of a parked `wait-for-event` with `params.timeout`."""
DELIVERY: Final = "evd:"
"""Run meta `evd:<delivery id>`: a delivery already taken (a replayed webhook changes nothing)."""
WAIT_FOR_EVENT_USES: Final = "wait-for-event"
"""The built-in that parks its run until an event arrives (nodes/wait_event.py)."""
BOOKKEEPING_PREFIXES: Final = (
    BATCH_PREFIX, SUBFLOW_STATE_PREFIX, DYNAMIC_PREFIX, PAUSED_PREFIX, EVENT, EVENT_WAIT,
    EVENT_TIMER,
)  # fmt: skip
"""Engine bookkeeping left out of the result context of a run that did not end awaiting."""

# ---------------------------------------------------------------- the ledger's field names

SKIP: Final = "\x01"
"""An arrival (and a fired activation's input) meaning "skipped": a dead path passing through."""
DONE: Final = "done:"
"""`done:<node key>` -> job id: the node committed (at most once)."""
FIRED: Final = "fired:"
"""`fired:<node key>` -> job id: the activation was created (at most once)."""
AWAIT: Final = "await:"
"""`await:<node key>` -> job id: the activation is parked until resumed."""
JOIN_PREDS: Final = "np:"
"""`np:<node key>` -> the largest predecessor count any arrival has known."""
JOIN_ARRIVED: Final = "n:"
JOIN_FINISHED: Final = "f:"
PENDING: Final = "pending"
"""Activations created and not yet committed; the run ends when it reaches 0."""
STATE_VERSION: Final = "sv"
"""The version of the run's state hash, bumped by every write to it (a worker holding a
snapshot of the state knows from it whether the snapshot is current)."""
ARRIVAL_SEPARATOR: Final = "\x1f"
"""A join arrival is the field `<target node key>\\x1f<predecessor id>`."""

RUNNING: Final = "running"
AWAITING: Final = "awaiting"
LIVE_STATUSES: Final = (RUNNING, AWAITING)
"""Run statuses in which nodes still run and commit."""
