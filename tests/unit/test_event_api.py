"""The event API and admin endpoints, on a real runtime listening on a real local port."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from tests.support import free_port

SEEN: list[tuple[str, str]] = []
BROKEN = {"on": True}


async def remember(event: Event[Any], ctx: Context) -> None:
    SEEN.append((ctx.handler_id, event.id))


async def sometimes(event: Event[Any], ctx: Context) -> None:
    if BROKEN["on"]:
        raise RuntimeError("still broken")
    SEEN.append((ctx.handler_id, event.id))


CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:{port}", api: {{token: {token}}}}}
limits: {{max_body_bytes: 2000}}
defaults: {{retry: {{attempts: 1}}}}
events:
  order/placed: {{schema: "tests.unit.test_event_api:Order"}}
  note/*: {{schema: none}}
handlers:
  - {{id: keep, on: "order/placed", type: python, function: "tests.unit.test_event_api:remember"}}
  - {{id: fragile, on: "note/*", type: python, function: "tests.unit.test_event_api:sometimes"}}
"""

from pydantic import BaseModel  # noqa: E402


class Order(BaseModel):
    order_id: int
    total: float


class Bridge:
    def __init__(self, runtime: Runtime, url: str, session: aiohttp.ClientSession) -> None:
        self.runtime = runtime
        self.url = url
        self.session = session

    async def post(
        self, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else orjson.dumps(body)
        async with self.session.post(
            f"{self.url}/v1/events",
            data=data,
            headers=headers or {"content-type": "application/json"},
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def settle(self) -> None:
        """Wait until the inbox is drained."""
        for _ in range(200):
            pending = await self.runtime.store.inbox_pending(0, 1)
            if not pending and not any(s.tasks for s in self.runtime.slots):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("inbox did not drain")


async def start(tmp_path: Path, token: str = "null") -> AsyncIterator[Bridge]:
    port = free_port()
    cfg = load_config_text(
        textwrap.dedent(CONFIG.format(db=tmp_path / "s.db", port=port, token=token)), {}
    )
    runtime = Runtime(cfg)
    task = asyncio.create_task(runtime.run())
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            if task.done():
                task.result()
            try:
                async with session.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        yield Bridge(runtime, url, session)
    runtime.request_stop()
    await task


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    SEEN.clear()
    BROKEN["on"] = True
    async for b in start(tmp_path):
        yield b


def ce(event_id: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "test",
        "type": "order/placed",
        "data": data,
    }


async def test_accepts_single_batch_and_binary_mode(bridge: Bridge) -> None:
    status, body = await bridge.post(
        ce("o1", order_id=1, total=9.5), {"content-type": "application/cloudevents+json"}
    )
    assert (status, body["accepted"]) == (202, ["o1"])
    status, body = await bridge.post([ce("o2", order_id=2, total=1), ce("o3", order_id=3, total=2)])
    assert (status, body["accepted"]) == (202, ["o2", "o3"])
    status, body = await bridge.post(
        {"order_id": 4, "total": 3},
        {"content-type": "application/json", "ce-type": "order/placed", "ce-id": "o4"},
    )
    assert (status, body["accepted"]) == (202, ["o4"])
    await bridge.settle()
    assert sorted(SEEN) == [("keep", "o1"), ("keep", "o2"), ("keep", "o3"), ("keep", "o4")]


async def test_duplicate_ids_are_accepted_once(bridge: Bridge) -> None:
    for _ in range(3):
        status, _ = await bridge.post(ce("same", order_id=1, total=1))
        assert status == 202
    status, body = await bridge.post(ce("same", order_id=1, total=1))
    assert body["duplicates"] == ["same"]
    await bridge.settle()
    assert SEEN == [("keep", "same")]


@pytest.mark.parametrize(
    ("raw", "headers", "status", "needle"),
    [
        (b"{nope", None, 400, "malformed_json"),
        (b'{"a": "\xff"}', None, 400, "invalid_utf8"),
        (b"", None, 400, "empty body"),
        (b'{"hello": "world"}', None, 400, "send a CloudEvent"),
        (b"[]", None, 400, "empty_batch"),
        (b"[1, 2]", None, 400, "invalid_batch"),
        (b"x" * 5000, None, 413, "Request Entity Too Large"),
        (
            orjson.dumps({"specversion": "1.0", "type": "order/placed", "data": {"order_id": "x"}}),
            None,
            422,
            "int_parsing",
        ),
        (
            orjson.dumps({"specversion": "1.0", "type": "who/knows", "data": {}}),
            None,
            422,
            "unknown event type",
        ),
        (orjson.dumps({"specversion": "1.0", "type": "", "data": {}}), None, 422, "type must be"),
    ],
)
async def test_bad_requests_get_a_clear_4xx_and_nothing_is_stored(
    bridge: Bridge, raw: bytes, headers: dict[str, str] | None, status: int, needle: str
) -> None:
    got, body = await bridge.post(None, headers, raw=raw)
    assert got == status
    assert needle in orjson.dumps(body).decode()
    assert await bridge.runtime.store.inbox_pending(0, 10) == []
    async with bridge.session.get(f"{bridge.url}/healthz") as resp:
        assert resp.status == 200


async def test_a_batch_with_one_bad_event_stores_none(bridge: Bridge) -> None:
    status, body = await bridge.post(
        [ce("ok1", order_id=1, total=1), ce("bad", order_id="x", total=1)]
    )
    assert status == 422
    assert [d["index"] for d in body["details"]] == [1]
    await bridge.settle()
    assert SEEN == []


async def test_dead_letter_list_show_replay(bridge: Bridge) -> None:
    status, _ = await bridge.post(
        {"specversion": "1.0", "id": "n1", "type": "note/added", "data": {"text": "hi"}}
    )
    assert status == 202
    await bridge.settle()
    async with bridge.session.get(f"{bridge.url}/v1/dead-letters") as resp:
        (letter,) = (await resp.json())["items"]
    assert (letter["handler"], letter["event_id"], letter["reason"]) == (
        "fragile",
        "n1",
        "RuntimeError: still broken",
    )
    BROKEN["on"] = False
    async with bridge.session.post(f"{bridge.url}/v1/dead-letters/{letter['id']}/replay") as resp:
        assert resp.status == 202
    await bridge.settle()
    assert SEEN == [("fragile", "n1")]
    async with bridge.session.get(f"{bridge.url}/v1/dead-letters/{letter['id']}") as resp:
        assert (await resp.json())["status"] == "replayed"
    async with bridge.session.post(f"{bridge.url}/v1/dead-letters/nope/replay") as resp:
        assert resp.status == 404


async def test_health_ready_and_metrics(bridge: Bridge) -> None:
    await bridge.post(ce("m1", order_id=1, total=1))
    await bridge.settle()
    async with bridge.session.get(f"{bridge.url}/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["ready"] and body["store"]["ok"]
    async with bridge.session.get(f"{bridge.url}/metrics") as resp:
        text = await resp.text()
    assert 'bridge_runs_total{handler="keep",outcome="succeeded"} 1.0' in text
    assert 'bridge_events_received_total{connector="api"} 1.0' in text


async def test_token_is_required_when_configured(tmp_path: Path) -> None:
    SEEN.clear()
    async for bridge in start(tmp_path, token="t0ken"):
        status, body = await bridge.post(ce("x", order_id=1, total=1))
        assert (status, body["error"]) == (401, "missing or wrong bearer token")
        status, _ = await bridge.post(
            ce("x", order_id=1, total=1),
            {"content-type": "application/json", "authorization": "Bearer t0ken"},
        )
        assert status == 202
        # The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
        for scheme, token, expected in (("bearer", "t0ken", 202), ("BEARER", "T0KEN", 401)):
            status, _ = await bridge.post(
                ce(f"y-{scheme}", order_id=1, total=1),
                {"content-type": "application/json", "authorization": f"{scheme} {token}"},
            )
            assert status == expected
