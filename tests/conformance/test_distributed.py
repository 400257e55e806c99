"""Every conformance case, run distributed: two `flowcraft-fastd` processes serve one queue and
`FlowClient` starts each run and waits for it. The outcome must match the in-memory one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowcraft_fast.blueprint import load_blueprint
from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.client import FlowClient

from .harness import CaseOutcome, check_case, load_cases, run_case_in_memory
from .redis_ledger import RedisLedger

CASES = load_cases()
QUEUE = "conformance"
TESTS_DIR = Path(__file__).resolve().parent.parent

# Built-ins the distributed worker does not run yet (issue 4 follow-up). These cases are
# expected to fail until it does; strict, so the day one passes the marker must go.
NOT_YET_DISTRIBUTED: dict[str, str] = {}


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = []
        if case["name"] in NOT_YET_DISTRIBUTED:
            marks.append(pytest.mark.xfail(reason=NOT_YET_DISTRIBUTED[case["name"]], strict=True))
        out.append(pytest.param(case, id=case["name"], marks=marks))
    return out


READY_LINE = b"consuming queue"
"""What a daemon logs once it consumes (lifecycle.run_worker)."""


def _wait_until_consuming(procs: list[subprocess.Popen[bytes]], logs: list[Any]) -> None:
    """Both daemons consume before the cases run: one still starting (a cold venv compiles
    every module on first import) would otherwise be stopped before it handles signals."""
    deadline = time.monotonic() + 60
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            # pread: the daemon shares the file's offset, which must not move under it
            text = os.pread(logs[i].fileno(), 1 << 20, 0)
            if READY_LINE in text:
                pending.discard(i)
            elif procs[i].poll() is not None:
                raise AssertionError(f"daemon {i} exited: {text.decode(errors='replace')}")
        assert time.monotonic() < deadline, f"daemons {sorted(pending)} never consumed"
        time.sleep(0.05)


@contextlib.contextmanager
def serving_daemons(url: str, ledger_url: str, *extra_args: str) -> Iterator[list[str]]:
    """Two flowcraft-fastd processes serving the conformance app on QUEUE, connected as `url`
    says (the nodes keep their ledger at `ledger_url`). The list it yields gets their output
    once they have stopped; each must exit 0 (drained)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "FLOWCRAFT_LEDGER_URL": ledger_url,
    }
    command = [
        sys.executable, "-m", "flowcraft_fast.daemon",
        "--app", "conformance.distributed_app:runtime",
        "--redis-url", url,
        "--queue", QUEUE,
        "--concurrency", "16",
        "--drain-timeout", "5",
        *extra_args,
    ]  # fmt: skip
    outputs: list[str] = []
    with contextlib.ExitStack() as files:
        # files, not pipes: a full pipe would block a daemon
        logs = [files.enter_context(tempfile.TemporaryFile()) for _ in range(2)]
        procs = [
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs
        ]
        try:
            _wait_until_consuming(procs, logs)
            yield outputs
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for log in logs:
                log.seek(0)
                outputs.append(log.read().decode(errors="replace"))
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output


@pytest.fixture(scope="module")
def workers(redis_server: RedisServer) -> Iterator[str]:
    """Two flowcraft-fastd processes serving the conformance app on one queue."""
    with serving_daemons(redis_server.url, redis_server.url):
        yield redis_server.url


async def run_case_distributed(
    case: dict[str, Any], url: str, ledger_url: str | None = None
) -> CaseOutcome:
    """Start the case's run with a FlowClient connected as `url` says, wait for it (and resume
    it); the effects come from the nodes' ledger at `ledger_url` (default: `url`)."""
    outcome = CaseOutcome()
    try:
        load_blueprint(case["blueprint"])  # what a worker does with the app's blueprints
    except Exception as exc:
        outcome.raised = exc
        return outcome
    client = FlowClient(url, queue_name=QUEUE)
    ledger = RedisLedger(ledger_url or url)
    try:
        deadline = time.monotonic() + 20
        while True:  # the workers publish their blueprints once they are up
            try:
                await client.blueprint(case["blueprint"]["id"])
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        started = time.monotonic()
        run_id = await client.start(case["blueprint"]["id"], case.get("context", {}))
        if "cancel_after_ms" in case:
            await asyncio.sleep(case["cancel_after_ms"] / 1000)
            assert await client.cancel(run_id)
        outcome.result = await client.wait(run_id, timeout=30)
        outcome.elapsed_ms = (time.monotonic() - started) * 1000
        outcome.effects = await ledger.counts(run_id)
        resume = case["expect"].get("then_resume")
        if resume is not None:
            await client.resume(
                run_id, resume["node_id"], resume.get("output"), resume.get("action")
            )
            outcome.resumed = await client.wait(run_id, timeout=30)
            outcome.resumed_effects = await ledger.counts(run_id)
    finally:
        await ledger.close()
    return outcome


RACING = {"cancel": {"context", "effects"}, "failure_stops_run": {"effects"}}
"""What depends on timing in these cases, and so is not compared between the modes: how far a
run got before its cancellation landed; whether a parallel branch started before the failure
of another was known (in memory a node that fails at once stops the run before its sibling
starts; distributed both are claimed together)."""


@pytest.mark.asyncio
@pytest.mark.parametrize("case", _params())
async def test_case_distributed(case: dict[str, Any], workers: str) -> None:
    distributed = await run_case_distributed(case, workers)
    check_case(case, distributed)
    assert_same_outcome(case, await run_case_in_memory(case), distributed)


def assert_same_outcome(
    case: dict[str, Any], memory: CaseOutcome, distributed: CaseOutcome
) -> None:
    """One engine: beyond what the case expects, both modes must end with the same status,
    the same context, the same errors and the same effects (per node execution counts)."""
    if memory.raised is not None or distributed.raised is not None:
        assert type(memory.raised) is type(distributed.raised)
        return
    pairs = [(memory.result, distributed.result, memory.effects, distributed.effects)]
    if memory.resumed is not None or distributed.resumed is not None:
        pairs.append(
            (
                memory.resumed,
                distributed.resumed,
                memory.resumed_effects,
                distributed.resumed_effects,
            )
        )
    for mem, dist, mem_effects, dist_effects in pairs:
        assert mem is not None and dist is not None
        assert mem.status == dist.status
        errors = [(e.node_id, e.type, e.message) for e in mem.errors]
        assert errors == [(e.node_id, e.type, e.message) for e in dist.errors]
        racing = RACING.get(case["name"], set())
        if "effects" not in racing:
            assert mem_effects == dist_effects
        if "context" not in racing:
            assert _without_run_id(mem.context, mem.run_id) == _without_run_id(
                dist.context, dist.run_id
            )


def _without_run_id(context: dict[str, Any], run_id: str) -> Any:
    """The context with its run's id (which a subflow's child run id embeds) made neutral."""
    return json.loads(json.dumps(context, sort_keys=True).replace(run_id, "<run>"))
