"""Payload formats (bridge.formats) on the records Debezium and Supabase document.

Every sample comes from the producer's own documentation or code: see
tests/cdc_samples.py for the source of each. A Debezium record of any documented
kind is never refused; each kind has its own event type; a Debezium CloudEvent is
the same row change as the JSON format; Supabase changes have a stable id; and
``consume.format`` gives a broker message the same event as a webhook.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.errors import ConfigError, InvalidEvent, Skipped
from bridge.events import EventCatalog
from bridge.formats import DebeziumFormat, SupabaseFormat
from bridge.normalize import Normalizer
from bridge.transport import Delivery, EventMapping
from connectors.memory import BROKER
from connectors.webhook.providers import parser
from tests.cdc_samples import (
    ANNE,
    ANNE_2,
    CE_PG_READ,
    CE_PG_READ_AS_JSON,
    HEARTBEAT,
    HEARTBEAT_ENVELOPE,
    MONGO_CREATE,
    MONGO_UPDATE_DESCRIPTION_ONLY,
    MYSQL_SCHEMA_CHANGE,
    NOTIFICATION,
    PG_MESSAGE,
    PG_MESSAGE_TX,
    SUPABASE_DELETE,
    SUPABASE_INSERT,
    SUPABASE_UPDATE,
    TX_BEGIN,
    TX_END,
    debezium,
    envelope,
)


def one(fmt: Any, value: Any) -> Any:
    (candidate,) = fmt.parse(value, {}).candidates
    return candidate


# --------------------------------------------------------------------------- debezium kinds


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (TX_BEGIN, "db/transaction.begin"),
        (TX_END, "db/transaction.end"),
        (envelope(TX_END), "db/transaction.end"),
        (HEARTBEAT, "db/heartbeat"),
        (HEARTBEAT_ENVELOPE, "db/heartbeat"),
        (MYSQL_SCHEMA_CHANGE, "db/schema.change"),
        (PG_MESSAGE_TX, "db/foo.message"),
        (PG_MESSAGE, "db/foo.message"),
        (NOTIFICATION, "db/notification"),
    ],
)
def test_every_documented_debezium_record_is_a_typed_event(record: Any, kind: str) -> None:
    candidate = one(DebeziumFormat(), record)
    payload = record.get("payload", record)
    assert candidate.type == kind
    assert candidate.data == payload  # Debezium's payload, kept whole
    assert candidate.native_id.startswith("dbz-")
    assert candidate.time is not None
    # The webhook provider gives the same (it was 422 not_debezium before).
    (via_webhook,) = parser("debezium")(orjson.dumps(record), {}).candidates
    assert (via_webhook.type, via_webhook.data) == (kind, payload)


def test_schema_change_keeps_ddl_and_table_changes() -> None:
    data = one(DebeziumFormat(), MYSQL_SCHEMA_CHANGE).data
    assert data["ddl"] == "ALTER TABLE customers ADD middle_name varchar(255) AFTER first_name"
    assert data["tableChanges"][0]["table"]["columns"][1]["name"] == "middle_name"
    assert data["databaseName"] == "inventory"


def test_control_record_ids_are_stable_and_distinct() -> None:
    fmt = DebeziumFormat()
    ids = [one(fmt, r).native_id for r in (TX_BEGIN, TX_END, HEARTBEAT, PG_MESSAGE_TX)]
    again = [one(fmt, r).native_id for r in (TX_BEGIN, TX_END, HEARTBEAT, PG_MESSAGE_TX)]
    later = one(fmt, {"ts_ms": HEARTBEAT["ts_ms"] + 10_000}).native_id
    assert ids == again
    assert len({*ids, later}) == 5


def test_mongodb_changes_name_a_collection_and_carry_json_strings() -> None:
    create = one(DebeziumFormat(), MONGO_CREATE).data
    assert (create["op"], create["table"], create["database"]) == (
        "insert",
        "customers",
        "inventory",
    )
    assert create["record"]["_id"] == {"$numberLong": "1004"}
    assert create["record"]["first_name"] == "Anne"
    update = one(DebeziumFormat(), MONGO_UPDATE_DESCRIPTION_ONLY).data
    assert (update["op"], update["record"], update["old_record"]) == ("update", None, None)
    assert update["updateDescription"]["updatedFields"] == '{"first_name": "Anne Marie"}'


def test_a_batch_mixes_kinds() -> None:
    # Debezium Server's batch mode posts "[" + records + "]".
    batch = [TX_BEGIN, debezium("c", None, ANNE), debezium("u", ANNE, ANNE_2), TX_END]
    candidates = DebeziumFormat().parse(batch, {}).candidates
    assert [c.type or c.data["op"] for c in candidates] == [
        "db/transaction.begin",
        "insert",
        "update",
        "db/transaction.end",
    ]


def test_cloudevents_format_is_the_same_row_change_as_json() -> None:
    fmt = DebeziumFormat()
    from_ce = one(fmt, CE_PG_READ)
    from_json = one(fmt, CE_PG_READ_AS_JSON)
    assert from_ce.type is None  # a row change: the connector's type template applies
    assert from_ce.data == from_json.data
    assert from_ce.data["op"] == "read"
    assert (from_ce.data["table"], from_ce.data["schema"]) == ("a", "s1")
    assert from_ce.data["record"] == {"pk": 1, "name": "Bob"}
    assert from_ce.native_id == from_json.native_id
    assert from_ce.time == "2020-01-13T13:55:39.738000Z"
    # With schemas enabled the data is a {schema, payload} envelope.
    wrapped = {**CE_PG_READ, "data": envelope(CE_PG_READ["data"])}
    assert one(fmt, wrapped).data == from_json.data


def test_a_cloudevent_without_debezium_attributes_is_refused_with_a_reason() -> None:
    bare = {k: v for k, v in CE_PG_READ.items() if not k.startswith("iodebezium")}
    with pytest.raises(InvalidEvent) as info:
        DebeziumFormat().parse(bare, {})
    assert info.value.reason == "not_debezium"
    assert "extension.attributes.enable" in info.value.detail[0]


@pytest.mark.parametrize("value", [None, envelope(None)])
def test_tombstones_are_dropped_or_become_events(value: Any) -> None:
    assert DebeziumFormat().parse(value, {}).ignored == "tombstone"
    (event,) = DebeziumFormat(tombstones="event").parse(value, {}).candidates
    assert (event.type, event.data) == ("db/tombstone", {"key": None, "topic": None})


# --------------------------------------------------------------------------- supabase


def test_supabase_ids_are_stable_per_change_and_distinct_between_changes() -> None:
    fmt = SupabaseFormat()
    ids = [one(fmt, p).content_id for p in (SUPABASE_INSERT, SUPABASE_UPDATE, SUPABASE_DELETE)]
    again = [one(fmt, p).content_id for p in (SUPABASE_INSERT, SUPABASE_UPDATE, SUPABASE_DELETE)]
    other_row = {**SUPABASE_INSERT, "record": {**SUPABASE_INSERT["record"], "id": 2}}
    other_table = {**SUPABASE_INSERT, "table": "admins"}
    assert ids == again
    assert all(i and i.startswith("supabase-") for i in ids)
    assert len({*ids, one(fmt, other_row).content_id, one(fmt, other_table).content_id}) == 5


# --------------------------------------------------------------------------- consume.format


def normalizer(fmt: str, tombstones: str = "drop", **mapping: Any) -> Normalizer:
    return Normalizer(
        "cdc",
        "kafka",
        EventMapping(**mapping),
        EventCatalog(),
        1 << 20,
        payload_format=fmt,
        tombstones=tombstones,  # type: ignore[arg-type]
    )


def delivery(body: Any, **meta: Any) -> Delivery:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Delivery(raw, {}, {"message_id": "t-0-7", **meta})


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (debezium("c", None, ANNE), "db/customers.insert"),
        (envelope(debezium("d", ANNE, None)), "db/customers.delete"),
        (CE_PG_READ, "db/a.read"),
        (TX_BEGIN, "db/transaction.begin"),
        (HEARTBEAT_ENVELOPE, "db/heartbeat"),
        (MYSQL_SCHEMA_CHANGE, "db/schema.change"),
        (PG_MESSAGE, "db/foo.message"),
    ],
)
def test_consume_format_debezium_gives_the_webhook_event(record: Any, kind: str) -> None:
    event = normalizer("debezium")(delivery(record, key='{"id": 1}'))
    (candidate,) = parser("debezium")(orjson.dumps(record), {}).candidates
    assert event.type == kind
    assert event.data == candidate.data
    assert event.id == candidate.native_id  # the record's id, not the Kafka offset
    assert event.source == "bridge://cdc"


def test_consume_format_supabase() -> None:
    norm = normalizer("supabase")
    insert = norm(delivery(SUPABASE_INSERT))
    delete = norm(Delivery(orjson.dumps(SUPABASE_DELETE), {}, {}))
    assert (insert.type, insert.id) == ("db/users.insert", "t-0-7")  # the transport's id
    assert delete.type == "db/users.delete"
    assert delete.id == one(SupabaseFormat(), SUPABASE_DELETE).content_id


def test_kafka_tombstones_are_dropped_by_default_or_become_events_on_any_format() -> None:
    for fmt in ("json", "debezium", "supabase", "cloudevents"):
        tomb = delivery(b"", key='{"schema": {}, "payload": {"id": 1004}}', topic="pg.inv.c")
        tomb = Delivery(tomb.body, {}, {**tomb.meta, "tombstone": True})
        with pytest.raises(Skipped):
            normalizer(fmt, type="x/y")(tomb)
        event = normalizer(fmt, "event", type="x/y")(tomb)
        assert (event.type, event.id) == ("db/tombstone", "t-0-7")
        assert event.data == {"key": {"id": 1004}, "topic": "pg.inv.c"}


def test_consume_format_cloudevents_refuses_a_plain_message() -> None:
    with pytest.raises(InvalidEvent) as info:
        normalizer("cloudevents", type="x/y")(delivery({"n": 1}))
    assert info.value.reason == "not_cloudevent"
    assert normalizer("json", type="x/y")(delivery({"n": 1})).type == "x/y"
    structured = {"specversion": "1.0", "id": "a", "source": "s", "type": "t/x", "data": {}}
    assert normalizer("cloudevents")(delivery(structured)).type == "t/x"


def test_a_debezium_array_on_a_broker_is_refused() -> None:
    with pytest.raises(InvalidEvent) as info:
        normalizer("debezium")(delivery([TX_BEGIN, TX_END]))
    assert info.value.reason == "not_debezium"


# --------------------------------------------------------------------------- every connector


@pytest.mark.parametrize(
    "connector",
    [
        "{type: kafka, bootstrap_servers: k:9092, consume: {topics: [t], group_id: g, %s}}",
        "{type: rabbitmq, url: 'amqp://h', consume: {queue: q, %s}}",
        "{type: sqs, region: us-east-1, consume: {queue: q, %s}}",
        "{type: memory, consume: {%s}}",
    ],
)
def test_every_consuming_connector_takes_format_and_tombstones(connector: str) -> None:
    def load(options: str) -> Any:
        return load_config_text(f"version: 1\nconnectors:\n  c: {connector % options}\n", {})

    cfg = load("format: debezium, tombstones: event, snapshot: insert")
    consume = cfg.connectors["c"].consume
    assert (consume.format, consume.tombstones, consume.snapshot) == ("debezium", "event", "insert")
    assert load("event: {type: x/y}").connectors["c"].consume.tombstones == "drop"
    with pytest.raises(ConfigError) as info:
        load("format: avro")
    assert "connectors.c.consume.format" in str(info.value)


async def test_memory_connector_reads_supabase_changes_into_their_events(tmp_path: Any) -> None:
    text = f"""\
version: 1
store: sqlite:///{tmp_path}/s.db
server: {{enabled: false}}
connectors:
  supa: {{type: memory, topic: supa-{id(tmp_path)}, consume: {{format: supabase}}}}
handlers:
  - {{id: keep, on: "db/*", type: python, function: "tests.unit.test_cdc_formats:remember"}}
"""
    SEEN.clear()
    runtime = Runtime(load_config_text(text, {}))
    task = asyncio.create_task(runtime.run())
    for payload in (SUPABASE_INSERT, SUPABASE_UPDATE, SUPABASE_DELETE):
        BROKER.put(f"supa-{id(tmp_path)}", orjson.dumps(payload))
    for _ in range(200):
        if len(SEEN) == 3:
            break
        await asyncio.sleep(0.02)
    letters = await runtime.store.dead_letters()
    runtime.request_stop()
    await task
    assert sorted(e.type for e in SEEN) == ["db/users.delete", "db/users.insert", "db/users.update"]
    assert letters == []


SEEN: list[Any] = []


async def remember(event: Any, ctx: Any) -> None:
    SEEN.append(event)
