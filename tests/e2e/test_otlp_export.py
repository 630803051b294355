"""`bridge run` exports its spans over OTLP/HTTP to a real receiver that decodes the protobuf."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import BridgeProcess, post_events, serve_posts

TRACE = "0af7651916cd43dd8448eb211c80319c"

CONFIG = """\
version: 1
store: sqlite:///{db}
telemetry:
  service_name: otlp-test
  traces: {{exporter: otlp, endpoint: "http://127.0.0.1:{port}", sample_ratio: 1.0}}
events:
  ping/sent: {{schema: none}}
handlers:
  - {{id: first, on: ping/sent, type: log}}
  - {{id: second, on: ping/sent, type: log}}
"""


@pytest.mark.e2e
async def test_spans_reach_an_otlp_http_receiver(tmp_path: Path) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(status=200)

    runner, port = await serve_posts({"/v1/traces": traces})
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "s.db", port=port))
    bridge = BridgeProcess(config, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready()
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{bridge.url}/v1/events",
                json={
                    "specversion": "1.0",
                    "id": "p1",
                    "type": "ping/sent",
                    "source": "t",
                    "data": {},
                },
                headers={
                    "traceparent": f"00-{TRACE}-b7ad6b7169203331-01",
                    "x-correlation-id": "c-1",
                },
            ) as resp:
                assert resp.status == 202
            status, _ = await post_events(
                session,
                bridge.url,
                [{"specversion": "1.0", "id": "p2", "type": "ping/sent", "data": {}}],
            )
            assert status == 202
        await bridge.wait_metric("bridge_runs_total", 4, outcome="succeeded")
    finally:
        assert await bridge.stop() == 0  # shutdown flushes the batch processor
        await runner.cleanup()
    spans = [
        (span, rs.resource)
        for message in received
        for rs in message.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    names = sorted(span.name for span, _ in spans)
    assert names.count("process api") == 2
    assert names.count("handle first") == 2 and names.count("handle second") == 2
    ours = [span for span, _ in spans if span.trace_id.hex() == TRACE]
    assert len(ours) == 3  # the delivery and its two attempts, in the producer's trace
    (consumer,) = [s for s in ours if s.name == "process api"]
    assert consumer.parent_span_id.hex() == "b7ad6b7169203331"
    assert {s.parent_span_id for s in ours if s.name.startswith("handle")} == {consumer.span_id}
    attributes = {a.key: a.value.string_value for a in consumer.attributes}
    assert attributes["messaging.message.conversation_id"] == "c-1"
    service = {a.key: a.value.string_value for _, r in spans for a in r.attributes}["service.name"]
    assert service == "otlp-test"
