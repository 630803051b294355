"""Compressed Kafka batches against a real broker (Tansu), with librdkafka as the other client.

Proves, with counts:
* the bridge's publisher compresses with each codec it offers, and librdkafka reads
  every message back (and the batches really carry that codec: aiokafka without the
  codec's library cannot read them);
* a batch the source cannot decode (its codec library made unavailable in this
  process, as on a machine without it) blocks its own partition only: the records
  before the batch and every other topic are delivered, the commit stops right
  before the batch, ``status()`` names the partition, offset and codec; with the
  codec back, a new source reads the batch's records from there.
"""

from __future__ import annotations

import asyncio

import aiokafka.codec
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnsupportedCodecError

from bridge.transport import Settlement
from connectors.kafka import KafkaPublisher
from connectors.kafka.consume import KafkaSource
from tests.contract import nothing_within, running, take
from tests.fixtures import librdkafka
from tests.fixtures.kafka import KafkaAdmin
from tests.integration.test_kafka_contract import kafka_config
from tests.support import until

pytestmark = pytest.mark.integration


async def _first_batch_raises(bootstrap: str, topic: str) -> bool:
    """Whether aiokafka raises ``UnsupportedCodecError`` reading ``topic`` from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        for _ in range(20):
            try:
                if await consumer.getmany(tp, timeout_ms=500):
                    return False
            except UnsupportedCodecError:
                return True
        return False
    finally:
        await consumer.stop()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_publisher_compresses_and_librdkafka_reads_it(
    kafka: KafkaAdmin, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = await kafka.new_topic()
    cfg = kafka_config(kafka.bootstrap).model_copy(deep=True)
    cfg.publish.compression = codec  # type: ignore[assignment]
    cfg.publish.linger = 0.05
    publisher = KafkaPublisher(cfg, "out")
    sent = [orjson.dumps({"n": n, "pad": "x" * 200}) for n in range(20)]
    try:
        await asyncio.gather(*(publisher.publish(topic, body, {}, None) for body in sent))
    finally:
        await publisher.close()

    read = await asyncio.to_thread(librdkafka.consume, kafka.bootstrap, topic, len(sent))
    assert sorted(read) == sorted(sent)
    monkeypatch.setattr(aiokafka.codec, f"has_{codec}", lambda: False)
    assert await _first_batch_raises(kafka.bootstrap, topic), f"the batches are not {codec}"


async def test_an_undecodable_batch_blocks_only_its_partition(
    kafka: KafkaAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed, plain = await kafka.new_topic(), await kafka.new_topic()
    # mixed: 10 plain records, then 10 zstd ones from librdkafka; plain: 10 plain records
    await kafka.produce(mixed, [(None, orjson.dumps({"n": n}), {}) for n in range(10)])
    zstd = [(None, orjson.dumps({"n": n}).decode()) for n in range(10, 20)]
    await asyncio.to_thread(
        librdkafka.produce,
        kafka.bootstrap,
        mixed,
        [(None, value.encode()) for _, value in zstd],
        "zstd",
    )
    await kafka.produce(plain, [(None, orjson.dumps({"n": n}), {}) for n in range(10)])
    monkeypatch.setattr(aiokafka.codec, "has_zstd", lambda: False)  # as without the library
    cfg = kafka_config(kafka.bootstrap, mixed, topics=[mixed, plain], ordering="none")
    group = cfg.consume.group_id  # type: ignore[union-attr]

    source = KafkaSource(cfg, "k")
    async with running(source):
        got = await take(source, 20)
        for delivery in got:
            await delivery.settle(Settlement.ACK)
        by_topic = {
            t: sorted(orjson.loads(d.body)["n"] for d in got if d.meta["topic"] == t)
            for t in (mixed, plain)
        }
        assert by_topic == {mixed: list(range(10)), plain: list(range(10))}
        await until(lambda: "blocked" in source.status().detail, 15, "the partition blocked")
        status = source.status()
        assert status.connected, status
        assert f"{mixed}/0: batch at offset 10 cannot be decoded" in status.detail, status
        assert "zstd" in status.detail, status
        # the other topic keeps flowing after the block
        await kafka.produce(plain, [(None, orjson.dumps({"n": n}), {}) for n in range(10, 15)])
        later = await take(source, 5)
        assert sorted(orjson.loads(d.body)["n"] for d in later) == list(range(10, 15))
        assert {d.meta["topic"] for d in later} == {plain}
        for delivery in later:
            await delivery.settle(Settlement.ACK)
        assert await nothing_within(source, 1.0)
    assert await kafka.committed(group, mixed, 1) == {0: 10}  # right before the batch
    assert await kafka.committed(group, plain, 1) == {0: 15}

    monkeypatch.undo()  # the codec is back: a new member reads the batch from offset 10
    async with running(KafkaSource(cfg, "k")) as again:
        rest = await take(again, 10)
        assert [(d.meta["topic"], d.meta["offset"]) for d in rest] == [
            (mixed, offset) for offset in range(10, 20)
        ]
        assert [d.body for d in rest] == [value.encode() for _, value in zstd]
        for delivery in rest:
            await delivery.settle(Settlement.ACK)
        assert await nothing_within(again, 1.0)
    assert await kafka.committed(group, mixed, 1) == {0: 20}


async def test_a_lone_topic_that_cannot_be_decoded_is_blocked_not_failed(
    kafka: KafkaAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Here the first call to see the batch is the one waiting over every partition.
    topic = await kafka.new_topic()
    await asyncio.to_thread(
        librdkafka.produce, kafka.bootstrap, topic, [(None, b'{"n": 1}')] * 5, "lz4"
    )
    monkeypatch.setattr(aiokafka.codec, "has_lz4", lambda: False)
    cfg = kafka_config(kafka.bootstrap, topic)
    source = KafkaSource(cfg, "k")
    async with running(source):
        await until(lambda: "blocked" in source.status().detail, 15, "the partition blocked")
        assert await nothing_within(source, 1.0)  # and no ConnectorError either
        status = source.status()
        assert status.connected, status
        assert f"{topic}/0: batch at offset 0 cannot be decoded" in status.detail, status
        assert "lz4" in status.detail, status
    assert await kafka.committed(cfg.consume.group_id, topic, 1) == {0: None}  # type: ignore[union-attr]
