"""One trace from a Kafka producer, through the bridge, to the application behind an HTTP handler."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from tests.fixtures.kafka import KafkaAdmin
from tests.support import serve_posts

pytestmark = pytest.mark.integration

TRACE = "5b8aa5a2d2c872e8321cf37308d69df2"
PRODUCER_SPAN = "051581bf3cb55c13"

CONFIG = """\
version: 1
store: memory://
server: {{enabled: false}}
telemetry: {{traces: {{sample_ratio: 1.0}}}}
connectors:
  orders:
    type: kafka
    bootstrap_servers: ["{bootstrap}"]
    consume:
      topics: [{topic}]
      group_id: {group}
      start_from: earliest
      event: {{type: order/placed, correlation_id: ["header:x-correlation-id"]}}
handlers:
  - id: notify-app
    on: order/placed
    type: http
    url: "http://127.0.0.1:{app_port}/events"
"""


async def test_one_trace_from_kafka_producer_to_the_application(kafka: KafkaAdmin) -> None:
    seen: list[dict[str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"stored": True})

    runner, app_port = await serve_posts({"/events": receive})

    topic = await kafka.new_topic()
    cfg = load_config_text(
        CONFIG.format(
            bootstrap=kafka.bootstrap, topic=topic, group=kafka.name("g"), app_port=app_port
        ),
        {},
    )
    exporter = InMemorySpanExporter()
    runtime = Runtime(cfg, span_exporter=exporter)
    task = asyncio.create_task(runtime.run())
    try:
        await kafka.produce(
            topic,
            [
                (
                    "k1",
                    orjson.dumps({"order_id": 1}),
                    {"traceparent": f"00-{TRACE}-{PRODUCER_SPAN}-01", "x-correlation-id": "corr-k"},
                )
            ],
        )
        for _ in range(300):
            if seen:
                break
            await asyncio.sleep(0.05)
    finally:
        runtime.request_stop()
        await task
        await runner.cleanup()
    assert len(seen) == 1
    spans: dict[str, Any] = {s.name: s for s in exporter.get_finished_spans()}
    consume = spans[f"process {topic}"]
    handle = spans["handle notify-app"]
    assert consume.kind is SpanKind.CONSUMER
    assert consume.attributes["messaging.system"] == "kafka"
    assert consume.attributes["messaging.destination.partition.id"] == "0"
    assert consume.context.trace_id == handle.context.trace_id == int(TRACE, 16)
    assert consume.parent.span_id == int(PRODUCER_SPAN, 16)
    assert handle.parent.span_id == consume.context.span_id
    # The application sees the same trace, as a child of the bridge's attempt span.
    headers = {k.lower(): v for k, v in seen[0].items()}
    _version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (trace_id, int(parent_id, 16), flags) == (TRACE, handle.context.span_id, "01")
    assert headers["x-correlation-id"] == "corr-k"
    assert headers["ce-type"] == "order/placed"
