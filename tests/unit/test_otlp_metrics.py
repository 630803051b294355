"""OTLP metrics: the bridge pushes the same instruments, with their values, to an
OTLP/HTTP receiver (an aiohttp server decoding the protobuf with opentelemetry-proto)."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import orjson
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from connectors.memory import BROKER
from tests.support import free_port, until
from tests.unit.test_metrics import CONFIG

# One figure per (instrument, sorted attributes): the last pushed value (a sum's or
# gauge's value, a histogram's count).
Points = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def points(request: ExportMetricsServiceRequest, service: list[str]) -> Points:
    found: Points = {}
    for rm in request.resource_metrics:
        service += [a.value.string_value for a in rm.resource.attributes if a.key == "service.name"]
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                data: Any = getattr(metric, kind)
                for p in data.data_points:
                    labels = tuple(sorted((a.key, a.value.string_value) for a in p.attributes))
                    if kind == "histogram":
                        value = float(p.count)
                    else:
                        value = p.as_double if p.HasField("as_double") else float(p.as_int)
                    found[(metric.name, labels)] = value
    return found


async def test_metrics_arrive_over_otlp_with_their_values() -> None:
    received: Points = {}
    service: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await request.read())
        received.update(points(message, service))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    otlp_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", otlp_port).start()

    topic = "otlp-metrics-topic"
    text = textwrap.dedent(CONFIG.format(port=free_port(), topic=topic)) + textwrap.dedent(
        f"""\
        telemetry:
          service_name: bridge-otlp-test
          metrics:
            otlp: {{endpoint: "http://127.0.0.1:{otlp_port}/v1/metrics", interval: 0.2s}}
        """
    )
    runtime = Runtime(load_config_text(text, {}))
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: runtime.ready, 10, "the bridge is ready")
        for n in range(5):
            BROKER.put(topic, orjson.dumps({"n": n}))
        BROKER.put(topic, b"{broken")
        await until(lambda: BROKER.topic(topic).acked >= 6, 20, "every message settled")

        def pushed(name: str, **labels: str) -> float:
            return received.get((name, tuple(sorted(labels.items()))), -1.0)

        await until(
            lambda: pushed("bridge_runs", handler="doomed", outcome="dead_lettered") == 5,
            10,
            "the runs counter pushed",
        )
    finally:
        runtime.request_stop()
        await task
        await runner.cleanup()
    assert pushed("bridge_runs", handler="ok", outcome="succeeded") == 5
    assert pushed("bridge_events_received", connector="in") == 6
    assert pushed("bridge_events_invalid", connector="in", reason="malformed_json") == 1
    assert pushed("bridge_retries", handler="lucky") == 5
    assert pushed("bridge_dead_letters", handler="doomed") == 5
    assert pushed("bridge_internal_errors", connector="in") == 0  # exported at 0
    assert pushed("bridge_in_flight", connector="in") == 0
    assert pushed("bridge_run_duration_seconds", handler="ok") == 5  # histogram count
    assert pushed("bridge_fanout_width") == 5
    assert any(name == "bridge_store_seconds" for name, _ in received)
    assert set(service) == {"bridge-otlp-test"}
