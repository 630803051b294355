"""Debezium through Kafka Connect and RabbitMQ, Supabase through SQS: ``consume.format``.

A running bridge (in process) reads Debezium records, as the JSON converter writes
them (``{schema, payload}``, a JSON key), from a real Kafka (Tansu; produced with
aiokafka, key and value as Kafka Connect writes them) and a real RabbitMQ, and
gets the same ``db/<table>.<op>`` events as a Debezium Server webhook posting the
same records. A tombstone (null value) after a delete is dropped by default (no
dead letter, offset committed) or becomes a ``db/tombstone`` event with the key.
Samples: tests/cdc_samples.py.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from tests.cdc_samples import (
    ANNE,
    ANNE_2,
    SUPABASE_DELETE,
    SUPABASE_INSERT,
    SUPABASE_UPDATE,
    TX_BEGIN,
    TX_END,
    debezium,
    envelope,
)
from tests.fixtures.kafka import KafkaAdmin
from tests.fixtures.rabbitmq import RabbitAdmin
from tests.fixtures.sqs import SqsKit
from tests.support import free_port, sqs_connector

pytestmark = pytest.mark.integration

SEEN: list[Event[Any]] = []


async def remember(event: Event[Any], ctx: Context) -> None:
    SEEN.append(event)


KEY = orjson.dumps(envelope({"id": 1})).decode()  # the JSON converter's key, schemas on


def records(lsn: int) -> list[dict[str, Any]]:
    """Insert, update, delete of one row, at log positions from ``lsn`` on."""
    return [
        envelope(debezium("c", None, ANNE, lsn=lsn)),
        envelope(debezium("u", ANNE, ANNE_2, lsn=lsn + 1)),
        envelope(debezium("d", ANNE_2, None, lsn=lsn + 2)),
    ]


def shape(event: Event[Any]) -> tuple[Any, ...]:
    """What a handler of db/* reads, without the log position."""
    data = event.data
    return (event.type, data["op"], data["table"], data["record"], data["old_record"])


EXPECTED = ["db/customers.insert", "db/customers.update", "db/customers.delete"]

CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:{port}"}}
defaults: {{retry: {{attempts: 1}}}}
connectors:
  pg:
    type: kafka
    bootstrap_servers: {bootstrap}
    consume: &kafka
      topics: [{topic}]
      group_id: g-{topic}
      start_from: earliest
      session_timeout: 2s
      heartbeat_interval: 500ms
      commit_interval: 200ms
      fetch_max_wait: 100ms
      format: debezium
  pg_tombs:
    type: kafka
    bootstrap_servers: {bootstrap}
    consume:
      <<: *kafka
      topics: [{tombs}]
      group_id: g-{tombs}
      tombstones: event
  plain:
    type: kafka
    bootstrap_servers: {bootstrap}
    consume:
      <<: *kafka
      topics: [{plain}]
      group_id: g-{plain}
      format: json
      event: {{type: app/thing}}
  amqp:
    type: rabbitmq
    url: {amqp}
    consume: {{queue: {queue}, format: debezium}}
  hook:
    type: webhook
    provider: debezium
handlers:
  - id: keep
    on: ["db/*", "app/*"]
    type: python
    function: "tests.integration.test_cdc_brokers:remember"
"""


async def produce(bootstrap: str, topic: str, records: list[tuple[str, Any]]) -> None:
    """Kafka Connect's way: a JSON key, a JSON value, None for a tombstone."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            body = None if value is None else orjson.dumps(value)
            await producer.send_and_wait(topic, body, key=key.encode())
    finally:
        await producer.stop()


@pytest.fixture
async def bridge(
    tmp_path: Path, kafka: KafkaAdmin, rabbit: RabbitAdmin
) -> AsyncIterator[tuple[Runtime, str, dict[str, str]]]:
    SEEN.clear()
    names = {
        "topic": await kafka.new_topic(prefix="pg.inventory.customers"),
        "tombs": await kafka.new_topic(prefix="pg.inventory.customers"),
        "plain": await kafka.new_topic(prefix="plain"),
        "queue": await rabbit.queue(),
    }
    port = free_port()
    text = CONFIG.format(
        db=tmp_path / "s.db", port=port, bootstrap=kafka.bootstrap, amqp=rabbit.url, **names
    )
    runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
    task = asyncio.create_task(runtime.run())
    try:
        yield runtime, f"http://127.0.0.1:{port}", names
    finally:
        runtime.request_stop()
        await task


async def wait_for(count: int, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(SEEN) < count:
        if loop.time() > deadline:
            raise AssertionError(f"{len(SEEN)} of {count} events within {within}s")
        await asyncio.sleep(0.05)


async def test_debezium_on_kafka_rabbitmq_and_webhook_gives_the_same_events(
    bridge: tuple[Runtime, str, dict[str, str]], kafka: KafkaAdmin, rabbit: RabbitAdmin
) -> None:
    runtime, url, names = bridge
    topic = names["topic"]
    # Kafka: the changes, then the tombstone Debezium writes after the delete.
    await produce(kafka.bootstrap, topic, [(KEY, r) for r in records(100)] + [(KEY, None)])
    await wait_for(3)
    await asyncio.sleep(0.5)  # a tombstone event, were there one, would come now
    from_kafka = [shape(e) for e in SEEN]
    assert [s[0] for s in from_kafka] == EXPECTED
    assert all(e.transport["kafka.key"] == KEY for e in SEEN)
    assert all(e.id.startswith("dbz-") for e in SEEN)  # the record's id, not the offset
    assert await runtime.store.dead_letters() == []  # was malformed_json on every delete
    group = f"g-{topic}"
    for _ in range(100):  # all 4 records committed, the tombstone included
        if (await kafka.committed(group, topic, 1)).get(0) == 4:
            break
        await asyncio.sleep(0.1)
    assert (await kafka.committed(group, topic, 1)).get(0) == 4

    # RabbitMQ: the same kind of changes, one message each.
    SEEN.clear()
    for record in records(200):
        await rabbit.publish(names["queue"], orjson.dumps(record))
    await wait_for(3)
    assert sorted(map(shape, SEEN), key=str) == sorted(from_kafka, key=str)

    # A Debezium Server webhook posting them: the same events again.
    SEEN.clear()
    async with aiohttp.ClientSession() as session:
        for record in records(300):
            async with session.post(f"{url}/hooks/hook", data=orjson.dumps(record)) as resp:
                assert resp.status == 202
    await wait_for(3)
    assert [shape(e) for e in SEEN] == from_kafka
    assert len(SEEN) == 3
    assert await runtime.store.dead_letters() == []


async def test_kafka_tombstones_can_become_events_with_their_key(
    bridge: tuple[Runtime, str, dict[str, str]], kafka: KafkaAdmin
) -> None:
    runtime, _, names = bridge
    tombs = names["tombs"]
    await produce(kafka.bootstrap, tombs, [(KEY, TX_BEGIN), (KEY, records(400)[2]), (KEY, None)])
    await produce(kafka.bootstrap, tombs, [(KEY, TX_END)])
    await wait_for(4)
    assert [e.type for e in SEEN] == [
        "db/transaction.begin",
        "db/customers.delete",
        "db/tombstone",
        "db/transaction.end",
    ]
    assert SEEN[2].data == {"key": {"id": 1}, "topic": tombs}
    assert SEEN[2].id == f"{tombs}-0-2"
    assert await runtime.store.dead_letters() == []


async def test_a_tombstone_on_a_json_topic_is_dropped_not_dead_lettered(
    bridge: tuple[Runtime, str, dict[str, str]], kafka: KafkaAdmin
) -> None:
    runtime, _, names = bridge
    plain = names["plain"]
    await produce(kafka.bootstrap, plain, [("k1", {"n": 1}), ("k1", None), ("k2", {"n": 2})])
    await wait_for(2)
    group = f"g-{plain}"
    for _ in range(100):
        if (await kafka.committed(group, plain, 1)).get(0) == 3:
            break
        await asyncio.sleep(0.1)
    assert [e.data for e in SEEN] == [{"n": 1}, {"n": 2}]
    assert (await kafka.committed(group, plain, 1)).get(0) == 3
    assert await runtime.store.dead_letters() == []  # was a malformed_json dead letter


async def test_supabase_changes_on_sqs(tmp_path: Path, sqs: SqsKit) -> None:
    """consume.format: supabase on a real SQS (moto): the webhook's events, DELETE included."""
    SEEN.clear()
    url = await sqs.queue()
    connector = sqs_connector(url, format="supabase", event={})
    text = orjson.dumps(
        {
            "version": 1,
            "store": f"sqlite:///{tmp_path}/s.db",
            "server": {"enabled": False},
            "connectors": {"supa": connector},
            "handlers": [
                {
                    "id": "keep",
                    "on": "db/*",
                    "type": "python",
                    "function": "tests.integration.test_cdc_brokers:remember",
                }
            ],
        }
    ).decode()
    runtime = Runtime(load_config_text(text, {"SQS_ENDPOINT": sqs.endpoint}))
    task = asyncio.create_task(runtime.run())
    try:
        payloads = (SUPABASE_INSERT, SUPABASE_UPDATE, SUPABASE_DELETE)
        await sqs.send(url, [orjson.dumps(p).decode() for p in payloads])
        await wait_for(3)
        letters = await runtime.store.dead_letters()
    finally:
        runtime.request_stop()
        await task
    assert sorted(e.type for e in SEEN) == ["db/users.delete", "db/users.insert", "db/users.update"]
    assert all(e.source == "bridge://supa" for e in SEEN)
    assert letters == []
