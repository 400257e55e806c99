"""Benchmark harness: worker subprocesses, client-side drivers, and the per-round measurements.

Process layout (the same for every implementation): Redis (a private `RedisServer`), ONE worker
process (`worker_main.py`, a subprocess) and the client (this process) that enqueues the runs and
waits for them. Client and worker never share an event loop; on the 2-core box the three
processes share 2 cores, and every implementation is measured with that same layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from workloads import SHAPES, final_value

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "worker_main.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
IMPLS = ("ours", "bullmq", "flowcraft", "arq", "baseline")
IMPL_SHAPES = {  # arq has no fan-in primitive: it runs the chains only
    "ours": ("chain10", "fan10", "fan100"),
    "bullmq": ("chain10", "fan10", "fan100"),
    # the TypeScript Flowcraft with its BullMQ adapter (benches/ts), its runs started by its
    # client protocol (SPEC section 5)
    "flowcraft": ("chain10", "fan10", "fan100"),
    "arq": ("chain10",),
    # the minimal batched Redis loop (SPEC §8 reference, worker_main.run_baseline): chains only
    "baseline": ("chain10",),
}


ROUND_TRIP_METHODS = ("claim", "wait_for_work", "commit", "retry", "renew", "requeue_stalled")
"""Methods of flowcraft's native Queue that each cost one Redis round trip (one pipeline). Others
the worker calls (track, untrack, lease_events, start_heartbeat) are local; since the lease
heartbeat moved into Rust its renew round trips (one per lease_ms/3 = 10 s) are not seen here."""


def code_identity() -> dict[str, str]:
    """Which build was measured: HEAD (read-only git) and hashes of the files that matter."""
    import hashlib

    out: dict[str, str] = {}
    root = HERE.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["git_head"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    import flowcraft_fast

    pkg = Path(flowcraft_fast.__file__).resolve().parent
    for rel in ("_core.abi3.so", "distributed/worker.py", "distributed/client.py"):
        path = pkg / rel
        if path.exists():
            out[f"sha256:{rel}"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def available(impl: str) -> bool:
    if impl == "flowcraft":  # needs Node.js and the npm packages (installed on first use)
        import tspeer

        return tspeer.ensure_installed() is not None
    mod = {"ours": "flowcraft_fast", "bullmq": "bullmq", "arq": "arq", "baseline": "hiredis"}[impl]
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for dist in ("flowcraft-fast", "bullmq", "arq", "redis", "hiredis", "pytest-benchmark"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "absent"
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


# --------------------------------------------------------------------------- worker process


class WorkerProc:
    """`worker_main.py` as a child process, with a line protocol on stdin/stdout."""

    def __init__(self, kind: str, url: str, queue: str, concurrency: int = 64) -> None:
        self.kind, self.url, self.queue, self.concurrency = kind, url, queue, concurrency
        self.proc: subprocess.Popen[str] | None = None
        self.bye: dict[str, Any] | None = None

    def start(self, timeout: float = 30.0) -> WorkerProc:
        if self.kind == "flowcraft":  # the TypeScript worker: its concurrency is fixed at 5
            import tspeer

            command = ["node", str(tspeer.TS_DIR / "worker.mjs"), self.url, self.queue]
        else:
            command = [sys.executable, str(WORKER_SCRIPT), self.kind, self.url, self.queue,
                       str(self.concurrency)]  # fmt: skip
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True,
            bufsize=1,
        )  # fmt: skip
        self._expect("READY", timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _expect(self, tag: str, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.kind} worker: no {tag} within {timeout} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.kind} worker exited (code {self.proc.poll()})")
            if line.startswith(tag + " "):
                parsed: dict[str, Any] = json.loads(line[len(tag) + 1 :])
                return parsed

    def stats(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self._expect("STATS", 10)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
                self.proc = proc
                with contextlib.suppress(TimeoutError, RuntimeError):
                    self.bye = self._expect("BYE", 30)
                self.proc = None
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            proc.kill()
            proc.wait()

    def __enter__(self) -> WorkerProc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- client drivers


ENQUEUE_CONCURRENCY = 32
"""At most this many enqueue calls in flight from the client, for every implementation (arq's
redis-py pool refuses 200 concurrent WATCH/MULTI enqueues with "Too many connections")."""


async def bounded(coros: Any, limit: int = ENQUEUE_CONCURRENCY) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


class Driver:
    """Client side of one implementation: enqueue `runs` runs of a shape, wait for all."""

    impl = ""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def batch(self, shape: str, runs: int, timeout: float) -> None:
        raise NotImplementedError

    async def one(self, shape: str, timeout: float) -> None:
        await self.batch(shape, 1, timeout)


class OursDriver(Driver):
    impl = "ours"

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue

    async def open(self) -> None:
        from flowcraft_fast.distributed.client import FlowClient

        self.client = FlowClient(self.url, queue_name=self.queue)

    async def batch(self, shape: str, runs: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ids = await bounded(self.client.start(shape, {}) for _ in range(runs))
        left = max(0.1, deadline - time.monotonic())
        results = await asyncio.gather(*(self.client.wait(rid, timeout=left) for rid in ids))
        want = SHAPES[shape]["expect"]
        for res in results:
            if res.status != "completed" or final_value(shape, res.context) != want:
                raise AssertionError(f"ours {shape}: bad result {res.status} {res.errors}")


class _DoneListDriver(Driver):
    """Peers: the run's last step pushes "<run>:<value>" to bench:<queue>:done."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.done = f"bench:{queue}:done"

    async def open(self) -> None:
        import redis.asyncio as aioredis

        self.r = aioredis.from_url(self.url)

    async def close(self) -> None:
        await self.r.aclose()

    async def enqueue(self, shape: str, run: str) -> None:
        raise NotImplementedError

    async def batch(self, shape: str, runs: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        tag = uuid.uuid4().hex[:8]
        await bounded(self.enqueue(shape, f"{tag}-{i}") for i in range(runs))
        want = str(SHAPES[shape]["expect"])
        got = 0
        while got < runs:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.impl} {shape}: {got}/{runs} runs done in {timeout} s")
            item = await self.r.blpop([self.done], timeout=min(left, 5.0))
            if item is None:
                continue
            run, value = item[1].decode().rsplit(":", 1)
            if not run.startswith(tag):
                continue  # a straggler from an earlier round
            if value != want:
                raise AssertionError(f"{self.impl} {shape}: run {run} gave {value}, want {want}")
            got += 1


class BullmqDriver(_DoneListDriver):
    impl = "bullmq"

    async def open(self) -> None:
        await super().open()
        from bullmq import Queue
        from worker_main import BULLMQ_JOB_OPTS

        self.opts = BULLMQ_JOB_OPTS
        self.q = Queue(self.queue, {"connection": self.url})

    async def close(self) -> None:
        await self.q.close()
        await super().close()

    async def enqueue(self, shape: str, run: str) -> None:
        data: dict[str, Any] = {"shape": shape, "run": run}
        data.update({"k": 0, "v": 0} if shape == "chain10" else {"role": "s"})
        await self.q.add("step", data, self.opts)


class ArqDriver(_DoneListDriver):
    impl = "arq"

    async def open(self) -> None:
        await super().open()
        from arq.connections import RedisSettings, create_pool

        self.pool = await create_pool(RedisSettings.from_dsn(self.url))

    async def close(self) -> None:
        await self.pool.aclose()
        await super().close()

    async def enqueue(self, shape: str, run: str) -> None:
        if shape != "chain10":
            raise ValueError("arq runs chain10 only")
        await self.pool.enqueue_job("step", run, 0, 0, _queue_name=self.queue)


class BaselineDriver(_DoneListDriver):
    """The minimal batched Redis loop: a run starts with one LPUSH of its first job."""

    impl = "baseline"

    async def open(self) -> None:
        await super().open()
        from worker_main import baseline_keys

        self.wait = baseline_keys(self.queue)[0]

    async def enqueue(self, shape: str, run: str) -> None:
        if shape != "chain10":
            raise ValueError("the baseline runs chain10 only")
        await self.r.lpush(self.wait, f"{run}|0|0")


class FlowcraftDriver(Driver):
    """The TypeScript Flowcraft's client protocol (its reference client, done for many runs at
    once): write the run's context (JSON fields, with blueprintId and blueprintVersion) to
    `workflow:state:<runId>`, add one `executeNode` job per start node, then read
    `workflow:status:<runId>` until it appears (it is not published, so this polls every 2 ms
    with one MGET for all the runs still out)."""

    impl = "flowcraft"
    START = {"chain10": "n0", "fan10": "s", "fan100": "s"}

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue

    async def open(self) -> None:
        import redis.asyncio as aioredis
        from bullmq import Queue

        self.r = aioredis.from_url(self.url)
        self.q = Queue(self.queue, {"connection": self.url})

    async def close(self) -> None:
        await self.q.close()
        await self.r.aclose()

    async def start(self, shape: str, run: str) -> None:
        await self.r.hset(
            f"workflow:state:{run}",
            mapping={"blueprintId": json.dumps(shape), "blueprintVersion": "null"},
        )
        await self.q.add(
            "executeNode", {"runId": run, "blueprintId": shape, "nodeId": self.START[shape]}
        )

    async def batch(self, shape: str, runs: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        tag = uuid.uuid4().hex[:8]
        ids = [f"{tag}-{i}" for i in range(runs)]
        await bounded(self.start(shape, run) for run in ids)
        out = set(ids)
        while out:
            if time.monotonic() > deadline:
                raise TimeoutError(f"flowcraft {shape}: {runs - len(out)}/{runs} done")
            pending = sorted(out)
            values = await self.r.mget([f"workflow:status:{run}" for run in pending])
            for run, raw in zip(pending, values, strict=True):
                if raw is None:
                    continue
                result = json.loads(raw)
                context = (result.get("payload") or {}).get("context") or {}
                # its fan-in node gets one predecessor's value, not the mapping (a known
                # defect), so only the chain's value can be checked
                if result.get("status") != "completed" or (
                    shape == "chain10" and context.get("_outputs.n9") != 10
                ):
                    raise AssertionError(f"flowcraft {shape}: run {run} ended {result}")
                out.discard(run)
            if out:
                await asyncio.sleep(0.002)


def make_driver(impl: str, url: str, queue: str) -> Driver:
    cls = {"ours": OursDriver, "bullmq": BullmqDriver, "arq": ArqDriver,
           "baseline": BaselineDriver, "flowcraft": FlowcraftDriver}[impl]  # fmt: skip
    return cls(url, queue)


# --------------------------------------------------------------------------- measurements


def redis_cpu_s(admin: redis.Redis) -> float:
    info = admin.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def commandstats(admin: redis.Redis) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in admin.info("commandstats").items():
        name = key.removeprefix("cmdstat_")
        out[name] = int(value["calls"])
    return out


@dataclass
class Session:
    """One implementation's worker + client against a Redis, for a series of rounds."""

    impl: str
    url: str
    concurrency: int = 64
    queue: str = field(default_factory=lambda: "bench" + uuid.uuid4().hex[:6])

    def __post_init__(self) -> None:
        self.admin = redis.Redis.from_url(self.url)
        self.loop = asyncio.new_event_loop()
        self.worker = WorkerProc(self.impl, self.url, self.queue, self.concurrency)
        self.driver = make_driver(self.impl, self.url, self.queue)

    def start(self) -> Session:
        self.worker.start()
        self.loop.run_until_complete(self.driver.open())
        return self

    def close(self) -> None:
        try:
            self.loop.run_until_complete(asyncio.wait_for(self.driver.close(), 10))
        except Exception:
            pass
        finally:
            self.worker.stop()
            self.loop.close()
            self.admin.close()

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_batch(self, shape: str, runs: int, timeout: float = 300.0) -> None:
        self.loop.run_until_complete(self.driver.batch(shape, runs, timeout))

    def measure(self, shape: str, runs: int, timeout: float = 300.0) -> dict[str, Any]:
        """One round: `runs` runs of `shape` in flight at once. Counters are reset / read
        outside the timed window."""
        steps = runs * SHAPES[shape]["steps"]
        self.admin.config_resetstat()
        w_stats0 = self.worker.stats() if self.impl in ("ours", "baseline") else None
        r_cpu0, w_cpu0, c_cpu0 = redis_cpu_s(self.admin), self.worker.cpu_s(), time.process_time()
        t0 = time.perf_counter()
        self.run_batch(shape, runs, timeout)
        elapsed = time.perf_counter() - t0
        r_cpu1, w_cpu1, c_cpu1 = redis_cpu_s(self.admin), self.worker.cpu_s(), time.process_time()
        cmds = commandstats(self.admin)
        for own in [k for k in cmds if k.startswith(("config", "info"))]:
            del cmds[own]  # our own RESETSTAT / INFO reads
        total_cmds = sum(cmds.values())
        out: dict[str, Any] = {
            "impl": self.impl, "shape": shape, "runs": runs, "steps": steps,
            "elapsed_s": elapsed, "steps_per_s": steps / elapsed,
            "redis_cmds_per_step": total_cmds / steps,
            "evalsha_per_step": cmds.get("evalsha", 0) / steps,
            "redis_cmds_by_name_per_step": {
                k: round(v / steps, 3) for k, v in sorted(cmds.items(), key=lambda kv: -kv[1])
            },
            "redis_cpu_us_per_step": (r_cpu1 - r_cpu0) * 1e6 / steps,
            "worker_cpu_us_per_step": (w_cpu1 - w_cpu0) * 1e6 / steps,
            "client_cpu_us_per_step": (c_cpu1 - c_cpu0) * 1e6 / steps,
            "worker_rss_kb": proc_rss_kb(self.worker.pid),
        }  # fmt: skip
        if w_stats0 is not None and self.impl == "baseline":
            w1 = self.worker.stats()
            rts = w1.get("round_trips", 0) - w_stats0.get("round_trips", 0)
            out["worker_rt_per_step"] = rts / steps  # pipelines + blocking pops, all counted
        elif w_stats0 is not None:
            w1 = self.worker.stats()
            calls = {k: v - w_stats0["calls"].get(k, 0) for k, v in w1["calls"].items()}
            calls = {k: v for k, v in calls.items() if v and k in ROUND_TRIP_METHODS}
            claims = w1["claims"] - w_stats0["claims"]
            batches = w1["commit_batches"] - w_stats0["commit_batches"]
            renews = calls.get("renew", 0)
            out["worker_calls"] = calls
            out["worker_rt_per_step"] = (claims + batches + renews) / steps
            out["worker_rt_incl_wait_per_step"] = sum(calls.values()) / steps
            out["jobs_per_claim"] = (w1["claimed"] - w_stats0["claimed"]) / max(1, claims)
            out["jobs_per_commit_batch"] = (w1["committed"] - w_stats0["committed"]) / max(
                1, batches
            )
        return out

    def latency(self, shape: str, runs: int, timeout: float = 30.0) -> dict[str, Any]:
        """`runs` runs one after the other; the wall time of each (enqueue -> result)."""
        samples = []
        before = self.worker.stats() if self.impl == "ours" else None
        for _ in range(runs):
            t0 = time.perf_counter()
            self.loop.run_until_complete(self.driver.one(shape, timeout))
            samples.append(time.perf_counter() - t0)
        out: dict[str, Any] = {"impl": self.impl, "shape": shape, "runs": runs,
                               **percentiles(samples)}  # fmt: skip
        if before is not None:
            after = self.worker.stats()["calls"]
            was = before["calls"]
            out["worker_round_trips_per_run"] = {
                k: round((v - was.get(k, 0)) / runs, 2)
                for k, v in after.items()
                if k in ROUND_TRIP_METHODS and v > was.get(k, 0)
            }
        return out


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    qs = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50_ms": qs[49], "p99_ms": qs[98], "min_ms": ms[0], "max_ms": ms[-1]}


def worker_only_cost(url: str, shape: str, runs: int, concurrency: int = 64,
                     timeout: float = 120.0) -> dict[str, Any]:  # fmt: skip
    """Ours only: Redis commands / CPU per step spent by the WORKER alone (no client traffic).

    A first worker publishes the blueprints and stops; the client starts `runs` runs (counted
    separately as the client's start cost); then a fresh worker drains them while this process
    polls LLEN wait/active every 20 ms (those polls are subtracted from the counts)."""
    queue = "cost" + uuid.uuid4().hex[:6]
    admin = redis.Redis.from_url(url)
    steps = runs * SHAPES[shape]["steps"]
    wait_key, active_key = f"bull:{queue}:wait", f"bull:{queue}:active"
    with WorkerProc("ours", url, queue, concurrency):
        pass  # publishes the blueprints
    loop = asyncio.new_event_loop()
    try:
        driver = OursDriver(url, queue)
        loop.run_until_complete(driver.open())
        admin.config_resetstat()
        r0 = redis_cpu_s(admin)

        async def start_all() -> None:
            await bounded(driver.client.start(shape, {}) for _ in range(runs))

        loop.run_until_complete(start_all())
        start_cmds = commandstats(admin)
        start_cpu = redis_cpu_s(admin) - r0
    finally:
        loop.close()
    worker = WorkerProc("ours", url, queue, concurrency)
    admin.config_resetstat()
    r0 = redis_cpu_s(admin)
    polls = 0
    try:
        worker.start()
        w0, t0 = worker.cpu_s(), time.perf_counter()
        deadline = time.monotonic() + timeout
        while True:
            polls += 1
            pending = sum(
                admin.pipeline(transaction=False).llen(wait_key).llen(active_key).execute()
            )
            if pending == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker-only cost: {pending} jobs left after {timeout} s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        w_cpu = worker.cpu_s() - w0
        stats = worker.stats()
        r_cpu = redis_cpu_s(admin) - r0
        cmds = commandstats(admin)
    finally:
        worker.stop()
        admin.close()
    cmds["llen"] = cmds.get("llen", 0) - 2 * polls
    for own in [k for k in cmds if k.startswith(("config", "info")) or cmds[k] <= 0]:
        del cmds[own]
    for own in [k for k in start_cmds if k.startswith(("config", "info"))]:
        del start_cmds[own]
    calls = {k: v for k, v in stats["calls"].items() if k in ROUND_TRIP_METHODS}
    return {
        "shape": shape, "runs": runs, "steps": steps,
        "worker_redis_cmds_per_step": sum(cmds.values()) / steps,
        "worker_evalsha_per_step": cmds.get("evalsha", 0) / steps,
        "worker_redis_cmds_by_name_per_step": {
            k: round(v / steps, 3) for k, v in sorted(cmds.items(), key=lambda kv: -kv[1])
        },
        "worker_redis_cpu_us_per_step": r_cpu * 1e6 / steps,
        "worker_cpu_us_per_step": w_cpu * 1e6 / steps,
        "drain_steps_per_s_incl_startup": steps / elapsed,
        "worker_calls": calls,
        "worker_rt_per_step": (stats["claims"] + stats["commit_batches"] + calls.get("renew", 0))
        / steps,
        "client_start_cmds_per_run": sum(start_cmds.values()) / runs,
        "client_start_cmds_by_name_per_run": {k: v / runs for k, v in start_cmds.items()},
        "client_start_redis_cpu_us_per_run": start_cpu * 1e6 / runs,
    }  # fmt: skip


# --------------------------------------------------------------------------- reconciler


class ReconcilerBench:
    """Reconciler keys per second (SPEC §8), in this process, with no worker consuming.

    `seed(runs, lost)` publishes the blueprints (`BullMQAdapter.publish`, no worker), starts
    `runs` chain10 runs with `FlowClient.start` (each enqueues its n0 job), and, when `lost`,
    deletes those start jobs (their hashes and the wait list) so every run is stalled with its
    only fired node lost. `timed_pass()` then runs one `create_bullmq_reconciler(adapter=...,
    stalled_threshold_seconds=0).run()` and measures it: with lost jobs every run is re-enqueued;
    with the jobs still queued (healthy but idle runs) the pass only scans."""

    def __init__(self, url: str) -> None:
        import logging

        self.url = url
        self.admin = redis.Redis.from_url(url)
        self.loop = asyncio.new_event_loop()
        # One WARNING line per re-enqueued run would go to stderr: silenced for the measurement.
        logging.getLogger("flowcraft_fast.reconciler").setLevel(logging.ERROR)
        self.seeded: dict[str, Any] = {}

    def close(self) -> None:
        self.loop.close()
        self.admin.close()

    def __enter__(self) -> ReconcilerBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def seed(self, runs: int, lost: bool) -> None:
        from workloads import blueprints, step, sum_inputs

        from flowcraft_fast import FlowRuntime
        from flowcraft_fast.distributed.adapter import BullMQAdapter
        from flowcraft_fast.distributed.client import FlowClient

        queue = "rec" + uuid.uuid4().hex[:6]
        rt = FlowRuntime(blueprints=blueprints(), registry={"step": step, "sum": sum_inputs})
        adapter = BullMQAdapter(runtime_options=rt.options, connection=self.url, queue_name=queue)
        client = FlowClient(self.url, queue_name=queue)

        async def go() -> None:
            await adapter.publish()
            batch = 500  # start_many: one round trip per batch, seeding is not what is timed
            for at in range(0, runs, batch):
                await client.start_many([("chain10", {})] * min(batch, runs - at))

        t0 = time.perf_counter()
        self.loop.run_until_complete(go())
        seed_s = time.perf_counter() - t0
        wait_key = f"bull:{queue}:wait"
        ids = [
            j.decode() if isinstance(j, bytes) else j for j in self.admin.lrange(wait_key, 0, -1)
        ]
        if len(ids) != runs:
            raise AssertionError(f"seed: {len(ids)} start jobs queued for {runs} runs")
        if lost:
            pipe = self.admin.pipeline(transaction=False)
            for jid in ids:
                pipe.delete(f"bull:{queue}:{jid}")
            pipe.delete(wait_key)
            pipe.execute()
        self.seeded = {"queue": queue, "adapter": adapter, "runs": runs, "lost": lost,
                       "wait_key": wait_key, "seed_s": seed_s}  # fmt: skip

    def timed_pass(self) -> dict[str, Any]:
        from flowcraft_fast import create_bullmq_reconciler

        sd, self.seeded = self.seeded, {}
        if not sd:
            raise RuntimeError("seed() first")
        reconciler = create_bullmq_reconciler(adapter=sd["adapter"], stalled_threshold_seconds=0)
        runs = sd["runs"]
        self.admin.config_resetstat()
        r0, c0 = redis_cpu_s(self.admin), time.process_time()
        t0 = time.perf_counter()
        stats = self.loop.run_until_complete(reconciler.run())
        elapsed = time.perf_counter() - t0
        r_cpu, c_cpu = redis_cpu_s(self.admin) - r0, time.process_time() - c0
        cmds = commandstats(self.admin)
        for own in [k for k in cmds if k.startswith(("config", "info"))]:
            del cmds[own]
        queued = self.admin.llen(sd["wait_key"])
        want_reconciled = runs if sd["lost"] else 0
        if (stats.scanned_keys, stats.reconciled_runs, stats.failed_runs, queued) != (
            runs,
            want_reconciled,
            0,
            runs,
        ):
            raise AssertionError(f"reconciler pass over {runs} runs (lost={sd['lost']}): "
                                 f"{stats}, {queued} jobs queued after")  # fmt: skip
        scanned = max(1, stats.scanned_keys)
        return {
            "case": "lost" if sd["lost"] else "idle", "runs": runs,
            "seed_s": sd["seed_s"], "elapsed_s": elapsed,
            "scanned": stats.scanned_keys, "stalled": stats.stalled_runs,
            "reconciled": stats.reconciled_runs, "failed": stats.failed_runs,
            "scanned_per_s": stats.scanned_keys / elapsed,
            "reconciled_per_s": stats.reconciled_runs / elapsed,
            "redis_cmds_per_run": sum(cmds.values()) / scanned,
            "redis_cmds_by_name_per_run": {
                k: round(v / scanned, 3) for k, v in sorted(cmds.items(), key=lambda kv: -kv[1])
            },
            "redis_cpu_us_per_run": r_cpu * 1e6 / scanned,
            "client_cpu_us_per_run": c_cpu * 1e6 / scanned,
        }  # fmt: skip

    def measure(self, runs: int, lost: bool) -> dict[str, Any]:
        self.admin.flushall()
        self.seed(runs, lost)
        return self.timed_pass()
