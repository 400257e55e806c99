"""Fixtures for the pytest-benchmark suites in benches/.

Smoke (CI, seconds):   pytest benches --benchmark-disable -q
Real run with JSON:    pytest benches --benchmark-json=benches/results-pytest.json

`--benchmark-disable` runs each benchmark once with small counts (correctness only). A real run
uses the full counts (`--bench-scale` multiplies them). One private redis-server serves the
session (never port 6379); at most one worker process is alive at a time, so an idle peer (arq
polls every 10 ms) never adds load or commands to another implementation's measurement.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402

# "reconcile": stalled (or idle) runs per reconciler pass, bench_reconciler.py
FULL = {"chain10": 200, "fan10": 200, "fan100": 50, "latency": 50, "reconcile": 2000, "rounds": 3}
SMOKE = {"chain10": 10, "fan10": 10, "fan100": 3, "latency": 3, "reconcile": 20, "rounds": 1}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-scale", type=float, default=1.0,
        help="multiply the benchmark run counts (real runs only)",
    )  # fmt: skip


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Any:
    # bench_*.py is not in pytest's default python_files; collect it when benches/ is given as
    # a directory (a file named on the command line is collected by pytest itself).
    if (
        file_path.parent == HERE
        and file_path.name.startswith("bench_")
        and file_path.suffix == ".py"
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def counts(request: pytest.FixtureRequest) -> dict[str, int]:
    if request.config.getoption("benchmark_disable", False):
        return dict(SMOKE)
    scale = request.config.getoption("--bench-scale")
    out = {k: max(1, int(v * scale)) for k, v in FULL.items()}
    out["rounds"] = FULL["rounds"]
    return out


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    from flowcraft_fast.devserver import RedisServer

    with RedisServer() as srv:
        yield srv.url


class Sessions:
    """Keeps at most one benchlib.Session (worker process + client) alive."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.current: benchlib.Session | None = None

    def get(self, impl: str) -> benchlib.Session:
        if self.current is not None and self.current.impl == impl:
            return self.current
        self.close()
        if not benchlib.available(impl):
            pytest.skip(f"{impl} is not installed")
        import redis

        with redis.Redis.from_url(self.url) as admin:
            admin.flushall()
        self.current = benchlib.Session(impl, self.url).start()
        return self.current

    def close(self) -> None:
        if self.current is not None:
            current, self.current = self.current, None
            current.close()


@pytest.fixture(scope="session")
def sessions(redis_url: str) -> Iterator[Sessions]:
    s = Sessions(redis_url)
    try:
        yield s
    finally:
        s.close()
