"""The developer UI's JSON API (``/ui/api``) on the bridge's real server, against a SQLite store.

History rows are written straight into the store (``history_put``), as the recorder would.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from pydantic import BaseModel, Field

from bridge import Context, Event
from bridge.app.runtime import Runtime
from bridge.store.contracts import Attempt, DeadLetter, EventRecord, RunRecord
from tests.unit.ui_server import ui_server


class Signup(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(min_length=1)


async def ok(event: Event[Any], ctx: Context) -> None:
    return None


CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:8787", ui: {{enabled: {ui}}}, admin: {{token: {token}}}}}
events:
  user/signup: {{schema: "tests.unit.test_ui_api:Signup"}}
  job/run: {{schema: none}}
  db/*: {{schema: none}}
handlers:
  - {{id: mailer, on: user/signup, type: python, function: "tests.unit.test_ui_api:ok"}}
  - {{id: crm, on: user/signup, type: python, function: "tests.unit.test_ui_api:ok"}}
  - {{id: worker, on: job/run, type: python, function: "tests.unit.test_ui_api:ok"}}
"""


async def _client(
    tmp_path: Path, ui: bool = True, token: str = "null"
) -> AsyncIterator[tuple[TestClient[Any, Any], Runtime]]:
    text = CONFIG.format(db=tmp_path / "ui.db", ui=str(ui).lower(), token=token)
    async with ui_server(text) as pair:
        yield pair


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Runtime]]:
    async for pair in _client(tmp_path):
        yield pair


async def get(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    resp = await client.get(path)
    return resp.status, await resp.json()


async def post(
    client: TestClient[Any, Any], path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else orjson.dumps(body if body is not None else {})
    headers = {"content-type": "application/json", "x-csrf-token": await csrf_token(client)}
    resp = await client.post(path, data=data, headers=headers)
    return resp.status, await resp.json()


async def csrf_token(client: TestClient[Any, Any]) -> str:
    """The CSRF token the UI page carries, read from the page as its JavaScript reads it."""
    resp = await client.get("/ui")
    match = re.search(r'<meta name="bridge-csrf" content="([^"]+)">', await resp.text())
    assert match is not None
    return match.group(1)


def record(
    i: int, *, at: float, status: str = "succeeded", type: str = "job/run", **kw: Any
) -> EventRecord:
    return EventRecord(
        id=f"e{i:05d}",
        type=type,
        source="orders",
        received_at=at,
        status=status,
        correlation_id=kw.pop("correlation_id", f"c{i // 10}"),
        event={"specversion": "1.0", "id": f"e{i:05d}", "type": type, "data": {"n": i}},
        **kw,
    )


async def test_ten_thousand_events_page_by_cursor_without_loss_or_repeat(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    statuses = ["succeeded", "succeeded", "partial", "dead_lettered", "running"]
    # Three events share each receive time, so the cursor must tell them apart by id.
    records = [
        record(
            i,
            at=1_700_000_000.0 + i // 3,
            status=statuses[i % 5],
            type="job/run" if i % 2 else "user/signup",
        )
        for i in range(10_000)
    ]
    for start in range(0, len(records), 1000):
        await runtime.store.history_put(records[start : start + 1000], [])

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "/ui/api/events?limit=200" + (f"&before={cursor}" if cursor else "")
        status, page = await get(client, query)
        assert status == 200
        pages += 1
        seen += [e["id"] for e in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == 50
    assert len(seen) == len(set(seen)) == 10_000
    assert seen == [
        r.id for r in sorted(records, key=lambda r: (r.received_at, r.id), reverse=True)
    ]

    # Filters page the same way: 2,000 dead-lettered events, 1,000 of them of one type.
    for query, expected in [
        ("status=dead_lettered", 2000),
        ("status=dead_lettered&type=job/run", 1000),
        ("type=user/signup", 5000),
    ]:
        count, cursor = 0, None
        while True:
            status, page = await get(
                client,
                f"/ui/api/events?{query}&limit=200" + (f"&before={cursor}" if cursor else ""),
            )
            assert status == 200
            count += len(page["items"])
            cursor = page["next"]
            if cursor is None:
                break
        assert count == expected, query

    status, page = await get(client, "/ui/api/events?q=c42")  # a correlation id: ten events
    assert sorted(e["id"] for e in page["items"]) == [f"e{i:05d}" for i in range(420, 430)]
    status, page = await get(client, "/ui/api/events?q=e00421")  # an event id
    assert [e["id"] for e in page["items"]] == ["e00421"]
    assert page["next"] is None
    status, page = await get(client, "/ui/api/events")
    assert len(page["items"]) == 50  # the default page


async def test_event_page_shows_runs_attempts_children_and_dead_letter(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    store = runtime.store
    parent = record(1, at=100.0, status="partial", type="user/signup", trace_id="ab" * 16)
    child = record(2, at=101.0, type="job/run", parent_id=parent.id)
    failed = [
        Attempt(1, 100.0, 0.01, "RuntimeError: down"),
        Attempt(2, 100.5, 0.02, "RuntimeError: down"),
    ]
    await store.history_put(
        [parent, child],
        [
            RunRecord(parent.id, "mailer", "succeeded", result={"sent": True}, children=[child.id]),
            RunRecord(parent.id, "crm", "dead_lettered", failed, error="RuntimeError: down"),
        ],
    )
    letter = DeadLetter(
        reason="RuntimeError: down",
        connector="orders",
        handler="crm",
        event=parent.event,
        event_id=parent.id,
        event_type=parent.type,
        attempts=failed,
    )
    await store.dead_letter_add(letter)

    status, body = await get(client, f"/ui/api/events/{parent.id}")
    assert status == 200
    assert (body["status"], body["trace_id"], body["event"]["data"]) == (
        "partial",
        "ab" * 16,
        {"n": 1},
    )
    runs = {r["handler"]: r for r in body["runs"]}
    assert runs["mailer"]["result"] == {"sent": True} and runs["mailer"]["children"] == [child.id]
    assert [a["error"] for a in runs["crm"]["attempts"]] == ["RuntimeError: down"] * 2
    assert runs["crm"]["dead_letter"] == {
        "id": letter.id,
        "status": "pending",
        "reason": letter.reason,
    }
    assert runs["mailer"]["dead_letter"] is None
    assert [c["id"] for c in body["children"]] == [child.id]

    status, body = await get(client, "/ui/api/events/no-such-event")
    assert status == 404 and "no-such-event" in body["error"]


async def test_bad_input_is_a_4xx_with_a_message_never_a_500(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, _ = ui
    for path in [
        "/ui/api/events?status=bogus",
        "/ui/api/events?limit=abc",
        "/ui/api/events?limit=0",
        "/ui/api/events?limit=100000",
        "/ui/api/events?before=yesterday",
        "/ui/api/events?before=nan:x",
        "/ui/api/dead-letters?status=lost",
        "/ui/api/dead-letters?offset=-1",
        "/ui/api/dead-letters?limit=x",
    ]:
        status, body = await get(client, path)
        assert status == 400 and body["error"], path
    for path, raw, expected in [
        ("/ui/api/validate", b"{not json", 400),
        ("/ui/api/validate", b"[1, 2]", 400),
        ("/ui/api/validate", b'{"data": {}}', 400),
        ("/ui/api/validate", b'{"type": "job/run"}', 400),
        ("/ui/api/send", b'{"type": "", "data": {}}', 400),
        ("/ui/api/send", b'{"type": "job/run", "data": {}, "id": 5}', 400),
        ("/ui/api/send", b'{"type": "user/signup", "data": {"email": "x"}}', 422),
        ("/ui/api/dead-letters/replay", b'{"ids": "abc"}', 400),
        ("/ui/api/dead-letters/replay", b'{"handler": 3}', 400),
        ("/ui/api/dead-letters/nope/replay", b"", 404),
        ("/ui/api/dead-letters/nope/replay?force=maybe", b"", 400),
        ("/ui/api/dead-letters/nope/discard", b"", 404),
    ]:
        status, body = await post(client, path, raw=raw)
        assert status == expected and body["error"], (path, raw, status)
    status, body = await post(client, "/ui/api/dead-letters/x/replay?handler=ghost")
    assert status == 400 and "ghost" in body["error"]


async def test_validation_before_sending_and_send_through_the_inbox(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    status, body = await post(
        client, "/ui/api/validate", {"type": "user/signup", "data": {"email": "nope", "name": ""}}
    )
    assert status == 200 and body["valid"] is False
    assert sorted(tuple(e["loc"]) for e in body["errors"]) == [("email",), ("name",)]
    status, body = await post(client, "/ui/api/validate", {"type": "user/unknown", "data": {}})
    assert body == {"valid": False, "errors": [{"loc": ["type"], "msg": "unknown event type"}]}
    status, body = await post(client, "/ui/api/validate", {"type": "db/users.insert", "data": [1]})
    assert body == {"valid": True, "errors": []}

    status, catalog = await get(client, "/ui/api/catalog")
    signup = next(t for t in catalog["types"] if t["type"] == "user/signup")
    assert signup["schema"]["required"] == ["email", "name"]
    assert next(t for t in catalog["types"] if t["type"] == "db/*")["pattern"] is True
    # The form starts from the schema's example, which validates.
    status, body = await post(
        client, "/ui/api/validate", {"type": "user/signup", "data": signup["example"]}
    )
    assert body["valid"] is True

    data = {"email": "ada@example.com", "name": "Ada"}
    status, body = await post(
        client,
        "/ui/api/send",
        {"type": "user/signup", "data": data, "id": "s1", "correlationid": "flow-1"},
    )
    assert (status, body) == (202, {"id": "s1", "duplicate": False})
    status, body = await post(
        client, "/ui/api/send", {"type": "user/signup", "data": data, "id": "s1"}
    )
    assert (status, body) == (202, {"id": "s1", "duplicate": True})
    status, body = await post(
        client, "/ui/api/send", {"type": "user/signup", "data": {"name": "Ada"}}
    )
    assert status == 422 and [e["loc"] for e in body["errors"]] == [["email"]]
    pending = await runtime.store.inbox_pending(0, 10)
    assert len(pending) == 1
    sent = orjson.loads(pending[0].body)
    assert (sent["id"], sent["type"], sent["data"], sent["correlationid"]) == (
        "s1",
        "user/signup",
        data,
        "flow-1",
    )


async def test_dead_letters_filter_replay_one_bulk_and_discard(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    store = runtime.store
    letters = []
    for i in range(6):
        event_type, handler = ("job/run", "worker") if i < 4 else ("user/signup", "crm")
        letter = DeadLetter(
            reason=f"boom {i}",
            connector="orders",
            handler=handler,
            event={"specversion": "1.0", "id": f"d{i}", "type": event_type, "data": {}},
            event_id=f"d{i}",
            event_type=event_type,
            created_at=1000.0 + i,
        )
        letters.append(letter)
        await store.dead_letter_add(letter)
    await store.dead_letter_add(DeadLetter(reason="malformed_json", connector="orders", body="{"))

    status, body = await get(client, "/ui/api/dead-letters?type=job/run&limit=3")
    assert [d["event_id"] for d in body["items"]] == ["d3", "d2", "d1"] and body["next_offset"] == 3
    status, body = await get(client, "/ui/api/dead-letters?type=job/run&limit=3&offset=3")
    assert [d["event_id"] for d in body["items"]] == ["d0"] and body["next_offset"] is None
    status, body = await get(client, "/ui/api/dead-letters?status=pending&limit=200")
    assert len(body["items"]) == 7
    assert sum(1 for d in body["items"] if not d["replayable"]) == 1

    status, body = await post(client, f"/ui/api/dead-letters/{letters[5].id}/replay")
    assert status == 202 and body["handler"] == "crm"
    status, body = await post(client, f"/ui/api/dead-letters/{letters[0].id}/discard")
    assert (status, body) == (200, {"discarded": letters[0].id})
    # Bulk by filter: the pending job/run letters only (d1..d3), each to its handler.
    status, body = await post(client, "/ui/api/dead-letters/replay", {"type": "job/run"})
    assert status == 202 and sorted(body["replayed"]) == sorted(d.id for d in letters[1:4])
    status, body = await post(
        client, "/ui/api/dead-letters/replay", {"ids": [letters[0].id, letters[4].id, "ghost"]}
    )
    assert body["replayed"] == [letters[4].id]
    assert [f["error"] for f in body["failed"]] == ["it is discarded", "no such dead letter"]

    pending = await store.inbox_pending(0, 100)
    assert sorted((orjson.loads(e.body)["id"], e.handler) for e in pending) == [
        ("d1", "worker"),
        ("d2", "worker"),
        ("d3", "worker"),
        ("d4", "crm"),
        ("d5", "crm"),
    ]
    status, body = await get(client, "/ui/api/dead-letters?status=pending")
    assert [d["reason"] for d in body["items"]] == ["malformed_json"]


async def test_status_reports_connectors_and_handler_success_rates(
    ui: tuple[TestClient[Any, Any], Runtime],
) -> None:
    client, runtime = ui
    metrics = runtime.metrics
    for _ in range(3):
        metrics.inc("bridge_runs_total", (("handler", "mailer"), ("outcome", "succeeded")))
        metrics.observe("bridge_run_duration_seconds", (("handler", "mailer"),), 0.02)
    metrics.inc("bridge_runs_total", (("handler", "mailer"), ("outcome", "dead_lettered")))
    metrics.observe("bridge_run_duration_seconds", (("handler", "mailer"),), 0.06)
    status, body = await get(client, "/ui/api/status")
    assert status == 200
    connectors = {c["name"]: c for c in body["connectors"]}
    # Not started here, so not connected; the browser test sees it connected.
    assert connectors["api"]["connected"] is False and connectors["api"]["backlog"] == 0
    rows = {h["id"]: h for h in body["handlers"]}
    assert list(rows) == ["mailer", "crm", "worker"]
    assert (
        rows["mailer"]["runs"],
        rows["mailer"]["succeeded"],
        rows["mailer"]["dead_lettered"],
    ) == (4, 3, 1)
    assert rows["mailer"]["success_rate"] == 0.75
    assert rows["mailer"]["mean_seconds"] == pytest.approx(0.03)
    assert rows["mailer"]["p95_seconds"] == 0.1  # the bucket that holds the slowest run
    assert rows["crm"]["runs"] == 0 and rows["crm"]["success_rate"] is None


async def test_the_page_and_its_assets_are_served_only_when_enabled(tmp_path: Path) -> None:
    async for client, _ in _client(tmp_path / "on"):
        resp = await client.get("/ui")
        assert resp.status == 200 and "<title>bridge" in await resp.text()
        for asset, kind in [("app.js", "javascript"), ("app.css", "text/css")]:
            resp = await client.get(f"/ui/static/{asset}")
            assert resp.status == 200 and kind in resp.headers["content-type"]
        resp = await client.get("/ui/static/../api.py")
        assert resp.status in (403, 404)
    (tmp_path / "off").mkdir()
    async for client, _ in _client(tmp_path / "off", ui=False):
        for path in ("/ui", "/ui/api/events"):
            resp = await client.get(path)
            assert resp.status == 404, path


async def test_behind_the_admin_token_the_browser_gets_in_with_token_once(tmp_path: Path) -> None:
    async for client, _ in _client(tmp_path, token="s3cret"):
        for path in ("/ui", "/ui/static/app.js", "/ui/api/events"):
            resp = await client.get(path)
            assert resp.status == 401, path
        resp = await client.get("/ui?token=wrong", allow_redirects=False)
        assert resp.status == 401
        resp = await client.get("/ui?token=s3cret", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/ui"
        # The cookie now stands for the token: the page, its assets and its API answer.
        for path in ("/ui", "/ui/static/app.js", "/ui/api/events"):
            resp = await client.get(path)
            assert resp.status == 200, path
        resp = await client.get("/ui/api/events", headers={"authorization": "Bearer s3cret"})
        assert resp.status == 200
