"""The developer UI's fan-out hierarchy, joins, timeline and layout, in headless Chromium
against `bridge run`.

An order fans out to two items, each item to a shipment; the carrier refuses one
sku, so a grandchild is dead-lettered while the root's own runs succeeded. A join
waits for three items of which two arrive. The page must show all of it, update
live over server-sent events (no polling), load nothing but the bridge, and stay
usable at 420 px. Screenshots go to the test's directory (and to
``$BRIDGE_SCREENSHOTS`` for the README).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, Request, expect

from bridge.store import create_store
from bridge.store.contracts import Attempt, EventRecord, RunRecord
from tests.support import BridgeProcess, post_events
from tests.ui.screens import shot

CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{ui: {{enabled: true}}}}
telemetry: {{logs: {{format: console}}}}
defaults: {{retry: {{attempts: 2, min_delay: 0, jitter: 0}}}}
events:
  "order/*": {{schema: none}}
handlers:
  - {{id: split, on: order/placed, type: python, function: "tests.ui.apps:split"}}
  - {{id: pack, on: order/item, type: python, function: "tests.ui.apps:pack"}}
  - {{id: ship, on: order/ship, type: python, function: "tests.ui.apps:ship"}}
  - id: gather
    type: join
    start: order/placed
    on: order/item
    match: event.data.order == start.data.order
    expect: start.data.expect
    member_key: event.data.sku
    within: 10m
    emit: order/gathered
  - {{id: notify, on: order/gathered, type: log}}
"""

ORDER = {
    "specversion": "1.0",
    "id": "order-2026-1001",
    "type": "order/placed",
    "source": "shop",
    "data": {"order": 1001, "skus": ["good", "bad"], "expect": ["good", "bad", "late"]},
}


async def seed_waiting_runs(db: Path) -> float:
    """Runs with statuses this bridge does not make itself (flow controls' statuses):
    the UI must show any status with its reason and due time. Returns the due time."""
    store = create_store(f"sqlite:///{db}")
    await store.open()
    due = time.time() + 600
    try:
        await store.history_put(
            [EventRecord("waiting-1", "order/placed", "shop", time.time() - 5, "running")],
            [
                RunRecord(
                    "waiting-1",
                    "split",
                    "throttled",
                    [],
                    error="throttle: 5 per 1s for key shop",
                    due_at=due,
                ),
                RunRecord(
                    "waiting-1",
                    "gather",
                    "sleeping",
                    [Attempt(1, time.time() - 4, 0.01)],
                    error="ctx.sleep('cool-off', '10m')",
                    due_at=due,
                ),
            ],
        )
    finally:
        await store.close()
    return due


async def no_page_scroll(page: Page) -> None:
    width = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert width[0] <= width[1], f"the page scrolls sideways at 420 px: {width}"


@pytest.mark.e2e
async def test_tree_joins_timeline_live_updates_and_a_narrow_screen(
    tmp_path: Path, browser: Browser
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "state.db"))
    await seed_waiting_runs(tmp_path / "state.db")
    bridge = BridgeProcess(config, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready()
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        await context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = await context.new_page()
        requests: list[Request] = []
        page.on("request", lambda r: requests.append(r))
        violations: list[str] = []
        page.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )
        await page.goto(f"{bridge.url}/ui#/events")
        await expect(page.locator("#conn")).to_have_attribute("data-live", "on")
        # The page's first load has answered (the stream can be live before it is sent,
        # on a loaded machine: it was then counted as a poll).
        await expect(page.locator('#events tr[data-event-id="waiting-1"]')).to_have_count(1)

        # Idle: the list is not polled (the old UI asked every 2 s).
        listed = [r for r in requests if "/ui/api/events" in r.url]
        await page.wait_for_timeout(5000)
        assert [r for r in requests if "/ui/api/events" in r.url] == listed

        # An order arrives: the list shows it by itself, from the history's event stream.
        async with aiohttp.ClientSession() as session:
            status, _ = await post_events(session, bridge.url, [ORDER])
            assert status == 202
        root_row = page.locator('tr[data-event-id="order-2026-1001"]')
        await expect(root_row).to_have_attribute("data-status", "succeeded", timeout=20_000)
        # The seeded event, the order, its 2 items and their 2 shipments.
        await expect(page.locator("#events tr[data-event-id]")).to_have_count(6, timeout=20_000)
        assert len([r for r in requests if "/ui/api/events" in r.url]) > len(listed)
        stream = [r for r in requests if r.url.endswith("/ui/api/stream")]
        assert stream and stream[0].resource_type == "eventsource"
        # Its row: handler count, duration, a relative time, the id shortened with a copy button.
        await expect(root_row.locator("td.handlers")).to_have_text("2")  # split and gather
        # Its own runs succeeded; the row still says a shipment below it was dead-lettered.
        await expect(root_row.locator("td.status")).to_have_attribute(
            "data-aggregate", "dead_lettered"
        )
        await expect(root_row.locator("td.status .aggregate")).to_contain_text("dead lettered")
        await expect(root_row.locator("td.duration")).to_have_text(re.compile(r"\d ?m?s$"))
        await expect(root_row.locator("td.when time")).to_have_text(re.compile(r"ago|just now"))
        await expect(root_row.locator("td.when time")).to_have_attribute("title", re.compile(r"\d"))
        await expect(root_row.locator("a.id[data-id]")).to_have_text("order-20…")
        await root_row.locator("button.copy").first.click()
        assert await page.evaluate("navigator.clipboard.readText()") == "order-2026-1001"
        await shot(page, tmp_path, "events-fanout")

        # The whole hierarchy from the root: 2 items, 2 shipments; the refused one dead-lettered.
        await page.goto(f"{bridge.url}/ui#/event/order-2026-1001")
        tree = page.locator("#tree")
        await expect(tree.locator("li.event-node")).to_have_count(5, timeout=20_000)
        root = tree.locator('li[data-node="order-2026-1001"]')
        await expect(root).to_have_attribute("data-status", "succeeded")
        await expect(root).to_have_attribute("data-aggregate", "dead_lettered")
        await expect(root.locator(":scope > .node-head .aggregate")).to_contain_text(
            "dead lettered"
        )
        ships = tree.locator('li.run-node[data-run="ship"]')
        assert sorted(await ships.evaluate_all("rs => rs.map(r => r.dataset.status)")) == [
            "dead_lettered",
            "succeeded",
        ]
        items = tree.locator('li.event-node[data-aggregate="dead_lettered"]')
        await expect(items).to_have_count(3)  # the root, the bad item, its shipment
        # The waterfall: a row per event and per run; the refused shipment failed twice.
        waterfall = page.locator("#waterfall")
        await expect(waterfall.locator(".wf-row[data-event]:not(.wf-run)")).to_have_count(5)
        failed = waterfall.locator('.wf-row[data-run="ship"] .wf-bar[data-outcome="failed"]')
        await expect(failed).to_have_count(2)
        await expect(waterfall.locator(".tick").first).to_have_text("+0.00 ms")
        # The join: 3 expected, 2 arrived, "late" missing, a deadline in about 10 minutes.
        join = page.locator("#joins .join")
        await expect(join).to_have_count(1)
        await expect(join.locator(".expected")).to_contain_text("3")
        await expect(join.locator(".arrived .count")).to_have_text("2")
        await expect(join.locator("dd.missing")).to_have_text('"late"')
        await expect(join.locator(".deadline")).to_contain_text(re.compile(r"in (9|10) min"))
        await shot(page, tmp_path, "tree", full_page=True)

        # From the grandchild, the same tree, with the grandchild in focus and its trace.
        await tree.locator('li.event-node[data-status="dead_lettered"] > .node-head a').click()
        await expect(page.locator("#tree li.focus")).to_have_attribute(
            "data-status", "dead_lettered"
        )
        await expect(page.locator("#tree li.event-node")).to_have_count(5)
        trace = page.locator('.run[data-handler="ship"] tr.attempt').nth(1)
        await trace.locator("summary").click()
        await expect(trace.locator("pre")).to_contain_text("raise RuntimeError(")

        # The Joins page lists the open join.
        await page.click("nav a[data-page=joins]")
        await expect(page.locator("#open-joins .join dd.missing")).to_have_text('"late"')
        await shot(page, tmp_path, "joins")

        # Statuses this bridge never made itself show with their reason and due time.
        await page.goto(f"{bridge.url}/ui#/event/waiting-1")
        throttled = page.locator('.run[data-handler="split"]')
        await expect(throttled).to_have_attribute("data-status", "throttled")
        await expect(throttled.locator(".status-line")).to_contain_text(
            "throttle: 5 per 1s for key shop"
        )
        await expect(throttled.locator(".due")).to_contain_text(re.compile(r"due in (9|10) min"))
        await expect(page.locator('.run[data-handler="gather"] .badge').first).to_have_text(
            "sleeping"
        )

        # The bridge restarts under an open page: the stream's end does not hold up the stop,
        # the page reconnects by itself and shows what arrives next.
        await page.click("nav a[data-page=events]")
        await expect(page.locator("#conn")).to_have_attribute("data-live", "on")
        assert await bridge.stop() == 0
        await expect(page.locator("#conn")).to_have_attribute("data-live", "off")
        # A page asked for while the bridge is down cannot load; it loads by itself once the
        # bridge is back (before: it stayed on its error, and live updates never showed).
        await page.click("nav a[data-page=dead-letters]")
        await page.click("nav a[data-page=events]")
        await expect(page.locator("main")).to_contain_text("Could not load this page")
        bridge.start()
        await bridge.wait_ready()
        await expect(page.locator("#conn")).to_have_attribute("data-live", "on", timeout=20_000)
        await expect(page.locator('tr[data-event-id="order-2026-1001"]')).to_be_visible()
        again = {**ORDER, "id": "order-2026-1002"}
        again["data"] = {"order": 1002, "skus": ["good"], "expect": ["good"]}
        async with aiohttp.ClientSession() as session:
            status, _ = await post_events(session, bridge.url, [again])
            assert status == 202
        await expect(page.locator('tr[data-event-id="order-2026-1002"]')).to_have_attribute(
            "data-status", "succeeded", timeout=20_000
        )
        # Its join completed: the outcome event hangs under the order that started it.
        await page.goto(f"{bridge.url}/ui#/event/order-2026-1002")
        await expect(page.locator("#joins .join")).to_have_attribute("data-status", "completed")
        gathered = page.locator('#tree li.event-node:has(> .node-head a:text("order/gathered"))')
        await expect(gathered).to_have_count(1, timeout=20_000)

        # 420 px: every page is usable without sideways scrolling; actions stay on one line.
        await page.set_viewport_size({"width": 420, "height": 860})
        for where in ("events", "event/order-2026-1001", "dead-letters", "joins", "send", "status"):
            await page.goto(f"{bridge.url}/ui#/{where}")
            await expect(page.locator("main h1")).to_be_visible()
            await page.wait_for_load_state("networkidle")
            await no_page_scroll(page)
            if where == "event/order-2026-1001":
                await shot(page, tmp_path, "narrow-tree")
            if where == "dead-letters":
                row = page.locator("#letters tr[data-letter]")
                await expect(row).to_have_count(1)
                tops = await row.locator("td.actions button").evaluate_all(
                    "bs => bs.map(b => b.getBoundingClientRect().top)"
                )
                assert len(tops) == 2 and tops[0] == tops[1], tops  # Replay, Discard
                await shot(page, tmp_path, "narrow-dead-letters")

        # A favicon, served by the bridge; nothing was asked of any other origin.
        href = await page.locator('link[rel="icon"]').get_attribute("href")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{bridge.url}{href}") as resp,
        ):
            assert resp.status == 200 and resp.content_type == "image/svg+xml"
        foreign = [r.url for r in requests if not r.url.startswith(bridge.url)]
        assert foreign == [] and violations == []
        await context.close()
    finally:
        assert await bridge.stop() == 0
