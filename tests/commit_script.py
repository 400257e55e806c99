"""`commit.lua` as tests drive it: the keys of one commit and the call format that carries
several, as rust/src/hot_path.rs builds them (`commit_call`, `commit_calls`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def commit_keys(qp: str, run: str, job: str, meta: str) -> list[str]:
    """KEYS[1..17] of one commit of `job` (queue prefix `qp`, the run's meta hash `meta`);
    the successor job hashes follow them."""
    return [
        f"{qp}{job}", f"{qp}{job}:lock", f"{qp}active", f"{qp}completed", f"{qp}failed",
        f"{qp}wait", f"{qp}marker", f"{qp}events", f"workflow:state:{run}", meta,
        f"workflow:joins:{run}", f"workflow:status:{run}", f"{qp}flowcraft:runs", f"{qp}meta",
        f"{qp}flowcraft:runs:ended", f"{qp}flowcraft:limits", f"{qp}flowcraft:limits:waiting",
    ]  # fmt: skip


def call_format(commits: Sequence[tuple[list[str], list[Any]]]) -> tuple[list[str], list[Any]]:
    """One script call of `commits` ((keys, args) each, in this order): their keys one after
    another; the args: the number of commits, each one's key and arg counts, then their args."""
    keys: list[str] = []
    head: list[Any] = [len(commits)]
    body: list[Any] = []
    for k, a in commits:
        head += [len(k), len(a)]
        keys += k
        body += a
    return keys, head + body
