"""The config loader: precedence CLI > env > file > default, validation, TOML shapes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from flowcraft_fast.daemon.config import (
    ConfigError,
    DaemonConfig,
    default_worker_name,
    resolve_config,
    to_cli_args,
)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fastd.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = resolve_config({}, {})
    assert config == DaemonConfig()
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.queue == "flowcraft-queue"
    assert config.concurrency == 64
    assert config.processes == 1
    assert config.reconcile_interval == 60
    assert config.stalled_threshold == 300
    assert config.drain_timeout == 30
    assert config.metrics_port is None
    assert (config.log_format, config.log_level) == ("text", "info")
    assert (config.lease, config.stalled_interval, config.max_stalls) == (10, 5, 1)
    assert (config.renew_interval, config.name) == (None, None)
    assert config.state_ttl == 86_400
    assert config.retry_deadline == 30


def test_retry_deadline_from_env_file_and_flag(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[flowcraft-fastd]\nretry-deadline = 12\n")
    assert resolve_config({}, {}, path).retry_deadline == 12.0
    env = {"FLOWCRAFT_REDIS_RETRY_DEADLINE": "0"}
    assert resolve_config({}, env, path).retry_deadline == 0.0  # env over file; 0: no retries
    assert resolve_config({"retry_deadline": "2.5"}, env, path).retry_deadline == 2.5
    with pytest.raises(ConfigError, match=r"--retry-deadline '-1'.*>= 0"):
        resolve_config({"retry_deadline": "-1"}, {}, None)


def test_prefixes(tmp_path: Path) -> None:
    config = resolve_config({}, {}, None)
    assert (config.key_prefix, config.queue_prefix) == ("", None)
    path = _toml(tmp_path, '[flowcraft-fastd]\nkey-prefix = "tenant-a:"\n')
    env = {"FLOWCRAFT_QUEUE_PREFIX": "tenant-a:q"}
    config = resolve_config({}, env, path)
    assert (config.key_prefix, config.queue_prefix) == ("tenant-a:", "tenant-a:q")
    with pytest.raises(ConfigError, match=r"--key-prefix 'a b'.*without whitespace"):
        resolve_config({"key_prefix": "a b"}, {}, None)


def test_recovery_and_retention_settings(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[flowcraft-fastd]\nlease = 5\nstalled-interval = 2.5\n")
    env = {"FLOWCRAFT_MAX_STALLS": "3", "FLOWCRAFT_STATE_TTL": "3600"}
    config = resolve_config({"lease": "6"}, env, path)
    assert (config.lease, config.stalled_interval) == (6.0, 2.5)
    assert (config.max_stalls, config.state_ttl) == (3, 3600)


def test_worker_name_and_renewal(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[flowcraft-fastd]\nname = "web1-orders"\nrenew-interval = 2\n')
    config = resolve_config({}, {}, path)
    assert (config.name, config.renew_interval) == ("web1-orders", 2.0)
    with pytest.raises(ConfigError, match=r"--name 'a@b'.*without '@'"):
        resolve_config({"name": "a@b"}, {}, None)
    with pytest.raises(ConfigError, match="--renew-interval 10 must be below --lease 10"):
        resolve_config({"renew_interval": "10"}, {}, None)


def test_speculation_switch(tmp_path: Path) -> None:
    assert resolve_config({}, {}, None).speculate is True
    path = _toml(tmp_path, "[flowcraft-fastd]\nspeculate = false\n")
    assert resolve_config({}, {}, path).speculate is False
    assert resolve_config({}, {"FLOWCRAFT_SPECULATE": "off"}, None).speculate is False
    assert resolve_config({"speculate": "on"}, {"FLOWCRAFT_SPECULATE": "off"}).speculate is True
    with pytest.raises(ConfigError, match=r"invalid --speculate 'maybe'.*on or off"):
        resolve_config({"speculate": "maybe"}, {}, None)


def test_default_worker_name_comes_from_the_systemd_unit() -> None:
    assert default_worker_name({}) is None  # not under systemd: no stable name to derive
    # Under systemd (INVOCATION_ID set) the unit is read from /proc/self/cgroup; this test
    # process is not in a .service cgroup unless a unit runs it, so either a name or None.
    name = default_worker_name({"INVOCATION_ID": "x"})
    assert name is None or ("@" not in name and name.startswith(socket.gethostname()))


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[flowcraft-fastd]\nqueue = "from-file"\nconcurrency = 8\nprocesses = 3\n'
        "drain-timeout = 5\n",
    )
    env = {"FLOWCRAFT_QUEUE": "from-env", "FLOWCRAFT_CONCURRENCY": "16"}
    cli = {"queue": "from-cli", "concurrency": None}
    config = resolve_config(cli, env, path)
    assert config.queue == "from-cli"  # CLI beats env and file
    assert config.concurrency == 16  # env beats file (CLI not given)
    assert config.processes == 3  # file beats default
    assert config.drain_timeout == 5.0
    assert config.stalled_threshold == 300  # default


def test_redis_url_env_order() -> None:
    both = {"FLOWCRAFT_REDIS_URL": "redis://a:1/0", "REDIS_URL": "redis://b:2/0"}
    assert resolve_config({}, both).redis_url == "redis://a:1/0"
    assert resolve_config({}, {"REDIS_URL": "redis://b:2/0"}).redis_url == "redis://b:2/0"
    # an empty variable counts as unset
    assert resolve_config(
        {}, {"FLOWCRAFT_REDIS_URL": "", "REDIS_URL": "unix:///r.sock"}
    ).redis_url == ("unix:///r.sock")


def test_top_level_keys_and_both_spellings(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'redis_url = "rediss://h:6380/1"\nlog-format = "json"\napp = "m:rt"\n')
    config = resolve_config({}, {}, path)
    assert config.redis_url == "rediss://h:6380/1"
    assert config.log_format == "json"
    assert config.app == "m:rt"


def test_table_wins_and_other_tables_are_ignored(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[other]\nx = 1\n[flowcraft-fastd]\nmetrics-port = 9100\n")
    assert resolve_config({}, {}, path).metrics_port == 9100


@pytest.mark.parametrize(
    ("cli", "env", "fragment"),
    [
        ({"concurrency": "zero"}, {}, "invalid --concurrency 'zero' (from --concurrency)"),
        ({"concurrency": "0"}, {}, "an integer >= 1"),
        ({}, {"FLOWCRAFT_PROCESSES": "-2"}, "(from FLOWCRAFT_PROCESSES)"),
        ({"log_format": "xml"}, {}, "text or json"),
        ({"redis_url": "http://x"}, {}, "redis://, rediss:// or unix://"),
        ({"app": "no_colon"}, {}, "package.module:attribute"),
        ({"drain_timeout": "-1"}, {}, "seconds >= 0"),
        ({"stalled_threshold": "0"}, {}, "seconds > 0"),
        ({"reconcile_interval": "nan"}, {}, "seconds >= 0"),
        ({"metrics_port": "70000"}, {}, "an integer 0..65535"),
        ({"log_level": "loud"}, {}, "debug, info"),
        ({"lease": "0.5"}, {}, "seconds >= 1"),
        ({}, {"FLOWCRAFT_STALLED_INTERVAL": "0"}, "seconds > 0"),
        ({"max_stalls": "-1"}, {}, "an integer >= 0"),
        ({"state_ttl": "0"}, {}, "an integer >= 1"),
    ],
)
def test_invalid_values_name_option_and_source(
    cli: dict[str, object], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(cli, env)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config({}, {}, tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config({}, {}, _toml(tmp_path, "queue = \n"))
    with pytest.raises(ConfigError, match="unknown key 'concurency'"):
        resolve_config({}, {}, _toml(tmp_path, "[flowcraft-fastd]\nconcurency = 4\n"))
    with pytest.raises(ConfigError, match=r"fastd.toml: concurrency"):
        resolve_config({}, {}, _toml(tmp_path, 'concurrency = "lots"\n'))
    with pytest.raises(ConfigError, match="an integer"):
        resolve_config({}, {}, _toml(tmp_path, "concurrency = true\n"))


def test_metrics_port_zero_means_off() -> None:
    assert resolve_config({"metrics_port": "0"}, {}).metrics_port is None


def test_metrics_bind() -> None:
    assert resolve_config({"metrics_port": "9100"}, {}).metrics_address == ("127.0.0.1", 9100)
    config = resolve_config({}, {"FLOWCRAFT_METRICS_BIND": " 0.0.0.0:9464 "})
    assert config.metrics_bind == "0.0.0.0:9464"
    assert config.metrics_address == ("0.0.0.0", 9464)
    assert resolve_config({"metrics_bind": "[::]:9464"}, {}).metrics_address == ("::", 9464)
    assert resolve_config({}, {}).metrics_address is None
    for bad in ("9464", "host:", "host:0", "host:70000", ":9464"):
        with pytest.raises(ConfigError, match=r"invalid --metrics-bind .*HOST:PORT"):
            resolve_config({"metrics_bind": bad}, {})
    with pytest.raises(ConfigError, match="give one"):
        resolve_config({"metrics_port": "9100", "metrics_bind": "0.0.0.0:9464"}, {})


def test_to_cli_args_round_trips() -> None:
    config = DaemonConfig(
        app="m:rt", queue="q", concurrency=3, metrics_port=9100, log_format="json"
    )
    args = to_cli_args(config)
    cli = {
        args[i].removeprefix("--").replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)
    }
    assert resolve_config(cli, {"FLOWCRAFT_QUEUE": "ignored"}) == config
