"""Worker memory over a long run (smoke in CI; the 1,000,000-step figures come from
`python benches/soak_rss.py`). Runs a few thousand steps and checks the samples were taken; no
memory limit is asserted on a shared machine."""

from __future__ import annotations

import redis
import soak_rss


def test_soak_reports_worker_rss(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as admin:
        admin.flushall()
    report = soak_rss.soak(redis_url, steps=4_000, in_flight=50)
    assert [s["at"] for s in report["samples"]] == [0.1, 0.5, 1.0]
    assert report["steps"] == 4_000
    assert all(s["rss_mb"] > 0 for s in report["samples"])
