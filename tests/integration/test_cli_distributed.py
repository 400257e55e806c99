"""`flowcraft-fast` against a real Redis and an in-process worker serving the queue.

`main` runs its own event loop (`asyncio.run`), so the tests call it in a thread while the
worker keeps running on the test's loop.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, cli
from flowcraft_fast.cli import main
from flowcraft_fast.distributed.jobs import job_id

pytestmark = pytest.mark.timeout(120)

QUEUE = "cli"
WAIT_S = "30"  # the first run after a worker starts can take a few seconds

APP_SOURCE = """
import asyncio

from flowcraft_fast import FlowRuntime


async def one(ctx):
    return 1


async def plus(ctx):
    return int(ctx.input) + 1


async def slow(ctx):
    await asyncio.sleep(1.5)
    return "done"


async def boom(ctx):
    raise ValueError("kaboom")


BLUEPRINTS = [
    {
        "id": "chain",
        "nodes": [{"id": "a", "uses": "one"}, {"id": "b", "uses": "plus"}],
        "edges": [{"source": "a", "target": "b"}],
    },
    {
        "id": "approval",
        "nodes": [
            {"id": "a", "uses": "one"},
            {"id": "w", "uses": "wait"},
            {"id": "b", "uses": "plus"},
        ],
        "edges": [{"source": "a", "target": "w"}, {"source": "w", "target": "b"}],
    },
    {"id": "slow", "nodes": [{"id": "s", "uses": "slow"}]},
    {"id": "boom", "nodes": [{"id": "x", "uses": "boom"}]},
]


def make_runtime():
    return FlowRuntime(
        blueprints=BLUEPRINTS,
        registry={"one": one, "plus": plus, "slow": slow, "boom": boom},
    )


runtime = make_runtime()
"""


@dataclass
class App:
    spec: str  # "module:attr" as the CLI takes it
    runtime: FlowRuntime


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """A tiny app module in tmp_path, importable from the cwd as `flowcraft-fast run` needs."""
    name = f"cli_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    try:
        yield App(f"{name}:runtime", module.runtime)
    finally:
        sys.modules.pop(name, None)


@pytest.fixture
async def worker(app: App, redis_url: str) -> AsyncIterator[BullMQAdapter]:
    adapter = BullMQAdapter(
        runtime_options=app.runtime.options, connection=redis_url, queue_name=QUEUE
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=5)


async def cli_main(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def conn(redis_url: str) -> list[str]:
    return ["--redis-url", redis_url, "--queue", QUEUE]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://user:s3cret@127.0.0.1:{port}/0"


def context_json(out: str) -> dict[str, object]:
    """The context block `run --wait` prints between the status line and the error lines."""
    lines = out.splitlines()
    end = max(i for i, line in enumerate(lines) if line == "}")
    value = json.loads("\n".join(lines[1 : end + 1]))
    assert isinstance(value, dict)
    return value


# ---------------------------------------------------------------- run


async def test_run_wait_prints_the_result(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli_main(
        "run", app.spec, "chain", *conn(redis_url), "--context", '{"x": 7}', "--wait",
        "--timeout", WAIT_S,
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("run ") and first.endswith(": completed")
    context = context_json(out)
    assert context["x"] == 7 and context["b"] == 2
    assert "error" not in out
    assert "started run" in err and "Traceback" not in err


async def test_run_wait_shows_progress_while_waiting(
    app: App,
    worker: BullMQAdapter,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "PROGRESS_INTERVAL", 0.3)
    code = await cli_main("run", app.spec, "slow", *conn(redis_url), "--wait", "--timeout", WAIT_S)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[0].endswith(": completed")
    assert context_json(out)["s"] == "done"
    progress = [line for line in err.splitlines() if line.startswith("waiting for run ")]
    assert progress, err
    assert ": running, " in progress[0] and progress[0].endswith(" s")


async def test_run_wait_timeout_gives_up_but_the_run_goes_on(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli_main("run", app.spec, "slow", *conn(redis_url), "--wait", "--timeout", "0.2")
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert "did not finish within 0.2 s" in err
    run_id = err.split("started run ", 1)[1].split()[0]
    result = await FlowClient(redis_url, queue_name=QUEUE).wait(run_id, timeout=30)
    assert result.status == "completed"


async def test_run_wait_failed_run_exits_1_with_its_errors(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli_main("run", app.spec, "boom", *conn(redis_url), "--wait", "--timeout", WAIT_S)
    out, err = capsys.readouterr()
    assert code == 1, err
    assert out.splitlines()[0].endswith(": failed")
    assert any(
        line.startswith("error at node x") and "kaboom" in line for line in out.splitlines()
    ), out


async def test_run_without_wait_prints_the_id_then_status(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli_main("run", app.spec, "chain", *conn(redis_url)) == 0
    out, err = capsys.readouterr()
    run_id = out.strip()
    assert len(out.splitlines()) == 1 and run_id
    assert err == ""
    await FlowClient(redis_url, queue_name=QUEUE).wait(run_id, timeout=30)

    assert await cli_main("status", run_id, *conn(redis_url)) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"run {run_id}: completed"


async def test_run_unknown_blueprint_lists_the_available_ones(
    app: App, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli_main("run", app.spec, "nope", *conn(redis_url)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "no blueprint 'nope'" in err
    assert "available: approval, boom, chain, slow" in err


async def test_run_without_a_worker_says_so(
    app: App, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli_main("run", app.spec, "chain", *conn(redis_url)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("flowcraft-fast: ")
    assert "no worker on queue 'cli' serves blueprint 'chain'" in err


async def test_run_bad_app(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert await cli_main("run", "no_such_module_xyz:rt", "chain", *conn(redis_url)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no module named 'no_such_module_xyz'" in err


# ---------------------------------------------------------------- status / resume / cancel


async def test_resume_an_awaiting_run(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli_main(
        "run", app.spec, "approval", *conn(redis_url), "--wait", "--timeout", WAIT_S
    )
    out, err = capsys.readouterr()
    assert code == 0, err  # awaiting is not a failure
    run_id = out.splitlines()[0].split()[1].rstrip(":")
    assert out.splitlines()[0] == f"run {run_id}: awaiting"

    assert await cli_main("status", run_id, *conn(redis_url)) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"run {run_id}: awaiting"

    # Not waiting at that node: one line, exit 1.
    assert await cli_main("resume", run_id, "b", *conn(redis_url)) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "not waiting at node 'b'" in err

    argv = ["resume", run_id, "w", *conn(redis_url), "--output", "41"]
    assert await cli_main(*argv) == 0
    assert capsys.readouterr().out == f"resumed run {run_id} at node w\n"
    result = await FlowClient(redis_url, queue_name=QUEUE).wait(run_id, timeout=30)
    assert result.status == "completed"
    assert result.context["b"] == 42


async def test_cancel_an_awaiting_run(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    run_id = await client.start("approval", {"k": "v"})
    assert (await client.wait(run_id, timeout=30)).status == "awaiting"

    assert await cli_main("cancel", run_id, *conn(redis_url)) == 0
    assert capsys.readouterr().out == f"cancelled run {run_id}\n"
    assert await cli_main("status", run_id, *conn(redis_url)) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"run {run_id}: cancelled"

    assert await cli_main("cancel", run_id, *conn(redis_url)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"flowcraft-fast: run {run_id} had already ended (cancelled); nothing to cancel\n"


async def test_unknown_run(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli_main("status", "no-such-run", *conn(redis_url)) == 1
    out, err = capsys.readouterr()
    assert out == "unknown\n"
    assert "no run 'no-such-run'" in err

    for argv in (["cancel", "no-such-run"], ["resume", "no-such-run", "w"]):
        assert await cli_main(*argv, *conn(redis_url)) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == "flowcraft-fast: no run 'no-such-run'\n"


# ---------------------------------------------------------------- status report / --json / --full


async def test_status_of_a_completed_run(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    run_id = await client.start("chain", {})
    assert (await client.wait(run_id, timeout=30)).status == "completed"

    assert await cli_main("status", run_id, *conn(redis_url)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"run {run_id}: completed"
    assert "blueprint: chain" in lines
    assert any(line.startswith("started:  20") for line in lines), out
    assert any(line.startswith("ended:    20") for line in lines), out
    assert any(line.startswith("duration: ") and line.endswith(" s") for line in lines), out
    assert "error" not in out and "waiting at" not in out

    assert await cli_main("status", run_id, *conn(redis_url), "--json") == 0
    out, err = capsys.readouterr()
    report = json.loads(out)  # one JSON document
    assert (report["run_id"], report["status"], report["blueprint_id"]) == (
        run_id, "completed", "chain",
    )  # fmt: skip
    assert report["errors"] == [] and report["waiting_at"] == []
    assert report["started_at_ms"] <= report["ended_at_ms"]
    assert report["started_at"].startswith("20") and report["ended_at"].startswith("20")
    assert 0 <= report["duration_seconds"] < 30


async def test_status_of_a_failed_run_shows_its_errors(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    run_id = await client.start("boom", {})
    assert (await client.wait(run_id, timeout=30)).status == "failed"

    assert await cli_main("status", run_id, *conn(redis_url)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"run {run_id}: failed"
    assert "error at node x (ValueError): kaboom" in out.splitlines()
    assert "ended:    20" in out

    assert await cli_main("status", run_id, *conn(redis_url), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "failed"
    assert report["errors"] == [{"node_id": "x", "type": "ValueError", "message": "kaboom"}]
    assert report["ended_at_ms"] is not None


async def test_status_of_an_awaiting_run_shows_where_it_waits(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    run_id = await client.start("approval", {})
    assert (await client.wait(run_id, timeout=30)).status == "awaiting"

    assert await cli_main("status", run_id, *conn(redis_url)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"run {run_id}: awaiting"
    assert "waiting at: w" in lines
    assert "ended:" not in out
    assert any(line.startswith("duration: ") and line.endswith(" s so far") for line in lines)

    assert await cli_main("status", run_id, *conn(redis_url), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["status"], report["waiting_at"]) == ("awaiting", ["w"])
    assert report["ended_at"] is None and report["errors"] == []


async def test_status_json_of_an_unknown_run(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli_main("status", "no-such-run", *conn(redis_url), "--json") == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"run_id": "no-such-run", "status": None}
    assert "no run 'no-such-run'" in err


async def test_run_wait_hides_internal_keys_unless_full(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", app.spec, "chain", *conn(redis_url), "--context", '{"x": 7}', "--wait"]
    assert await cli_main(*argv, "--timeout", WAIT_S) == 0
    context = context_json(capsys.readouterr().out)
    assert context == {"x": 7, "a": 1, "b": 2}

    assert await cli_main(*argv, "--timeout", WAIT_S, "--full") == 0
    context = context_json(capsys.readouterr().out)
    assert context["b"] == 2
    assert "_outputs.a" in context and "_inputs.b" in context


async def test_run_json(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", app.spec, "boom", *conn(redis_url), "--wait", "--json", "--timeout", WAIT_S]
    assert await cli_main(*argv) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)  # one JSON document; progress and "started run" on stderr
    assert doc["status"] == "failed" and "started run" in err
    assert doc["errors"] == [{"nodeId": "x", "message": "kaboom", "type": "ValueError"}]
    assert not any(k.startswith(("_inputs.", "_outputs.")) for k in doc["context"])

    argv = ["run", app.spec, "chain", *conn(redis_url), "--wait", "--json", "--full"]
    assert await cli_main(*argv, "--timeout", WAIT_S) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "completed" and doc["context"]["_outputs.b"] == 2

    assert await cli_main("run", app.spec, "chain", *conn(redis_url), "--json") == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    await FlowClient(redis_url, queue_name=QUEUE).wait(run_id, timeout=30)


async def test_full_only_with_wait(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli_main("run", app.spec, "chain", "--full") == 2
    assert "--full only applies with --wait" in capsys.readouterr().err


# ---------------------------------------------------------------- inspect


async def test_inspect_json_and_table(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    done = await client.start("chain", {})
    assert (await client.wait(done, timeout=30)).status == "completed"
    waiting = await client.start("approval", {})
    assert (await client.wait(waiting, timeout=30)).status == "awaiting"

    assert await cli_main("inspect", *conn(redis_url), "--json") == 0
    out, err = capsys.readouterr()
    assert err == ""
    report = json.loads(out)
    assert report["queue"] == QUEUE
    assert set(report["counts"]) >= {"wait", "active", "delayed", "completed", "failed"}
    assert report["counts"]["completed"] >= 2
    assert report["truncated"] is False
    runs = {r["run_id"]: r for r in report["runs"]}
    assert set(runs) == {waiting}  # the completed run is not in flight
    run = runs[waiting]
    assert (run["status"], run["blueprint_id"]) == ("awaiting", "approval")
    assert 0 <= run["age_seconds"] < 60 and 0 <= run["idle_seconds"] < 60

    assert await cli_main("inspect", *conn(redis_url)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"queue {QUEUE} at {redis_url}\njobs: wait ")
    assert "runs in flight: 1\n" in out
    row = next(line for line in out.splitlines() if line.startswith(waiting))
    assert row.split()[1:3] == ["awaiting", "approval"]


async def test_runs_lists_recent_runs_with_filters(
    app: App, worker: BullMQAdapter, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    done = await client.start("chain", {})
    assert (await client.wait(done, timeout=30)).status == "completed"
    failed = await client.start("boom", {})
    assert (await client.wait(failed, timeout=30)).status == "failed"
    waiting = await client.start("approval", {})
    assert (await client.wait(waiting, timeout=30)).status == "awaiting"

    assert await cli_main("runs", *conn(redis_url), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    listed = [r["run_id"] for r in report["runs"]]
    # newest activity first: the awaiting run's last progress, then the two ends
    assert listed[:3] == [waiting, failed, done], listed
    by_id = {r["run_id"]: r for r in report["runs"]}
    assert by_id[failed]["status"] == "failed" and by_id[failed]["ended_at"] is not None
    assert by_id[waiting]["ended_at"] is None and by_id[waiting]["pending_jobs"] is not None
    assert by_id[done]["blueprint_id"] == "chain" and by_id[done]["duration_seconds"] >= 0

    assert await cli_main("runs", *conn(redis_url), "--json", "--status", "failed") == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert failed in [r["run_id"] for r in runs] and {r["status"] for r in runs} == {"failed"}
    assert await cli_main("runs", *conn(redis_url), "--json", "--blueprint", "chain") == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert done in [r["run_id"] for r in runs] and {r["blueprint_id"] for r in runs} == {"chain"}
    assert await cli_main("runs", *conn(redis_url), "--json", "--limit", "1") == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in report["runs"]] == [waiting] and report["truncated"] is True
    assert await cli_main("runs", *conn(redis_url), "--json", "--since", "2099-01-01") == 0
    assert json.loads(capsys.readouterr().out)["runs"] == []

    assert await cli_main("runs", *conn(redis_url), "--limit", "3") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["RUN", "STATUS", "BLUEPRINT", "STARTED", "DURATION"]
    assert [line.split()[:3] for line in out[1:4]] == [
        [waiting, "awaiting", "approval"], [failed, "failed", "boom"], [done, "completed", "chain"]
    ]  # fmt: skip
    assert await cli_main("runs", *conn(redis_url), "--since", "yesterday") == 2
    assert "expected a duration" in capsys.readouterr().err


async def test_inspect_limit_truncates(
    app: App, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = BullMQAdapter(
        runtime_options=app.runtime.options, connection=redis_url, queue_name=QUEUE
    )
    await adapter.publish()  # published, never served: the runs stay queued
    client = FlowClient(redis_url, queue_name=QUEUE)
    runs = [await client.start("chain", {}) for _ in range(3)]
    assert await cli_main("inspect", *conn(redis_url), "--json", "--limit", "2") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["truncated"] is True
    listed = [r["run_id"] for r in report["runs"]]
    assert len(listed) == 2 and set(listed) < set(runs)  # runs started in one ms: any order
    assert report["counts"]["wait"] == 3
    assert await cli_main("inspect", *conn(redis_url), "--limit", "2") == 0
    assert "runs in flight: 2+ (showing the first 2" in capsys.readouterr().out


# ---------------------------------------------------------------- reconcile


async def test_reconcile_reenqueues_a_lost_job(
    app: App, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = BullMQAdapter(
        runtime_options=app.runtime.options, connection=redis_url, queue_name=QUEUE
    )
    await adapter.publish()
    assert await cli_main("run", app.spec, "chain", *conn(redis_url)) == 0
    run_id = capsys.readouterr().out.strip()
    r = redis.Redis.from_url(redis_url)
    jid = job_id(run_id, "a", ())
    r.lrem(f"bull:{QUEUE}:wait", 0, jid)  # what a lost job looks like
    r.delete(f"bull:{QUEUE}:{jid}")

    # Under the threshold: nothing counts as stalled.
    assert await cli_main("reconcile", app.spec, *conn(redis_url)) == 0
    assert capsys.readouterr().out == "scanned 0 runs: 0 stalled, 0 reconciled, 0 failed, 0 ended\n"

    argv = ["reconcile", app.spec, *conn(redis_url), "--stalled-threshold", "0"]
    assert await cli_main(*argv) == 0
    out, err = capsys.readouterr()
    assert out == "scanned 1 runs: 1 stalled, 1 reconciled, 0 failed, 0 ended\n"
    assert "Traceback" not in err

    async with BullMQAdapter(
        runtime_options=app.runtime.options, connection=redis_url, queue_name=QUEUE
    ):
        result = await FlowClient(redis_url, queue_name=QUEUE).wait(run_id, timeout=30)
    assert result.status == "completed" and result.context["b"] == 2


# ---------------------------------------------------------------- Redis unreachable


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{app}", "chain"],
        ["run", "{app}", "chain", "--wait"],
        ["status", "r1"],
        ["resume", "r1", "w", "--output", "1"],
        ["cancel", "r1"],
        ["inspect"],
        ["inspect", "--json"],
        ["reconcile", "{app}"],
    ],
)
async def test_unreachable_redis_is_one_line(
    app: App, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = closed_port_url()
    args = [a.replace("{app}", app.spec) for a in argv]
    retry = ["--retry-deadline", "0.3"]  # retried that long, then one line saying so
    assert await cli_main(*args, "--redis-url", url, "--queue", QUEUE, *retry) == 1
    out, err = capsys.readouterr()
    assert out == ""
    shown = url.replace("s3cret", "***")
    lines = [line for line in err.splitlines() if not line.startswith("reconciling queue")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"flowcraft-fast: cannot reach Redis at {shown}: "), err
    assert "connection refused" in lines[0]
    assert "gave up after" in lines[0] and "(retry deadline 0.3 s)" in lines[0]
    assert "s3cret" not in err and "Traceback" not in err
