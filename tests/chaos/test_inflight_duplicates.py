"""In-flight duplicates run once (issue 17, item 6): each message is sent twice back to
back, so the copy arrives while the first run is still in flight, and with the ledger on
every handler runs exactly once per message; both copies are still settled.

RabbitMQ: the same ``message_id`` published twice. Kafka: the same structured CloudEvent
(``source`` + ``id``) produced twice, consumed with ``ordering: none`` so the copies run
concurrently. 1,000 pairs each under ``BRIDGE_CHAOS_FULL``, 100 in the default suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from tests.conftest import CHAOS_FULL
from tests.fixtures.kafka import KafkaAdmin
from tests.fixtures.rabbitmq import RabbitAdmin
from tests.support import (
    ledger_succeeded,
    rabbitmq_connector,
    recorder,
    recording_bridge,
    runs_by_event,
    until,
    write_config,
    write_kafka_config,
)

PAIRS = 1_000 if CHAOS_FULL else 100
ENV = {"BRIDGE_TEST_SLOW_SECONDS": "0.05"}  # the first run is still going when its copy lands


def assert_once(record: Path, handlers: tuple[str, ...], ids: list[str]) -> None:
    runs = runs_by_event(record)
    twice = {k: n for k, n in runs.items() if n != 1}
    assert not twice, f"{len(twice)} branches ran more than once: {sorted(twice.items())[:5]}"
    for h in handlers:
        assert sum(n for (hh, _), n in runs.items() if hh == h) == len(ids), h


@pytest.mark.chaos
@pytest.mark.timeout(600 if CHAOS_FULL else 120)
async def test_rabbitmq_pairs_run_once(rabbit: RabbitAdmin, tmp_path: Path) -> None:
    queue = rabbit.name("pairs")
    await rabbit.queue(queue)
    ids = [f"m{n:05d}" for n in range(PAIRS)]
    messages = []
    for n, i in enumerate(ids):
        body = json.dumps({"seq": n}).encode()
        messages += [(body, {"message_id": i}), (body, {"message_id": i})]
    await rabbit.publish_many(queue, messages)
    config = write_config(
        tmp_path,
        telemetry={"logs": {"format": "json", "level": "ERROR"}},
        server={"api": {"enabled": False}},
        connectors={"rabbit": rabbitmq_connector(rabbit.url, queue, max_in_flight=200)},
        handlers=[recorder("a"), recorder("b", "slow")],
    )
    proc, record = recording_bridge(config, tmp_path, **ENV)
    db = tmp_path / "state.db"
    proc.start()
    try:
        await proc.wait_ready()
        await until(lambda: len(ledger_succeeded(db)) == 2 * PAIRS, 300, "every branch final")

        async def drained() -> bool:
            return (await rabbit.depth(queue))[0] == 0

        await until(drained, 60, "both copies of every message acked")
        assert await proc.stop() == 0, proc.log_tail()
    finally:
        proc.kill()
    assert_once(record, ("a", "b"), ids)


@pytest.mark.chaos
@pytest.mark.timeout(600 if CHAOS_FULL else 120)
async def test_kafka_pairs_run_once(kafka: KafkaAdmin, tmp_path: Path) -> None:
    topic = await kafka.new_topic(partitions=2)
    group = kafka.name("group")
    ids = [f"k{n:05d}" for n in range(PAIRS)]
    messages = []
    for n, i in enumerate(ids):
        event = {"specversion": "1.0", "id": i, "source": "producer-1", "type": "test/msg"}
        body = orjson.dumps({**event, "data": {"seq": n}})
        headers = {"content-type": "application/cloudevents+json"}
        messages += [(f"key{n % 7}", body, headers), (f"key{n % 7}", body, headers)]
    await kafka.produce(topic, messages)
    config = write_kafka_config(
        tmp_path,
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=group,
        handlers=[recorder("a", on="test/msg"), recorder("b", "slow", on="test/msg")],
        consume={"ordering": "none", "max_in_flight": 200},
    )
    proc, record = recording_bridge(config, tmp_path, **ENV)
    db = tmp_path / "state.db"
    proc.start()
    try:
        await proc.wait_ready()
        await until(lambda: len(ledger_succeeded(db)) == 2 * PAIRS, 300, "every branch final")

        async def committed() -> bool:
            offsets = await kafka.committed(group, topic, 2)
            return sum(o or 0 for o in offsets.values()) == 2 * PAIRS

        await until(committed, 60, "both copies of every message committed")
        assert await proc.stop() == 0, proc.log_tail()
    finally:
        proc.kill()
    assert_once(record, ("a", "b"), ids)
