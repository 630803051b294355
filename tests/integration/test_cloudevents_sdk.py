"""CloudEvents on Kafka, RabbitMQ and SQS, with the official CloudEvents SDK at both ends.

For each broker the SDK writes the input messages (``cloudevents.core.bindings``:
``kafka`` on Kafka, ``amqp`` on RabbitMQ, and on SQS, which has no binding of its
own, the HTTP binding's ``ce-`` headers as message attributes), in binary and
structured mode, with JSON, text and bytes data and a W3C trace context. The
bridge's Python handler must be given the same data (bytes as bytes), and its
``publish`` handler, in binary and in structured mode, must write messages that
the SDK, reading them from the broker with the raw client, parses back to the same
attributes and data. Samples: CloudEvents spec 1.0.2 and its Kafka and AMQP
bindings; W3C Trace Context and Baggage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings import amqp as ce_amqp
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from tests.fixtures.kafka import KafkaAdmin
from tests.fixtures.rabbitmq import RabbitAdmin
from tests.fixtures.sqs import SqsKit
from tests.support import until

pytestmark = pytest.mark.integration

FORMAT = JSONFormat()
SEEN: dict[str, Event[Any]] = {}
LETTERS: list[str] = []
# One more message per broker, whose time is not RFC 3339: dead-lettered with the reason.
BAD_TIME = "last tuesday"
TRACE = {
    "traceparent": "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01",
    "tracestate": "vendor=abc,other=1",
    "baggage": "user=42",
}


async def remember(event: Event[Any], ctx: Context) -> None:
    SEEN[event.id] = event


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


def sdk_events(prefix: str, modes: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, CloudEvent]]:
    """id -> (mode, event) for each data kind in each of its modes."""
    out = {}
    for mode, kinds in modes.items():
        for kind in kinds:
            data, content_type = DATA[kind]
            event_id = f"{prefix}-{mode}-{kind}"
            attrs = {**ATTRS, "id": event_id, "datacontenttype": content_type}
            out[event_id] = (mode, CloudEvent(attrs, data))
    return out


def handlers(connector: str, out_binary: str, out_structured: str) -> str:
    return f"""\
handlers:
  - {{id: keep, on: "sdk/ok", type: python, function: "tests.integration.test_cloudevents_sdk:remember"}}
  - {{id: out-binary, on: "sdk/ok", type: publish, connector: {connector}, destination: "{out_binary}"}}
  - id: out-structured
    on: "sdk/ok"
    type: publish
    connector: {connector}
    mode: structured
    destination: "{out_structured}"
"""


def same(sent: CloudEvent, got: CloudEvent, where: str) -> None:
    want, have = sent.get_attributes(), got.get_attributes()
    for name, value in want.items():
        # Binary modes carry extension values as text; these are all strings.
        assert have.get(name) == value, (where, name, have.get(name), value)
    data = got.get_data()
    if isinstance(sent.get_data(), bytes) and isinstance(data, str):
        data = data.encode()  # the SDK reads UTF-8 bytes of a non-JSON type as str
    assert data == sent.get_data(), where


async def run_bridge(
    config: str,
    env: dict[str, str],
    sent: dict[str, Any],
    read_outputs: Callable[[], Awaitable[dict[str, list[CloudEvent]]]],
) -> dict[str, list[CloudEvent]]:
    SEEN.clear()
    LETTERS.clear()
    runtime = Runtime(load_config_text(config, env))
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: task.done() or set(sent) <= set(SEEN), 30, "every event at the handler")
        if task.done():
            task.result()

        async def refused() -> bool:
            LETTERS[:] = [d.reason for d in await runtime.store.dead_letters(limit=10)]
            return bool(LETTERS)

        await until(refused, 10, "the invalid message's dead letter")
        return await read_outputs()
    finally:
        runtime.request_stop()
        await task


def check(
    sent: dict[str, tuple[str, CloudEvent]], outputs: dict[str, list[CloudEvent]], trace_id: str
) -> None:
    for event_id, (_, event) in sent.items():
        handed = SEEN[event_id]
        data = event.get_data()
        assert handed.data == data and type(handed.data) is type(data), event_id
        assert (handed.source, handed.subject) == ("urn:shop:eu west", "Zürich ✓ 100%")
    for mode, parsed in outputs.items():
        by_id = {e.get_id(): e for e in parsed}
        assert set(by_id) == set(sent), mode  # every event, parsed by the SDK
        for event_id, (_, event) in sent.items():
            same(event, by_id[event_id], f"{mode} {event_id}")
    assert len(LETTERS) == 1 and LETTERS[0].startswith("invalid_attribute"), LETTERS
    assert "time must be an RFC 3339" in LETTERS[0]
    traced = SEEN[trace_id]
    assert (traced.traceparent, traced.tracestate) == (TRACE["traceparent"], TRACE["tracestate"])


# --------------------------------------------------------------------------- Kafka


async def test_kafka_sdk_in_and_out(kafka: KafkaAdmin) -> None:
    topic_in, out_b, out_s = [await kafka.new_topic() for _ in range(3)]
    sent = sdk_events("k", {"binary": tuple(DATA), "structured": tuple(DATA)})
    messages = []
    for event_id, (mode, event) in sent.items():
        to = ce_kafka.to_binary if mode == "binary" else ce_kafka.to_structured
        msg = to(event, FORMAT)
        headers = {k: v.decode() for k, v in msg.headers.items()}
        if event_id == "k-binary-json":
            headers.update(TRACE)
        messages.append((None, msg.value, headers))
    bad = {"ce_specversion": "1.0", "ce_id": "k-bad", "ce_source": "s", "ce_type": "sdk/ok"}
    messages.append((None, b"{}", {**bad, "ce_time": BAD_TIME}))
    await kafka.produce(topic_in, messages)
    config = f"""\
version: 1
store: memory://
server: {{enabled: false}}
connectors:
  k:
    type: kafka
    bootstrap_servers: ["{kafka.bootstrap}"]
    consume: {{topics: [{topic_in}], group_id: {kafka.name("g")}, start_from: earliest}}
{handlers("k", out_b, out_s)}"""

    async def read() -> dict[str, list[CloudEvent]]:
        out: dict[str, list[CloudEvent]] = {}
        for mode, topic in (("binary", out_b), ("structured", out_s)):
            consumer = AIOKafkaConsumer(
                topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
            )
            await consumer.start()
            try:
                records = []
                while len(records) < len(sent):
                    batch = await consumer.getmany(timeout_ms=10_000)
                    if not batch:
                        break
                    records += [r for rs in batch.values() for r in rs]
            finally:
                await consumer.stop()
            out[mode] = [
                ce_kafka.from_kafka(
                    ce_kafka.KafkaMessage(dict(r.headers), r.key, r.value or b""), FORMAT
                )
                for r in records
            ]
            if mode == "binary":
                traced = next(
                    r for r in records if dict(r.headers).get("ce_id") == b"k-binary-json"
                )
                headers = dict(traced.headers)
                assert headers["tracestate"] == TRACE["tracestate"].encode()
                assert headers["baggage"] == TRACE["baggage"].encode()
        return out

    outputs = await run_bridge(config, {}, sent, read)
    check(sent, outputs, "k-binary-json")


# --------------------------------------------------------------------------- RabbitMQ


async def test_rabbitmq_sdk_amqp_binding_in_and_out(rabbit: RabbitAdmin, rabbitmq_url: str) -> None:
    q_in, out_b, out_s = await rabbit.queue(), await rabbit.queue(), await rabbit.queue()
    sent = sdk_events("r", {"binary": tuple(DATA), "structured": tuple(DATA)})
    for event_id, (mode, event) in sent.items():
        to = ce_amqp.to_binary if mode == "binary" else ce_amqp.to_structured
        msg = to(event, FORMAT)
        # The SDK's AMQP binding: native types (time as an integer of milliseconds).
        headers = dict(msg.application_properties)
        if mode == "binary":
            assert isinstance(headers["cloudEvents_time"], int)
        if event_id == "r-binary-json":
            headers.update(TRACE)
        await rabbit.publish(
            q_in, msg.application_data, headers=headers, content_type=msg.properties["content-type"]
        )
    bad = {"cloudEvents:specversion": "1.0", "cloudEvents:id": "r-bad", "cloudEvents:type": "t"}
    await rabbit.publish(q_in, b"{}", headers={**bad, "cloudEvents:time": BAD_TIME})
    config = f"""\
version: 1
store: memory://
server: {{enabled: false}}
connectors:
  r:
    type: rabbitmq
    url: "{rabbitmq_url}"
    consume: {{queue: {q_in}}}
{handlers("r", "/" + out_b, "/" + out_s)}"""

    async def read() -> dict[str, list[CloudEvent]]:
        out: dict[str, list[CloudEvent]] = {}
        for mode, queue in (("binary", out_b), ("structured", out_s)):
            messages = await rabbit.get_all(queue, expect=len(sent))
            out[mode] = [
                ce_amqp.from_amqp(
                    ce_amqp.AMQPMessage({"content-type": m.content_type}, dict(m.headers), m.body),
                    FORMAT,
                )
                for m in messages
            ]
            if mode == "binary":
                traced = next(
                    m for m in messages if m.headers.get("cloudEvents:id") == "r-binary-json"
                )
                assert traced.headers["tracestate"] == TRACE["tracestate"]
                assert traced.headers["baggage"] == TRACE["baggage"]
        return out

    outputs = await run_bridge(config, {}, sent, read)
    check(sent, outputs, "r-binary-json")


# --------------------------------------------------------------------------- SQS


async def test_sqs_sdk_in_and_out(sqs: SqsKit) -> None:
    q_in, out_b, out_s = await sqs.queue(), await sqs.queue(), await sqs.queue()
    # SQS bodies are text: bytes data goes in structured mode (data_base64).
    sent = sdk_events("s", {"binary": ("json", "text"), "structured": tuple(DATA)})
    for event_id, (mode, event) in sent.items():
        to = ce_http.to_binary if mode == "binary" else ce_http.to_structured
        msg = to(event, FORMAT)
        attributes = dict(msg.headers)
        if event_id == "s-binary-json":
            attributes.update(TRACE)
        await sqs.send(q_in, [msg.body.decode()], attributes)
    bad = {"ce-specversion": "1.0", "ce-id": "s-bad", "ce-source": "s", "ce-type": "sdk/ok"}
    await sqs.send(q_in, ["{}"], {**bad, "ce-time": BAD_TIME})
    config = f"""\
version: 1
store: memory://
server: {{enabled: false}}
connectors:
  s:
    type: sqs
    endpoint_url: "{sqs.endpoint}"
    consume: {{queue: "{q_in}", wait_time_seconds: 1}}
{handlers("s", out_b, out_s)}"""

    async def read() -> dict[str, list[CloudEvent]]:
        out: dict[str, list[CloudEvent]] = {}
        for mode, url in (("binary", out_b), ("structured", out_s)):
            messages: list[dict[str, Any]] = []
            for _ in range(20):
                answer = await sqs.client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    MessageAttributeNames=["All"],
                    WaitTimeSeconds=1,
                )
                messages += answer.get("Messages", [])
                if len(messages) >= len(sent):
                    break
            out[mode] = []
            for m in messages:
                headers = {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}
                out[mode].append(
                    ce_http.from_http(ce_http.HTTPMessage(headers, m["Body"].encode()), FORMAT)
                )
                if mode == "binary" and headers.get("ce-id") == "s-binary-json":
                    assert headers["tracestate"] == TRACE["tracestate"]
                    assert headers["baggage"] == TRACE["baggage"]
        return out

    outputs = await run_bridge(config, {}, sent, read)
    check(sent, outputs, "s-binary-json")
