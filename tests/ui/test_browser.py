"""The developer UI in a real browser (headless Chromium, Playwright) against `bridge run`.

One walk through what a developer does, with 10,000 older events in the history: send an event from the form (after the
schema's errors showed up before sending), see it appear in the live list, open
its fan-out tree, read a failing handler's attempts, replay its dead letter with
one click and watch the run succeed. Screenshots of each page go to the test's
directory; with ``BRIDGE_SCREENSHOTS=docs/screenshots`` they are kept for the README.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from bridge.store import create_store
from bridge.store.contracts import EventRecord
from tests.support import BridgeProcess, post_events
from tests.ui.screens import shot

CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{ui: {{enabled: true}}}}
telemetry: {{logs: {{format: console}}}}
defaults: {{retry: {{attempts: 2, min_delay: 0, jitter: 0}}}}
events:
  job/run: {{schema: "tests.ui.models:Job"}}
  job/note: {{schema: none}}
handlers:
  - {{id: steady, on: job/run, type: python, function: "tests.apps.recorder:record"}}
  - {{id: gated, on: job/run, type: python, function: "tests.apps.recorder:gated"}}
  - {{id: notes, on: job/note, type: python, function: "tests.apps.recorder:record"}}
"""


async def seed_history(db: Path, count: int) -> None:
    """``count`` finished events from an hour ago, as the recorder would have left them."""
    store = create_store(f"sqlite:///{db}")
    await store.open()
    try:
        start = time.time() - 3600
        statuses = ["succeeded", "succeeded", "succeeded", "partial", "dead_lettered", "unrouted"]
        records = [
            EventRecord(
                id=f"old-{i:05d}",
                type="job/note" if i % 3 else "job/run",
                source="api",
                received_at=start + i * 0.1,
                status=statuses[i % len(statuses)],
                correlation_id=f"batch-{i // 20}",
                finished_at=start + i * 0.1 + 0.05,
            )
            for i in range(count)
        ]
        await store.history_put(records, [])
    finally:
        await store.close()


@pytest.mark.e2e
async def test_send_watch_open_tree_and_replay_a_dead_letter(
    tmp_path: Path, browser: Browser
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "state.db"))
    await seed_history(tmp_path / "state.db", 10_000)
    gate = tmp_path / "gate"
    gate.touch()
    bridge = BridgeProcess(
        config,
        tmp_path,
        env={"BRIDGE_TEST_RECORD": str(tmp_path / "runs.txt"), "BRIDGE_TEST_GATE": str(gate)},
    )
    bridge.start()
    try:
        await bridge.wait_ready()
        async with aiohttp.ClientSession() as session:  # some history around the one we send
            background = [
                {"specversion": "1.0", "id": f"note-{i}", "type": "job/note", "data": {"n": i}}
                for i in range(3)
            ]
            status, _ = await post_events(session, bridge.url, background)
            assert status == 202
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{bridge.url}/ui#/send")

        # The schema's errors show before anything is sent; Send stays disabled.
        await page.select_option("#send-type", "job/run")
        await page.fill("#send-data", '{"key": -1, "name": ""}')
        errors = page.locator("#send-errors li")
        await expect(errors).to_have_count(2)
        await expect(errors.nth(0)).to_contain_text("key")
        await expect(page.locator("#send")).to_be_disabled()
        await page.fill("#send-correlation", "flow-7")
        await shot(page, tmp_path, "send")
        await page.fill("#send-data", '{"key": 7, "name": "nightly report"}')
        await expect(page.locator("#send-verdict")).to_have_text("valid")
        await expect(errors).to_have_count(0)
        await page.click("#send")
        sent = page.locator("#send-result a")
        await expect(sent).to_be_visible()
        event_id = await sent.get_attribute("data-id")  # the link shows it shortened
        assert event_id is not None and len(event_id) > 10

        # The list shows it without a reload: running, then partial (gated dead-lettered).
        await page.click("nav a[data-page=events]")
        row = page.locator(f'tr[data-event-id="{event_id}"]')
        await expect(row).to_have_attribute("data-status", "partial", timeout=20_000)
        rows = page.locator("#events tr")
        await expect(rows).to_have_count(50)  # one page of the 10,004 events
        await expect(row).to_contain_text("flow-7")
        await shot(page, tmp_path, "events")
        first = await rows.evaluate_all("rs => rs.map(r => r.dataset.eventId)")
        await page.click("#older")
        await expect(page.locator("#page-info")).to_have_text("page 2")
        await expect(rows).to_have_count(50)
        second = await rows.evaluate_all("rs => rs.map(r => r.dataset.eventId)")
        assert not set(first) & set(second)
        assert second[0] == "old-09953"  # page 1: the 4 new events and seeded 9999..9954
        await page.click("#newer")
        await expect(page.locator(f'#events tr[data-event-id="{event_id}"]')).to_be_visible()
        await page.fill("#search", "flow-7")
        await page.press("#search", "Enter")
        await expect(page.locator("#events tr")).to_have_count(1)

        # Its fan-out tree: steady succeeded; gated failed both attempts, with the error.
        await row.locator("a").first.click()
        gated = page.locator('.run[data-handler="gated"]')
        await expect(gated).to_have_attribute("data-status", "dead_lettered")
        # Handler cards in config order (steady, then gated), not alphabetical.
        cards = page.locator("#runs .run")
        assert await cards.evaluate_all("cs => cs.map(c => c.dataset.handler)") == [
            "steady",
            "gated",
        ]
        # A successful attempt says so under "Outcome"; there is no "Error" heading, no "ok".
        steady_attempt = page.locator('.run[data-handler="steady"] tr.attempt')
        await expect(steady_attempt).to_have_count(1)
        await expect(steady_attempt).to_have_attribute("data-outcome", "succeeded")
        await expect(steady_attempt.locator("td.outcome")).to_have_text("succeeded")
        headings = {h.upper() for h in await page.locator("#runs th").all_inner_texts()}
        assert "ERROR" not in headings and "OUTCOME" in headings
        attempts = gated.locator("tr.attempt")
        await expect(attempts).to_have_count(2)
        await expect(attempts.nth(1)).to_contain_text("RuntimeError: the gate is closed")
        # Each failed attempt keeps its stack trace, folded until asked for.
        trace = attempts.nth(1).locator("details.traceback")
        await trace.locator("summary").click()
        await expect(trace.locator("pre")).to_contain_text(
            'raise RuntimeError("the gate is closed")'
        )
        await expect(page.locator('.run[data-handler="steady"]')).to_have_attribute(
            "data-status", "succeeded"
        )
        await shot(page, tmp_path, "event", full_page=True)

        # The dead letters page lists it with its reason.
        await page.click("nav a[data-page=dead-letters]")
        letters = page.locator("#letters tr[data-letter]")
        await expect(letters).to_have_count(1)
        await expect(letters.first).to_contain_text("RuntimeError: the gate is closed")
        await shot(page, tmp_path, "dead-letters")

        # The downstream is fixed; one click replays to gated alone, and it succeeds.
        gate.unlink()
        await page.go_back()
        await page.click('.run[data-handler="gated"] button.replay')
        await expect(gated).to_have_attribute("data-status", "succeeded", timeout=20_000)
        await expect(page.locator('.run[data-handler="steady"]')).to_have_attribute(
            "data-status", "succeeded"
        )
        await page.click("nav a[data-page=dead-letters]")
        await expect(page.locator("#letters tr[data-letter]")).to_have_count(0)  # none pending
        await page.select_option("#dl-status", "replayed")
        await expect(page.locator("#letters tr[data-letter]")).to_have_count(1)

        # A discarded letter replays only after the user confirms it.
        gate.touch()
        async with aiohttp.ClientSession() as session:
            again = {"specversion": "1.0", "id": "again-1", "type": "job/run"}
            again["data"] = {"key": 8, "name": "again"}
            status, _ = await post_events(session, bridge.url, [again])
            assert status == 202
        await page.select_option("#dl-status", "pending")
        pending = page.locator("#letters tr[data-letter]")
        await expect(pending).to_have_count(1, timeout=20_000)
        await pending.first.locator("button.discard").click()
        await expect(pending).to_have_count(0)
        await page.select_option("#dl-status", "discarded")
        discarded = page.locator("#letters tr[data-letter]")
        await expect(discarded).to_have_count(1)
        gate.unlink()
        page.once("dialog", lambda dialog: dialog.dismiss())
        await discarded.first.locator("button.replay-discarded").click()
        async with (  # declined: nothing was sent, the letter is still discarded
            aiohttp.ClientSession() as session,
            session.get(f"{bridge.url}/v1/dead-letters?status=discarded") as resp,
        ):
            assert [d["event_id"] for d in (await resp.json())["items"]] == ["again-1"]
        page.once("dialog", lambda dialog: dialog.accept())
        await discarded.first.locator("button.replay-discarded").click()
        await expect(discarded).to_have_count(0)
        await page.select_option("#dl-status", "replayed")
        await expect(page.locator("#letters tr[data-letter]")).to_have_count(2)

        await page.click("nav a[data-page=status]")
        await expect(page.locator('#handlers tr[data-handler="gated"]')).to_contain_text("50.0 %")
        await expect(page.locator('#connectors tr[data-connector="api"]')).to_contain_text(
            "connected"
        )
        await shot(page, tmp_path, "status")
        runs = (tmp_path / "runs.txt").read_text().splitlines()
        # steady ran once; gated ran once, on the replay (its failures record nothing).
        assert sorted(line.split(" ")[1] for line in runs if event_id in line) == [
            "gated",
            "steady",
        ]
    finally:
        assert await bridge.stop() == 0
