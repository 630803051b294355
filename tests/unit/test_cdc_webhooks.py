"""Debezium Server and Supabase posting to a running bridge (in process, real HTTP).

What a user of each sender sees, with counts:
* Debezium Server: every documented record kind is answered 2xx (a non-2xx stops the
  connector), becomes an event of its own type and runs; an unrouted kind follows
  ``unrouted``; its CloudEvents format gives ``db/<table>.<op>``; tombstones are
  dropped or become ``db/tombstone`` events per ``tombstones``.
* Supabase: a re-sent change runs once; a DELETE is accepted by the default mapping.

Samples and their sources: tests/cdc_samples.py.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from connectors.webhook.providers import parser
from tests.cdc_samples import (
    ANNE,
    ANNE_2,
    CE_PG_READ,
    CE_PG_READ_AS_JSON,
    HEARTBEAT_ENVELOPE,
    MYSQL_SCHEMA_CHANGE,
    PG_MESSAGE_TX,
    SUPABASE_DELETE,
    SUPABASE_INSERT,
    SUPABASE_UPDATE,
    TX_BEGIN,
    TX_END,
    debezium,
    envelope,
)
from tests.support import free_port
from tests.unit.test_webhook_ingress import Bridge

SEEN: list[Event[Any]] = []


async def remember(event: Event[Any], ctx: Context) -> None:
    SEEN.append(event)


CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:{port}"}}
defaults: {{retry: {{attempts: 1}}}}
unrouted: {unrouted}
events:
{events}
connectors:
  dbz:
    type: webhook
    provider: debezium
    auth: {{header: Authorization, secret: "Bearer dbz-t0ken"}}
  dbz_tombs:
    type: webhook
    provider: debezium
    tombstones: event
  supa:
    type: webhook
    provider: supabase
    auth: {{secret: s3cret}}
handlers:
  - id: keep
    on: {on}
    type: python
    function: "tests.unit.test_cdc_webhooks:remember"
"""

OPEN = "  db/*: {schema: none}"
DBZ = {"authorization": "bearer dbz-t0ken"}  # scheme in lower case, as some clients send it
SUPA = {"x-webhook-secret": "s3cret"}
Start = Callable[..., Any]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a bridge: ``await start(events=..., on=..., unrouted=...)``."""
    SEEN.clear()
    stack: list[tuple[Runtime, asyncio.Task[None]]] = []
    session = aiohttp.ClientSession()

    async def run(
        events: str = OPEN, on: str = '["db/*"]', unrouted: str = "dead_letter"
    ) -> Bridge:
        port = free_port()
        db = tmp_path / f"s{len(stack)}.db"
        text = CONFIG.format(db=db, port=port, events=events, on=on, unrouted=unrouted)
        runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
        task = asyncio.create_task(runtime.run())
        stack.append((runtime, task))
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if task.done():
                task.result()
            try:
                async with session.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        return Bridge(runtime, url, db, session)

    yield run
    for runtime, task in stack:
        runtime.request_stop()
        await task
    await session.close()


async def test_debezium_server_is_never_refused_a_documented_record(start: Start) -> None:
    bridge = await start()
    records = [
        TX_BEGIN,
        envelope(debezium("c", None, ANNE)),
        envelope(debezium("u", ANNE, ANNE_2, lsn=24023300)),
        TX_END,
        HEARTBEAT_ENVELOPE,
        MYSQL_SCHEMA_CHANGE,
        PG_MESSAGE_TX,
    ]
    statuses = []
    for record in records:
        status, body = await bridge.post("/hooks/dbz", record, DBZ)
        statuses.append(status)
    assert statuses == [202] * len(records), body
    await bridge.settle()
    assert [e.type for e in SEEN] == [
        "db/transaction.begin",
        "db/customers.insert",
        "db/customers.update",
        "db/transaction.end",
        "db/heartbeat",
        "db/schema.change",
        "db/foo.message",
    ]
    assert SEEN[5].data["ddl"].startswith("ALTER TABLE customers ADD middle_name")
    assert SEEN[0].time == "2017-02-07T20:49:37.125000Z"
    assert all(e.id.startswith("dbz-") for e in SEEN)
    # A retry of the same records (Debezium Server retries on any failure) runs nothing again.
    status, body = await bridge.post("/hooks/dbz", TX_END, DBZ)
    assert (status, body["duplicates"]) == (200, [SEEN[3].id])


async def test_debezium_server_batch_mode(start: Start) -> None:
    bridge = await start()
    batch = [TX_BEGIN, envelope(debezium("c", None, ANNE)), HEARTBEAT_ENVELOPE, TX_END]
    status, body = await bridge.post("/hooks/dbz", batch, DBZ)
    assert (status, len(body["accepted"])) == (202, 4)
    await bridge.settle()
    assert len(SEEN) == 4


@pytest.mark.parametrize("unrouted", ["drop", "dead_letter"])
async def test_unrouted_record_kinds_follow_unrouted(start: Start, unrouted: str) -> None:
    # The catalog and the handler know row changes of one table only.
    bridge = await start(
        events="  db/customers.*: {schema: none}", on='["db/customers.*"]', unrouted=unrouted
    )
    for record in (TX_BEGIN, debezium("c", None, ANNE), HEARTBEAT_ENVELOPE, TX_END):
        status, _ = await bridge.post("/hooks/dbz", record, DBZ)
        assert status == 202  # never refused: Debezium Server would stop
    await bridge.settle()
    assert [e.type for e in SEEN] == ["db/customers.insert"]
    letters = await bridge.runtime.store.dead_letters()
    if unrouted == "drop":
        assert letters == []
    else:
        assert sorted(letter.reason.split(":")[0] for letter in letters) == ["unknown_type"] * 3


async def test_debezium_cloudevents_format_maps_like_json(start: Start) -> None:
    bridge = await start()
    headers = {**DBZ, "content-type": "application/cloudevents+json"}
    status, _ = await bridge.post("/hooks/dbz", CE_PG_READ, headers)
    assert status == 202
    await bridge.settle()
    (event,) = SEEN
    (as_json,) = parser("debezium")(orjson.dumps(CE_PG_READ_AS_JSON), {}).candidates
    assert event.type == "db/a.read"
    assert event.data == as_json.data
    assert event.source == "bridge://dbz"


async def test_tombstones_answer_200_and_drop_or_become_events(start: Start) -> None:
    bridge = await start()
    status, body = await bridge.post("/hooks/dbz", b"null", DBZ)
    assert (status, body["ignored"]) == (200, "tombstone")
    status, body = await bridge.post("/hooks/dbz_tombs", b"", {})
    assert status == 202, body
    await bridge.settle()
    assert [(e.type, e.data) for e in SEEN] == [("db/tombstone", {"key": None, "topic": None})]


async def test_supabase_resent_changes_run_once_and_deletes_pass(start: Start) -> None:
    bridge = await start()
    answers = []
    for payload in (SUPABASE_INSERT, SUPABASE_INSERT, SUPABASE_UPDATE, SUPABASE_DELETE):
        status, body = await bridge.post("/hooks/supa", payload, SUPA)
        answers.append((status, len(body["accepted"]), len(body["duplicates"])))
    assert answers == [(202, 1, 0), (200, 0, 1), (202, 1, 0), (202, 1, 0)]
    await bridge.settle()
    assert [e.type for e in SEEN] == ["db/users.insert", "db/users.update", "db/users.delete"]
