"""How fast a killed worker's jobs run again (issue 9): a kill storm, and a crash loop.

Real Redis (the session's private server), real worker processes (`recovery_worker.py`, blueprint
`relay`: r1 -> r2 -> r3 -> r4, each node adds 1 and sleeps the run's `sleep`), real SIGKILL.

Which jobs a killed worker held, and when they ran again:
- every worker prints its lease token prefix when it is ready, and a lease token is
  `<prefix>:<job>:<n>`; right after a SIGKILL (the process reaped, then 0.1 s for the commands
  it had already sent to reach Redis) the test reads every lock key (one Lua call: KEYS + GET,
  atomic). The jobs whose lock carries the dead process's prefix are the ones it held, claimed
  and not committed, whether their node had started or not. Nothing can take such a lock but
  its expiry (or, for a named worker, the release at the next incarnation's start), so the
  reading is exact, not a sample taken before the kill that could go stale;
- every execution of a node appends `<node> <pid> <time>` to `starts:<runId>` before it does
  anything else, so the moment a job is started again (by another process) is on record.
  *Recovery* = that start's time - the time just before `os.kill`, both `time.time()` on this
  machine.

Exactly once: every run must complete with the right result (r4 == x + 4), its end must be
published once (`workflow:status:<runId>`, counted by a subscriber), every node must have been
executed once plus at most once per worker that lost it (killed while holding it, or while it
ran it ahead of a held job's commit (speculative continuation: such a job has no lock yet), or a
"lease lost" line in a worker's log naming it), and a job held by a killed worker must end up
committed by another process (the dead one's lease is fenced off).

The stall limit (`max_stalled_count`) is raised for both tests: a job can be held by two killed
workers in a row, and at the default limit (1) its node would rightly fail with a
StalledJobError; that rule has its own tests, here it would only make runs fail at random.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_tools import chaos_scale, scaled, wait_until
from recovery_worker import QUEUE, RELAY, STEPS

from flowcraft_fast.distributed.client import FlowClient
from flowcraft_fast.distributed.jobs import job_id
from flowcraft_fast.distributed.worker import DEFAULT_LEASE_MS, DEFAULT_STALLED_INTERVAL_S

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.timeout(scaled(180)),
]

WORKER_SCRIPT = Path(__file__).resolve().parent / "recovery_worker.py"
QP = f"bull:{QUEUE}:"
MAX_STALLS = 1000
"""Stall limit of the workers here (see the module docstring)."""
SETTLE_S = 0.1
"""After a SIGKILL, before the locks are read: commands the dead process had sent reach Redis."""
TERMINAL = ("completed", "failed", "cancelled")


# ---------------------------------------------------------------------------- helpers


class Worker:
    """`recovery_worker.py` in a subprocess; stdout/stderr go to files the test reads."""

    def __init__(
        self,
        redis_url: str,
        *,
        lease_ms: int,
        stalled_s: float,
        concurrency: int = 16,
        name: str | None = None,
    ) -> None:
        self._dir = tempfile.mkdtemp(prefix="recovery-worker-")
        self.out_path = Path(self._dir) / "stdout"
        self.err_path = Path(self._dir) / "stderr"
        args = [
            sys.executable,
            str(WORKER_SCRIPT),
            redis_url,
            "--lease-ms",
            str(lease_ms),
            "--stalled-s",
            str(stalled_s),
            "--concurrency",
            str(concurrency),
            "--max-stalls",
            str(MAX_STALLS),
        ]
        if name is not None:
            args += ["--name", name]
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
            )
        self.pid = self.proc.pid
        self.spawned_at = time.time()
        self.prefix = ""
        """Its lease token prefix (known once it is ready)."""
        self.ready_at = 0.0
        """When it printed READY (its `adapter.start()` had returned)."""

    async def ready(self, timeout: float = 30.0) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.pid} exited early:\n{self.stderr()}")
            for line in self.out_path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[0] == "READY":
                    self.prefix, self.ready_at = parts[2], float(parts[3])
                    return True
            return False

        await wait_until(check, timeout, f"worker {self.pid} to be ready")

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> float:
        """SIGKILL and reap; returns the time just before the signal. Safe to call again."""
        at = time.time()
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL is not ignorable
            self.proc.wait(timeout=10)
        return at


_LOCKS = """
local out = {}
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  local token = redis.call('GET', key)
  if token then out[#out + 1] = key; out[#out + 1] = token end
end
return out
"""


def read_locks(r: redis.Redis) -> dict[str, str]:
    """Every job lock of the queue, job id -> lease token, read atomically."""
    flat = r.eval(_LOCKS, 0, QP + "*:lock")
    return {
        key.removeprefix(QP).removesuffix(":lock"): token
        for key, token in zip(flat[::2], flat[1::2], strict=True)
    }


def held_by(locks: dict[str, str], prefix: str) -> list[str]:
    """The jobs whose lease the worker with this token prefix holds."""
    return sorted(job for job, token in locks.items() if token.startswith(prefix + ":"))


def lock_ttls(r: redis.Redis, jobs: list[str]) -> dict[str, int]:
    """Milliseconds each job's lock has left to live (PTTL: -2 when it is gone)."""
    pipe = r.pipeline(transaction=False)
    for job in jobs:
        pipe.pttl(QP + job + ":lock")
    return dict(zip(jobs, pipe.execute(), strict=True))


_NODE_OF_DIGEST = {job_id("r", node, ()).rsplit(".", 1)[1]: node for node in STEPS}


def run_and_node(job: str) -> tuple[str, str]:
    run, _, digest = job.rsplit(".", 2)
    return run, _NODE_OF_DIGEST[digest]


def starts(r: redis.Redis, run: str) -> list[tuple[str, int, float]]:
    """Every execution of the run's nodes: (node, pid, time it started)."""
    out = []
    for entry in r.lrange(f"starts:{run}", 0, -1):
        node, pid, at = entry.split()
        out.append((node, int(pid), float(at)))
    return out


def restart_time(r: redis.Redis, job: str, after: float, dead_pid: int) -> float | None:
    """When the job's node was first started after `after` by a process other than
    `dead_pid`, or None."""
    run, node = run_and_node(job)
    times = [at for n, pid, at in starts(r, run) if n == node and pid != dead_pid and at > after]
    return min(times) if times else None


def ran_ahead(r: redis.Redis, pid: int, held: list[str]) -> set[str]:
    """The jobs a killed worker (`pid`) started behind the jobs it held: speculative
    continuation runs a held job's successors before the commit that would take them is sent,
    so they were never claimed (no lock to read) and run again after the kill, like the held
    job itself. Only later nodes of a run whose earlier node the worker held count."""
    out: set[str] = set()
    for job in held:
        run, node = run_and_node(job)
        later = STEPS[STEPS.index(node) + 1 :]
        out.update(job_id(run, n, ()) for n, p, _ in starts(r, run) if p == pid and n in later)
    return out


def read_runs(r: redis.Redis, runs: Iterable[str]) -> dict[str, tuple[str | None, Any]]:
    """Each run's status and r4's committed output (None when it has none), pipelined."""
    runs = list(runs)
    out: dict[str, tuple[str | None, Any]] = {}
    last = STEPS[-1]
    for at in range(0, len(runs), 500):
        chunk = runs[at : at + 500]
        pipe = r.pipeline(transaction=False)
        for run in chunk:
            pipe.hget(f"workflow:run:{run}", "status")
            pipe.hget(f"workflow:state:{run}", last)
        replies = pipe.execute()
        for i, run in enumerate(chunk):
            status, final = replies[2 * i], replies[2 * i + 1]
            out[run] = (status, json.loads(final) if final else None)
    return out


def committed_output(r: redis.Redis, job: str) -> Any:
    run, node = run_and_node(job)
    raw = r.hget(f"workflow:state:{run}", node)
    return json.loads(raw) if raw else None


class EndCounter:
    """Counts the run ends Redis publishes on `workflow:status:<runId>` (a pubsub thread)."""

    PREFIX = "workflow:status:"

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._pubsub = self._client.pubsub()
        self._pubsub.psubscribe(self.PREFIX + "*")
        self.ends: dict[str, list[str]] = defaultdict(list)
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._pubsub.get_message(timeout=0.2)
            if msg is None:
                continue
            if msg["type"] == "psubscribe":
                self._subscribed.set()
            elif msg["type"] == "pmessage" and msg["data"] in TERMINAL:
                with self._lock:
                    self.ends[msg["channel"].removeprefix(self.PREFIX)].append(msg["data"])

    async def subscribed(self) -> None:
        await wait_until(self._subscribed.is_set, 10, "the end subscriber")

    def snapshot(self) -> dict[str, list[str]]:
        with self._lock:
            return {run: list(e) for run, e in self.ends.items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()
        self._client.close()


class Load:
    """Starts `relay` runs one after another until stopped; `acked` holds run id -> x."""

    def __init__(self, client: FlowClient, sleep_s: Callable[[int], float], pace_s: float) -> None:
        self.client = client
        self.sleep_s = sleep_s
        self.pace_s = pace_s
        self.acked: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def start_some(self, count: int) -> None:
        for _ in range(count):
            await self._start_one()

    async def _start_one(self) -> None:
        i = len(self.acked)
        run, x = f"k{i}", i * 10
        await self.client.start(RELAY, {"x": x, "sleep": self.sleep_s(i)}, run_id=run)
        self.acked[run] = x

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._start_one()
            await asyncio.sleep(self.pace_s)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


_LEASE_LOST = re.compile(r"job (\S+): lease lost")


def check_runs(
    r: redis.Redis,
    acked: dict[str, int],
    ends: dict[str, list[str]],
    holds: Counter[str],
    workers: list[Worker],
) -> Counter[str]:
    """Every run completed once with the right result; every node ran once, plus at most once
    per worker that lost it (`holds`: job -> kills that found it held, or that found an earlier
    node of its run held while the killed worker had started it ahead (`ran_ahead`); plus the
    jobs a worker logged as lost). Returns how often each job ran."""
    final = read_runs(r, acked)
    wrong = {
        run: v
        for run, v in final.items()
        if v[0] != "completed" or v[1] is None or v[1]["v"] != acked[run] + len(STEPS)
    }
    assert not wrong, f"{len(wrong)} runs not completed right: {dict(list(wrong.items())[:10])}"
    twice = {run: e for run, e in ends.items() if run in acked and len(e) > 1}
    assert not twice, f"runs that ended more than once: {dict(list(twice.items())[:10])}"
    unseen = [run for run in acked if not ends.get(run)]
    assert not unseen, f"{len(unseen)} runs completed without publishing their end: {unseen[:10]}"
    lost: Counter[str] = Counter(
        m.group(1) for w in workers for m in _LEASE_LOST.finditer(w.stderr())
    )
    ran: Counter[str] = Counter()
    for run in acked:
        for node, _, _ in starts(r, run):
            ran[job_id(run, node, ())] += 1
    extra = {}
    for run in acked:
        for node in STEPS:
            job = job_id(run, node, ())
            if not 1 <= ran[job] <= 1 + holds[job] + lost[job]:
                extra[job] = (ran[job], holds[job], lost[job])
    assert not extra, (
        "nodes that ran never, or more often than their workers lost them "
        f"(job: (executions, kills holding it, lease-lost logs)): {dict(list(extra.items())[:10])}"
    )
    return ran


def worker_problems(workers: list[Worker]) -> list[str]:
    problems = []
    for w in workers:
        for line in w.stderr().splitlines():
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line:
                problems.append(line)
    return problems


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# ---------------------------------------------------------------------------- 1. kill storm

STORM_WORKERS = 3
STORM_KILLS = scaled(10)
"""SIGKILLs: 10 times $FLOWCRAFT_CHAOS_SCALE."""
KILL_GAP_S = (1.0, 3.0)
"""Seconds between a replacement being ready and the next kill (uniform)."""
STORM_SLEEP_S = 0.25
"""Each node's sleep: a run takes >= 1 s, so ~20 jobs are in flight at the load's pace."""
STORM_PACE_S = 0.05
ALLOWANCE_S = 1.0
"""Added to the bound for this machine (2 cores, 3-4 worker processes, Redis and the test):
after its requeue a job waits for a claim (woken by the queue's marker) and its node's first
line; a replacement worker's interpreter start takes a core for ~1 s meanwhile, and a worker's
loop or Redis can be descheduled for a few hundred ms. None of it is in the 2L + I model."""


def storm_settings() -> tuple[int, float]:
    """(lease ms, stalled interval s): short ones for CI, the defaults for the long run."""
    if chaos_scale() >= 10:
        return DEFAULT_LEASE_MS, DEFAULT_STALLED_INTERVAL_S
    return 2000, 1.0


async def test_kill_storm_recovery_percentiles(
    redis_url: str, record_property: Callable[[str, object], None]
) -> None:
    """STORM_WORKERS anonymous worker processes with lease L and stalled interval I (2 s / 1 s,
    at scale >= 10 the defaults 10 s / 5 s) serve `relay` runs that a client starts all along
    (one per 50 ms); every 1-3 s a random worker gets SIGKILL and a fresh process replaces it.

    For every job a killed worker held (its lock, read right after the kill), recovery = from
    the kill to the job's node starting again in another process. Its lock expires at most L
    after the kill (it was renewed before), the next stalled-jobs pass comes within I, or
    within 2I when the dead worker held the pass's guard key (the others retry an interval
    after they found it taken), and then a worker claims it: L + 2I <= 2L + I. Asserted: the
    p99 stays within 2L + I + ALLOWANCE_S (no lower bound), and every run completes exactly
    once with the right result (module docstring). p50/p99/max and the count are printed and
    recorded (`record_property`), with how many exceeded L + I and the time from each lock's
    expiry (its PTTL read after the kill) to the start again, which is the stalled pass's
    share: up to 2I, not I, when the guard's holder was the one killed (seen at the defaults:
    after-expiry max ~7 s with I = 5 s)."""
    lease_ms, stalled_s = storm_settings()
    lease_s = lease_ms / 1000
    bound = 2 * lease_s + stalled_s + ALLOWANCE_S
    rng = random.Random(20261209)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ends = EndCounter(redis_url)
    workers: list[Worker] = []
    load: Load | None = None
    began = time.monotonic()
    try:

        def spawn() -> Worker:
            w = Worker(redis_url, lease_ms=lease_ms, stalled_s=stalled_s)
            workers.append(w)
            return w

        live = [spawn() for _ in range(STORM_WORKERS)]
        for w in live:
            await w.ready()
        await ends.subscribed()
        load = Load(FlowClient(redis_url, queue_name=QUEUE), lambda i: STORM_SLEEP_S, STORM_PACE_S)
        load.start()
        await asyncio.sleep(1.0)

        # (when, victim, the jobs it held, when their locks expire)
        kills: list[tuple[float, Worker, list[str], dict[str, float]]] = []
        holds: Counter[str] = Counter()
        ran_ahead_count = 0
        for _ in range(STORM_KILLS):
            await asyncio.sleep(rng.uniform(*KILL_GAP_S))
            victim = rng.choice(live)
            killed_at = victim.kill()
            await asyncio.sleep(SETTLE_S)
            held = held_by(read_locks(r), victim.prefix)
            read_at = time.time()
            expiries = {job: read_at + ms / 1000 for job, ms in lock_ttls(r, held).items()}
            holds.update(held)
            ahead = ran_ahead(r, victim.pid, held)
            holds.update(ahead)
            ran_ahead_count += len(ahead)
            kills.append((killed_at, victim, held, expiries))
            live.remove(victim)
            replacement = spawn()
            live.append(replacement)
            await replacement.ready()
        await asyncio.sleep(1.0)
        await load.stop()
        acked = dict(load.acked)

        pending = set(acked)

        def all_ended() -> bool:
            views = read_runs(r, pending)
            pending.difference_update(run for run, v in views.items() if v[0] in TERMINAL)
            return not pending

        try:
            await wait_until(all_ended, bound + 60, "every run to end")
        except AssertionError as exc:
            stuck = read_runs(r, sorted(pending)[:10])
            raise AssertionError(f"{exc}: {len(pending)} runs still live, e.g. {stuck}") from None

        recoveries: list[float] = []
        after_expiry: list[float] = []  # from the lock's expiry to the start again
        never: list[tuple[str, int]] = []
        fenced: list[tuple[str, int]] = []
        for killed_at, victim, held, expiries in kills:
            for job in held:
                again = restart_time(r, job, killed_at, victim.pid)
                if again is None:
                    never.append((job, victim.pid))
                    continue
                recoveries.append(again - killed_at)
                after_expiry.append(again - expiries[job])
                out = committed_output(r, job)
                if out is None or out["pid"] == victim.pid:
                    fenced.append((job, victim.pid))
        wall = time.monotonic() - began
        assert recoveries, f"no kill hit a job in flight: {[len(k[2]) for k in kills]}"
        p50, p99, worst = (
            percentile(recoveries, 50),
            percentile(recoveries, 99),
            max(recoveries),
        )
        report = {
            "chaos_scale": chaos_scale(),
            "lease_s": lease_s,
            "stalled_interval_s": stalled_s,
            "bound_s": bound,
            "kills": len(kills),
            "runs": len(acked),
            "recovery_count": len(recoveries),
            "ran_ahead_of_held": ran_ahead_count,
            "recovery_p50_s": round(p50, 3),
            "recovery_p99_s": round(p99, 3),
            "recovery_max_s": round(worst, 3),
            "recovery_over_L_plus_I": sum(1 for t in recoveries if t > lease_s + stalled_s),
            "after_lock_expiry_p50_s": round(percentile(after_expiry, 50), 3),
            "after_lock_expiry_p99_s": round(percentile(after_expiry, 99), 3),
            "after_lock_expiry_max_s": round(max(after_expiry), 3),
            "wall_s": round(wall, 1),
        }
        for key, value in report.items():
            record_property(key, value)
        print(
            f"\n[kill storm] L={lease_s:g}s I={stalled_s:g}s kills={len(kills)} "
            f"runs={len(acked)} held per kill={[len(k[2]) for k in kills]} "
            f"recovery n={len(recoveries)} p50={p50:.3f}s p99={p99:.3f}s max={worst:.3f}s "
            f"(bound {bound:g}s) wall={wall:.1f}s; {report}"
        )

        assert not never, f"jobs of killed workers never started again: {never[:10]}"
        assert not fenced, f"jobs of killed workers committed by the dead holder: {fenced[:10]}"
        check_runs(r, acked, ends.snapshot(), holds, workers)
        problems = worker_problems(workers)
        assert not problems, "workers logged errors:\n" + "\n".join(problems[:20])
        assert len(recoveries) >= len(kills), (
            f"the kills hit too few jobs in flight to measure anything: {report}"
        )
        assert p99 <= bound, f"recovery p99 {p99:.3f} s > 2L + I + {ALLOWANCE_S} s: {report}"
    finally:
        if load is not None:
            load.cancel()
        ends.close()
        for w in workers:
            w.kill()
        r.close()


# ---------------------------------------------------------------------------- 2. crash loop

LOOP_LEASE_MS = 30_000
LOOP_STALLED_S = 30.0
LOOP_KILLS = scaled(6)
"""Incarnations killed: 6 times $FLOWCRAFT_CHAOS_SCALE (one more is started and kept)."""
LOOP_RUNS_PER_LIFE = 3
"""Runs started as each incarnation is ready: it always has jobs to hold when it dies."""
LOOP_SLOTS = LOOP_RUNS_PER_LIFE * LOOP_KILLS + 8
"""Concurrency: a run has one job in flight at a time, so every released job gets a slot at
once and the restart bound measures the release, not a queue behind full slots."""
LIFE_AFTER_CLAIM_S = (0.3, 1.2)
"""How long an incarnation lives on once it holds jobs (uniform): far under the interval."""
RELEASE_BOUND_S = 5.0
"""How soon after an incarnation is ready the jobs the previous one held must have started
again: far under the 30 s lease, which is all an anonymous worker could wait for."""
MIN_LEFT_PTTL_MS = LOOP_LEASE_MS - 5_000
"""What a dead incarnation's locks must still have to live when they are read: the lease
cannot be what frees them in time."""


async def test_named_crash_loop_releases_leases_at_start(
    redis_url: str, record_property: Callable[[str, object], None]
) -> None:
    """A worker named `w1` (`worker_name="w1"`, the daemon's `--name w1`) with a 30 s lease and a
    30 s stalled interval, killed with SIGKILL and started again under the same name
    LOOP_KILLS times, each time 0.3-1.2 s after it holds jobs: every incarnation dies long
    before a lease could expire or the periodic stalled check could run again.

    What recovers the jobs is the release at start: a named worker's first stalled pass (right
    at start, ignoring the guard key) requeues every job whose lease carries `w1@` but not its
    own incarnation. Asserted for every restart: the dead incarnation's locks still had more
    than 25 s to live when read (so nothing else could free them), the new incarnation logs
    that it returned exactly that many jobs, and it starts each of them again within
    RELEASE_BOUND_S of being ready. At the end every run completes exactly once with the right
    result.

    The control, reasoned and not run: with anonymous workers the same jobs would stay locked
    for the whole 30 s lease and then wait for a stalled pass (up to 30 s more), so the
    RELEASE_BOUND_S wait above would time out; a test of that slow path would spend a minute
    proving a timeout and is left out.
    """
    rng = random.Random(20261210)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ends = EndCounter(redis_url)
    workers: list[Worker] = []
    began = time.monotonic()
    client = FlowClient(redis_url, queue_name=QUEUE)
    load = Load(client, lambda i: 0.5 + 0.1 * (i % 5), pace_s=0.0)
    try:
        await ends.subscribed()
        holds: Counter[str] = Counter()
        from_ready: list[float] = []
        from_spawn: list[float] = []
        from_kill: list[float] = []
        lives: list[float] = []
        released_counts: list[int] = []
        previous: tuple[float, Worker, list[str]] | None = None
        for life in range(LOOP_KILLS + 1):
            w = Worker(
                redis_url,
                lease_ms=LOOP_LEASE_MS,
                stalled_s=LOOP_STALLED_S,
                concurrency=LOOP_SLOTS,
                name="w1",
            )
            workers.append(w)
            await w.ready()
            assert w.prefix.startswith("w1@"), w.prefix
            if previous is not None:
                killed_at, dead, held = previous

                def restarted(
                    held: list[str] = held, killed_at: float = killed_at, dead: Worker = dead
                ) -> list[float] | None:
                    times = [restart_time(r, job, killed_at, dead.pid) for job in held]
                    return None if None in times else cast(list[float], times)

                try:
                    times = await wait_until(
                        restarted,
                        RELEASE_BOUND_S,
                        f"incarnation {life} to run again the {len(held)} jobs {dead.prefix} held",
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; its log:\n{w.stderr()}") from None
                assert isinstance(times, list)
                from_ready += [t - w.ready_at for t in times]
                from_spawn += [t - w.spawned_at for t in times]
                from_kill += [t - killed_at for t in times]
                # its first stalled pass returned exactly the jobs the dead one held
                await wait_until(
                    lambda w=w: "stalled jobs:" in w.stderr(), 5, "the release to be logged"
                )
                m = re.search(r"stalled jobs: (\d+) returned", w.stderr())
                assert m is not None
                released_counts.append(int(m.group(1)))
                assert int(m.group(1)) == len(held), (w.stderr(), held)
            if life == LOOP_KILLS:
                break  # the last incarnation stays and finishes the runs

            await load.start_some(LOOP_RUNS_PER_LIFE)
            await wait_until(
                lambda w=w: held_by(read_locks(r), w.prefix), 10, f"incarnation {life} to claim"
            )
            await asyncio.sleep(rng.uniform(*LIFE_AFTER_CLAIM_S))
            killed_at = w.kill()
            lives.append(killed_at - w.spawned_at)
            await asyncio.sleep(SETTLE_S)
            held = held_by(read_locks(r), w.prefix)
            assert held, f"incarnation {life} held no job when it died"
            left = lock_ttls(r, held)
            assert all(ms > MIN_LEFT_PTTL_MS for ms in left.values()), left
            holds.update(held)
            holds.update(ran_ahead(r, w.pid, held))
            previous = (killed_at, w, held)

        acked = dict(load.acked)
        pending = set(acked)

        def all_ended() -> bool:
            views = read_runs(r, pending)
            pending.difference_update(run for run, v in views.items() if v[0] in TERMINAL)
            return not pending

        await wait_until(all_ended, 60, "every run to end")
        assert max(lives) < LOOP_STALLED_S, lives  # trivially: what makes this a crash loop
        check_runs(r, acked, ends.snapshot(), holds, workers)
        problems = worker_problems(workers)
        assert not problems, "workers logged errors:\n" + "\n".join(problems[:20])

        wall = time.monotonic() - began
        report = {
            "chaos_scale": chaos_scale(),
            "incarnations": len(workers),
            "runs": len(acked),
            "released": sum(released_counts),
            "incarnation_life_max_s": round(max(lives), 3),
            "restart_after_ready_max_s": round(max(from_ready), 3),
            "restart_after_spawn_max_s": round(max(from_spawn), 3),
            "restart_after_kill_p50_s": round(percentile(from_kill, 50), 3),
            "restart_after_kill_max_s": round(max(from_kill), 3),
            "wall_s": round(wall, 1),
        }
        for key, value in report.items():
            record_property(key, value)
        print(f"\n[named crash loop] {report} released per restart={released_counts}")
    finally:
        ends.close()
        for w in workers:
            w.kill()
        r.close()
