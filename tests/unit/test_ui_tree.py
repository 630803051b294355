"""The UI's fan-out tree, join views and live stream, over the real server and a SQLite store.

History rows are written straight into the store (``history_put``) as the recorder
would; the live stream is fed by the runtime's own history recorder.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bridge.app.runtime import Runtime
from bridge.history_feed import HistoryFeed
from bridge.store.contracts import Attempt, EventRecord, Join, RunRecord, event_status
from bridge.ui.tree import worst
from tests.unit.ui_server import ui_server

CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:8787", ui: {{enabled: true}}}}
events:
  "*": {{schema: none}}
handlers:
  - {{id: zeta, on: order/placed, type: log}}
  - {{id: alpha, on: order/placed, type: log}}
  - {{id: mid, on: order/placed, type: log}}
  - id: gather
    type: join
    start: report/started
    on: report/part
    match: event.data.batch == start.data.batch
    expect: start.data.parts
    member_key: event.data.part
    within: 60s
    emit: report/done
"""


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Runtime]]:
    async with ui_server(CONFIG.format(db=tmp_path / "ui.db")) as pair:
        yield pair


def event(event_id: str, at: float, status: str, parent: str | None = None) -> EventRecord:
    return EventRecord(event_id, "order/placed", "api", at, status, parent_id=parent)


def run(event_id: str, handler: str, status: str, *children: str, **kw: Any) -> RunRecord:
    attempt = Attempt(1, 1000.0, 0.01, None if status == "succeeded" else "boom")
    return RunRecord(event_id, handler, status, [attempt], children=list(children), **kw)


def statuses(node: dict[str, Any]) -> dict[str, tuple[str, str]]:
    out = {node["id"]: (node["status"], node["aggregate"])}
    for child in node["children"]:
        out.update(statuses(child))
    return out


async def test_the_tree_holds_grandchildren_and_a_root_shows_its_subtree_dead_lettered(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    await runtime.store.history_put(
        [
            event("root", 1000.0, "succeeded"),
            event("child-a", 1000.1, "succeeded", "root"),
            event("child-b", 1000.2, "succeeded", "root"),
            event("grand", 1000.3, "dead_lettered", "child-a"),
            event("other", 1000.4, "succeeded"),
        ],
        [
            run("root", "zeta", "succeeded", "child-a"),
            run("root", "alpha", "succeeded", "child-b"),
            run("child-a", "mid", "succeeded", "grand"),
            run("child-b", "mid", "succeeded"),
            run("grand", "alpha", "dead_lettered"),
        ],
    )
    # Asked from the grandchild, the tree is the whole hierarchy, from its root.
    resp = await client.get("/ui/api/events/grand")
    assert resp.status == 200
    body = await resp.json()
    tree = body["tree"]
    assert tree["focus"] == "grand" and tree["nodes"] == 4 and not tree["truncated"]
    assert statuses(tree["root"]) == {
        "root": ("succeeded", "dead_lettered"),
        "child-a": ("succeeded", "dead_lettered"),
        "grand": ("dead_lettered", "dead_lettered"),
        "child-b": ("succeeded", "succeeded"),
    }
    root = tree["root"]
    # Handler cards in config order (zeta before alpha), not by name.
    assert [r["handler"] for r in root["runs"]] == ["zeta", "alpha"]
    assert root["runs"][0]["children"] == ["child-a"]
    assert root["handlers"] == 2
    assert [
        r["handler"] for r in (await (await client.get("/ui/api/events/root")).json())["runs"]
    ] == [
        "zeta",
        "alpha",
    ]
    # The list row carries the handler count and the duration.
    listed = await (await client.get("/ui/api/events?q=root")).json()
    assert listed["items"][0]["handlers"] == 2
    # The list rolls each row's tree up too, a level of every row's tree per query.
    rows = {
        e["id"]: e["aggregate"]
        for e in (await (await client.get("/ui/api/events")).json())["items"]
    }
    assert rows == {
        "root": "dead_lettered",
        "child-a": "dead_lettered",
        "child-b": None,
        "grand": None,
        "other": None,
    }


def test_an_event_runs_while_a_flow_control_holds_a_run_and_is_done_once_all_are_final() -> None:
    assert event_status(["succeeded", "throttled"]) == "running"
    assert event_status(["sleeping"]) == "running"
    assert event_status(["succeeded", "cancelled", "debounced", "skipped"]) == "succeeded"
    assert event_status(["cancelled", "dead_lettered"]) == "partial"
    assert event_status(["dead_lettered"]) == "dead_lettered"
    assert event_status([]) == "unrouted"


def test_the_aggregate_is_the_worst_status_and_unknown_statuses_count_as_still_going() -> None:
    assert worst(["succeeded", "skipped"]) == "skipped"
    assert worst(["succeeded", "throttled"]) == "throttled"
    assert worst(["throttled", "partial", "succeeded"]) == "partial"
    assert worst(["sleeping", "dead_lettered"]) == "dead_lettered"
    assert worst(["cancelled", "succeeded"]) == "cancelled"
    assert worst([]) is None


async def test_a_run_keeps_any_status_with_its_reason_and_due_time(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    due = time.time() + 90
    await runtime.store.history_put(
        [event("t1", 1000.0, "running")],
        [run("t1", "zeta", "throttled", error="throttle 5/s for key acme", due_at=due)],
    )
    body = await (await client.get("/ui/api/events/t1")).json()
    (only,) = body["runs"]
    assert (only["status"], only["error"], only["due_at"]) == (
        "throttled",
        "throttle 5/s for key acme",
        due,
    )
    assert body["tree"]["root"]["aggregate"] == "throttled"


async def test_a_run_stored_with_the_old_reason_field_shows_that_reason(
    ui: tuple[TestClient[Any, Any], Runtime], tmp_path: Path
) -> None:
    """Runs written while ``RunRecord`` had both ``reason`` and ``error`` load, with the
    reason in ``error``, the one field now."""
    client, runtime = ui
    await runtime.store.history_put([event("old", 1000.0, "running")], [])
    legacy = {
        "event_id": "old",
        "handler": "zeta",
        "status": "throttled",
        "attempts": [],
        "result": None,
        "error": None,
        "children": [],
        "updated_at": 1000.0,
        "reason": "throttle 5/s for key acme",
        "due_at": 1090.0,
    }
    with sqlite3.connect(tmp_path / "ui.db") as conn:
        conn.execute(
            "INSERT INTO history_runs (event_id, handler, record) VALUES (?, ?, ?)",
            ("old", "zeta", orjson.dumps(legacy).decode()),
        )
    body = await (await client.get("/ui/api/events/old")).json()
    (only,) = body["runs"]
    assert (only["status"], only["error"], only["due_at"]) == (
        "throttled",
        "throttle 5/s for key acme",
        1090.0,
    )
    assert "reason" not in only


async def test_a_join_shows_expected_arrived_missing_and_its_deadline(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    store = runtime.store
    start = {"id": "s1", "type": "report/started", "data": {"batch": 7, "parts": ["a", "b", "c"]}}
    deadline = time.time() + 60
    await store.join_open(Join("j1", "gather", start, 3, deadline))
    await store.join_add("j1", "p-a", {"id": "p-a", "type": "report/part", "key": "a"})
    await store.join_add("j1", "p-c", {"id": "p-c", "type": "report/part", "key": "c"})
    await store.history_put(
        [EventRecord("s1", "report/started", "api", 1000.0, "succeeded", event=start)],
        [RunRecord("s1", "gather", "succeeded", [], {"join": "j1", "opened": True})],
    )
    body = await (await client.get("/ui/api/events/s1")).json()
    (join,) = body["joins"]
    assert join["expected"] == 3 and join["expected_items"] == ["a", "b", "c"]
    assert [m["key"] for m in join["arrived"]] == ["a", "c"]
    assert join["missing"] == ["b"]
    assert join["deadline"] == deadline and join["status"] == "open" and not join["overdue"]
    listed = await (await client.get("/ui/api/joins")).json()
    assert [j["id"] for j in listed["items"]] == ["j1"]
    assert listed["items"][0]["missing"] == ["b"]


async def test_the_stream_sends_what_the_history_wrote(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    history = runtime.history
    assert history is not None
    resp = await client.get("/ui/api/stream")
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/event-stream"

    async def frame() -> tuple[str, Any]:
        kind, data = "", None
        while True:
            line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
            elif not line and kind:
                return kind, data

    assert (await frame())[0] == "ready"
    history.run(RunRecord("x1", "zeta", "succeeded", []))
    await history.flush(everything=True)
    kind, data = await frame()
    assert kind == "history" and data["events"] == ["x1"]
    await history.close()  # the bridge stops: the stream ends
    assert await asyncio.wait_for(resp.content.read(), 5) == b""
    assert history.feed.subscribers == 0


async def test_a_slow_subscriber_gets_one_reload_everything_notice() -> None:
    feed = HistoryFeed(max_subscribers=1)
    queue = feed.subscribe()
    assert queue is not None and feed.subscribe() is None  # full
    for i in range(100):
        feed.publish([f"e{i}"])
    assert queue.qsize() <= 32
    notices = [queue.get_nowait() for _ in range(queue.qsize())]
    assert any(n is not None and n.all for n in notices)
    feed.publish([f"big-{i}" for i in range(1000)])  # one busy batch: one small message
    (big,) = [queue.get_nowait() for _ in range(queue.qsize())]
    assert big is not None and big.all and big.events == ()
    feed.close()
    assert queue.get_nowait() is None


async def test_the_page_allows_nothing_but_the_bridge_and_links_its_favicon(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, _ = ui
    resp = await client.get("/ui")
    policy = resp.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert 'rel="icon" href="/ui/static/favicon.svg"' in await resp.text()
    icon = await client.get("/ui/static/favicon.svg")
    assert icon.status == 200 and icon.content_type == "image/svg+xml"
