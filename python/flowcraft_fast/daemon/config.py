"""The daemon's settings: one table of options, read from flags, env vars and a TOML file.

Precedence is CLI flag > environment variable > config file > default. Every value is validated
here, so an invalid one becomes a `ConfigError` naming the option and where the value came from,
which the command line prints as one line before exiting 2.
"""

from __future__ import annotations

import contextlib
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_ENV",
    "OPTIONS",
    "TOML_TABLE",
    "ConfigError",
    "DaemonConfig",
    "Option",
    "resolve_config",
    "to_cli_args",
]

TOML_TABLE = "flowcraft-fastd"
CONFIG_ENV = "FLOWCRAFT_CONFIG"
WORKER_INDEX_ENV = "FLOWCRAFT_WORKER_INDEX"
"""Set by the supervisor in each child's environment: the child's index (0 .. N-1)."""
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """An invalid or missing setting; the message is one line meant for the user."""


@dataclass(frozen=True)
class DaemonConfig:
    """The resolved settings of one `flowcraft-fastd` process."""

    app: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "flowcraft-queue"
    concurrency: int = 64
    processes: int = 1
    reconcile_interval: float = 60.0
    stalled_threshold: float = 300.0
    metrics_port: int | None = None
    metrics_bind: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    drain_timeout: float = 30.0
    lease: float = 10.0
    renew_interval: float | None = None
    stalled_interval: float = 5.0
    max_stalls: int = 1
    name: str | None = None
    state_ttl: int = 86_400
    retry_deadline: float = 30.0
    key_prefix: str = ""
    queue_prefix: str | None = None
    redis_wait: float | None = None
    partitions: int = 1
    partition_set: str | None = None
    wait_replicas: int = 0
    wait_timeout: float = 1.0
    history: int = 0
    speculate: bool = True

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where /metrics is served: --metrics-bind, or 127.0.0.1:--metrics-port; None: off."""
        if self.metrics_bind is not None:
            return split_bind(self.metrics_bind)
        return None if self.metrics_port is None else ("127.0.0.1", self.metrics_port)


# ------------------------------------------------------------------ value parsers
# Each takes what a source gave (a string from a flag or env var, or a TOML value of any type)
# and returns the typed value or raises ValueError with the expectation, e.g. "an integer >= 1".


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value.strip()


def _app(value: object) -> str:
    text = _text(value)
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise ValueError("package.module:attribute")
    return text


def _redis_url(value: object) -> str:
    text = _text(value)
    if not text.startswith(REDIS_SCHEMES):
        raise ValueError(
            "a redis://, rediss:// or unix:// URL (several redis:// URLs of one cluster's "
            "nodes comma-separated), or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER"
        )
    return text


def _partition_set(value: object) -> str:
    """A list like `0,2,4` or `0-2` (flag, env), or a TOML string or array of ints."""
    if isinstance(value, list) and all(type(v) is int for v in value):
        value = ",".join(map(str, value))
    if not isinstance(value, str) or not value.strip():
        raise ValueError("partition numbers or ranges like 0,2,4 or 0-2")
    text = value.replace(" ", "")
    if not all(c.isdigit() or c in ",-" for c in text):
        raise ValueError("partition numbers or ranges like 0,2,4 or 0-2")
    return text


def _int(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    expect = f"an integer >= {minimum}" if maximum is None else f"an integer {minimum}..{maximum}"

    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError(expect)
        if isinstance(value, int):
            number = value
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                raise ValueError(expect) from None
        else:
            raise ValueError(expect)
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(expect)
        return number

    return parse


_SWITCH = {"on": True, "true": True, "yes": True, "1": True,
           "off": False, "false": False, "no": False, "0": False}  # fmt: skip


def _switch(value: object) -> bool:
    """on/off (true/false, yes/no, 1/0; a TOML boolean)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _SWITCH:
        return _SWITCH[value.strip().lower()]
    raise ValueError("on or off")


def _seconds(*, allow_zero: bool) -> Callable[[object], float]:
    expect = "a number of seconds >= 0" if allow_zero else "a number of seconds > 0"

    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError(expect)
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise ValueError(expect) from None
        else:
            raise ValueError(expect)
        if number != number or number in (float("inf"), float("-inf")):  # NaN, infinities
            raise ValueError(expect)
        if number < 0 or (number == 0 and not allow_zero):
            raise ValueError(expect)
        return number

    return parse


def _prefix(value: object) -> str:
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError("a string without whitespace")
    return value


def _lease(value: object) -> float:
    seconds = _seconds(allow_zero=False)(value)
    if seconds < 1:
        raise ValueError("a number of seconds >= 1")
    return seconds


def _worker_name(value: object) -> str:
    from ..distributed.worker import check_worker_name

    name = _text(value)
    check_worker_name(name)
    return name


def _metrics_port(value: object) -> int | None:
    port = _int(0, 65535)(value)
    return port or None  # 0 turns the endpoint off, like leaving it unset


def split_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` -> (host, port); ValueError with the expectation."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("HOST:PORT with a port 1..65535, e.g. 0.0.0.0:9464 or [::]:9464")
    return host, int(port)


def _metrics_bind(value: object) -> str:
    host, port = split_bind(_text(value))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _choice(*choices: str) -> Callable[[object], str]:
    expect = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)

    def parse(value: object) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError(expect)
        return value.strip().lower()

    return parse


@dataclass(frozen=True)
class Option:
    """One setting: its field in `DaemonConfig`, its flag, env vars (first set wins), help."""

    field: str
    flag: str
    env: tuple[str, ...]
    parse: Callable[[object], Any]
    help: str
    metavar: str

    @property
    def toml_keys(self) -> tuple[str, str]:
        """Both spellings are accepted in the file: `redis-url` and `redis_url`."""
        return self.flag.removeprefix("--"), self.field


OPTIONS: tuple[Option, ...] = (
    Option("app", "--app", ("FLOWCRAFT_APP",), _app,
           "package.module:attribute naming a FlowRuntime or a zero-argument callable "
           "returning one (required)", "MODULE:ATTR"),
    Option("redis_url", "--redis-url", ("FLOWCRAFT_REDIS_URL", "REDIS_URL"), _redis_url,
           "redis://, rediss:// or unix:// URL; a Redis Cluster node (found on connect) or "
           "several nodes' URLs comma-separated; or redis+sentinel://HOST:PORT[,HOST:PORT]/"
           "MASTER[/DB] (default redis://127.0.0.1:6379/0)", "URL"),
    Option("queue", "--queue", ("FLOWCRAFT_QUEUE",), _text,
           "queue to consume (default flowcraft-queue)", "NAME"),
    Option("concurrency", "--concurrency", ("FLOWCRAFT_CONCURRENCY",), _int(1),
           "nodes run at once per worker process (default 64)", "N"),
    Option("processes", "--processes", ("FLOWCRAFT_PROCESSES",), _int(1, 1024),
           "worker processes; with N > 1 this process supervises N children (default 1)", "N"),
    Option("reconcile_interval", "--reconcile-interval", ("FLOWCRAFT_RECONCILE_INTERVAL",),
           _seconds(allow_zero=True),
           "seconds between reconciler passes over stalled runs; 0 disables (default 60)",
           "SECONDS"),
    Option("stalled_threshold", "--stalled-threshold", ("FLOWCRAFT_STALLED_THRESHOLD",),
           _seconds(allow_zero=False),
           "seconds without progress after which a run counts as stalled (default 300)",
           "SECONDS"),
    Option("metrics_port", "--metrics-port", ("FLOWCRAFT_METRICS_PORT",), _metrics_port,
           "serve Prometheus metrics on 127.0.0.1:PORT/metrics, short for --metrics-bind "
           "127.0.0.1:PORT; 0: off (default off)", "PORT"),
    Option("metrics_bind", "--metrics-bind", ("FLOWCRAFT_METRICS_BIND",), _metrics_bind,
           "serve Prometheus metrics on HOST:PORT/metrics (e.g. 0.0.0.0:9464, [::]:9464); "
           "with --processes N the supervisor serves one endpoint adding up its workers "
           "(default off)", "HOST:PORT"),
    Option("log_format", "--log-format", ("FLOWCRAFT_LOG_FORMAT",), _choice("text", "json"),
           "text (journald friendly) or json, one object per line (default text)", "FORMAT"),
    Option("log_level", "--log-level", ("FLOWCRAFT_LOG_LEVEL",), _choice(*LOG_LEVELS),
           "debug, info, warning, error or critical (default info)", "LEVEL"),
    Option("drain_timeout", "--drain-timeout", ("FLOWCRAFT_DRAIN_TIMEOUT",),
           _seconds(allow_zero=True),
           "seconds to let in-flight nodes finish on SIGTERM/SIGINT (default 30)", "SECONDS"),
    Option("lease", "--lease", ("FLOWCRAFT_LEASE",), _lease,
           "seconds a claimed job stays this worker's without renewal; a dead worker's jobs "
           "return after it lapses (default 10, at least 1)", "SECONDS"),
    Option("renew_interval", "--renew-interval", ("FLOWCRAFT_RENEW_INTERVAL",),
           _seconds(allow_zero=False),
           "seconds between lease renewals, one batched call for all in-flight jobs; below "
           "the lease (default a third of the lease)", "SECONDS"),
    Option("stalled_interval", "--stalled-interval", ("FLOWCRAFT_STALLED_INTERVAL",),
           _seconds(allow_zero=False),
           "seconds between checks for jobs whose lease lapsed (one worker of the fleet checks "
           "per interval, over all active jobs; the first check runs at start) (default 5)",
           "SECONDS"),
    Option("max_stalls", "--max-stalls", ("FLOWCRAFT_MAX_STALLS",), _int(0),
           "times a job may stall (its worker died) and run again; past it the job's node "
           "fails with StalledJobError (its fallback runs, else the run fails) (default 1)",
           "N"),
    Option("name", "--name", ("FLOWCRAFT_NAME",), _worker_name,
           "a stable worker name: restarted, the worker releases the leases its previous "
           "incarnation held at once (default under systemd: <host>-<unit>, e.g. "
           "web1-flowcraft-fastd_orders; elsewhere none, and leases only expire); must be "
           "unique among live workers of a queue", "NAME"),
    Option("state_ttl", "--state-ttl", ("FLOWCRAFT_STATE_TTL",), _int(1),
           "seconds a finished run's keys are kept (default 86400)", "SECONDS"),
    Option("retry_deadline", "--retry-deadline", ("FLOWCRAFT_REDIS_RETRY_DEADLINE",),
           _seconds(allow_zero=True),
           "seconds each Redis call keeps retrying LOADING, BUSY and connection failures "
           "(a Redis restart or failover) before it fails; 0: no retries (default 30)",
           "SECONDS"),
    Option("key_prefix", "--key-prefix", ("FLOWCRAFT_KEY_PREFIX",), _prefix,
           "put in front of every run key (workflow:state:<run> ...), e.g. tenant-a:; "
           "deployments with different key prefixes on one Redis never see each other's runs "
           "(default none)", "PREFIX"),
    Option("queue_prefix", "--queue-prefix", ("FLOWCRAFT_QUEUE_PREFIX",), _prefix,
           "BullMQ's key prefix for the queue's keys (default bull, or <key-prefix>bull "
           "when --key-prefix is set)", "PREFIX"),
    Option("partitions", "--partitions", ("FLOWCRAFT_PARTITIONS",), _int(1, 1024),
           "partitions of the queue, each an ordinary BullMQ queue whose keys share one hash "
           "tag, so runs spread over a Redis Cluster's shards; every worker of a queue must "
           "give the same count (docs/scale-out.md) (default 1)", "N"),
    Option("partition_set", "--partition-set", ("FLOWCRAFT_PARTITION_SET",), _partition_set,
           "serve only these partitions, e.g. 0,2,4 or 0-2 (default all)", "LIST"),
    Option("wait_replicas", "--wait-replicas", ("FLOWCRAFT_WAIT_REPLICAS",), _int(0, 16),
           "acknowledge each step (start, claim, commit) only once this many replicas hold "
           "it (Redis WAIT), so a Sentinel failover loses none; costs a replica round trip "
           "per step (default 0: asynchronous replication)", "N"),
    Option("wait_timeout", "--wait-timeout", ("FLOWCRAFT_WAIT_TIMEOUT",),
           _seconds(allow_zero=False),
           "seconds a step waits for --wait-replicas before it goes on anyway (default 1)",
           "SECONDS"),
    Option("history", "--history", ("FLOWCRAFT_HISTORY",), _int(0, 1_000_000),
           "keep each run's last N history entries (node starts, finishes, errors, context "
           "writes) in a Redis Stream per run, for replay and fork (docs/history.md); costs "
           "one round trip per commit batch; 0: off (default 0, or the app runtime's "
           "FlowRuntime(history=N))", "N"),
    Option("speculate", "--speculate", ("FLOWCRAFT_SPECULATE",), _switch,
           "speculative continuation: a run's only outstanding job runs its certain "
           "successors before its commit is answered, so a sequential chain commits in one "
           "round trip; a prediction that fails (something outside wrote the run's state "
           "meanwhile) runs that successor again. off: one commit round trip per step "
           "(docs/distributed.md) (default on)", "on|off"),
    Option("redis_wait", "--redis-wait", ("FLOWCRAFT_REDIS_WAIT",), _seconds(allow_zero=True),
           "seconds to wait at start for a Redis that does not answer, retrying with backoff "
           "(1, 2, 4 ... 30 s) and logging each try; 0: fail at once (default: wait until it "
           "answers or a stop signal arrives; --check never waits)", "SECONDS"),
)  # fmt: skip

_BY_TOML_KEY = {key: option for option in OPTIONS for key in option.toml_keys}


def resolve_config(
    cli: Mapping[str, object],
    env: Mapping[str, str],
    config_file: str | Path | None = None,
) -> DaemonConfig:
    """Merge the sources (CLI > env > file > default) and validate every value.

    `cli` maps field names to the values given on the command line (absent when not given);
    `config_file` is a TOML file with a `[flowcraft-fastd]` table or top-level keys.
    """
    file_values = _read_toml(Path(config_file)) if config_file else {}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw, source = _pick(option, cli, env, file_values, str(config_file))
        if source is None:
            continue
        try:
            values[option.field] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(
                f"invalid {option.flag} {raw!r} (from {source}): expected {exc}"
            ) from None
    config = DaemonConfig(**values)
    if config.metrics_port is not None and config.metrics_bind is not None:
        raise ConfigError(
            "--metrics-port and --metrics-bind both set: give one (--metrics-port P is "
            "--metrics-bind 127.0.0.1:P)"
        )
    renew = config.renew_interval
    if renew is not None and renew >= config.lease:
        raise ConfigError(
            f"--renew-interval {renew:g} must be below --lease {config.lease:g}: a lease "
            "renewed no sooner than it lapses is lost"
        )
    return config


def default_worker_name(env: Mapping[str, str]) -> str | None:
    """The name a worker gets without --name: `<host>-<unit>` under systemd (INVOCATION_ID is
    set; the unit comes from /proc/self/cgroup), which stays the same across restarts of the
    unit; None elsewhere (the process cannot know what would stay stable)."""
    if not env.get("INVOCATION_ID"):
        return None
    unit = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            last = line.rsplit("/", 1)[-1]
            if last.endswith(".service"):
                unit = last.removesuffix(".service")
    if not unit:
        return None
    name = f"{socket.gethostname()}-{unit}".replace("@", "_")
    return "".join(c for c in name if not c.isspace())[:100] or None


def _pick(
    option: Option,
    cli: Mapping[str, object],
    env: Mapping[str, str],
    file_values: Mapping[str, object],
    file_name: str,
) -> tuple[object, str | None]:
    if cli.get(option.field) is not None:
        return cli[option.field], option.flag
    for name in option.env:
        if env.get(name):
            return env[name], name
    for key in option.toml_keys:
        if key in file_values:
            return file_values[key], f"{file_name}: {key}"
    return None, None


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = document.get(TOML_TABLE, document)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [{TOML_TABLE}] must be a table")
    unknown = sorted(key for key in table if key not in _BY_TOML_KEY)
    if unknown:
        known = ", ".join(option.toml_keys[0] for option in OPTIONS)
        raise ConfigError(f"config file {path}: unknown key {unknown[0]!r} (known keys: {known})")
    return dict(table)


def to_cli_args(config: DaemonConfig) -> list[str]:
    """Flags that reproduce `config` exactly (how the supervisor configures its children)."""
    by_field = {option.field: option for option in OPTIONS}
    args: list[str] = []
    for item in fields(config):
        value = getattr(config, item.name)
        if value is None:
            continue
        args += [by_field[item.name].flag, str(value)]
    return args
