"""Runs a flow control holds, as a real ``bridge run`` makes them, in headless Chromium:
throttled, debouncing, batched and sleeping runs show their reason and when they are
due; a cancelled run shows what cancelled it. Nothing is seeded: each status comes
from the bridge's own flow controls, through its run history, to the page (the event
card and the fan-out tree).
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.support import BridgeProcess, cloudevent, post_events
from tests.ui.screens import shot

CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{ui: {{enabled: true}}}}
telemetry: {{logs: {{format: console}}}}
drain_timeout: 2s
events:
  "flow/*": {{schema: none}}
handlers:
  - id: throttled
    on: flow/throttle
    type: python
    function: tests.ui.apps:noop
    throttle: {{limit: 1, period: 10m, key: event.data.key}}
  - id: debounced
    on: flow/debounce
    type: python
    function: tests.ui.apps:noop
    debounce: {{period: 10m, key: event.data.key}}
  - id: batched
    on: flow/batch
    type: python
    function: tests.ui.apps:take_batch
    batch: {{max_size: 100, timeout: 10m, key: event.data.key}}
  - id: sleeper
    on: flow/sleep
    type: python
    function: tests.ui.apps:nap
    cancel_on: [{{event: flow/cancel, match: event.data.key}}]
"""

DUE = re.compile(r"due in (9|10) min")


async def run_of(page: Page, url: str, event_id: str, handler: str) -> tuple[Locator, Locator]:
    """The handler's run card on the event's page, and its node in the fan-out tree."""
    await page.goto(f"{url}/ui#/event/{event_id}")
    card = page.locator(f'.run[data-handler="{handler}"]')
    node = page.locator(f'#tree li.run-node[data-run="{handler}"]')
    return card, node


async def shows(
    page: Page, url: str, event_id: str, handler: str, status: str, reason: str | re.Pattern[str]
) -> tuple[Locator, Locator]:
    """The run shows ``status`` with ``reason``, in its card and in the tree (the page
    follows the history live; it is reloaded until the run has that status)."""
    card, node = await run_of(page, url, event_id, handler)
    for _ in range(40):
        if await card.count() and await card.get_attribute("data-status") == status:
            break
        await page.wait_for_timeout(500)
        card, node = await run_of(page, url, event_id, handler)
    for where in (card, node):
        await expect(where).to_have_attribute("data-status", status)
        line = where.locator(".status-line").first
        await expect(line.locator(".badge")).to_have_text(status.replace("_", " "))
        await expect(line.locator(".reason")).to_contain_text(reason)
    return card, node


@pytest.mark.e2e
async def test_runs_held_by_flow_controls_show_their_reason_and_due_time(
    tmp_path: Path, browser: Browser
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "state.db"))
    bridge = BridgeProcess(config, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready()
        events = [
            cloudevent("t-1", "flow/throttle", {"key": "shop"}),
            cloudevent("t-2", "flow/throttle", {"key": "shop"}),  # the period's one run is taken
            cloudevent("d-1", "flow/debounce", {"key": "cart"}),
            cloudevent("b-1", "flow/batch", {"key": "acme"}),
            cloudevent("b-2", "flow/batch", {"key": "acme"}),
            cloudevent("s-1", "flow/sleep", {"key": "keep"}),
            cloudevent("s-2", "flow/sleep", {"key": "drop"}),
        ]
        async with aiohttp.ClientSession() as session:
            status, _ = await post_events(session, bridge.url, events)
            assert status == 202
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        url = bridge.url

        card, node = await shows(page, url, "t-2", "throttled", "throttled", "throttle")
        await expect(card.locator(".due").first).to_contain_text(DUE)
        await expect(node.locator(".due").first).to_contain_text(DUE)

        card, _ = await shows(page, url, "d-1", "debounced", "debouncing", "debounce")
        await expect(card.locator(".due").first).to_contain_text(DUE)

        # Both events wait in one batch, under its key, until its timeout.
        for event_id, size in (("b-1", 1), ("b-2", 2)):
            card, node = await shows(
                page, url, event_id, "batched", "batched", f'batch key "acme": {size} of 100'
            )
            await expect(card.locator(".due").first).to_contain_text(DUE)
            await expect(node.locator(".due").first).to_contain_text(DUE)
        await shot(page, tmp_path, "flow-statuses")

        card, node = await shows(page, url, "s-1", "sleeper", "sleeping", "cool-off")
        await expect(card.locator(".due").first).to_contain_text(DUE)
        await expect(node.locator(".due").first).to_contain_text(DUE)

        # A cancelling event ends the other sleeping run: cancelled, with what cancelled it.
        async with aiohttp.ClientSession() as session:
            status, _ = await post_events(
                session, url, [cloudevent("c-1", "flow/cancel", {"key": "drop"})]
            )
            assert status == 202
        card, _ = await shows(page, url, "s-2", "sleeper", "cancelled", "flow/cancel")
        await expect(card.locator(".due")).to_have_count(0)  # final: due no more
        # ... while the one of the other key sleeps on.
        await shows(page, url, "s-1", "sleeper", "sleeping", "cool-off")
        await context.close()
    finally:
        assert await bridge.stop() == 0
