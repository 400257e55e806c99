"""Every conformance case, distributed, as the minimal ACL users of tests/acl.py (issue 10).

The same two `flowcraft-fastd` processes as test_distributed.py (with the reconciler surveying
every second) connect as the worker user; FlowClient (start, wait, resume, cancel, status) and
RedisContext's reads connect as the client user; only the nodes' execution ledger and the
checks use the default user. On a Redis of its own, so its ACL LOG holds only what these runs
did: after every case it must hold no denial but the expected ones (CLIENT SETINFO, which
redis-rs sends when it connects and whose reply it ignores, and the worker's CONFIG GET of
maxmemory-policy, which warns and goes on). A NOPERM the code swallows (a SUBSCRIBE the stops
listener retries, say) would show up there; one it does not swallow fails the case itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from acl import client_acl, setuser_args, unexpected_denials, user_url, worker_acl
from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.client import FlowClient
from flowcraft_fast.distributed.context import RedisContext

from .harness import check_case, run_case_in_memory
from .test_distributed import (
    QUEUE,
    _params,
    assert_same_outcome,
    run_case_distributed,
    serving_daemons,
)

WORKER, CLIENT = "flowcraft-worker", "flowcraft-client"
PASSWORD = "conformance-acl-pw"
CONFIG_WARNING = "cannot read maxmemory-policy"


@dataclass
class Deployment:
    admin: redis.Redis
    admin_url: str
    client_url: str


@pytest.fixture(scope="module")
def acl_deployment() -> Iterator[Deployment]:
    server = RedisServer().start()
    admin = redis.Redis.from_url(server.url)
    try:
        admin.execute_command(*setuser_args(WORKER, PASSWORD, worker_acl(QUEUE)))
        admin.execute_command(*setuser_args(CLIENT, PASSWORD, client_acl(QUEUE)))
        admin.execute_command("ACL", "LOG", "RESET")
        worker_url = user_url(server.url, WORKER, PASSWORD)
        with serving_daemons(worker_url, server.url, "--reconcile-interval", "1") as outputs:
            yield Deployment(admin, server.url, user_url(server.url, CLIENT, PASSWORD))
        for output in outputs:
            # CONFIG is denied; the worker reads the eviction policy from INFO memory instead
            # and has nothing to warn about
            assert "NOPERM" not in output and CONFIG_WARNING not in output, output
            assert "reconciler pass failed" not in output, output
        assert unexpected_denials(admin, worker=WORKER) == []
    finally:
        admin.close()
        server.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("case", _params())
async def test_case_as_acl_users(case: dict[str, Any], acl_deployment: Deployment) -> None:
    d = acl_deployment
    distributed = await run_case_distributed(case, d.client_url, ledger_url=d.admin_url)
    check_case(case, distributed)
    assert_same_outcome(case, await run_case_in_memory(case), distributed)
    final = distributed.resumed or distributed.result
    if final is not None:  # status and RedisContext's reads, as the client user
        assert await FlowClient(d.client_url, queue_name=QUEUE).status(final.run_id) == final.status
        context = await RedisContext(d.client_url, final.run_id).to_dict()
        assert all(context[k] == v for k, v in final.context.items() if k in context)
    assert unexpected_denials(d.admin, worker=WORKER) == []
