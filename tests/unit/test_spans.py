"""The bridge's cheaply built spans behave as SDK spans do for everything a handler or an
exporter can do with them: attributes, events, links, exceptions, status, one export."""

from __future__ import annotations

import os
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
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


def test_limits_and_writes_are_each_spans_own() -> None:
    """The fields spans start with are shared defaults (class attributes): a write to one
    span, a dropped attribute past the limit, or its end, touches no other span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    starter = SpanStarter(provider, "test")

    full = starter.start("full", None, {"a": 1, "b": 2})
    other = starter.start("other", None, {"a": 1})
    full.set_attribute("c", 3)  # past the limit of 2: the oldest goes, one counted dropped
    full.set_status(StatusCode.ERROR, "failed")
    full.add_event("note")
    full.end()
    assert other.is_recording()
    other.set_attribute("b", 2)
    other.end()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert dict(spans["full"].attributes or {}) == {"b": 2, "c": 3}
    assert spans["full"].dropped_attributes == 1
    assert spans["full"].status.status_code is StatusCode.ERROR
    assert [e.name for e in spans["full"].events] == ["note"]
    assert dict(spans["other"].attributes or {}) == {"a": 1, "b": 2}
    assert spans["other"].dropped_attributes == 0
    assert spans["other"].status.status_code is StatusCode.UNSET
    assert spans["other"].events == ()


def test_a_span_ended_by_two_threads_at_once_is_exported_once() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    starter = SpanStarter(provider, "test")
    spans = [starter.start(f"s{n}", None, {}) for n in range(2000)]
    gate = threading.Barrier(2)

    def end_all() -> None:
        gate.wait()
        for span in spans:
            span.end()

    threads = [threading.Thread(target=end_all) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s.name for s in exporter.get_finished_spans()) == sorted(
        f"s{n}" for n in range(2000)
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_has_its_own_span_queue_without_a_process_check_per_span() -> None:
    """``NudgingProcessor.enqueue`` skips the SDK's per-span process id check where the SDK's
    fork hook renews the batch processor in the child: the child's spans are exported
    by the child's own worker thread."""
    exported = InMemorySpanExporter()
    tracing = Tracing(None, exporter=exported)
    try:
        pid = os.fork()
        if pid == 0:  # the child: spans it ends must reach its own export
            code = 1
            try:
                span = tracing.spans.start("in the child", None, {})
                span.end()
                tracing.flush()
                names = [s.name for s in exported.get_finished_spans()]
                code = 0 if names == ["in the child"] else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert exported.get_finished_spans() == ()
    finally:
        tracing.shutdown()
