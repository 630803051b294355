"""The Kafka source against a real broker (Tansu): mapping, backpressure, revokes, lag, TLS."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from bridge.events import EventCatalog
from bridge.normalize import Normalizer
from bridge.transport import Delivery, EventMapping, Settlement
from connectors.kafka import KafkaPublisher
from connectors.kafka.consume import KafkaSource
from tests.contract import nothing_within, running, take
from tests.fixtures.kafka import KafkaAdmin
from tests.integration.test_kafka_contract import kafka_config

pytestmark = pytest.mark.integration


def normalizer(mapping: EventMapping | None = None) -> Normalizer:
    return Normalizer(
        "k", "kafka", mapping or EventMapping(type="test/plain"), EventCatalog(), 1_000_000
    )


async def test_headers_metadata_and_cloudevents_binding(kafka: KafkaAdmin) -> None:
    topic = await kafka.new_topic(partitions=1)
    structured = {
        "specversion": "1.0",
        "id": "ce-structured",
        "source": "test",
        "type": "test/structured",
        "data": {"n": 3},
    }
    await kafka.produce(
        topic,
        [
            ("user-1", orjson.dumps({"n": 1}), {"x-origin": "plain"}),
            (
                None,
                orjson.dumps({"n": 2}),
                {
                    "ce_specversion": "1.0",
                    "ce_id": "ce-binary",
                    "ce_source": "test",
                    "ce_type": "test/binary",
                    "content-type": "application/json",
                },
            ),
            (None, orjson.dumps(structured), {"content-type": "application/cloudevents+json"}),
        ],
    )
    async with running(KafkaSource(kafka_config(kafka.bootstrap, topic), "k")) as source:
        plain, binary, whole = await take(source, 3)
        for delivery in (plain, binary, whole):
            await delivery.settle(Settlement.ACK)

    assert plain.headers == {"x-origin": "plain"}
    assert {k: plain.meta[k] for k in ("topic", "partition", "offset", "key", "message_id")} == {
        "topic": topic,
        "partition": 0,
        "offset": 0,
        "key": "user-1",
        "message_id": f"{topic}-0-0",
    }
    assert isinstance(plain.meta["timestamp"], int)
    events = [normalizer()(d) for d in (plain, binary, whole)]
    assert [(e.id, e.type, e.data) for e in events] == [
        (f"{topic}-0-0", "test/plain", {"n": 1}),
        ("ce-binary", "test/binary", {"n": 2}),
        ("ce-structured", "test/structured", {"n": 3}),
    ]
    assert events[0].transport["kafka.partition"] == 0
    assert events[0].transport["kafka.key"] == "user-1"
    assert events[1].transport["kafka.offset"] == 1


async def test_backpressure_pauses_at_max_in_flight_and_resumes(kafka: KafkaAdmin) -> None:
    topic = await kafka.new_topic(partitions=2)
    await kafka.produce(topic, [(None, b"{}", {}) for _ in range(60)])
    source = KafkaSource(
        kafka_config(kafka.bootstrap, topic, max_in_flight=5, ordering="none"), "k"
    )
    async with running(source):
        held = await take(source, 5)
        assert await nothing_within(source, 0.5)  # max_in_flight reached: nothing more
        consumer: AIOKafkaConsumer = source._consumer
        assert consumer.paused() == consumer.assignment()
        for delivery in held:
            await delivery.settle(Settlement.ACK)
        assert consumer.paused() == set()
        rest = []
        while len(rest) < 55:
            batch = await take(source, 1)
            rest.extend(batch)
            await batch[0].settle(Settlement.ACK)
            assert source.intake.in_flight <= 5
    assert len({d.meta["message_id"] for d in held + rest}) == 60


async def test_ordering_key_withholds_a_key_until_settled(kafka: KafkaAdmin) -> None:
    topic = await kafka.new_topic(partitions=1)
    await kafka.produce(topic, [(f"k{i % 2}", orjson.dumps({"i": i}), {}) for i in range(6)])
    async with running(KafkaSource(kafka_config(kafka.bootstrap, topic), "k")) as source:
        first = await take(source, 2)  # one per key
        assert [d.meta["key"] for d in first] == ["k0", "k1"]
        assert await nothing_within(source, 0.5)
        await first[0].settle(Settlement.ACK)
        (after,) = await take(source, 1)
        assert (after.meta["key"], after.meta["offset"]) == ("k0", 2)
        assert await nothing_within(source, 0.3)
        await first[1].settle(Settlement.ACK)
        await after.settle(Settlement.ACK)
        rest = await take(source, 2)  # k1@3 and k0@4; k1@5 waits for k1@3
        assert await nothing_within(source, 0.3)
        for d in rest:
            await d.settle(Settlement.ACK)
        rest += await take(source, 1)
        await rest[-1].settle(Settlement.ACK)
    assert [d.meta["offset"] for d in rest] == [3, 4, 5]


async def test_stop_right_after_the_settles_that_resume_intake_returns(
    kafka: KafkaAdmin,
) -> None:
    # The last settles open the room (the partitions resume) in the same loop iteration
    # as the stop: the fetch loop must end all the same (it used to swallow the cancel).
    topic = await kafka.new_topic(partitions=1)
    await kafka.produce(topic, [(None, b"{}", {}) for _ in range(20)])
    source = KafkaSource(
        kafka_config(kafka.bootstrap, topic, max_in_flight=4, ordering="none"), "k"
    )
    await source.start()
    held = await take(source, 4)
    assert source.intake.paused_all
    for delivery in held:
        await delivery.settle(Settlement.ACK)
    assert not source.intake.paused_all
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(source.stop(loop.time() + 5), 15)
    assert source.status().connected is False


async def test_max_in_flight_is_shared_by_the_partitions_under_key_order(
    kafka: KafkaAdmin,
) -> None:
    # 4 partitions of 100 messages, 10 keys each: filled from one partition, the room
    # of 40 would hold 10 runnable messages (one per key) and 30 waiting behind them.
    topic = await kafka.new_topic(partitions=4)
    for p in range(4):
        await kafka.produce(topic, [(f"p{p}-k{i % 10}", b"{}", {}) for i in range(100)], p)
    source = KafkaSource(kafka_config(kafka.bootstrap, topic, max_in_flight=40), "k")
    async with running(source):
        held = await take(source, 32, within=15)  # none settled: 32 keys run at once
        per_partition = {p: sum(d.meta["partition"] == p for d in held) for p in range(4)}
        assert len({d.meta["key"] for d in held}) == 32
        assert all(per_partition.values()), per_partition
        for delivery in held:
            await delivery.settle(Settlement.ACK)


async def test_retry_later_hands_the_message_out_again_in_place(kafka: KafkaAdmin) -> None:
    topic = await kafka.new_topic(partitions=1)
    await kafka.produce(topic, [("same", orjson.dumps({"i": i}), {}) for i in range(2)])
    async with running(KafkaSource(kafka_config(kafka.bootstrap, topic), "k")) as source:
        (first,) = await take(source, 1)
        await first.settle(Settlement.RETRY_LATER)
        (again,) = await take(source, 1)  # the same message, before its successor (same key)
        await again.settle(Settlement.ACK)
        (second,) = await take(source, 1)
        await second.settle(Settlement.ACK)
    assert [d.meta["offset"] for d in (first, again, second)] == [0, 0, 1]


async def test_lag_is_end_offset_minus_committed(kafka: KafkaAdmin) -> None:
    topic = await kafka.new_topic(partitions=1)
    await kafka.produce(topic, [(None, b"{}", {}) for _ in range(30)])
    async with running(
        KafkaSource(kafka_config(kafka.bootstrap, topic, ordering="none"), "k")
    ) as source:
        for delivery in await take(source, 10):
            await delivery.settle(Settlement.ACK)
        for _ in range(50):
            if source.commits:
                break
            await asyncio.sleep(0.1)
        status = source.status()
    assert status.connected
    assert status.lag == {f"{topic}/0": 20.0}
    assert await kafka.committed(f"group-{topic}", topic, 1) == {0: 10}


@pytest.mark.timeout(60)
async def test_no_commit_for_a_partition_after_it_is_released(kafka: KafkaAdmin) -> None:
    topic = await kafka.new_topic(partitions=2)
    await kafka.produce(topic, [(None, b"{}", {}) for _ in range(10)], partition=0)
    await kafka.produce(topic, [(None, b"{}", {}) for _ in range(10)], partition=1)
    config = kafka_config(kafka.bootstrap, topic, ordering="none", revoke_timeout="1s")
    first, second = KafkaSource(config, "first"), KafkaSource(config, "second")
    async with running(first):
        held = await take(first, 20)
        by_partition: dict[int, list[Delivery]] = {0: [], 1: []}
        for delivery in held:
            by_partition[delivery.meta["partition"]].append(delivery)
        for part in (0, 1):  # offsets 0..3 finished, 4 held: the finished prefix is 4
            for delivery in sorted(by_partition[part], key=lambda d: d.meta["offset"]):
                if delivery.meta["offset"] != 4:
                    await delivery.settle(Settlement.ACK)
        async with running(second):  # joining revokes first's partitions; 1 s drain, then release
            commits = first.commits
            assert await kafka.committed(config.consume.group_id, topic, 2) == {0: 4, 1: 4}  # type: ignore[union-attr]
            for part in (0, 1):
                held_back = next(d for d in by_partition[part] if d.meta["offset"] == 4)
                await held_back.settle(Settlement.ACK)  # too late: the partition is gone
            await asyncio.sleep(0.5)  # two commit intervals
            assert first.commits == commits
            assert await kafka.committed(config.consume.group_id, topic, 2) == {0: 4, 1: 4}  # type: ignore[union-attr]
            owned_by_second = {tp.partition for tp in second._consumer.assignment()}
            again = await take(second, 6 * len(owned_by_second))
            assert {d.meta["offset"] for d in again} == set(range(4, 10))
            for delivery in again:
                await delivery.settle(Settlement.ACK)


async def test_publisher_sends_key_headers_with_gzip_and_linger(kafka: KafkaAdmin) -> None:
    topic = await kafka.new_topic(partitions=1)
    config = kafka_config(kafka.bootstrap)
    config.publish.compression = "gzip"
    config.publish.linger = 0.005
    publisher = KafkaPublisher(config, "out")
    assert publisher.ce_prefix == "ce_"
    await publisher.start()
    try:
        await asyncio.gather(
            *(
                publisher.publish(
                    topic, f"m{i}".encode(), {"ce_id": f"id-{i}", "traceparent": "t"}, f"k{i}"
                )
                for i in range(5)
            )
        )
    finally:
        await publisher.close()
    async with running(
        KafkaSource(kafka_config(kafka.bootstrap, topic, ordering="none"), "k")
    ) as source:
        got = await take(source, 5)
        for delivery in got:
            await delivery.settle(Settlement.ACK)
    assert sorted((d.body, d.meta["key"], d.headers["ce_id"]) for d in got) == [
        (f"m{i}".encode(), f"k{i}", f"id-{i}") for i in range(5)
    ]
