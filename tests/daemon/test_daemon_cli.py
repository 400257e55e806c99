"""`flowcraft-fastd` as a real process: --help, --check, refusals, bad settings, bad --app."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flowcraft_fast.devserver import RedisServer, free_port

from .helpers import DAEMON, clean_env, write_app


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DAEMON, *args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]


def test_help_of_the_console_script() -> None:
    script = shutil.which("flowcraft-fastd", path=str(Path(sys.executable).parent))
    assert script, "the console script flowcraft-fastd is not installed in this environment"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--app", "--redis-url", "--queue", "--concurrency", "--processes",
                 "--reconcile-interval", "--stalled-threshold", "--metrics-port", "--metrics-bind",
                 "--log-format", "--log-level", "--drain-timeout", "--config", "--check",
                 "FLOWCRAFT_REDIS_URL", "REDIS_URL"):  # fmt: skip
        assert flag in result.stdout


@pytest.mark.redis
def test_check_passes_against_the_private_redis(redis_url: str, tmp_path: Path) -> None:
    app = write_app(tmp_path)
    result = _run(["--check", "--app", app], tmp_path, FLOWCRAFT_REDIS_URL=redis_url)
    assert result.returncode == 0, result.stderr
    assert "FlowRuntime with 1 blueprint(s): tiny" in result.stdout
    assert "maxmemory-policy noeviction" in result.stdout
    assert "check passed" in result.stdout
    assert result.stderr == ""


def test_check_fails_on_a_closed_port(tmp_path: Path) -> None:
    app = write_app(tmp_path)
    url = f"redis://127.0.0.1:{free_port()}/0"
    # a short retry deadline: Redis is not restarting, it is not there
    result = _run(
        ["--check", "--app", app, "--redis-url", url],
        tmp_path,
        FLOWCRAFT_REDIS_RETRY_DEADLINE="0.5",
    )
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert line.startswith("flowcraft-fastd: check failed:")
    assert f"127.0.0.1:{url.split(':')[2].split('/')[0]}" in line
    assert "gave up after" in line and "(retry deadline 0.5 s)" in line


def test_start_fails_on_a_closed_port_with_one_line(tmp_path: Path) -> None:
    app = write_app(tmp_path)
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = _run(["--app", app], tmp_path, REDIS_URL=url, FLOWCRAFT_REDIS_WAIT="0")
    assert result.returncode == 1
    assert "cannot connect to Redis" in _one_line(result.stderr)


@pytest.mark.redis
def test_refuses_a_redis_that_evicts(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = redis_factory(extra_args=("--maxmemory-policy", "allkeys-lru"))
    app = write_app(tmp_path)
    started = _run(["--app", app, "--redis-url", server.url], tmp_path)
    assert started.returncode == 1
    line = _one_line(started.stderr)
    assert "maxmemory-policy allkeys-lru" in line
    assert "noeviction" in line
    checked = _run(["--check", "--app", app, "--redis-url", server.url], tmp_path)
    assert checked.returncode == 1
    assert "maxmemory-policy allkeys-lru" in _one_line(checked.stderr)


@pytest.mark.redis
def test_acl_denied_config_warns_and_continues(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    import redis

    server = redis_factory()
    admin = redis.Redis.from_url(server.url)
    acl = ("ACL", "SETUSER", "worker", "on", ">pw", "~*", "&*", "+@all", "-config", "-info")
    admin.execute_command(*acl)  # type: ignore[no-untyped-call]
    admin.close()
    app = write_app(tmp_path)
    url = f"redis://worker:pw@127.0.0.1:{server.port}/0"
    result = _run(["--check", "--app", app, "--redis-url", url], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cannot read maxmemory-policy" in result.stderr
    assert "pw@" not in result.stderr + result.stdout  # the password is never printed
    assert "check passed with warnings" in result.stdout


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nosuchmodule:runtime", "no module named 'nosuchmodule'"),
        ("tinyapp:nothing", "has no attribute 'nothing'"),
        ("tinyapp:not_a_runtime", "not a FlowRuntime"),
        ("tinyapp", "expected package.module:attribute"),
    ],
)
def test_bad_app(tmp_path: Path, spec: str, fragment: str) -> None:
    write_app(tmp_path)
    url = f"redis://127.0.0.1:{free_port()}/0"  # never reached: the app fails first
    started = _run(["--app", spec, "--redis-url", url], tmp_path)
    assert started.returncode == 2
    assert fragment in _one_line(started.stderr)
    checked = _run(["--check", "--app", spec, "--redis-url", url], tmp_path)
    assert checked.returncode == (2 if spec == "tinyapp" else 1)
    assert fragment in _one_line(checked.stderr)


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--concurrency", "many"], {}, "invalid --concurrency 'many' (from --concurrency)"),
        ([], {"FLOWCRAFT_LOG_FORMAT": "xml"}, "(from FLOWCRAFT_LOG_FORMAT): expected text or json"),
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
        (["--config", "/nonexistent/fastd.toml"], {}, "does not exist"),
        ([], {}, "--app is required"),
    ],
)
def test_invalid_settings_exit_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], fragment: str
) -> None:
    if "--app is required" not in fragment:
        args = [*args, "--app", "x:y"]
    result = _run(args, tmp_path, **env)
    assert result.returncode == 2
    assert fragment in _one_line(result.stderr)


@pytest.mark.redis
def test_config_file_and_env_reach_the_daemon(redis_url: str, tmp_path: Path) -> None:
    app = write_app(tmp_path)
    (tmp_path / "fastd.toml").write_text(
        f'[flowcraft-fastd]\napp = "{app}"\nredis-url = "{redis_url}"\n'
    )
    result = _run(["--check"], tmp_path, FLOWCRAFT_CONFIG=str(tmp_path / "fastd.toml"))
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout
