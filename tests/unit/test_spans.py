"""The bridge's cheaply built spans behave as SDK spans do for everything a handler or an
exporter can do with them: attributes, events, links, exceptions, status, one export."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bridge.spans import SpanStarter
from bridge.tracing import Tracing


def test_a_bridge_span_records_and_exports_like_an_sdk_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    starter = SpanStarter(provider, "test")

    root = starter.start("process orders", None, {"a": "x", "gone": None}, SpanKind.CONSUMER)
    child = starter.start("handle h", root.get_span_context(), {"bridge.attempt": 1})
    child.set_attribute("extra", 3)
    child.add_event("note", {"k": "v"})
    child.add_link(root.get_span_context())
    child.record_exception(ValueError("nope"))
    child.set_status(StatusCode.ERROR, "failed")
    child.end()
    child.end()  # a second end exports nothing more
    child.set_attribute("late", 1)  # ignored once ended
    root.end()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert len(exporter.get_finished_spans()) == 2
    done, parent = spans["handle h"], spans["process orders"]
    assert dict(parent.attributes or {}) == {"a": "x"}
    assert parent.kind is SpanKind.CONSUMER and parent.parent is None
    assert parent.context.trace_flags.sampled
    assert dict(done.attributes or {}) == {"bridge.attempt": 1, "extra": 3}
    assert done.parent == parent.context
    assert done.context.trace_id == parent.context.trace_id
    assert done.context.span_id != parent.context.span_id
    assert [e.name for e in done.events] == ["note", "exception"]
    assert done.events[1].attributes["exception.type"] == "ValueError"
    assert [link.context for link in done.links] == [parent.context]
    assert done.status.status_code is StatusCode.ERROR and done.status.description == "failed"
    assert done.end_time is not None and done.start_time is not None
    assert done.start_time <= done.end_time
    assert not trace.get_current_span().is_recording()


def test_spans_reach_the_bridge_batch_processor_and_any_added_later() -> None:
    """Alone, the bridge's batch processor takes spans straight (no composite loop);
    a processor added later, as handler code may through the global provider, gets
    every span ended from then on, and the batch processor still gets them all."""
    exported = InMemorySpanExporter()
    tracing = Tracing(None, exporter=exported)
    assert tracing.provider is not None
    try:
        starter = tracing.spans
        assert starter.direct is not None  # the straight path is the one in use
        before = [starter.start(f"before {n}", None, {"n": n}) for n in range(3)]
        for span in before[:2]:
            span.end()
        later = InMemorySpanExporter()
        tracing.provider.add_span_processor(SimpleSpanProcessor(later))
        before[2].end()  # started before the processor was added, ended after
        after = starter.start("after", None, {})
        after.end()
        tracing.flush()
        assert sorted(s.name for s in exported.get_finished_spans()) == [
            "after",
            "before 0",
            "before 1",
            "before 2",
        ]
        assert sorted(s.name for s in later.get_finished_spans()) == ["after", "before 2"]
    finally:
        tracing.shutdown()
