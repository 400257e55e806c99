"""Redis killed with SIGKILL under load, the append-only file on (issue 9).

A private redis-server (`appendonly yes`; its data dir under the test's tmp dir, so the AOF
outlives the process), two real worker processes (chaos_worker.py, never restarted) serving the
blueprint `chain` (chaos_app.py: s1 -> s2 -> s3 -> s4, each adds 1, so a run started with x ends
with s4 == x + 4), and a client in this process starting runs one after another for the whole
test. A run is *acknowledged* once `start` returned its id. Mid-load, with runs in flight, the
server gets SIGKILL (by its pid: no shutdown, no last AOF flush), stays down DOWN_S and is started
again on the same port with the same dir and config; KILLS times (2 x $FLOWCRAFT_CHAOS_SCALE).
Then every acknowledged run must be either completed with the right result or lost (its run
record gone); nothing in between (failed, stuck, a wrong result).

- `appendfsync always`: Redis fsyncs the AOF before it replies, so no acknowledged run may be
  lost (asserted), and every run completes exactly once with the right result.
- `appendfsync everysec`: asserted are no run ending twice or with a wrong result, and no worker
  crash; how many acknowledged runs were lost is reported (printed, `record_property`, and
  `redis_kill_everysec.json` in the test's tmp dir), not asserted. Only redis-server dies here,
  not the machine: Redis write()s the AOF before it replies and those writes sit in the OS page
  cache, which a process kill does not discard, so on one machine everysec usually loses
  nothing either. Losing up to the last second of writes takes the OS (or the disk) going down,
  which this test does not do.

"Exactly once": every end of a run is published on `workflow:status:<runId>`; a subscriber
(subscribing again after each kill) counts them, and no run may be seen ending twice. Ends it
misses while the server is down are covered by `endedAt`: each time a run is seen completed
(just before every kill, right after every restart, at the end) its `endedAt` must be the same,
so a run whose end Redis forgot and that then ended again would show.

The workers reconnect by themselves: they are the same processes throughout, alive at the end
with no traceback or ERROR line in their logs, and the runs started after the last restart
complete. Every wait is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_app import CHAIN, CHAIN_STEPS, QUEUE
from chaos_tools import WorkerProcess, chaos_scale, scaled, wait_until

from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.client import FlowClient

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.timeout(scaled(120)),
]

WORKERS = 2
KILLS = scaled(2)
"""SIGKILLs per variant: 2 times $FLOWCRAFT_CHAOS_SCALE."""
LOAD_S = 2.0
"""Seconds of load before each kill and after the last restart."""
DOWN_S = 0.5
"""Seconds the server stays dead (longer than half a worker lease: leases lapse meanwhile)."""
MIN_IN_FLIGHT = 5
"""The server is killed only once at least this many acknowledged runs are unfinished."""
PACE_S = 0.01
"""Pause between two starts: under 100 runs/s; two workers of 16 slots take ~160/s."""
START_BOUND_S = 40.0
"""Bound on one `start` (the client itself retries a dead connection for up to 30 s)."""
TERMINAL = ("completed", "failed", "cancelled")

RunView = tuple[str, str | None, Any] | None
"""A run as read from Redis: (status, endedAt, s4's output), or None when its record is gone."""


# ---------------------------------------------------------------------------- helpers


def sync_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def read_runs(r: redis.Redis, runs: Iterable[str]) -> dict[str, RunView]:
    """Each run's status, endedAt and final output, pipelined in chunks."""
    runs = list(runs)
    out: dict[str, RunView] = {}
    for at in range(0, len(runs), 500):
        chunk = runs[at : at + 500]
        pipe = r.pipeline(transaction=False)
        for run in chunk:
            pipe.hmget(f"workflow:run:{run}", "status", "endedAt")
            pipe.hget(f"workflow:state:{run}", f"s{CHAIN_STEPS}")
        replies = pipe.execute()
        for i, run in enumerate(chunk):
            (status, ended), final = replies[2 * i], replies[2 * i + 1]
            out[run] = (
                None if status is None else (status, ended, json.loads(final) if final else None)
            )
    return out


def completed_ends(views: dict[str, RunView]) -> dict[str, str | None]:
    """run -> endedAt of the runs seen completed."""
    return {run: v[1] for run, v in views.items() if v is not None and v[0] == "completed"}


class Load:
    """Starts `chain` runs one after another until stopped; `acked` holds the acknowledged ones
    (run id -> x, in the order they were acknowledged), `refused` the starts that raised."""

    def __init__(self, client: FlowClient) -> None:
        self.client = client
        self.acked: dict[str, int] = {}
        self.refused: list[tuple[str, str]] = []
        self.last_ack = time.monotonic()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            run_id, x = f"k{i}", i * 10
            i += 1
            try:
                await asyncio.wait_for(
                    self.client.start(CHAIN, {"x": x}, run_id=run_id), START_BOUND_S
                )
            except Exception as exc:  # the server was down for longer than the client retries
                self.refused.append((run_id, f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(0.05)
                continue
            self.acked[run_id] = x
            self.last_ack = time.monotonic()
            await asyncio.sleep(PACE_S)

    def state(self) -> str:
        """For failure messages: how far the load got and whether it still runs."""
        task = self._task
        ended = "running" if task is None or not task.done() else f"ended: {task!r}"
        return (
            f"load {ended}, {len(self.acked)} acknowledged, the last "
            f"{time.monotonic() - self.last_ack:.1f} s ago, {len(self.refused)} refused "
            f"(last: {self.refused[-3:]})"
        )

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, START_BOUND_S + 10)

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


class EndWatcher:
    """Counts the run ends Redis publishes on `workflow:status:<runId>`, in a thread that
    subscribes again whenever its connection drops (the server was killed)."""

    PREFIX = "workflow:status:"

    def __init__(self, url: str) -> None:
        self.url = url
        self.ends: dict[str, list[str]] = defaultdict(list)
        self.subscribed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis.from_url(
                self.url, decode_responses=True, socket_timeout=1, socket_connect_timeout=1
            )
            pubsub = client.pubsub()
            try:
                pubsub.psubscribe(self.PREFIX + "*")
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg is None:
                        continue
                    if msg["type"] == "psubscribe":
                        with self._lock:
                            self.subscribed += 1
                    elif msg["type"] == "pmessage" and msg["data"] in TERMINAL:
                        with self._lock:
                            self.ends[msg["channel"].removeprefix(self.PREFIX)].append(msg["data"])
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                time.sleep(0.05)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
                    client.close()

    def snapshot(self) -> dict[str, list[str]]:
        with self._lock:
            return {run: list(ends) for run, ends in self.ends.items()}

    def subscriptions(self) -> int:
        with self._lock:
            return self.subscribed

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def kill9(server: RedisServer) -> int:
    """SIGKILL the server by its pid and reap it; returns the pid."""
    assert server.process is not None and server.process.poll() is None
    pid = server.process.pid
    os.kill(pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    server.stop()  # already dead: only forgets the process
    return pid


def check_same_end(seen: dict[str, str | None], now: dict[str, str | None], when: str) -> None:
    """A run seen completed before must show the same endedAt (it did not end again)."""
    changed = {run: (seen[run], e) for run, e in now.items() if run in seen and seen[run] != e}
    assert not changed, f"{when}: runs ended again (endedAt before, now): {changed}"
    seen.update(now)


def worker_log_problems(workers: list[WorkerProcess]) -> list[str]:
    problems = []
    for w in workers:
        if w.proc.poll() is not None:
            problems.append(f"worker {w.pid} exited with {w.proc.returncode}")
        for line in w.stderr().splitlines():
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line:
                problems.append(line)
    return problems


def worker_warnings(workers: list[WorkerProcess]) -> list[str]:
    return [line for w in workers for line in w.stderr().splitlines() if " WARNING " in line]


# ---------------------------------------------------------------------------- the test


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_redis_kill9_under_load(
    fsync: str,
    redis_factory: Callable[..., RedisServer],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    server = redis_factory(
        persistence=True, data_dir=str(data_dir), extra_args=("--appendfsync", fsync)
    )
    r = sync_redis(server.url)
    assert r.config_get("appendonly")["appendonly"] == "yes"
    assert r.config_get("appendfsync")["appendfsync"] == fsync
    watcher = EndWatcher(server.url)
    workers: list[WorkerProcess] = []
    load: Load | None = None
    started = time.monotonic()
    try:
        workers = [WorkerProcess(server.url, concurrency=16) for _ in range(WORKERS)]
        for w in workers:
            await w.ready()
        await wait_until(lambda: watcher.subscriptions() >= 1, 15, "the end watcher")
        load = Load(FlowClient(server.url, queue_name=QUEUE))
        load.start()

        seen_ends: dict[str, str | None] = {}  # run -> endedAt, whenever seen completed
        kills: list[dict[str, Any]] = []
        acked_at_last_kill = 0
        for k in range(KILLS):
            await asyncio.sleep(LOAD_S)

            def in_flight(acked: dict[str, int] = load.acked, r: redis.Redis = r) -> Any:
                """Every acknowledged run as Redis has it, once enough of them are unfinished."""
                views = read_runs(r, list(acked))
                n = sum(1 for v in views.values() if v is None or v[0] != "completed")
                return views if n >= MIN_IN_FLIGHT else None

            # no await from this read to the kill: what it saw is what the kill hits
            try:
                before = cast(
                    dict[str, RunView],
                    await wait_until(in_flight, 30, f"{MIN_IN_FLIGHT} acknowledged runs in flight"),
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc} (before kill {k + 1}): {load.state()}") from None
            check_same_end(seen_ends, completed_ends(before), f"before kill {k + 1}")
            acked_before = list(before)  # acknowledged before the kill: the ones checked
            old_pid = kill9(server)
            killed_at = time.monotonic()
            acked_at_last_kill = len(acked_before)
            r.close()
            await asyncio.sleep(DOWN_S)
            subs = watcher.subscriptions()
            await asyncio.to_thread(server.start)
            restarted_in = time.monotonic() - killed_at
            assert server.process is not None and server.process.pid != old_pid
            r = sync_redis(server.url)
            assert r.config_get("appendfsync")["appendfsync"] == fsync
            assert r.info("persistence")["aof_enabled"] == 1
            after = read_runs(r, acked_before)
            lost = [run for run, v in after.items() if v is None]
            ended_lost = [run for run in completed_ends(before) if after[run] is None]
            check_same_end(seen_ends, completed_ends(after), f"after restart {k + 1}")
            # a run seen completed before the kill and still there must still be completed
            reopened = [
                run
                for run in completed_ends(before)
                if after[run] is not None and after[run][0] != "completed"
            ]
            assert not reopened, f"runs completed before kill {k + 1} are live again: {reopened}"
            kills.append(
                {
                    "acknowledged_before": len(acked_before),
                    "unfinished_before": sum(
                        1 for v in before.values() if v is None or v[0] != "completed"
                    ),
                    "unfinished_after_restart": sum(
                        1 for v in after.values() if v is not None and v[0] != "completed"
                    ),
                    "lost": len(lost),
                    "lost_after_completing": len(ended_lost),
                    "down_s": round(restarted_in, 3),
                }
            )
            await wait_until(
                lambda s=subs: watcher.subscriptions() > s, 15, "the end watcher to resubscribe"
            )

        assert any(k["unfinished_after_restart"] or k["lost"] for k in kills), (
            f"no kill hit a run in flight: {kills}"
        )
        await asyncio.sleep(LOAD_S)
        await load.stop()
        acked = dict(load.acked)
        after_last = list(acked)[acked_at_last_kill:]
        assert after_last, "no run was acknowledged after the last restart"

        # every acknowledged run ends, or is gone (a lost run never comes back)
        pending = set(acked)

        def settled() -> bool:
            views = read_runs(r, pending)
            pending.difference_update(
                run for run, v in views.items() if v is None or v[0] in TERMINAL
            )
            return not pending

        try:
            await wait_until(settled, 60 + 0.05 * len(acked), "every acknowledged run to end")
        except AssertionError as exc:
            stuck = read_runs(r, sorted(pending)[:10])
            raise AssertionError(f"{exc}: {len(pending)} runs still live, e.g. {stuck}") from None
        final = read_runs(r, acked)
        check_same_end(seen_ends, completed_ends(final), "at the end")
        lost = sorted(run for run, v in final.items() if v is None)
        wrong = {
            run: v
            for run, v in final.items()
            if v is not None and (v[0] != "completed" or v[2] != acked[run] + CHAIN_STEPS)
        }
        ends = watcher.snapshot()
        twice = {run: e for run, e in ends.items() if len(e) > 1}
        seen_ending = sum(1 for run, v in final.items() if v is not None and ends.get(run))
        problems = worker_log_problems(workers)
        warnings = worker_warnings(workers)
        persistence = r.info("persistence")
        report = {
            "appendfsync": fsync,
            "chaos_scale": chaos_scale(),
            "kills": KILLS,
            "workers": WORKERS,
            "acknowledged": len(acked),
            "lost": len(lost),
            "completed_right": len(acked) - len(lost) - len(wrong),
            "wrong_or_unfinished": len(wrong),
            "ended_twice": len(twice),
            "ends_seen_by_subscriber": seen_ending,
            "starts_refused": len(load.refused),
            "worker_warnings": len(warnings),
            "aof_delayed_fsync": int(persistence.get("aof_delayed_fsync", 0)),
            "per_kill": kills,
            "wall_s": round(time.monotonic() - started, 1),
        }
        (tmp_path / f"redis_kill_{fsync}.json").write_text(json.dumps(report, indent=2) + "\n")
        for key in ("acknowledged", "lost", "wrong_or_unfinished", "ended_twice", "kills"):
            record_property(key, report[key])
        print(
            f"\n[redis kill -9, appendfsync {fsync}] acknowledged={len(acked)} lost={len(lost)} "
            f"wrong/unfinished={len(wrong)} ended twice={len(twice)} kills={KILLS} "
            f"refused starts={len(load.refused)} per kill={kills} worker warnings="
            f"{len(warnings)} report={tmp_path / f'redis_kill_{fsync}.json'}"
        )

        assert not problems, "workers crashed or logged errors:\n" + "\n".join(problems[:20])
        assert not twice, f"runs that ended more than once: {dict(list(twice.items())[:10])}"
        assert not wrong, f"{len(wrong)} runs not completed right: {dict(list(wrong.items())[:10])}"
        assert seen_ending > 0, "the subscriber saw no run end: it checked nothing"
        assert all(final[run] is not None for run in after_last)
        if fsync == "always":
            assert not lost, f"{len(lost)} acknowledged runs lost (appendfsync always): {lost[:20]}"
        else:
            # sanity only: the kills can take at most what was acknowledged before the last one
            assert len(lost) <= acked_at_last_kill
    finally:
        if load is not None:
            load.cancel()
        watcher.close()
        for w in workers:
            w.kill()
        r.close()
