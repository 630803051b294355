"""Traces and correlation: spans per delivery and attempt, parents across a publish, log fields."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bench.tracing import DropExporter
from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.telemetry import ContextFilter
from connectors.memory import BROKER
from tests.fixtures.spans import count_drops

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
LINES: list[logging.LogRecord] = []


async def chatty(event: Event[Any], ctx: Context) -> None:
    logging.getLogger("some.library").warning("working on it")
    ctx.log.info("done")
    ctx.emit("order/child", {"n": 1})


async def broken(event: Event[Any], ctx: Context) -> None:
    raise ValueError("nope")


CONFIG = """\
version: 1
store: memory://
server: {{enabled: false}}
defaults: {{retry: {{attempts: 2, min_delay: 0, jitter: 0}}}}
connectors:
  orders: {{type: memory, topic: {t1}, consume: {{event: {{type: order/placed, correlation_id: ["header:x-correlation-id"]}}}}}}
  shipped: {{type: memory, topic: {t2}, consume: {{event: {{type: order/shipped}}}}}}
handlers:
  - {{id: talk, on: order/placed, type: python, function: "tests.unit.test_tracing:chatty"}}
  - {{id: fail, on: order/placed, type: python, function: "tests.unit.test_tracing:broken"}}
  - {{id: forward, on: order/placed, type: publish, connector: shipped, destination: {t2}}}
  - {{id: receive, on: order/shipped, type: log}}
"""


@pytest.fixture
def capture() -> Any:
    handler = logging.Handler()
    handler.emit = LINES.append  # type: ignore[method-assign]
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    LINES.clear()
    yield LINES
    root.removeHandler(handler)
    root.setLevel(old)


async def run_once(topic: str, headers: dict[str, str]) -> tuple[InMemorySpanExporter, Runtime]:
    exporter = InMemorySpanExporter()
    t1, t2 = f"{topic}-in", f"{topic}-out"
    cfg = load_config_text(textwrap.dedent(CONFIG.format(t1=t1, t2=t2)), {})
    runtime = Runtime(cfg, span_exporter=exporter)
    emitted: list[Event[Any]] = []

    async def keep(events: Any) -> None:
        emitted.extend(events)

    runtime.build()
    assert runtime.dispatcher is not None
    runtime.dispatcher.emitter = keep
    task = asyncio.create_task(runtime.run())
    BROKER.put(t1, orjson.dumps({"order_id": 7}), headers)
    for _ in range(200):
        if BROKER.topic(t1).acked == 1 and BROKER.topic(t2).acked == 1:
            break
        await asyncio.sleep(0.01)
    runtime.request_stop()
    await task
    runtime.emitted = emitted  # type: ignore[attr-defined]
    return exporter, runtime


async def test_spans_follow_the_message_through_fan_out_and_publish(
    capture: list[logging.LogRecord],
) -> None:
    exporter, runtime = await run_once(
        "trace-a", {"traceparent": f"00-{TRACE}-{PARENT}-01", "x-correlation-id": "corr-42"}
    )
    spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (consume,) = by_name["process trace-a-in"]
    assert consume.kind is SpanKind.CONSUMER
    assert consume.context.trace_id == int(TRACE, 16)
    assert consume.parent is not None and consume.parent.span_id == int(PARENT, 16)
    assert consume.attributes["messaging.system"] == "memory"
    assert consume.attributes["messaging.destination.name"] == "trace-a-in"
    assert consume.attributes["messaging.message.conversation_id"] == "corr-42"
    # One span per attempt, children of the delivery span; failures recorded.
    assert len(by_name["handle talk"]) == 1 and len(by_name["handle forward"]) == 1
    fails = by_name["handle fail"]
    assert len(fails) == 2
    for span in [*by_name["handle talk"], *fails]:
        assert span.parent is not None and span.parent.span_id == consume.context.span_id
    assert all(
        s.status.status_code is StatusCode.ERROR and s.events[0].name == "exception" for s in fails
    )
    # The published message carries the publish attempt's context: the consumer on the
    # other side is its child, in the same trace.
    (second,) = by_name["process trace-a-out"]
    (forward,) = by_name["handle forward"]
    assert second.context.trace_id == int(TRACE, 16)
    assert second.parent is not None and second.parent.span_id == forward.context.span_id
    assert second.attributes["messaging.message.conversation_id"] == "corr-42"
    # The emitted child keeps the correlation id and the trace.
    (child,) = runtime.emitted  # type: ignore[attr-defined]
    assert (
        child.correlationid == "corr-42"
        and child.traceparent is not None
        and TRACE in child.traceparent
    )
    # Every line the run logged, its own or a library's, carries the run's fields and trace.
    run_lines = [r for r in capture if getattr(r, "handler", None) == "talk"]
    assert {r.getMessage() for r in run_lines} >= {"working on it", "done"}
    for record in run_lines:
        assert record.correlation_id == "corr-42"  # type: ignore[attr-defined]
        assert record.trace_id == TRACE  # type: ignore[attr-defined]
        assert record.attempt == 1  # type: ignore[attr-defined]


async def test_without_a_producer_context_a_new_trace_starts() -> None:
    exporter, _ = await run_once("trace-b", {})
    (consume,) = [s for s in exporter.get_finished_spans() if s.name == "process trace-b-in"]
    assert consume.parent is None
    assert consume.context.trace_id != int(TRACE, 16)


async def test_tracing_off_creates_no_spans() -> None:
    cfg = load_config_text("version: 1\nstore: memory://\nserver: {enabled: false}\n", {})
    runtime = Runtime(cfg)
    assert not runtime.tracing.enabled


async def test_sampling_follows_the_producer_then_the_ratio() -> None:
    """Ratio 0: a new trace records nothing; a sampled producer is followed anyway (parent-based);
    an unsampled producer is followed too (nothing recorded)."""

    async def run(topic: str, headers: dict[str, str]) -> list[Any]:
        exporter = InMemorySpanExporter()
        t1, t2 = f"{topic}-in", f"{topic}-out"
        cfg = load_config_text(textwrap.dedent(CONFIG.format(t1=t1, t2=t2)), {})
        cfg.telemetry.traces.sample_ratio = 0.0
        runtime = Runtime(cfg, span_exporter=exporter)
        task = asyncio.create_task(runtime.run())
        BROKER.put(t1, orjson.dumps({"order_id": 1}), headers)
        for _ in range(200):
            if BROKER.topic(t1).acked == 1 and BROKER.topic(t2).acked == 1:
                break
            await asyncio.sleep(0.01)
        runtime.request_stop()
        await task
        return list(exporter.get_finished_spans())

    assert await run("sample-none", {}) == []
    followed = await run("sample-parent", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert {s.context.trace_id for s in followed} == {int(TRACE, 16)}
    assert len(followed) >= 5
    unsampled = "00-" + "5" * 32 + "-" + "6" * 16 + "-00"
    assert await run("sample-off", {"traceparent": unsampled}) == []


async def noop(event: Event[Any], ctx: Context) -> None:
    return None


async def test_at_full_sampling_under_load_every_span_is_exported() -> None:
    # The span processor's export thread must get the GIL while the loop runs flat out:
    # without a nudge it took it 100 ms late and more, its queue (2,048) overflowed and
    # two spans of three were dropped ("Queue full, dropping Span").
    topic = f"spans-{time.time_ns()}"
    handlers = "".join(
        f"  - {{id: h{n}, on: job/run, type: python, function: 'tests.unit.test_tracing:noop'}}\n"
        for n in range(4)
    )
    cfg = load_config_text(
        "version: 1\nstore: memory://\nserver: {enabled: false}\n"
        "telemetry: {traces: {sample_ratio: 1.0}}\nledger: false\n"
        f"connectors:\n  in: {{type: memory, topic: {topic},"
        " consume: {event: {type: job/run}, max_in_flight: 1000}}\n"
        f"handlers:\n{handlers}",
        {},
    )
    exporter = DropExporter()  # counts the spans, keeps none
    runtime = Runtime(cfg, span_exporter=exporter)
    _, drops = count_drops(runtime.tracing)  # the spans the SDK's processor dropped, by reason
    events = 6000
    for n in range(events):
        BROKER.put(topic, orjson.dumps({"n": n}))
    task = asyncio.create_task(runtime.run())
    for _ in range(6000):
        if BROKER.topic(topic).acked == events:
            break
        await asyncio.sleep(0.01)
    runtime.request_stop()
    await task  # the processor's shutdown exports what is still queued
    assert BROKER.topic(topic).acked == events
    assert drops.dropped == {}
    assert exporter.spans == events * 5  # a delivery span and 4 attempt spans per event
