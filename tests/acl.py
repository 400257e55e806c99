"""The minimal Redis ACL rule sets of a flowcraft-fast worker and of a client (issue 10).

One source for docs/security.md (its `ACL SETUSER` lines must be `setuser_line(...)` of these,
tests/integration/test_acl.py checks) and for the users tests/conformance/test_distributed_acl.py
runs the conformance cases as. Only rules Redis 6.2 understands: `~pattern` (read and write),
`&channel`, `+command`, `+command|subcommand`; no selectors, no `%R~`/`%W~` (7.0+).

Why each command is there (`rust/src/*.rs` and `rust/src/scripts/*.lua`; Redis checks the
commands a script runs, and the keys and channels they touch, against the caller's ACL):

worker, outside scripts
    ping, info            start-up check (`safety.py`): PING, INFO server (the version)
    evalsha, script|load  every script call; SCRIPT LOAD after NOSCRIPT (restart, SCRIPT FLUSH)
    bzpopmin              waiting for work on the queue's marker (hot_path.rs)
    zadd                  the ready marker raised after a reordered commit pipeline
    hmset                 publishing the blueprints (reads.rs)
    hgetall, get          a run's meta and status (reads.rs: run_info), its joins and state
                          (frontier.py, when the reconciler repairs a run)
    time, zrangebyscore,  the reconciler's survey of the unfinished-runs index (survey.rs)
    hmget, zrem
    subscribe             the queue's stops channel (stops.rs)
    client|setname        naming its connections the way BullMQ does (workers.rs), so BullMQ
                          tools list the worker
    zrange                `flowcraft-fast inspect`/`runs` as the worker user: the live workers
                          and the runs indexes (workers.rs, reads.rs)
    xadd, expire          history on: a run's history stream (history.rs)
worker, inside scripts: see WORKER_SCRIPTS (claim, commit, retry, renew, stalled, adopt,
    reconcile, beat, limit); test_acl.py checks every `redis.call` of them is granted.
client (FlowClient, RedisContext reads)
    info                  on connect: is this a cluster node (INFO cluster; topology.rs)
    xadd, expire, xrange  history on: the initial context recorded at start; `history`,
                          `replay`, `fork` read the stream (history.rs)
    get                   the queue's partition count (store.py `layout`), its webhook secret
    evalsha (event)       send_event and webhooks (event.lua; its commands: CLIENT_SCRIPTS)
    evalsha, script|load  start, cancel, resume scripts (their commands: CLIENT_SCRIPTS)
    hget                  the published blueprint; RedisContext.get
    hgetall, get          status, result, RedisContext.to_dict
    hexists               RedisContext.has
    exists                resume sent again after a lost reply (runs.rs: did its job get made?)
    subscribe, unsubscribe  `wait` (waits.rs: one subscriber connection, a channel per run)

Denied on purpose: CONFIG (the worker's maxmemory-policy check reads INFO memory instead;
CONFIG GET would also show every other setting), CLIENT but SETNAME (redis-rs sends CLIENT
SETINFO when it connects and ignores the reply; Redis 6.2 and 7.2+ log the denial, 7.0
answers "unknown subcommand"), SELECT (only sent for a database other than 0: add `+select`
then), SCAN (only the reconciler's `mode="scan"` uses it: `scan=True`; SCAN lists every key
name of the database, whatever the key patterns), MULTI/EXEC/HMSET for RedisContext writes
(`context_writes=True`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

RUN_KEY_SHAPES = (
    "workflow:state:", "workflow:run:", "workflow:joins:", "workflow:status:",
    "workflow:history:",
)  # fmt: skip
"""rust/src/keys.rs: the keys of a run, each behind the deployment's key prefix (the history
stream exists only with history on: docs/history.md)."""

WORKER_SCRIPTS = (
    "claim", "commit", "retry", "renew", "stalled", "adopt", "reconcile", "beat", "limit",
)  # fmt: skip
CLIENT_SCRIPTS = ("start", "cancel", "resume", "event")

WORKER_DIRECT = (
    "ping", "info", "evalsha", "script|load", "bzpopmin", "zadd", "hmset", "hgetall", "get",
    "time", "zrangebyscore", "hmget", "zrem", "subscribe", "client|setname", "zrange",
    "xadd", "expire",
)  # fmt: skip
"""What a worker sends outside scripts (see the module docstring)."""

WORKER_IN_SCRIPTS = (
    "time", "hset", "hsetnx", "hget", "hmget", "hgetall", "hexists", "hincrby", "hdel",
    "exists", "del", "get", "set", "pexpire", "expire", "lpush", "rpush", "rpoplpush", "lrem",
    "llen", "lrange", "zadd", "zrem", "zrange", "zrangebyscore", "zpopmin", "zcard", "zcount",
    "zscore", "zremrangebyrank", "zremrangebyscore", "xadd", "publish", "incr", "decr", "lpop",
    "sadd", "srem", "srandmember",
)  # fmt: skip
"""What WORKER_SCRIPTS run (test_acl.py reads them: exactly these)."""

CLIENT_DIRECT = (
    "info", "xadd", "expire", "xrange", "evalsha", "script|load", "hget", "hgetall", "get",
    "hexists", "exists", "subscribe", "unsubscribe",
)  # fmt: skip
"""What FlowClient and RedisContext's reads send outside scripts."""

CLIENT_IN_SCRIPTS = (
    "time", "exists", "hget", "hexists", "hset", "hdel", "hincrby", "del", "set", "expire",
    "lpush", "zadd", "zrem", "publish", "incr", "rpush",
)  # fmt: skip
"""What CLIENT_SCRIPTS run (test_acl.py reads them: exactly these)."""

WORKER_COMMANDS = tuple(dict.fromkeys(WORKER_DIRECT + WORKER_IN_SCRIPTS))
CLIENT_COMMANDS = tuple(dict.fromkeys(CLIENT_DIRECT + CLIENT_IN_SCRIPTS))

CONTEXT_WRITE_COMMANDS = ("multi", "exec", "hmset")
"""RedisContext.set/delete/patch: a MULTI/EXEC of HSET, HDEL or HMSET and the state-version
HINCRBY (rust/src/state.rs); HSET, HDEL and HINCRBY are already in both sets."""

GLOB_SPECIAL = "*?[]\\"


def glob_escape(text: str) -> str:
    """`text` matched literally by an ACL key or channel pattern."""
    return "".join("\\" + c if c in GLOB_SPECIAL else c for c in text)


def _check(queue: str, key_prefix: str, queue_prefix: str) -> None:
    for name, value in (("queue", queue), ("key_prefix", key_prefix)):
        if any(c.isspace() for c in value):
            raise ValueError(f"{name} {value!r}: no whitespace in an ACL rule")
    if not queue or ":" in queue:
        raise ValueError(f"queue name {queue!r} must be non-empty and contain no ':'")
    if not queue_prefix or any(c.isspace() for c in queue_prefix):
        raise ValueError(f"queue_prefix {queue_prefix!r}: non-empty, no whitespace")


def queue_base(queue: str, queue_prefix: str = "bull") -> str:
    """`<queue_prefix>:<queue>:`, what every key of the queue starts with (keys.rs)."""
    return f"{queue_prefix}:{queue}:"


def run_key_patterns(key_prefix: str = "") -> list[str]:
    return _run_keys(glob_escape(key_prefix))


def _run_keys(prefix_pattern: str) -> list[str]:
    return [f"~{prefix_pattern}{glob_escape(shape)}*" for shape in RUN_KEY_SHAPES]


def _layouts(
    queue: str, key_prefix: str, queue_prefix: str, partitioned: bool
) -> list[tuple[str, str]]:
    """(queue key pattern prefix, run key pattern prefix) of each layout the rules cover: the
    single-partition one, and with `partitioned` every partition's (partitions.py: queue
    `{<queue>.<p>}`, run keys `<key prefix>{<queue>.<p>}:...`; `[0-9]*` matches the partition
    number and the tag's optional `.<k>`)."""
    layouts = [(glob_escape(queue_base(queue, queue_prefix)), glob_escape(key_prefix))]
    if partitioned:
        tag = "[0-9]*" + glob_escape("}:")
        layouts.append(
            (
                glob_escape(f"{queue_prefix}:{{{queue}.") + tag,
                glob_escape(f"{key_prefix}{{{queue}.") + tag,
            )
        )
    return layouts


def channel_patterns(queue: str, key_prefix: str = "", queue_prefix: str = "bull") -> list[str]:
    """The stops channel of the queue (stops.rs, published by commit and cancel) and the runs'
    status channels (each run's status key is also its channel: waits.rs, lib.lua end_run)."""
    return _channels(glob_escape(queue_base(queue, queue_prefix)), glob_escape(key_prefix))


def _channels(base_pattern: str, prefix_pattern: str) -> list[str]:
    return [
        "&" + base_pattern + glob_escape("flowcraft:stops"),
        "&" + prefix_pattern + glob_escape("workflow:status:") + "*",
    ]


def worker_acl(
    queue: str,
    key_prefix: str = "",
    queue_prefix: str = "bull",
    *,
    config_get: bool = False,
    scan: bool = False,
    partitioned: bool = False,
) -> list[str]:
    """The rules of a worker user serving `queue` (keys, channels, commands).

    `config_get`: also CONFIG GET (not needed: denied it, the maxmemory-policy check reads
    INFO memory). `scan`: the reconciler's scan mode. `partitioned`: the queue has partitions
    (`--partitions N`, or any count on a Redis Cluster): their keys and channels too."""
    _check(queue, key_prefix, queue_prefix)
    keys: list[str] = []
    channels: list[str] = []
    for base, prefix in _layouts(queue, key_prefix, queue_prefix, partitioned):
        keys += [f"~{base}*", *_run_keys(prefix)]
        channels += _channels(base, prefix)
    commands = list(WORKER_COMMANDS)
    if config_get:
        commands.append("config|get")
    if scan:
        commands.append("scan")
    return [*keys, *channels, *(f"+{c}" for c in commands)]


CLIENT_QUEUE_KEYS = (
    "wait", "prioritized", "pc", "marker", "flowcraft:blueprints", "flowcraft:runs",
    "flowcraft:runs:ended", "flowcraft:runs:singletons",
)  # fmt: skip
"""The keys of a queue (of each partition) a client touches (start, resume, reads)."""


def client_acl(
    queue: str,
    key_prefix: str = "",
    queue_prefix: str = "bull",
    *,
    context_writes: bool = False,
    partitioned: bool = False,
) -> list[str]:
    """The rules of a client user of `queue`: FlowClient and RedisContext's reads.

    Of the queue's keys it gets only those a client touches: `wait`, `prioritized` and its
    counter `pc`, and `marker` (start, resume), the published blueprints, the unfinished-runs
    index and the singleton runs next to it, the partition count, the webhook secret, and the
    job hashes it creates (FlowClient's job ids always contain a `.`; BullMQ's own keys never
    do, so `active`, `delayed`, `completed`, `failed`, `meta`, `events`... stay out of its
    reach). `partitioned`: the same keys of every partition."""
    _check(queue, key_prefix, queue_prefix)
    layouts = _layouts(queue, key_prefix, queue_prefix, partitioned)
    keys: list[str] = []
    channels: list[str] = []
    for i, (base, prefix) in enumerate(layouts):
        keys += [f"~{base}{glob_escape(name)}" for name in CLIENT_QUEUE_KEYS]
        if i == 0:  # the queue's own (never per partition)
            keys += [f"~{base}flowcraft:partitions", f"~{base}flowcraft:webhook-secret"]
        keys += [f"~{base}*.*", *_run_keys(prefix)]
        channels += _channels(base, prefix)
    commands = list(CLIENT_COMMANDS)
    if context_writes:
        commands.extend(CONTEXT_WRITE_COMMANDS)
    return [*keys, *channels, *(f"+{c}" for c in commands)]


def setuser_args(user: str, password: str, rules: Iterable[str]) -> list[str]:
    """`ACL SETUSER` arguments that (re)define `user` from scratch with exactly `rules`.

    `reset` first (no keys, channels or commands, no password), then `resetchannels`: on Redis
    6.2 `reset` leaves a user with every channel (`acl-pubsub-default allchannels`)."""
    return ["ACL", "SETUSER", user, "reset", "on", f">{password}", "resetchannels", *rules]


def setuser_line(user: str, password: str, rules: Iterable[str]) -> str:
    """The same as one line for redis-cli (docs/security.md)."""
    return " ".join(setuser_args(user, password, rules))


DOC_LINES: list[tuple[str, str, list[str]]] = [
    (
        "flowcraft-worker",
        "WORKER_PASSWORD",
        worker_acl("<queue>", "<prefix>", "<queue-prefix>"),
    ),
    (
        "flowcraft-client",
        "CLIENT_PASSWORD",
        client_acl("<queue>", "<prefix>", "<queue-prefix>"),
    ),
    ("flowcraft-worker", "WORKER_PASSWORD", worker_acl("flowcraft-queue")),
    ("flowcraft-client", "CLIENT_PASSWORD", client_acl("flowcraft-queue")),
]
"""The `ACL SETUSER` lines docs/security.md shows, in order: with placeholders, then for the
defaults (queue `flowcraft-queue`, no key prefix, BullMQ's `bull`)."""


def user_url(url: str, user: str, password: str) -> str:
    """`url` (redis://host:port/db) with `user:password@` in it."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


EXPECTED_DENIALS = ("client", "client|setinfo")
"""What every user is denied and shrugs off: redis-rs sends CLIENT SETINFO when it connects and
ignores the reply (Redis 6.2 logs the denial as `client`, 7.2+ as `client|setinfo`; 7.0 has no
such subcommand)."""
EXPECTED_WORKER_DENIALS = ("config", "config|get")
"""The worker's maxmemory-policy check tries CONFIG GET first, then INFO memory (safety.py)."""


def unexpected_denials(admin: Any, *, worker: str) -> list[str]:
    """The entries of Redis's ACL LOG other than the expected denials (the `worker` user may
    also be denied CONFIG GET), as text; the log is reset. A NOPERM that the code swallows (a
    SUBSCRIBE the stops listener retries, a reply redis-rs ignores) shows up here too."""
    entries = admin.execute_command("ACL", "LOG")
    admin.execute_command("ACL", "LOG", "RESET")
    out = []
    for raw in entries:
        entry = {_text(k): _text(v) for k, v in raw.items()}
        allowed = EXPECTED_DENIALS + (
            EXPECTED_WORKER_DENIALS if entry["username"] == worker else ()
        )
        if entry["reason"] == "command" and entry["object"] in allowed:
            continue
        out.append(
            f"{entry['username']}: {entry['reason']} {entry['object']!r} denied "
            f"({entry['context']}, {entry['count']}x)"
        )
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
