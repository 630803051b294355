"""CloudEvents over real HTTP, with the official CloudEvents SDK on both ends.

The SDK (``cloudevents.core.bindings.http``) writes each request to the event API
and to a ``cloudevents`` webhook, in binary and structured mode, with JSON, text
and bytes data; a Python handler records what it is given; two ``http`` handlers
(binary and structured) deliver to a local aiohttp receiver where the SDK parses
each request. Attributes and data must arrive equal on every path, and a dead
letter keeps bytes through its replay. Samples: CloudEvents spec 1.0.2 and its
HTTP binding (3.1.3.2 for percent-encoding); W3C Trace Context and Baggage.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from tests.support import free_port, serve_posts, until

FORMAT = JSONFormat()
SEEN: dict[str, Event[Any]] = {}
FAILING = {"on": True}


async def remember(event: Event[Any], ctx: Context) -> None:
    SEEN[event.id] = event


async def fragile(event: Event[Any], ctx: Context) -> None:
    if FAILING["on"]:
        raise RuntimeError("not yet")
    SEEN[f"replayed:{event.id}"] = event


async def emit_bytes(event: Event[Any], ctx: Context) -> None:
    ctx.emit("sdk/child", bytes(event.data) + b"\x00child")


CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:{port}"}}
defaults: {{retry: {{attempts: 1}}}}
connectors:
  ce: {{type: webhook, provider: cloudevents, path: /hooks/ce}}
handlers:
  - {{id: keep, on: "sdk/ok", type: python, function: "tests.unit.test_cloudevents_http:remember"}}
  - {{id: app-binary, on: "sdk/ok", type: http, url: "http://127.0.0.1:{app}/binary"}}
  - id: app-structured
    on: "sdk/ok"
    type: http
    mode: structured
    url: "http://127.0.0.1:{app}/structured"
  - {{id: fragile, on: "sdk/fail", type: python, function: "tests.unit.test_cloudevents_http:fragile"}}
  - {{id: emits, on: "sdk/emit", type: python, function: "tests.unit.test_cloudevents_http:emit_bytes"}}
  - {{id: child, on: "sdk/child", type: python, function: "tests.unit.test_cloudevents_http:remember"}}
"""


@dataclass
class Setup:
    url: str
    session: aiohttp.ClientSession
    runtime: Runtime
    received: dict[str, dict[str, CloudEvent]] = field(default_factory=dict)
    headers: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    async def send(self, path: str, msg: ce_http.HTTPMessage) -> int:
        async with self.session.post(
            f"{self.url}{path}", data=msg.body, headers=msg.headers
        ) as resp:
            return resp.status


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    SEEN.clear()
    FAILING["on"] = True
    received: dict[str, dict[str, CloudEvent]] = {"binary": {}, "structured": {}}
    raw_headers: dict[str, dict[str, dict[str, str]]] = {"binary": {}, "structured": {}}

    def receiver(mode: str) -> Any:
        async def receive(request: web.Request) -> web.Response:
            headers = dict(request.headers)
            got = ce_http.from_http(ce_http.HTTPMessage(headers, await request.read()), FORMAT)
            received[mode][got.get_id()] = got
            raw_headers[mode][got.get_id()] = headers
            return web.Response(status=204)

        return receive

    runner, app_port = await serve_posts(
        {"/binary": receiver("binary"), "/structured": receiver("structured")}
    )
    port = free_port()
    text = CONFIG.format(db=tmp_path / "s.db", port=port, app=app_port)
    runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
    task = asyncio.create_task(runtime.run())
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                if task.done():
                    task.result()
                try:
                    async with session.get(f"{url}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, 10, "the bridge to be ready")
            yield Setup(url, session, runtime, received, raw_headers)
    finally:
        runtime.request_stop()
        await task
        await runner.cleanup()


ATTRS = {
    "type": "sdk/ok",
    "source": "urn:shop:eu west",
    "subject": "Zürich ✓ 100%",
    "time": datetime(2018, 4, 5, 17, 31, tzinfo=UTC),
    "comexampleextension1": "value",
}
DATA = {
    "json": ({"order": 7, "note": "naïve"}, "application/json"),
    "text": ("plain text, café", "text/plain"),
    "bytes": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "image/png"),
}
ENTRIES = {"api": "/v1/events", "webhook": "/hooks/ce"}


def same(sent: CloudEvent, got: CloudEvent) -> None:
    want, have = sent.get_attributes(), got.get_attributes()
    for name, value in want.items():
        assert have.get(name) == value, (name, have.get(name), value)
    assert got.get_data() == sent.get_data()


async def test_sdk_to_every_entry_point_and_back_through_every_http_output(
    setup: Setup,
) -> None:
    sent: dict[str, CloudEvent] = {}
    for entry, path in ENTRIES.items():
        for mode in ("binary", "structured"):
            for kind, (data, content_type) in DATA.items():
                event_id = f"{entry}-{mode}-{kind}"
                event = CloudEvent({**ATTRS, "id": event_id, "datacontenttype": content_type}, data)
                to = ce_http.to_binary if mode == "binary" else ce_http.to_structured
                status = await setup.send(path, to(event, FORMAT))
                assert status == 202, event_id
                sent[event_id] = event

    def all_arrived() -> bool:
        return all(
            i in SEEN and i in setup.received["binary"] and i in setup.received["structured"]
            for i in sent
        )

    await until(all_arrived, 15, "every event at the handler and the application")
    assert len(sent) == 12
    for event_id, event in sent.items():
        data = event.get_data()
        handed = SEEN[event_id]
        # Python handlers: bytes as bytes, text as str, JSON as JSON values.
        assert handed.data == data and type(handed.data) is type(data), event_id
        assert (handed.source, handed.subject) == ("urn:shop:eu west", "Zürich ✓ 100%")
        same(event, setup.received["binary"][event_id])
        same(event, setup.received["structured"][event_id])
        # Non-ASCII and space went out percent-encoded, as the HTTP binding writes them.
        headers = setup.headers["binary"][event_id]
        assert headers["ce-subject"] == "Z%C3%BCrich%20%E2%9C%93%20100%25"
        assert headers["ce-source"] == "urn:shop:eu%20west"


async def test_structured_data_base64_is_delivered_not_dropped(setup: Setup) -> None:
    """Issue 19's report: 202 on /v1/events, then ``"data": null`` at the handler."""
    event = CloudEvent(
        {**ATTRS, "id": "b64", "datacontenttype": "application/octet-stream"}, b"\xff\x01"
    )
    body = ce_http.to_structured(event, FORMAT).body
    assert b'"data_base64"' in body
    assert await setup.send("/v1/events", ce_http.HTTPMessage(_ce_json(), body)) == 202
    await until(lambda: "b64" in setup.received["binary"], 10, "the event at the application")
    assert SEEN["b64"].data == b"\xff\x01"
    assert setup.received["binary"]["b64"].get_data() == b"\xff\x01"


def _ce_json() -> dict[str, str]:
    return {"content-type": "application/cloudevents+json"}


async def test_dead_letter_keeps_bytes_through_replay(setup: Setup) -> None:
    payload = b"\x00\x01\x02\xff binary"
    event = CloudEvent(
        {**ATTRS, "type": "sdk/fail", "id": "dl-1", "datacontenttype": "application/pdf"}, payload
    )
    assert await setup.send("/v1/events", ce_http.to_binary(event, FORMAT)) == 202

    async def letters() -> list[dict[str, Any]]:
        async with setup.session.get(f"{setup.url}/v1/dead-letters?handler=fragile") as resp:
            items: list[dict[str, Any]] = (await resp.json())["items"]
            return items

    await until(lambda: _nonempty(letters()), 10, "the dead letter")
    (letter,) = await letters()
    # Stored as the structured form: the bytes as data_base64.
    assert letter["event"]["data_base64"] == "AAEC/yBiaW5hcnk="
    assert letter["event"]["datacontenttype"] == "application/pdf"
    FAILING["on"] = False
    async with setup.session.post(f"{setup.url}/v1/dead-letters/{letter['id']}/replay") as resp:
        assert resp.status == 202
    await until(lambda: "replayed:dl-1" in SEEN, 10, "the replayed run")
    replayed = SEEN["replayed:dl-1"]
    assert replayed.data == payload and replayed.datacontenttype == "application/pdf"


async def _nonempty(items: Any) -> bool:
    return bool(await items)


@pytest.mark.parametrize("path", ENTRIES.values())
async def test_tracestate_and_baggage_travel_with_traceparent(setup: Setup, path: str) -> None:
    event_id = f"trace-{path.strip('/').replace('/', '-')}"
    msg = ce_http.to_binary(CloudEvent({**ATTRS, "id": event_id}, {"a": 1}), FORMAT)
    trace = {
        "traceparent": "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01",
        "tracestate": "vendor=abc,other=1",
        "baggage": "user=42",
    }
    status = await setup.send(path, ce_http.HTTPMessage({**msg.headers, **trace}, msg.body))
    assert status == 202
    await until(lambda: event_id in setup.headers["binary"], 10, "the event at the application")
    for mode in ("binary", "structured"):
        headers = setup.headers[mode][event_id]
        assert headers["traceparent"].split("-")[1] == "5b8aa5a2d2c872e8321cf37308d69df2"
        assert headers["tracestate"] == "vendor=abc,other=1", mode
        assert headers["baggage"] == "user=42", mode


@pytest.mark.parametrize("path", ENTRIES.values())
async def test_invalid_attributes_are_refused_with_a_reason(setup: Setup, path: str) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "bad",
        "ce-source": "s",
        "ce-type": "sdk/ok",
        "ce-time": "last tuesday",
        "content-type": "application/json",
    }
    async with setup.session.post(f"{setup.url}{path}", data=b"{}", headers=headers) as resp:
        assert resp.status == 422
        assert "invalid_attribute" in await resp.text()


async def test_a_python_handler_emits_bytes_and_the_next_one_gets_bytes(setup: Setup) -> None:
    event = CloudEvent(
        {**ATTRS, "type": "sdk/emit", "id": "parent", "datacontenttype": "image/png"}, b"\xff"
    )
    msg = ce_http.to_binary(event, FORMAT)
    status = await setup.send(
        "/v1/events",
        ce_http.HTTPMessage(
            {
                **msg.headers,
                "baggage": "k=v",
                "traceparent": "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01",
            },
            msg.body,
        ),
    )
    assert status == 202

    def child() -> Event[Any] | None:
        return next((e for e in SEEN.values() if e.type == "sdk/child"), None)

    await until(lambda: child() is not None, 10, "the child event")
    got = child()
    assert got is not None
    assert got.data == b"\xff\x00child"
    assert got.datacontenttype == "application/octet-stream"
    assert got.extensions.get("baggage") == "k=v"
