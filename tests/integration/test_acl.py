"""The minimal ACL users of tests/acl.py against a real Redis (issue 10).

- docs/security.md shows exactly the `ACL SETUSER` lines tests/acl.py makes;
- the commands the Lua scripts run are exactly the ones granted for them (keys and commands a
  script uses are checked by Redis against the caller's ACL, like any other command);
- a worker user and a client user with non-default prefixes do everything a deployment does
  (serve, start, wait, status, resume, cancel with its stop, RedisContext reads, the
  reconciler in both modes, stalled jobs) and Redis logs no denial but the expected ones;
- the client user cannot work the queue (claim, commit, renew, retry, stalled jobs, wait for
  work, publish blueprints, reconcile, adopt): NOPERM;
- neither user reaches the keys or channels of another queue or key prefix.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from acl import (
    CLIENT_COMMANDS,
    CLIENT_IN_SCRIPTS,
    CLIENT_SCRIPTS,
    CONTEXT_WRITE_COMMANDS,
    DOC_LINES,
    WORKER_COMMANDS,
    WORKER_IN_SCRIPTS,
    WORKER_SCRIPTS,
    client_acl,
    setuser_args,
    setuser_line,
    unexpected_denials,
    user_url,
    worker_acl,
)
from flowcraft_fast import (
    BullMQAdapter,
    FlowClient,
    FlowRuntime,
    NodeContext,
    RedisContext,
    RedisCoordinationStore,
    _core,
    create_bullmq_reconciler,
)
from flowcraft_fast.distributed.connection import open_connection
from flowcraft_fast.distributed.jobs import job_id
from flowcraft_fast.distributed.safety import check_server
from flowcraft_fast.distributed.wire import CommitRequest
from waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "acl-q"
KEY_PREFIX = "tenant-a:"
QUEUE_PREFIX = "tenant-a:bull"
QB = f"{QUEUE_PREFIX}:{QUEUE}:"
WORKER, CLIENT = "acl-worker", "acl-client"
PASSWORD = "acl-test-pw"

CHAIN = {
    "id": "chain",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "b", "uses": "plus"}],
    "edges": [{"source": "a", "target": "b"}],
}
WAITS = {
    "id": "waits",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "w", "uses": "wait"}, {"id": "b", "uses": "plus"}],
    "edges": [{"source": "a", "target": "w"}, {"source": "w", "target": "b"}],
}
LONG = {
    "id": "long",
    "nodes": [{"id": "a", "uses": "one"}, {"id": "nap", "uses": "nap"}],
    "edges": [{"source": "a", "target": "nap"}],
}


async def one(ctx: NodeContext) -> int:
    return 1


async def plus(ctx: NodeContext) -> int:
    return int(ctx.input) + 1


async def nap(ctx: NodeContext) -> str:
    await asyncio.wait_for(ctx.cancelled.wait(), 30)
    return "stopped"


def runtime() -> FlowRuntime:
    return FlowRuntime(
        blueprints=[CHAIN, WAITS, LONG], registry={"one": one, "plus": plus, "nap": nap}
    )


# ------------------------------------------------------------------------- docs and scripts

_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")


def _lib_functions() -> dict[str, str]:
    parts = re.split(r"^local function (\w+)\(", _core.script_source("lib"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def script_commands(name: str) -> set[str]:
    """The commands a script runs: its own `redis.call`s and those of the lib.lua functions
    it calls (lib.lua is prepended to every script, but only what a script calls runs)."""
    lib = _core.script_source("lib")
    full = _core.script_source(name)
    assert full.startswith(lib)
    functions = _lib_functions()
    sources, todo = [full[len(lib) :]], [full[len(lib) :]]
    while todo:
        text = todo.pop()
        for fn, body in functions.items():
            if body not in sources and re.search(rf"\b{fn}\(", text):
                sources.append(body)
                todo.append(body)
    return {c.lower() for text in sources for c in _CALL.findall(text)}


def test_script_commands_are_exactly_the_granted_ones() -> None:
    worker = set().union(*(script_commands(n) for n in WORKER_SCRIPTS))
    client = set().union(*(script_commands(n) for n in CLIENT_SCRIPTS))
    assert worker == set(WORKER_IN_SCRIPTS)
    assert client == set(CLIENT_IN_SCRIPTS)
    # start, cancel and resume need nothing a worker lacks; `wait` needs UNSUBSCRIBE, reading
    # a run's history XRANGE
    assert client <= worker
    assert set(CLIENT_COMMANDS) - set(WORKER_COMMANDS) == {"unsubscribe", "xrange"}
    scripts = set(WORKER_SCRIPTS) | set(CLIENT_SCRIPTS) | {"lib"}
    for path in (ROOT / "rust/src/scripts").glob("*.lua"):
        assert path.stem in scripts, f"{path.name}: which user runs it? (tests/acl.py)"


def test_docs_show_the_rule_sets() -> None:
    page = (ROOT / "docs/security.md").read_text()
    shown = [line.strip() for line in page.splitlines() if line.startswith("ACL SETUSER ")]
    assert shown == [setuser_line(*line) for line in DOC_LINES]
    for command in {*WORKER_COMMANDS, *CLIENT_COMMANDS, *CONTEXT_WRITE_COMMANDS}:
        assert f"`{command}`" in page, f"docs/security.md does not say why {command}"
    readme = (ROOT / "README.md").read_text()
    assert "docs/security.md" in readme


def test_rules_escape_glob_characters(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    prefix = "t*[1]?:"
    try:
        admin.execute_command(*setuser_args("glob-user", PASSWORD, worker_acl("q", prefix)))
        user = redis.Redis.from_url(user_url(redis_url, "glob-user", PASSWORD))
        user.hset(f"{prefix}workflow:state:r", "k", "1")  # the literal prefix: granted
        for near_miss in ("tXYZ1a:", "t1a:", "t*1?:"):  # what the unescaped glob matches
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.hset(f"{near_miss}workflow:state:r", "k", "1")
        user.close()
    finally:
        admin.execute_command("ACL", "DELUSER", "glob-user")
        admin.close()


# ------------------------------------------------------------------------- the two users


@dataclass
class Users:
    admin: redis.Redis
    worker_url: str
    client_url: str

    def store(self, url: str) -> RedisCoordinationStore:
        return RedisCoordinationStore(url, key_prefix=KEY_PREFIX, queue_prefix=QUEUE_PREFIX)


@pytest.fixture
def users(redis_url: str) -> Iterator[Users]:
    admin = redis.Redis.from_url(redis_url)
    rules = worker_acl(QUEUE, KEY_PREFIX, QUEUE_PREFIX, scan=True)
    admin.execute_command(*setuser_args(WORKER, PASSWORD, rules))
    admin.execute_command(
        *setuser_args(CLIENT, PASSWORD, client_acl(QUEUE, KEY_PREFIX, QUEUE_PREFIX))
    )
    admin.execute_command("ACL", "LOG", "RESET")
    try:
        yield Users(
            admin,
            user_url(redis_url, WORKER, PASSWORD),
            user_url(redis_url, CLIENT, PASSWORD),
        )
    finally:
        admin.execute_command("ACL", "DELUSER", WORKER, CLIENT)
        admin.execute_command("ACL", "LOG", "RESET")
        admin.close()


@asynccontextmanager
async def serving(users: Users) -> AsyncIterator[BullMQAdapter]:
    adapter = BullMQAdapter(
        runtime_options=runtime().options,
        coordination_store=users.store(users.worker_url),
        queue_name=QUEUE,
        stalled_interval_seconds=0.2,
        lease_ms=60_000,  # renewed every 20 s: a prompt stop comes from the stops channel
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=5)


def assert_no_denials(users: Users) -> None:
    assert unexpected_denials(users.admin, worker=WORKER) == []


async def test_the_users_do_everything_a_deployment_does(users: Users) -> None:
    client = FlowClient(users.store(users.client_url), queue_name=QUEUE)
    async with serving(users) as adapter:
        done = await client.start("chain", {"given": 1})
        assert (await client.wait(done, timeout=20)).context["b"] == 2
        assert await client.status(done) == "completed"
        ctx = RedisContext(users.client_url, done, key_prefix=KEY_PREFIX)
        assert await ctx.get("b") == 2 and await ctx.has("given")
        assert (await ctx.to_dict())["a"] == 1

        parked = await client.start("waits")
        assert (await client.wait(parked, timeout=20)).status == "awaiting"
        await client.resume(parked, "w", output=41)
        assert (await client.wait(parked, timeout=20)).context["b"] == 42

        long = await client.start("long")
        await wait_until(lambda: adapter.worker.in_flight == 1, 20, "the nap node to run")
        assert await client.cancel(long)
        assert (await client.wait(long, timeout=20)).status == "cancelled"
        # told on the stops channel (a SUBSCRIBE the worker user may make), not by the lease
        await wait_until(lambda: adapter.worker.in_flight == 0, 5, "the nap node to stop")

    # the reconciler, both modes, repairing a run whose job was lost
    lost = await client.start("chain")
    jid = job_id(lost, "a", ())
    users.admin.lrem(f"{QB}wait", 0, jid)
    users.admin.delete(f"{QB}{jid}")
    adapter = BullMQAdapter(
        runtime_options=runtime().options,
        coordination_store=users.store(users.worker_url),
        queue_name=QUEUE,
    )
    for mode in ("scan", "index"):
        reconciler = create_bullmq_reconciler(
            adapter=adapter,
            redis=users.worker_url,
            stalled_threshold_seconds=0,
            key_prefix=f"{KEY_PREFIX}workflow:state:",
            mode=mode,
        )
        stats = await reconciler.run()
        assert stats.failed_runs == 0
        assert stats.reconciled_runs == (1 if mode == "scan" else 0)

    # a claimed job whose lease lapsed goes back to the queue
    queue = users.store(users.worker_url).queue(QUEUE)
    _, _, jobs, _ = await queue.claim(1, 50, "acl-test")
    assert [j.id for j in jobs] == [jid]
    await asyncio.sleep(0.2)
    assert await queue.requeue_stalled(0) == [jid]
    async with serving(users):
        assert (await client.wait(lost, timeout=20)).context["b"] == 2
    assert_no_denials(users)


def denied_by_acl(error: object) -> bool:
    """NOPERM, or what a script answers when a command it runs is denied."""
    return bool(re.search(r"NOPERM|NoPerm|can't run this command", str(error)))


async def test_the_client_user_cannot_work_the_queue(users: Users) -> None:
    worker_queue = users.store(users.worker_url).queue(QUEUE)
    adapter = BullMQAdapter(
        runtime_options=runtime().options,
        coordination_store=users.store(users.worker_url),
        queue_name=QUEUE,
    )
    await adapter.publish()
    client = FlowClient(users.store(users.client_url), queue_name=QUEUE)
    run_id = await client.start("chain")
    _, _, jobs, _ = await worker_queue.claim(1, 30_000, "w")  # a real job, its real token
    (job,) = jobs
    queue = users.store(users.client_url).queue(QUEUE)
    denied: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("claim", lambda: queue.claim(1, 30_000, "thief")),
        ("renew", lambda: queue.renew([(job.id, job.token, run_id)], 30_000)),
        ("requeue_stalled", lambda: queue.requeue_stalled(0)),
        ("wait_for_work", lambda: queue.wait_for_work(0.1)),
        ("publish_blueprints", lambda: queue.publish_blueprints([("chain", "{}")])),
        (
            "reconcile_run",
            lambda: queue.reconcile_run(run_id, [("0|a", job.id, "x.0.y", "{}", "{}", "")]),
        ),
        ("survey_page", lambda: queue.survey_page(0, "", 10)),
    ]
    for what, call in denied:
        with pytest.raises(_core.RedisCommandError) as info:
            await call()
        assert denied_by_acl(info.value), f"{what}: {info.value}"
    (commit,), _ = await queue.commit([CommitRequest(job.id, job.token, run_id, "0|a", "ok", "1")])
    assert commit.code == "error" and denied_by_acl(commit.detail), commit.detail
    (retried,) = await queue.retry([(job.id, job.token, 0, "no", "attempt", "")])
    assert denied_by_acl(retried), retried
    # Redis logged each denial (what the ACL'd runs check there is none of)
    logged = unexpected_denials(users.admin, worker=WORKER)
    for command in ("zrangebyscore", "bzpopmin", "hmset", "pexpire"):
        assert any(f"{CLIENT}: command '{command}' denied" in d for d in logged), logged
    # nothing moved: the job is still the worker's
    assert users.admin.get(f"{QB}{job.id}:lock") == job.token.encode()
    assert users.admin.lrange(f"{QB}active", 0, -1) == [job.id.encode()]


async def test_neither_user_reaches_another_queue_or_prefix(users: Users) -> None:
    admin = users.admin
    admin.hset("tenant-b:workflow:state:r1", "secret", '"b"')
    admin.hset("workflow:state:r1", "secret", '"default"')
    admin.rpush(f"{QUEUE_PREFIX}:other-q:wait", "j1")
    admin.rpush(f"bull:{QUEUE}:wait", "j1")
    for url in (users.worker_url, users.client_url):
        for key_prefix in ("tenant-b:", ""):
            ctx = RedisContext(url, "r1", key_prefix=key_prefix)
            with pytest.raises(_core.RedisCommandError, match="NOPERM"):
                await ctx.get("secret")
        # the same queue name under another queue prefix, another queue under this one
        for queue_prefix, queue_name in (("bull", QUEUE), (QUEUE_PREFIX, "other-q")):
            store = RedisCoordinationStore(url, key_prefix=KEY_PREFIX, queue_prefix=queue_prefix)
            with pytest.raises(_core.RedisCommandError, match="NOPERM"):
                await store.queue(queue_name).get_blueprint("chain")
        user = redis.Redis.from_url(url)
        for key in (
            "tenant-b:workflow:run:r1",
            f"bull:{QUEUE}:wait",
            f"{QUEUE_PREFIX}:other-q:wait",
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.get(key)
        pubsub = user.pubsub()
        for channel in ("tenant-b:workflow:status:r1", f"bull:{QUEUE}:flowcraft:stops"):
            with pytest.raises(redis.exceptions.NoPermissionError):
                pubsub.subscribe(channel)
                pubsub.get_message(timeout=1)
        pubsub.close()
        user.close()
    # the worker user's claim on the other queue is refused before the script runs
    other = RedisCoordinationStore(
        users.worker_url, key_prefix=KEY_PREFIX, queue_prefix=QUEUE_PREFIX
    )
    with pytest.raises(_core.RedisCommandError, match="NOPERM"):
        await other.queue("other-q").claim(1, 1000, "w")
    assert admin.lrange(f"{QUEUE_PREFIX}:other-q:wait", 0, -1) == [b"j1"]


async def test_the_optional_grants(users: Users) -> None:
    """RedisContext writes need `context_writes=True`; the worker's maxmemory-policy check
    needs no `config_get=True`: denied CONFIG, it reads the policy from INFO memory."""
    ctx = RedisContext(users.client_url, "r1", key_prefix=KEY_PREFIX)
    with pytest.raises(_core.RedisCommandError, match="no permissions to run the 'multi'"):
        await ctx.set("k", 1)
    assert [d for d in unexpected_denials(users.admin, worker=WORKER) if "'multi'" in d]
    rules = client_acl(QUEUE, KEY_PREFIX, QUEUE_PREFIX, context_writes=True)
    users.admin.execute_command(*setuser_args(CLIENT, PASSWORD, rules))
    await ctx.set("k", 1)
    await ctx.patch([("set", "j", 2), ("delete", "k")])
    assert await ctx.delete("j")
    assert await ctx.to_dict() == {}

    worker = open_connection(users.worker_url)
    facts = await check_server(worker)
    assert (facts.maxmemory_policy, facts.warnings) == ("noeviction", ())
    rules = worker_acl(QUEUE, KEY_PREFIX, QUEUE_PREFIX, config_get=True)
    users.admin.execute_command(*setuser_args(WORKER, PASSWORD, rules))
    facts = await check_server(worker)
    assert (facts.maxmemory_policy, facts.warnings) == ("noeviction", ())
    assert_no_denials(users)


async def test_history_events_and_webhook_tokens_as_the_users(users: Users) -> None:
    """History on, a wait-for-event run and a webhook token, as the minimal users: the rule
    sets grant the history stream, the event script and the webhook secret."""
    rt = runtime()
    rt.register_blueprint(
        {
            "id": "evented",
            "nodes": [
                {"id": "a", "uses": "one"},
                {"id": "w", "uses": "wait-for-event", "params": {"event": "go"}},
            ],
            "edges": [{"source": "a", "target": "w"}],
        }
    )
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        coordination_store=users.store(users.worker_url),
        queue_name=QUEUE,
        history=50,
    )
    await adapter.start()
    try:
        client = FlowClient(users.store(users.client_url), queue_name=QUEUE, history=50)
        run_id = await client.start("evented", {"given": 1})
        assert (await client.wait(run_id, timeout=20)).status == "awaiting"
        assert await client.send_event(run_id, "go", {"ok": True}) == "delivered"
        assert (await client.wait(run_id, timeout=20)).context["w"] == {"ok": True}
        assert len(await client.history(run_id)) > 3
        assert (await client.replay(run_id))["w"] == {"ok": True}
        assert (await client.webhook_url_token(run_id, "go")).startswith(run_id + ".")
    finally:
        await adapter.close(timeout=5)
    assert_no_denials(users)


async def test_partitioned_rules_serve_a_partitioned_queue(redis_url: str) -> None:
    """`worker_acl(..., partitioned=True)` / `client_acl(..., partitioned=True)`: a queue with 4
    partitions (keys `{acl-q.<p>}`) served and used as the minimal users, with no denial; the
    single-partition rules do not reach the partitions' keys."""
    admin = redis.Redis.from_url(redis_url)
    rules = worker_acl(QUEUE, KEY_PREFIX, QUEUE_PREFIX, partitioned=True)
    admin.execute_command(*setuser_args(WORKER, PASSWORD, rules))
    client_rules = client_acl(QUEUE, KEY_PREFIX, QUEUE_PREFIX, partitioned=True)
    admin.execute_command(*setuser_args(CLIENT, PASSWORD, client_rules))
    admin.execute_command("ACL", "LOG", "RESET")
    users = Users(
        admin, user_url(redis_url, WORKER, PASSWORD), user_url(redis_url, CLIENT, PASSWORD)
    )
    adapter = BullMQAdapter(
        runtime_options=runtime().options,
        coordination_store=users.store(users.worker_url),
        queue_name=QUEUE,
        partitions=4,
    )
    try:
        await adapter.start()
        client = FlowClient(users.store(users.client_url), queue_name=QUEUE)
        await client.queues()
        layout = client.layout
        assert layout is not None and layout.count == 4
        # three runs in each partition (random ids could leave one out)
        pool = [f"acl-run-{i}" for i in range(200)]
        ids = [r for p in range(4) for r in [r for r in pool if layout.of(r) == p][:3]]
        ids = await client.start_many([("chain", {"given": 1}, r) for r in ids])
        assert sorted(layout.of(i) for i in ids) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        for run_id in ids:
            assert (await client.wait(run_id, timeout=20)).context["b"] == 2
        parked = await client.start("waits")
        assert (await client.wait(parked, timeout=20)).status == "awaiting"
        await client.resume(parked, "w", output=41)
        assert (await client.wait(parked, timeout=20)).context["b"] == 42
        # `inspect` (queue counts) runs as the worker user, as docs/security.md says
        inspector = FlowClient(users.store(users.worker_url), queue_name=QUEUE)
        assert (await inspector.counts())["completed"] >= 24
        assert_no_denials(users)
        # the single-partition rules would not do: they do not reach a partition's keys
        narrow = client_acl(QUEUE, KEY_PREFIX, QUEUE_PREFIX)
        admin.execute_command(*setuser_args(CLIENT, PASSWORD, narrow))
        with pytest.raises(_core.RedisCommandError, match="NOPERM"):
            await FlowClient(users.store(users.client_url), queue_name=QUEUE).start("chain")
    finally:
        await adapter.close(timeout=5)
        admin.execute_command("ACL", "DELUSER", WORKER, CLIENT)
        admin.execute_command("ACL", "LOG", "RESET")
        admin.close()
