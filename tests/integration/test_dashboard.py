"""`flowcraft-fast dashboard` (issue 12): a real CLI process serving the page and its JSON API,
a real worker, a real Redis, and the page loaded in a real headless Chromium (selenium with
Debian's `chromium` + `chromium-driver`). Screenshots are saved under the test's temp dir.

Without Chromium the browser test is skipped on a developer's machine and fails in CI (`CI`
set), where .ci/run installs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from dashboard_process import dashboard_process, fetch
from flowcraft_fast import BullMQAdapter, FlowClient, FlowRuntime, NodeContext

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUEUE = "dash"
ORDER = {
    "id": "order",
    "nodes": [
        {"id": "fetch", "uses": "ok"},
        {"id": "check", "uses": "ok"},
        {"id": "ship", "uses": "ok"},
    ],
    "edges": [{"source": "fetch", "target": "check"}, {"source": "check", "target": "ship"}],
}
BROKEN = {
    "id": "broken",
    "nodes": [{"id": "fetch", "uses": "ok"}, {"id": "charge", "uses": "boom"}],
    "edges": [{"source": "fetch", "target": "charge"}],
}
GATE = {
    "id": "gate",
    "nodes": [
        {"id": "a", "uses": "ok"},
        {"id": "approve", "uses": "wait"},
        {"id": "b", "uses": "ok"},
    ],
    "edges": [{"source": "a", "target": "approve"}, {"source": "approve", "target": "b"}],
}


async def ok(ctx: NodeContext) -> str:
    return "ok"


async def boom(ctx: NodeContext) -> None:
    raise ValueError("card declined")


@asynccontextmanager
async def worker(url: str) -> AsyncIterator[BullMQAdapter]:
    rt = FlowRuntime(blueprints=[ORDER, BROKEN, GATE], registry={"ok": ok, "boom": boom})
    adapter = BullMQAdapter(runtime_options=rt.options, connection=url, queue_name=QUEUE)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close(timeout=5)


def dashboard(url: str, *extra: str) -> Any:
    return dashboard_process(url, QUEUE, *extra)


async def three_runs(client: FlowClient) -> tuple[str, str, str]:
    done = await client.start("order", {})
    assert (await client.wait(done, timeout=30)).status == "completed"
    failed = await client.start("broken", {})
    assert (await client.wait(failed, timeout=30)).status == "failed"
    waiting = await client.start("gate", {})
    assert (await client.wait(waiting, timeout=30)).status == "awaiting"
    return done, failed, waiting


async def test_the_json_api(redis_url: str) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    async with worker(redis_url):
        done, failed, waiting = await three_runs(client)
        with dashboard(redis_url) as base:
            code, queues = fetch(base + "/api/queues")
            assert code == 200
            (queue,) = queues["queues"]
            assert queue["name"] == QUEUE and queue["counts"]["failed"] >= 1
            assert len(queue["workers"]) == 1 and queue["workers"][0]["pid"] == os.getpid()

            code, listing = fetch(base + "/api/runs")
            assert code == 200
            assert [r["run_id"] for r in listing["runs"]][:3] == [waiting, failed, done]
            code, listing = fetch(base + "/api/runs?status=failed")
            assert [r["run_id"] for r in listing["runs"]] == [failed]
            assert fetch(base + "/api/runs?status=bogus")[0] == 400
            assert fetch(base + "/api/runs?limit=0")[0] == 400

            code, run = fetch(f"{base}/api/runs/{failed}")
            assert code == 200 and run["status"] == "failed"
            assert run["nodes"] == {"fetch": "completed", "charge": "failed"}
            assert run["errors"][0]["node_id"] == "charge"
            assert "card declined" in run["errors"][0]["message"]
            assert [n["id"] for n in run["graph"]["nodes"]] == ["fetch", "charge"]
            code, run = fetch(f"{base}/api/runs/{waiting}")
            assert run["nodes"] == {"a": "completed", "approve": "awaiting"}
            assert run["waiting_at"] == ["approve"]
            assert fetch(f"{base}/api/runs/no-such-run")[0] == 404

            # read-only by default; a wrong Host (DNS rebinding) is refused
            code, answer = fetch(f"{base}/api/runs/{waiting}/cancel", "POST", {},
                                 **{"X-Flowcraft-Action": "1"})  # fmt: skip
            assert code == 403 and "--allow-actions" in answer["error"]
            assert fetch(base + "/api/queues", Host="evil.example:80")[0] == 421
        assert await client.status(waiting) == "awaiting"

        with dashboard(redis_url, "--allow-actions") as base:
            url = f"{base}/api/runs/{waiting}/resume"
            code, answer = fetch(url, "POST", {"node": "approve", "output": "yes"})
            assert code == 403 and "X-Flowcraft-Action" in answer["error"]
            code, answer = fetch(url, "POST", {"node": "nope"}, **{"X-Flowcraft-Action": "1"})
            assert code == 409 and "not waiting at node" in answer["error"]
            code, _ = fetch(url, "POST", {"node": "approve", "output": "yes"},
                            **{"X-Flowcraft-Action": "1"})  # fmt: skip
            assert code == 200
            assert (await client.wait(waiting, timeout=30)).status == "completed"
            another = await client.start("gate", {})
            assert (await client.wait(another, timeout=30)).status == "awaiting"
            code, answer = fetch(f"{base}/api/runs/{another}/cancel", "POST", {},
                                 **{"X-Flowcraft-Action": "1"})  # fmt: skip
            assert code == 200 and answer == {"cancelled": True}
            assert await client.status(another) == "cancelled"


def chrome() -> Any:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are required in CI (.ci/run installs them)")
        pytest.skip(
            "chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,800"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def loaded(browser: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 20).until(
        lambda b: b.execute_script("return document.body.dataset.loaded") is not None
    )
    assert browser.execute_script("return document.body.dataset.loaded") == "1", (
        browser.find_element("tag name", "main").text
    )


def states(browser: Any) -> dict[str, str]:
    nodes = browser.find_elements("css selector", "#graph g[data-node]")
    return {n.get_attribute("data-node"): n.get_attribute("data-state") for n in nodes}


async def test_the_pages_in_a_real_browser(redis_url: str, tmp_path: Path) -> None:
    client = FlowClient(redis_url, queue_name=QUEUE)
    browser = chrome()
    try:
        async with worker(redis_url):
            done, failed, waiting = await three_runs(client)
            with dashboard(redis_url) as base:
                loaded(browser, base + "/")
                assert browser.find_element("css selector", "[data-count=failed]").text.startswith(
                    "failed: "
                )
                assert len(browser.find_elements("css selector", "#workers tr[data-worker]")) == 1
                live = browser.find_elements("css selector", "#live-runs tr[data-run]")
                assert [r.get_attribute("data-run") for r in live] == [waiting]
                ended = [
                    r.get_attribute("data-run")
                    for r in browser.find_elements("css selector", "#ended-runs tr[data-run]")
                ]
                assert ended[:2] == [failed, done]
                browser.save_screenshot(str(tmp_path / "overview.png"))

                # from the overview to the failed run's page, by its link
                browser.find_element("link text", failed).click()
                loaded(browser, browser.current_url)
                assert states(browser) == {"fetch": "completed", "charge": "failed"}
                error = browser.find_element("css selector", "[data-error-node=charge]").text
                assert "ValueError" in error and "card declined" in error
                assert len(browser.find_elements("css selector", "#graph line[data-edge]")) == 1
                browser.save_screenshot(str(tmp_path / "run-failed.png"))

                loaded(browser, f"{base}/runs/{done}")
                assert states(browser) == {n: "completed" for n in ("fetch", "check", "ship")}
                assert browser.find_elements("css selector", "[data-status=completed]")
                assert not browser.find_elements("id", "cancel")  # read-only
                browser.save_screenshot(str(tmp_path / "run-completed.png"))

            with dashboard(redis_url, "--allow-actions") as base:
                loaded(browser, f"{base}/runs/{waiting}")
                assert states(browser) == {"a": "completed", "approve": "awaiting", "b": "pending"}
                browser.find_element("css selector", "[data-resume-output=approve]").send_keys(
                    '"approved"'
                )
                browser.find_element("css selector", "[data-resume=approve]").click()
                for _ in range(300):  # the page's POST, then the worker runs approve and b
                    if await client.status(waiting) == "completed":
                        break
                    await asyncio.sleep(0.1)
                assert await client.status(waiting) == "completed"
                assert (await client.result(waiting)).context["approve"] == "approved"
                loaded(browser, f"{base}/runs/{waiting}")
                assert states(browser) == {n: "completed" for n in ("a", "approve", "b")}
        for name in ("overview.png", "run-failed.png", "run-completed.png"):
            assert (tmp_path / name).stat().st_size > 5000, name
    finally:
        browser.quit()
