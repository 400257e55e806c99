"""A worker process for the chaos tests: serves chaos_app's blueprints until it is killed.

    python chaos_worker.py REDIS_URL [LEASE_MS] [STALLED_INTERVAL_S] [CONCURRENCY]

$CHAOS_LEDGER_URL puts the nodes' ledger on another Redis (default REDIS_URL: a cluster's
tests keep it on a single server); $CHAOS_PARTITIONS gives the queue's partition count.

Prints ``READY <pid>`` on stdout once it consumes; logs warnings (lease lost, stalled jobs) on
stderr, each line ``[worker <pid>] <LEVEL> <message>``. It never exits on its own: the test
ends it with a signal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chaos_app import QUEUE, make_runtime

from flowcraft_fast.distributed.adapter import BullMQAdapter


async def main() -> None:
    url = sys.argv[1]
    lease_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    stalled_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"[worker {os.getpid()}] %(levelname)s %(message)s",
    )
    rt = make_runtime(os.environ.get("CHAOS_LEDGER_URL") or url)
    adapter = BullMQAdapter(
        runtime_options=rt.options,
        connection=url,
        queue_name=QUEUE,
        partitions=int(os.environ.get("CHAOS_PARTITIONS") or 1),
        concurrency=concurrency,
        lease_ms=lease_ms,
        stalled_interval_seconds=stalled_s,
    )
    await adapter.start()
    print(f"READY {os.getpid()}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
