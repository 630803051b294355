"""Webhook connectors on a real runtime listening on a real local port, with the SQLite store.

Every request is answered with the documented status; a rejected one leaves the
inbox untouched and the server healthy; an accepted one reaches the handler.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import sqlite3
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import StreamReader, web
from aiohttp.base_protocol import BaseProtocol
from pydantic import BaseModel
from standardwebhooks.webhooks import Webhook

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.errors import ConfigError, StoreError
from bridge.events import EventCatalog
from bridge.transport import IngressEnv
from connectors.webhook import WebhookConfig, WebhookIngress, read_capped
from tests.support import free_port
from tests.unit.test_webhook_providers import (
    ANNE,
    ANNE_2,
    CE_STRUCTURED,
    PLANETSCALE_BRANCH_READY,
    SUPABASE_DELETE,
    SUPABASE_INSERT,
    SUPABASE_UPDATE,
    debezium,
    envelope,
)

SEEN: list[Event[Any]] = []
LIMIT = 4096
KEY_A = "whsec_" + base64.b64encode(b"key-a-0123456789abcdef").decode()
KEY_B = "whsec_" + base64.b64encode(b"key-b-0123456789abcdef").decode()


class Order(BaseModel):
    id: int
    total: float


class OrderInserted(BaseModel):
    table: str
    record: Order


async def remember(event: Event[Any], ctx: Context) -> None:
    SEEN.append(event)


CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:{port}"}}
limits: {{max_body_bytes: {limit}}}
defaults: {{retry: {{attempts: 1}}}}
events:
  db/orders.insert: {{schema: "tests.unit.test_webhook_ingress:OrderInserted"}}
  db/*: {{schema: none}}
  planetscale/*: {{schema: none}}
  com.example.*: {{schema: none}}
  app/*: {{schema: none}}
connectors:
  supa:
    type: webhook
    provider: supabase
    auth: {{secrets: ["s3cret", "old-s3cret"]}}
  dbz:
    type: webhook
    provider: debezium
    path: /hooks/debezium
    auth: {{scheme: standard_webhooks, secrets: ["{key_a}", "{key_b}"]}}
  ps:
    type: webhook
    provider: planetscale
    auth: {{secret: ps-secret}}
  ce:
    type: webhook
    provider: cloudevents
    auth: {{scheme: hmac, header: x-hub-signature-256, prefix: "sha256=", secret: h-secret}}
  raw:
    type: webhook
    provider: json
    max_body_bytes: 1024
    event:
      type: "app/{{data.kind}}"
      id: "{{data.id}}"
      subject: "{{header.x-tenant|default:-}}"
      correlation_id: ["data.trace"]
handlers:
  - id: keep
    on: ["db/*", "planetscale/*", "com.example.*", "app/*"]
    type: python
    function: "tests.unit.test_webhook_ingress:remember"
"""


class Bridge:
    def __init__(self, runtime: Runtime, url: str, db: Path, session: aiohttp.ClientSession):
        self.runtime = runtime
        self.url = url
        self.db = db
        self.session = session

    async def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any]:
        data = body if isinstance(body, bytes | AsyncIterator) else orjson.dumps(body)
        hdrs = {"content-type": "application/json", **(headers or {})}
        async with self.session.post(f"{self.url}{path}", data=data, headers=hdrs, **kw) as resp:
            return resp.status, await resp.json(content_type=None)

    def stored(self) -> int:
        with sqlite3.connect(self.db) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])

    async def settle(self) -> None:
        for _ in range(250):
            pending = await self.runtime.store.inbox_pending(0, 1)
            if not pending and not any(s.tasks for s in self.runtime.slots):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("inbox did not drain")

    async def healthy(self) -> bool:
        async with self.session.get(f"{self.url}/healthz") as resp:
            return resp.status == 200


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    SEEN.clear()
    port = free_port()
    db = tmp_path / "s.db"
    text = CONFIG.format(db=db, port=port, limit=LIMIT, key_a=KEY_A, key_b=KEY_B)
    runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
    task = asyncio.create_task(runtime.run())
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                async with session.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        yield Bridge(runtime, url, db, session)
    runtime.request_stop()
    await task


SUPA = {"x-webhook-secret": "s3cret"}


def standard(body: Any, msg_id: str, secret: str = KEY_A, at: datetime | None = None) -> dict:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    moment = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, moment, raw.decode()),
    }


def hub(body: Any, secret: str = "h-secret") -> dict[str, str]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return {"x-hub-signature-256": "sha256=" + hmac.new(secret.encode(), raw, "sha256").hexdigest()}


# --------------------------------------------------------------------------- accepted


async def test_supabase_changes_are_stored_then_delivered(bridge: Bridge) -> None:
    ids = []
    for payload in (SUPABASE_INSERT, SUPABASE_UPDATE, SUPABASE_DELETE):
        status, body = await bridge.post("/hooks/supa", payload, SUPA)
        assert status == 202, body
        assert body["accepted"] == body["ids"]
        ids += body["ids"]
    # The previous secret still works during a rotation (another row: the same INSERT
    # again would be a re-sent webhook, recognised by its content id).
    second = {**SUPABASE_INSERT, "record": {**SUPABASE_INSERT["record"], "id": 2}}
    status, _ = await bridge.post("/hooks/supa", second, {"x-webhook-secret": "old-s3cret"})
    assert status == 202
    await bridge.settle()
    assert [e.type for e in SEEN] == [
        "db/users.insert",
        "db/users.update",
        "db/users.delete",
        "db/users.insert",
    ]
    assert [e.id for e in SEEN[:3]] == ids
    update = SEEN[1]
    assert update.data["record"]["email"] == "ada@lovelace.dev"
    assert update.data["old_record"]["email"] == "ada@example.com"
    assert update.source == "bridge://supa"
    assert update.correlationid == update.id
    # Supabase sends no time: each event is stamped when received (RFC 3339, UTC).
    for event in SEEN:
        assert event.time is not None and event.time.endswith("Z") and event.specversion == "1.0"
        assert abs(datetime.fromisoformat(event.time) - datetime.now(UTC)) < timedelta(minutes=5)


async def test_debezium_changes_with_standard_webhooks(bridge: Bridge) -> None:
    changes = [
        debezium("r", None, ANNE),
        envelope(debezium("u", ANNE, ANNE_2, lsn=24023300)),
        debezium("d", ANNE_2, None, lsn=24023400),
        envelope(debezium("t", None, None, lsn=24023500)),
    ]
    for n, change in enumerate(changes):
        status, body = await bridge.post("/hooks/debezium", change, standard(change, f"msg_{n}"))
        assert status == 202, body
    await bridge.settle()
    assert [e.type for e in SEEN] == [
        "db/customers.read",
        "db/customers.update",
        "db/customers.delete",
        "db/customers.truncate",
    ]
    assert SEEN[0].time == "2019-05-28T08:58:24.863000Z"
    assert all(e.id.startswith("dbz-") for e in SEEN)


async def test_planetscale_cloudevents_and_json(bridge: Bridge) -> None:
    raw = orjson.dumps(PLANETSCALE_BRANCH_READY)
    signature = hmac.new(b"ps-secret", raw, hashlib.sha256).hexdigest()
    status, _ = await bridge.post("/hooks/ps", raw, {"X-PlanetScale-Signature": signature})
    assert status == 202
    batch = [CE_STRUCTURED, {**CE_STRUCTURED, "id": "C234-2", "correlationid": "flow-7"}]
    headers = {"content-type": "application/cloudevents-batch+json", **hub(batch)}
    status, body = await bridge.post("/hooks/ce", batch, headers)
    assert (status, body["accepted"]) == (202, ["C234-1234-1234", "C234-2"])
    binary = {
        "ce-specversion": "1.0",
        "ce-id": "bin-1",
        "ce-source": "/orders",
        "ce-type": "com.example.binary",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        **hub({"n": 1}),
    }
    status, _ = await bridge.post("/hooks/ce", {"n": 1}, binary)
    assert status == 202
    doc = {"kind": "signup", "id": "u-9", "trace": "t-1"}
    status, body = await bridge.post("/hooks/raw", doc, {"x-tenant": "acme"})
    assert (status, body["ids"]) == (202, ["u-9"])
    await bridge.settle()
    by_id = {e.id: e for e in SEEN}
    assert by_id["planetscale:branch.ready:rvlsi4uocyxd:1698253512"].type == (
        "planetscale/branch.ready"
    )
    assert by_id["C234-1234-1234"].extensions["comexampleothervalue"] == 5
    assert by_id["C234-2"].correlationid == "flow-7"
    assert by_id["bin-1"].traceparent == binary["traceparent"]
    assert by_id["bin-1"].data == {"n": 1}
    assert (by_id["u-9"].type, by_id["u-9"].subject, by_id["u-9"].correlationid) == (
        "app/signup",
        "acme",
        "t-1",
    )


async def test_replays_are_answered_200_and_stored_once(bridge: Bridge) -> None:
    change = debezium("c", None, ANNE)
    first = await bridge.post("/hooks/debezium", change, standard(change, "msg_1"))
    replay = await bridge.post("/hooks/debezium", change, standard(change, "msg_1"))
    # Debezium resending the same change under a new message id is recognised too.
    resent = await bridge.post("/hooks/debezium", change, standard(change, "msg_2"))
    assert [first[0], replay[0], resent[0]] == [202, 200, 200]
    assert replay[1]["duplicates"] == first[1]["ids"]
    status, body = await bridge.post("/hooks/raw", {"kind": "a", "id": "same"})
    assert status == 202
    status, body = await bridge.post("/hooks/raw", {"kind": "a", "id": "same"})
    assert (status, body["duplicates"]) == (200, ["same"])
    await bridge.settle()
    assert len(SEEN) == 2
    assert bridge.stored() == 2


# --------------------------------------------------------------------------- refused


async def test_authentication_failures_are_401_and_store_nothing(bridge: Bridge) -> None:
    change = debezium("c", None, ANNE)
    old = datetime.now(UTC) - timedelta(minutes=6)
    other = "whsec_" + base64.b64encode(b"an attacker's key").decode()
    attempts = [
        ("/hooks/supa", SUPABASE_INSERT, {}),
        ("/hooks/supa", SUPABASE_INSERT, {"x-webhook-secret": "s3cre"}),
        ("/hooks/supa", SUPABASE_INSERT, {"x-webhook-secret": "s3cret\u00e9"}),
        ("/hooks/supa", b"not json at all", {"x-webhook-secret": "wrong"}),
        ("/hooks/debezium", change, {}),
        ("/hooks/debezium", change, standard(change, "m", secret=other)),
        ("/hooks/debezium", change, standard(change, "m", at=old)),
        ("/hooks/debezium", change, {**standard(change, "m"), "webhook-signature": "v1"}),
        ("/hooks/debezium", change, {**standard(change, "m"), "webhook-timestamp": "1e999"}),
        ("/hooks/debezium", b"{broken", standard(b"{other", "m")),
        ("/hooks/ps", PLANETSCALE_BRANCH_READY, {"x-planetscale-signature": "00ff"}),
        ("/hooks/ce", CE_STRUCTURED, {"x-hub-signature-256": "sha256=not-hex"}),
        ("/hooks/ce", CE_STRUCTURED, hub(CE_STRUCTURED, secret="nope")),
    ]
    for path, body, headers in attempts:
        status, answer = await bridge.post(path, body, headers)
        assert (status, answer) == (401, {"error": "authentication failed"}), (path, headers)
    assert bridge.stored() == 0
    assert await bridge.healthy()
    status, _ = await bridge.post("/hooks/supa", SUPABASE_INSERT, SUPA)
    assert status == 202


async def test_bad_bodies_are_400_or_422_and_store_nothing(bridge: Bridge) -> None:
    bad_order = {**SUPABASE_INSERT, "table": "orders", "record": {"id": "x"}}
    cases = [
        ("/hooks/supa", b"", 400, None),
        ("/hooks/supa", b'{"type": "INSERT",', 400, None),
        ("/hooks/supa", b"\xff\xfe\x00", 400, None),
        ("/hooks/supa", {"hello": "world"}, 422, "not_supabase"),
        ("/hooks/supa", bad_order, 422, "invalid_events"),
        ("/hooks/raw", {"id": "x"}, 422, "invalid_events"),  # no `kind` for the type template
        ("/hooks/raw", {"kind": "a", "id": ""}, 422, "invalid_events"),
    ]
    for path, body, expected, reason in cases:
        status, answer = await bridge.post(path, body, SUPA)
        assert status == expected, (path, body, answer)
        if reason is not None:
            assert answer["reason"] == reason
    status, answer = await bridge.post("/hooks/supa", bad_order, SUPA)
    (error,) = answer["details"]
    assert error["type"] == "db/orders.insert" and error["error"] == "schema"
    assert [d["loc"] for d in error["details"]] == [["record", "id"], ["record", "total"]]
    # A CloudEvent of a type the catalog does not know.
    unknown = {**CE_STRUCTURED, "type": "org.other.thing"}
    status, answer = await bridge.post("/hooks/ce", unknown, hub(unknown))
    assert (status, answer["details"][0]["error"]) == (422, "unknown_type")
    # One bad event in a batch refuses the whole batch.
    batch = [CE_STRUCTURED, {**CE_STRUCTURED, "id": "z", "type": "org.other"}]
    status, answer = await bridge.post("/hooks/ce", batch, hub(batch))
    assert (status, [d["index"] for d in answer["details"]]) == (422, [1])
    # Binary data is kept now (issue 19, test_cloudevents_sdk.py); an attribute that
    # breaks the spec is refused: a time that is not RFC 3339.
    bad_time = {
        "ce-specversion": "1.0",
        "ce-id": "p",
        "ce-source": "/s",
        "ce-type": "com.example.png",
        "ce-time": "yesterday",
        "content-type": "image/png",
    }
    status, answer = await bridge.post("/hooks/ce", b"\x89PNG", {**bad_time, **hub(b"\x89PNG")})
    assert (status, answer["details"][0]["error"]) == (422, "invalid_attribute")
    assert bridge.stored() == 0
    assert await bridge.healthy()


async def test_debezium_tombstone_is_a_200_no_op(bridge: Bridge) -> None:
    status, body = await bridge.post("/hooks/debezium", b"null", standard(b"null", "t1"))
    assert (status, body["ignored"]) == (200, "tombstone")
    assert bridge.stored() == 0


async def test_oversize_bodies_are_413_without_reading_them_whole(bridge: Bridge) -> None:
    big = b'{"kind": "a", "id": "1", "pad": "' + b"x" * 5000 + b'"}'
    status, answer = await bridge.post("/hooks/raw", big)
    assert status == 413 and "1024" in answer["error"]

    async def chunks() -> AsyncIterator[
        bytes
    ]:  # no Content-Length: the limit applies as it streams
        for _ in range(200):
            yield b"x" * 1000

    status, _ = await bridge.post("/hooks/supa", chunks(), SUPA)
    assert status == 413
    # With Expect: 100-continue the client is refused before it sends the body.
    status, _ = await bridge.post("/hooks/supa", b"y" * (LIMIT + 1), SUPA, expect100=True)
    assert status == 413
    status, _ = await bridge.post("/hooks/supa", SUPABASE_INSERT, {}, expect100=True)
    assert status == 401
    status, _ = await bridge.post("/hooks/supa", SUPABASE_INSERT, SUPA, expect100=True)
    assert status == 202
    assert bridge.stored() == 1
    assert await bridge.healthy()


# --------------------------------------------------------------------------- config


def test_config_checks(tmp_path: Path) -> None:
    def issues(connector: str, env: dict[str, str] | None = None) -> str:
        text = f"version: 1\nstore: memory://\nconnectors:\n  hook:\n{connector}"
        with pytest.raises(ConfigError) as info:
            load_config_text(text, env or {})
        return str(info.value)

    assert "needs `event.type`" in issues("    type: webhook\n    provider: json\n")
    assert "set `auth.secret`" in issues("    type: webhook\n    provider: planetscale\n")
    assert "taken by the bridge" in issues(
        "    type: webhook\n    provider: supabase\n    path: /v1/events\n"
    )
    assert "unknown field" in issues(
        "    type: webhook\n    provider: json\n    event: {type: '{nope.x}'}\n"
    )
    assert "cannot consume" in issues(
        "    type: webhook\n    provider: supabase\n    consume: {}\n"
    )
    secret = "not base64 !"
    text = issues(
        "    type: webhook\n    provider: debezium\n"
        "    auth: {scheme: standard_webhooks, secret: '${HOOK_KEY}'}\n",
        {"HOOK_KEY": secret},
    )
    assert "must be base64" in text and secret not in text


# --------------------------------------------------------------------------- the ingress alone


async def serve(ingress: WebhookIngress) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_routes(ingress.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}{ingress.path}"
    finally:
        await runner.cleanup()


async def test_store_failures_are_503_and_bugs_never_500() -> None:
    calls: list[int] = []

    async def broken_store(events: Any) -> list[bool]:
        calls.append(len(events))
        raise StoreError("database is locked")

    cfg = WebhookConfig.model_validate({"type": "webhook", "provider": "supabase"})
    ingress = WebhookIngress(cfg, "supa", IngressEnv(broken_store, EventCatalog(), LIMIT))
    async for url in serve(ingress):
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=orjson.dumps(SUPABASE_INSERT)) as resp:
                assert resp.status == 503
                assert "nothing was accepted" in (await resp.json())["error"]

            def explode(body: bytes, headers: Any) -> Any:
                raise RuntimeError("a bug in a parser")

            ingress.parse = explode
            async with session.post(url, data=orjson.dumps(SUPABASE_INSERT)) as resp:
                assert resp.status == 422
    assert calls == [1]


async def test_reading_stops_at_the_limit() -> None:
    loop = asyncio.get_running_loop()
    stream = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    for _ in range(100):
        stream.feed_data(b"x" * 1000)
    stream.feed_eof()
    with pytest.raises(Exception) as info:
        await read_capped(stream, 4500)
    assert type(info.value).__name__ == "_TooLarge"
    left = len(await stream.read())
    assert left == 100 * 1000 - 4501  # what lay beyond the limit was never taken in
    stream = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    stream.feed_data(b"abc")
    stream.feed_eof()
    assert await read_capped(stream, 3) == b"abc"


def test_json_mapping_data_path_and_batch_ids() -> None:
    async def accept(events: Any) -> list[bool]:
        return [True for _ in events]

    cfg = WebhookConfig.model_validate(
        {
            "type": "webhook",
            "provider": "json",
            "event": {"type": "app/{body.kind}", "data": "payload", "source": "/{connector}"},
        }
    )
    ingress = WebhookIngress(cfg, "raw", IngressEnv(accept, EventCatalog(), LIMIT))
    parsed = ingress.parse(orjson.dumps({"kind": "x", "payload": {"n": 1}}), {})
    (event,) = ingress.events(parsed.candidates, {"webhook-id": "msg_9"})
    assert (event.type, event.id, event.source, event.data) == ("app/x", "msg_9", "/raw", {"n": 1})
    (fresh,) = ingress.events(parsed.candidates, {})
    assert fresh.id != "msg_9" and len(fresh.id) == 36  # no id anywhere: a new one
