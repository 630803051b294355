"""The RabbitMQ connector against the real broker: mapping, declaration, prefetch,
reconnection, stale delivery tags, the consumer watchdog, and the confirming publisher."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

from bridge.errors import ConnectorError
from bridge.events import EventCatalog, load_schema
from bridge.normalize import Normalizer
from bridge.transport import Delivery, Settlement
from connectors.rabbitmq import RabbitMQConfig
from connectors.rabbitmq.consume import RabbitMQSource
from connectors.rabbitmq.publish import RabbitMQPublisher, outgoing_message, parse_destination
from tests.contract import nothing_within, running, take
from tests.fixtures.rabbitmq import RabbitAdmin, rabbitmqctl, raw_publish
from tests.integration.test_rabbitmq_contract import rabbit_config

pytestmark = pytest.mark.integration


def normalizer(cfg: RabbitMQConfig) -> Normalizer:
    if cfg.consume is None:
        raise AssertionError("consume config expected")
    catalog = EventCatalog({"test/*": load_schema("none")})
    return Normalizer("rabbit", "amqp", cfg.consume.event, catalog, 1_000_000)


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait until ``check()`` holds; fail after ``within`` seconds saying what did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"no {what} within {within}s")
        await asyncio.sleep(0.1)


async def wait_reconnected(source: RabbitMQSource, times: int = 1, within: float = 30.0) -> None:
    """Wait until aio-pika restored the connection ``times`` times and the source is up."""
    await until(
        lambda: source.reconnects >= times and source.status().connected, within, "reconnection"
    )


# --------------------------------------------------------------------------- mapping


async def test_properties_and_headers_are_mapped(rabbit: RabbitAdmin) -> None:
    queue = await rabbit.queue()
    stamp = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    await rabbit.publish(
        queue,
        b'{"seq": 1}',
        headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "n": 7, "ok": True},
        message_id="mid-1",
        correlation_id="corr-1",
        type="order.created",
        timestamp=stamp,
        content_type="application/json",
        app_id="shop",
    )
    cfg = rabbit_config(rabbit.url, queue, event={"type": "test/item"})
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        (delivery,) = await take(source, 1)
        await delivery.settle(Settlement.ACK)
    meta = delivery.meta
    assert meta["message_id"] == "mid-1"
    assert meta["correlation_id"] == "corr-1"
    assert meta["type"] == "order.created"
    assert meta["timestamp"] == stamp.isoformat()
    assert meta["content_type"] == "application/json"
    assert meta["app_id"] == "shop"
    assert (meta["routing_key"], meta["exchange"], meta["queue"]) == (queue, "", queue)
    assert meta["redelivered"] is False
    assert (delivery.headers["n"], delivery.headers["ok"]) == ("7", "true")
    assert delivery.headers["content-type"] == "application/json"

    event = normalizer(cfg)(delivery)
    assert event.id == "mid-1"
    assert event.correlationid == "corr-1"  # the AMQP property is the default correlation id
    assert event.traceparent == delivery.headers["traceparent"]
    assert event.transport["amqp.routing_key"] == queue
    assert event.data == {"seq": 1}


@pytest.mark.parametrize("prefix", ["cloudEvents:", "cloudEvents_"])
async def test_cloudevents_amqp_binding(rabbit: RabbitAdmin, prefix: str) -> None:
    queue = await rabbit.queue()
    headers = {
        f"{prefix}specversion": "1.0",
        f"{prefix}id": "ce-42",
        f"{prefix}type": "test/created",
        f"{prefix}source": "/shop",
        f"{prefix}correlationid": "flow-9",
    }
    await raw_publish(queue, b'{"a": 1}', headers)
    cfg = rabbit_config(rabbit.url, queue)
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        (delivery,) = await take(source, 1)
        await delivery.settle(Settlement.ACK)
    assert delivery.meta["message_id"] == "ce-42"  # no message_id property: the CloudEvents id
    event = normalizer(cfg)(delivery)
    assert (event.id, event.type, event.source) == ("ce-42", "test/created", "/shop")
    assert event.correlationid == "flow-9"
    assert event.datacontenttype == "application/json"  # the default: no content-type property
    assert event.data == {"a": 1}


async def test_message_id_fallback(rabbit: RabbitAdmin) -> None:
    queue = await rabbit.queue()
    for body in (b'{"same": 1}', b'{"same": 1}', b'{"other": 2}'):
        await raw_publish(queue, body)
    async with running(RabbitMQSource(rabbit_config(rabbit.url, queue), "rabbit")) as source:
        plain = await take(source, 3)
        for d in plain:
            await d.settle(Settlement.RETRY_LATER)
    assert all("message_id" not in d.meta for d in plain)  # default: no stable id claimed

    cfg = rabbit_config(rabbit.url, queue, message_id_fallback="content_hash")
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        first = await take(source, 3)
        for d in first:
            await d.settle(Settlement.RETRY_LATER)
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        second = await take(source, 3)
        for d in second:
            await d.settle(Settlement.ACK)
    assert all(d.meta["redelivered"] for d in second)
    ids_first = sorted(d.meta["message_id"] for d in first)
    assert ids_first == sorted(d.meta["message_id"] for d in second)
    assert len(set(ids_first)) == 2  # identical content, identical id: documented trade-off


# --------------------------------------------------------------------------- declaration


async def test_declares_quorum_queue_with_dead_letter_exchange_and_delivery_limit(
    rabbit: RabbitAdmin,
) -> None:
    queue, exchange, dlx = rabbit.name("q"), rabbit.name("x"), rabbit.name("dlx")
    rabbit.track_queue(queue)
    rabbit.track_exchange(exchange)
    rabbit.track_exchange(dlx)
    dead = await rabbit.queue()
    cfg = rabbit_config(
        rabbit.url,
        queue,
        declare={
            "arguments": {
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": dlx,
                "x-delivery-limit": 2,
            },
            "exchanges": [{"name": exchange, "type": "topic"}, {"name": dlx, "type": "fanout"}],
            "bindings": [{"exchange": exchange, "routing_key": "order.*"}],
        },
    )
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        await rabbit.bind(dead, dlx, "")
        await rabbit.publish("order.created", b"{}", exchange=exchange, message_id="m-q")
        counts: list[Any] = []
        while True:  # requeue until the broker gives up on it
            got = await take(source, 1, within=5.0) if not counts or counts[-1] != "gone" else []
            if not got:
                break
            counts.append(got[0].meta.get("delivery_count", 0))
            await got[0].settle(Settlement.RETRY_LATER)
            if len(counts) > 2 and await nothing_within(source, 1.0):
                counts.append("gone")
    letters = await rabbit.get_all(dead, expect=1)
    assert [m.message_id for m in letters] == ["m-q"]
    assert len([c for c in counts if c != "gone"]) == 3  # x-delivery-limit 2: 3 deliveries
    assert (await rabbit.depth(queue))[0] == 0


async def test_missing_queue_without_declare_is_a_config_error(rabbit: RabbitAdmin) -> None:
    source = RabbitMQSource(rabbit_config(rabbit.url, rabbit.name("missing")), "rabbit")
    with pytest.raises(ConnectorError) as info:
        await source.start()
    assert info.value.retriable is False
    assert "not found" in str(info.value)
    await source.stop(asyncio.get_running_loop().time() + 5)


async def test_queue_declared_differently_is_a_config_error(rabbit: RabbitAdmin) -> None:
    queue = await rabbit.queue(durable=True)
    cfg = rabbit_config(rabbit.url, queue, declare={"durable": False})
    source = RabbitMQSource(cfg, "rabbit")
    with pytest.raises(ConnectorError) as info:
        await source.start()
    assert info.value.retriable is False
    await source.stop(asyncio.get_running_loop().time() + 5)


async def test_prefetch_follows_max_in_flight(rabbit: RabbitAdmin) -> None:
    queue = await rabbit.queue()
    for i in range(20):
        await rabbit.publish(queue, f'{{"seq": {i}}}'.encode(), message_id=f"p{i}")
    cfg = rabbit_config(rabbit.url, queue, max_in_flight=5)
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        held = await take(source, 5)
        assert await nothing_within(source, 1.0)  # the broker holds the rest back
        for d in held:
            await d.settle(Settlement.ACK)
        rest: list[Delivery] = []
        while len(rest) < 15:
            batch = await take(source, min(5, 15 - len(rest)))
            for d in batch:
                await d.settle(Settlement.ACK)
            rest.extend(batch)
    assert sorted(d.meta["message_id"] for d in held + rest) == sorted(f"p{i}" for i in range(20))


# --------------------------------------------------------------------------- reconnection


@pytest.mark.alone  # close_all_connections hits every client of the broker
async def test_connection_drop_skips_stale_tags_and_redelivers(rabbit: RabbitAdmin) -> None:
    queue = await rabbit.queue()
    for i in range(3):
        await rabbit.publish(queue, b"{}", message_id=f"s{i}")
    async with running(RabbitMQSource(rabbit_config(rabbit.url, queue), "rabbit")) as source:
        before = await take(source, 3)
        rabbitmqctl("close_all_connections", "test: drop")
        await wait_reconnected(source)
        for d in before:  # tags of the dead channel: nothing is sent, nothing raises
            await d.settle(Settlement.ACK)
        again = await take(source, 3)
        for d in again:
            await d.settle(Settlement.ACK)
        assert await nothing_within(source, 1.0)
        _, consumers = await rabbit.depth(queue)
    assert source.stale_settles == 3
    assert sorted(d.meta["message_id"] for d in again) == ["s0", "s1", "s2"]
    assert all(d.meta["redelivered"] for d in again)
    assert consumers == 1
    assert await rabbit.depth(queue) == (0, 0)


async def test_watchdog_restores_a_lost_consumer(rabbit: RabbitAdmin) -> None:
    queue = await rabbit.queue()
    cfg = rabbit_config(rabbit.url, queue, health_interval=0.2)
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        # Cancel the subscription behind aio-pika's back: it still believes it consumes.
        channel, tag = source._channel, source._tag
        assert channel is not None
        assert tag is not None
        underlay = await channel.get_underlay_channel()
        await underlay.basic_cancel(tag)
        assert (await rabbit.depth(queue))[1] == 0
        await rabbit.publish(queue, b"{}", message_id="after-loss")
        (delivery,) = await take(source, 1, within=30.0)
        await delivery.settle(Settlement.ACK)
        assert source.resubscribes == 1
        assert (await rabbit.depth(queue))[1] == 1
    assert delivery.meta["message_id"] == "after-loss"


async def test_status_reports_queue_depth(rabbit: RabbitAdmin) -> None:
    queue = await rabbit.queue()
    for i in range(7):
        await rabbit.publish(queue, b"{}", message_id=f"d{i}")
    cfg = rabbit_config(rabbit.url, queue, prefetch=1, health_interval=0.2)
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        (first,) = await take(source, 1)
        await until(lambda: queue in source.status().lag, 10, "a depth reading")
        status = source.status()
        await first.settle(Settlement.ACK)
    assert status.connected
    assert status.lag == {queue: 6.0}  # 7 published, 1 delivered and unacked


# --------------------------------------------------------------------------- publisher


def test_destination_format() -> None:
    assert parse_destination("orders/order.created", None) == ("orders", "order.created")
    assert parse_destination("/jobs", None) == ("", "jobs")
    assert parse_destination("jobs", "ignored") == ("", "jobs")
    assert parse_destination("events/", "k1") == ("events", "k1")
    assert parse_destination("a/b/c", None) == ("a", "b/c")


def test_outgoing_message_properties() -> None:
    message = outgoing_message(
        b"{}",
        {
            "cloudEvents:id": "e1",
            "cloudEvents:type": "t/x",
            "content-type": "text/plain",
            "x-correlation-id": "c1",
        },
    )
    assert (message.message_id, message.type, message.correlation_id) == ("e1", "t/x", "c1")
    assert message.content_type == "text/plain"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert "content-type" not in message.headers
    assert outgoing_message(b"{}", {}).message_id  # always one


async def test_publisher_routes_and_keeps_headers(rabbit: RabbitAdmin) -> None:
    exchange = await rabbit.exchange(type_="topic")
    queue = await rabbit.queue()
    await rabbit.bind(queue, exchange, "order.*")
    publisher = RabbitMQPublisher(rabbit_config(rabbit.url), "rabbit")
    await publisher.start()
    sent = []
    try:
        for i in range(20):
            headers = {
                "cloudEvents:specversion": "1.0",
                "cloudEvents:id": f"ev-{i}",
                "cloudEvents:type": "test/created",
                "traceparent": f"00-{i:032x}-{i + 1:016x}-01",
                "x-correlation-id": f"corr-{i}",
                "content-type": "application/json",
            }
            await publisher.publish(
                f"{exchange}/order.created", f'{{"i": {i}}}'.encode(), headers, None
            )
            sent.append(headers)
    finally:
        await publisher.close()
    got = await rabbit.get_all(queue, expect=20)
    assert len(got) == 20
    by_id = {m.message_id: m for m in got}
    for i, headers in enumerate(sent):
        message = by_id[f"ev-{i}"]
        assert message.headers["traceparent"] == headers["traceparent"]
        assert message.headers["x-correlation-id"] == f"corr-{i}"
        assert message.correlation_id == f"corr-{i}"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == "application/json"
        assert message.body == f'{{"i": {i}}}'.encode()


async def test_unroutable_publish_is_an_error(rabbit: RabbitAdmin) -> None:
    exchange = await rabbit.exchange()
    publisher = RabbitMQPublisher(rabbit_config(rabbit.url), "rabbit")
    await publisher.start()
    try:
        with pytest.raises(ConnectorError) as info:
            await publisher.publish(f"{exchange}/nobody", b"{}", {}, None)
        assert "unroutable" in str(info.value)
        with pytest.raises(ConnectorError):  # a missing exchange closes the channel ...
            await publisher.publish(f"{rabbit.name('nox')}/k", b"{}", {}, None)
        queue = await rabbit.queue()
        await rabbit.bind(queue, exchange, "k1")
        await publisher.publish(f"{exchange}/", b"{}", {}, "k1")  # ... which is restored
    finally:
        await publisher.close()
    assert len(await rabbit.get_all(queue, expect=1)) == 1


async def test_publish_and_consume_back_through_the_bridge_source(rabbit: RabbitAdmin) -> None:
    queue = await rabbit.queue()
    cfg = rabbit_config(rabbit.url, queue, event={"type": "test/item"})
    publisher = RabbitMQPublisher(cfg, "rabbit")
    await publisher.start()
    ids = [uuid.uuid4().hex for _ in range(50)]
    try:
        await asyncio.gather(
            *(
                publisher.publish(
                    queue,
                    f'{{"seq": {n}}}'.encode(),
                    {"cloudEvents:id": eid, "traceparent": f"00-{n:032x}-{n + 1:016x}-01"},
                    None,
                )
                for n, eid in enumerate(ids)
            )
        )
    finally:
        await publisher.close()
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        got = await take(source, 50)
        for d in got:
            await d.settle(Settlement.ACK)
        assert await nothing_within(source, 0.5)
    assert sorted(d.meta["message_id"] for d in got) == sorted(ids)
    for d in got:
        n = normalizer(cfg)(d).data["seq"]
        assert d.headers["traceparent"] == f"00-{n:032x}-{n + 1:016x}-01"


async def test_same_message_id_to_two_destinations_keeps_outcomes_apart(
    rabbit: RabbitAdmin,
) -> None:
    exchange = await rabbit.exchange()
    queue = await rabbit.queue()
    await rabbit.bind(queue, exchange, "routed")
    publisher = RabbitMQPublisher(rabbit_config(rabbit.url), "rabbit")
    await publisher.start()
    headers = {"cloudEvents:id": "shared-id"}
    try:
        results = await asyncio.gather(
            *(
                publisher.publish(f"{exchange}/{rk}", b"{}", headers, None)
                for _ in range(10)
                for rk in ("nowhere", "routed")
            ),
            return_exceptions=True,
        )
    finally:
        await publisher.close()
    assert [isinstance(r, ConnectorError) for r in results] == [True, False] * 10
    assert len(await rabbit.get_all(queue, expect=10)) == 10


def test_config_defaults_and_validation() -> None:
    cfg = RabbitMQConfig.model_validate(
        {"type": "rabbitmq", "consume": {"queue": "q", "max_in_flight": 100_000}}
    )
    assert cfg.consume is not None
    assert cfg.consume.prefetch_count == 65_535  # basic.qos is a short
    assert cfg.consume.event.correlation_id == ["meta:correlation_id", "header:x-correlation-id"]
    own = RabbitMQConfig.model_validate(
        {
            "type": "rabbitmq",
            "consume": {"queue": "q", "prefetch": 10, "event": {"correlation_id": ["data.c"]}},
        }
    )
    assert own.consume is not None
    assert own.consume.prefetch_count == 10
    assert own.consume.event.correlation_id == ["data.c"]
    with pytest.raises(ValueError, match="extra"):
        RabbitMQConfig.model_validate({"type": "rabbitmq", "consume": {"queue": "q", "qos": 1}})


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_out_of_order_settles_are_acked_exactly(rabbit: RabbitAdmin, seed: int) -> None:
    """Acks are written together (one multiple ack for a settled prefix, singles for the
    rest, nacks first): whatever the order, every ACK is final, every RETRY_LATER comes
    back once, and the channel never sees an unknown delivery tag."""
    rng = random.Random(seed)
    queue = await rabbit.queue()
    total = 120
    for i in range(total):
        await rabbit.publish(queue, b"{}", message_id=f"o{i}")
    cfg = rabbit_config(rabbit.url, queue, max_in_flight=total)
    async with running(RabbitMQSource(cfg, "rabbit")) as source:
        got = await take(source, total)
        rng.shuffle(got)
        retried = set()
        while got:  # settle in random batches, each batch in one event-loop turn
            cut = rng.randint(1, 15)
            batch, got = got[:cut], got[cut:]
            for d in batch:
                if rng.random() < 0.2:
                    retried.add(d.meta["message_id"])
                    await d.settle(Settlement.RETRY_LATER)
                else:
                    await d.settle(Settlement.ACK)
            await asyncio.sleep(rng.choice([0, 0, 0.01]))
        back = await take(source, len(retried))
        for d in back:
            await d.settle(Settlement.ACK)
        assert await nothing_within(source, 1.0)
        assert source.status().connected
    assert {d.meta["message_id"] for d in back} == retried
    assert source.stale_settles == 0
    assert await rabbit.depth(queue) == (0, 0)
