"""One `commit.lua` call carrying several commits (a speculative job's "ok" commit `follows` the
commit that takes it): the exact script the workers send, in a real Redis.

When the commit that fires a job takes it with the predicted token (`<prefix>:<job>:p`) and
that job's own commit is later in the same call, the job is created as it finishes: no lock,
never in `active`, the same fields as a job taken and committed on its own. When the
prediction fails, or the job's commit comes first, everything goes the usual way: the job is
taken with a lock, and the commit that does not hold it finds another token ("lost").
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from commit_script import call_format, commit_keys
from flowcraft_fast import _core

pytestmark = pytest.mark.redis

RUN = "cc"
QP = "bull:cc:"
META = f"workflow:run:{RUN}"


def commit(
    job: str, token: str, *, version: int = 0, target: str | None = None, take: int = 1
) -> tuple[list[str], list[Any]]:
    """A commit of node `job` (no writes), with one arrival at `target` if given; its keys
    and args as rust/src/hot_path.rs `commit_call` builds them."""
    keys = commit_keys(QP, RUN, job, META)
    args: list[Any] = [
        QP, job, token, f"0|{job}", "ok", "7", 3600, -1, -1, RUN, "", "0", QP + "stops", "0",
        take, "w", 30_000, version, "", 10_000, 0, 0,
    ]  # fmt: skip
    if target is None:
        args.append(0)
    else:
        keys.append(QP + target)
        args += [1, f"0|{target}", job, "7", "all", 1, job, target, '{"d":1}', '{"o":1}']
        args += ["", "", 0]
    args.append("")  # stacktrace
    return keys, args


def call(r: redis.Redis, *commits: tuple[list[str], list[Any]]) -> list[Any]:
    """One script call of `commits`, in this order (commit.lua's call format)."""
    keys, args = call_format(commits)
    replies: list[Any] = r.eval(_core.script_source("commit"), len(keys), *keys, *args)
    return replies


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(META, mapping={"status": "running", "pending": 1, "sv": 0})
    client.hset(QP + "p", mapping={"name": "executeNode", "data": "{}", "opts": "{}"})
    client.set(QP + "p:lock", "w:p:1")
    client.lpush(QP + "active", "p")
    return client


def test_a_job_whose_commit_follows_in_the_call_is_created_as_it_finishes(
    r: redis.Redis,
) -> None:
    parent, child = call(r, commit("p", "w:p:1", target="c"), commit("c", "w:c:p"))
    assert parent[:2] == ["ok", "1"] and parent[3] == [[0, "w:c:p", "7"]], parent
    assert child[:2] == ["ok", "0"], child  # the run's last job: it completed the run
    job = r.hgetall(QP + "c")
    assert {k: job[k] for k in ("data", "opts", "fci", "fce", "atm", "ats", "returnvalue")} == {
        "data": '{"d":1}', "opts": '{"o":1}', "fci": "7", "fce": "1", "atm": "1", "ats": "1",
        "returnvalue": "7",
    }  # fmt: skip
    assert job["processedOn"] == job["finishedOn"] and job["timestamp"], job
    assert sorted(r.zrange(QP + "completed", 0, -1)) == ["c", "p"]
    assert r.lrange(QP + "active", 0, -1) == []
    assert r.keys(QP + "*:lock") == []
    assert r.hget(META, "status") == "completed"


def test_a_failed_prediction_takes_the_job_as_usual_and_its_commit_is_lost(
    r: redis.Redis,
) -> None:
    r.hset(META, "sv", 3)  # written since the node's snapshot (version 0): no prediction
    parent, child = call(r, commit("p", "w:p:1", target="c"), commit("c", "w:c:p"))
    assert parent[:2] == ["ok", "1"] and parent[3] == [[0, "w:c:1", "7"]], parent
    assert child == ["lost", ""], child
    assert r.get(QP + "c:lock") == "w:c:1"
    assert r.lrange(QP + "active", 0, -1) == ["c"]
    assert r.hget(QP + "c", "finishedOn") is None
    assert r.hget(META, "status") == "running"


def test_a_commit_before_the_one_that_takes_its_job_does_not_make_it_inline(
    r: redis.Redis,
) -> None:
    child, parent = call(r, commit("c", "w:c:p"), commit("p", "w:p:1", target="c"))
    assert child == ["lost", ""], child
    assert parent[:2] == ["ok", "1"] and parent[3] == [[0, "w:c:p", "7"]], parent
    # taken the usual way: locked with the predicted token, in active, not finished
    assert r.get(QP + "c:lock") == "w:c:p"
    assert r.lrange(QP + "active", 0, -1) == ["c"]
    assert r.hget(QP + "c", "finishedOn") is None
    # and its commit, sent again on its own, finishes it
    (again,) = call(r, commit("c", "w:c:p"))
    assert again[:2] == ["ok", "0"], again
    assert r.lrange(QP + "active", 0, -1) == [] and r.keys(QP + "*:lock") == []


def test_a_job_not_taken_leaves_its_following_commit_lost(r: redis.Redis) -> None:
    parent, child = call(r, commit("p", "w:p:1", target="c", take=0), commit("c", "w:c:p"))
    assert parent[:2] == ["ok", "1"] and parent[3] == [], parent
    assert child == ["lost", ""], child
    assert r.lrange(QP + "wait", 0, -1) == ["c"]  # queued for any worker
    assert r.hget(QP + "c", "fci") == "7"
