"""The join rule is written twice: `commit.lua` (atomic, in Redis) and `MemoryLedger` (in-memory
runs). This drives both with the same random commit sequences and requires identical decisions.

Each example is a sequence of commits. A commit has a committer (its node key; repeating one is
a re-delivered duplicate) and arrivals at join targets: from predecessors (repeats included,
like a fallback standing in for a node that already arrived), finished with a value or skipped,
each listing the predecessors the committer knew of (a set that grows, as with batch workers).
Both sides must agree on every commit's outcome (duplicate or not, the activations fired and
their inputs, the outstanding count) and on the ledger left behind (done, fired, arrivals).
The Lua side runs the exact script the workers send (`_core.script_source`) in a real Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commit_script import call_format, commit_keys
from flowcraft_fast import _core
from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.runtime.ledger import SKIPPED, Arrival, MemoryLedger
from flowcraft_fast.runtime.vocabulary import ARRIVAL_SEPARATOR, FIRED, SKIP

pytestmark = pytest.mark.redis

TARGETS = ["t0", "t1", "t2"]
PREDS = ["p0", "p1", "p2", "p3", "p4"]
START_PENDING = 1000  # so no example ends its run (an ended run refuses further commits)


@dataclass(frozen=True)
class Join:
    strategy: str
    predecessors: tuple[str, ...]


@dataclass(frozen=True)
class Commit:
    committer: str
    arrivals: tuple[tuple[str, str, Any, tuple[str, ...]], ...]
    """(target, predecessor, value or SKIPPED, predecessors the committer knew of)"""


values = st.one_of(
    st.just(SKIPPED),
    st.integers(-5, 5),
    st.text(max_size=3),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Join], list[Commit]]:
    joins = {
        t: Join(
            draw(st.sampled_from(["all", "any"])),
            tuple(draw(st.lists(st.sampled_from(PREDS), min_size=1, max_size=4, unique=True))),
        )
        for t in TARGETS
    }
    commits = []
    committers = [f"c{i}" for i in range(6)]
    for _ in range(draw(st.integers(1, 12))):
        arrivals = []
        for _ in range(draw(st.integers(0, 3))):
            target = draw(st.sampled_from(TARGETS))
            preds = joins[target].predecessors
            pred = draw(st.sampled_from(preds))
            known = preds[: draw(st.integers(1, len(preds)))]  # a set that may grow later
            if pred not in known:
                known = (*known, pred)
            arrivals.append((target, pred, draw(values), known))
        commits.append(Commit(draw(st.sampled_from(committers)), tuple(arrivals)))
    return joins, commits


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield r
    r.close()


class LuaLedger:
    """One run's ledger in Redis, changed only by `commit.lua` (as a worker calls it)."""

    def __init__(self, r: redis.Redis, run: str, take: int = 0) -> None:
        self.r = r
        self.run = run
        self.take = take
        """Fired jobs each commit claims for its worker at once (local continuation): the
        decisions must not depend on it."""
        self.qp = f"bull:diff{run}:"
        self.meta = f"workflow:meta:{run}"
        self.joins = f"workflow:joins:{run}"
        self.script = r.register_script(_core.script_source("commit"))
        r.hset(self.meta, mapping={"status": "running", "pending": START_PENDING})

    def commit(self, joins: dict[str, Join], c: Commit) -> tuple[bool, list[tuple[str, Any]], int]:
        job = f"{self.run}.{c.committer}"
        token = f"tok-{job}"
        self.r.set(f"{self.qp}{job}:lock", token)
        keys = commit_keys(self.qp, self.run, job, self.meta)
        args: list[Any] = [
            self.qp, job, token, f"0|{c.committer}", "ok", "null", 3600, -1, -1, self.run, "",
            "0", f"{self.qp}stops", "0", self.take, "worker", 30_000, -1, "", 10_000, 0, 0,
            len(c.arrivals),
        ]  # fmt: skip
        for target, pred, value, known in c.arrivals:
            succ = f"{self.run}.{target}"
            keys.append(f"{self.qp}{succ}")
            text = SKIP if value is SKIPPED else json.dumps(value)
            args += [f"0|{target}", pred, text, joins[target].strategy, len(known), *known]
            args += [succ, "{}", "{}", "", "", 0]  # no flow limit
        reply = self.script(*call_format([(keys, args)]))[0]
        code = reply[0]
        if code == "dup":
            return True, [], int(self.r.hget(self.meta, "pending") or 0)
        assert code == "ok", reply
        taken = reply[3] if len(reply) > 3 else []
        assert len(taken) <= self.take, reply
        for index, token, _ in taken:  # claimed here: in active, locked with its token
            succ = f"{self.run}.{c.arrivals[index][0]}"
            assert self.r.get(f"{self.qp}{succ}:lock") == token
            assert succ in self.r.lrange(f"{self.qp}active", 0, -1)
        fired = []
        for key in filter(None, (reply[2] if len(reply) > 2 else "").split("\x1f")):
            target = key.partition("|")[2]
            raw = self.r.hget(f"{self.qp}{self.run}.{target}", "fci")
            fired.append((target, SKIPPED if raw == SKIP else json.loads(raw)))
        return False, fired, int(reply[1])

    def state(self) -> dict[str, Any]:
        meta = self.r.hgetall(self.meta)
        arrivals: dict[str, dict[str, Any]] = {}
        for field, raw in self.r.hgetall(self.joins).items():
            key, _, pred = field.partition(ARRIVAL_SEPARATOR)
            arrivals.setdefault(key, {})[pred] = SKIPPED if raw == SKIP else json.loads(raw)
        return {
            "done": {k[5:] for k in meta if k.startswith("done:")},
            "fired": {k[len(FIRED) :] for k in meta if k.startswith(FIRED)},
            "arrivals": arrivals,
        }


def memory_commit(
    ledger: MemoryLedger, joins: dict[str, Join], c: Commit
) -> tuple[bool, list[tuple[str, Any]], int]:
    arrivals = [
        Arrival(target, (), pred, value, joins[target].strategy, known)  # type: ignore[arg-type]
        for target, pred, value, known in c.arrivals
    ]
    committed = ledger.commit(f"0|{c.committer}", arrivals)
    fired = [(f.arrival.target, f.input) for f in committed.fired]
    return committed.duplicate, fired, committed.pending


_runs = iter(range(10**9))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenarios(), st.integers(min_value=0, max_value=2))
def test_lua_and_memory_ledgers_decide_alike(
    client: redis.Redis, scenario: tuple[dict[str, Join], list[Commit]], take: int
) -> None:
    joins, commits = scenario
    lua = LuaLedger(client, f"r{next(_runs)}", take)
    memory = MemoryLedger(pending=START_PENDING)
    for index, c in enumerate(commits):
        expected = memory_commit(memory, joins, c)
        got = lua.commit(joins, c)
        assert got == expected, f"commit #{index} {c}: lua {got} != memory {expected}"
    state = lua.state()
    assert state["done"] == memory.done
    assert state["fired"] == memory.fired
    assert state["arrivals"] == {k: v for k, v in memory.arrivals.items() if v}


def test_a_known_sequence(client: redis.Redis) -> None:
    """A readable example of what the property covers: an `all` join of three, one skipped,
    a duplicate commit, a re-sent arrival, then the last predecessor."""
    joins = {
        "t0": Join("all", ("p0", "p1", "p2")),
        "t1": Join("any", ("p3",)),
        "t2": Join("any", ("p4",)),
    }
    lua = LuaLedger(client, "known")
    memory = MemoryLedger(pending=START_PENDING)
    steps = [
        Commit("c0", (("t0", "p0", 1, ("p0", "p1", "p2")),)),
        Commit("c0", (("t0", "p0", 1, ("p0", "p1", "p2")),)),  # duplicate delivery
        Commit("c1", (("t0", "p1", SKIPPED, ("p0", "p1")),)),  # a smaller, stale view
        Commit("c2", (("t0", "p0", 9, ("p0", "p1", "p2")),)),  # the same arrival again
        Commit("c3", (("t0", "p2", 3, ("p0", "p1", "p2")),)),
    ]
    outcomes = []
    for c in steps:
        expected = memory_commit(memory, joins, c)
        assert lua.commit(joins, c) == expected
        outcomes.append(expected)
    assert outcomes[1][0] is True  # the duplicate changed nothing
    assert outcomes[4][1] == [("t0", {"p0": 1, "p2": 3})]  # fired once, skipped one left out
