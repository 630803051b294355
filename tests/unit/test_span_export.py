"""The span processor's queue when its export thread is late or its exporter is stuck."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import bridge.span_export
from bridge.tracing import Tracing
from tests.fixtures.spans import Drops, count_drops


class Counted(SpanExporter):
    """Counts what it is given; holds its first export until ``release`` is set, if asked."""

    def __init__(self, hold: bool = False) -> None:
        self.spans = 0
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(60)
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class LateWake(threading.Event):
    """The export thread's wake-up, as on a machine whose cores are busy elsewhere:
    the thread runs 50 ms after it is woken (a ``nudge`` cannot hand it the GIL)."""

    def wait(self, timeout: float | None = None) -> bool:
        woken = super().wait(timeout)
        if woken:
            time.sleep(0.05)
        return woken


@pytest.fixture
def tracing(request: pytest.FixtureRequest) -> Iterator[tuple[Tracing, Any, Drops]]:
    exporter = request.param
    tracing = Tracing(None, exporter=exporter)
    processor, drops = count_drops(tracing)
    yield tracing, processor, drops
    tracing.shutdown()


@pytest.mark.parametrize("tracing", [Counted()], indirect=True)
def test_a_late_export_thread_is_waited_for_and_no_span_is_dropped(
    tracing: tuple[Tracing, Any, Drops], monkeypatch: pytest.MonkeyPatch
) -> None:
    spans, processor, drops = tracing
    monkeypatch.setattr(bridge.span_export, "LATE_WAIT", 10.0)  # the machine's pace, not ours
    batch = processor._batch_processor
    punctual, batch._worker_awaken = batch._worker_awaken, LateWake()
    punctual.set()  # the thread's next wait is on the late wake-up
    ended = 20_000  # 40 queues' worth: the loop outruns a thread 50 ms late many times over
    for n in range(ended):
        spans.spans.start(f"s{n}", None, {}).end()
    spans.shutdown()  # exports what is still queued
    assert drops.dropped == {}
    assert processor.span_exporter.spans == ended


@pytest.mark.parametrize("tracing", [Counted(hold=True)], indirect=True)
def test_a_stuck_exporter_is_not_waited_for_spans_are_dropped_and_counted(
    tracing: tuple[Tracing, Any, Drops], monkeypatch: pytest.MonkeyPatch
) -> None:
    spans, processor, drops = tracing
    waits = []
    wait = processor._wait_for_export
    monkeypatch.setattr(processor, "_wait_for_export", lambda batch: waits.append(1) or wait(batch))
    ended = 10_000
    for n in range(ended):
        spans.spans.start(f"s{n}", None, {}).end()
    exporter = processor.span_exporter
    assert exporter.spans == 0  # still in its first export
    exporter.release.set()
    spans.shutdown()
    # At most one wait, before the thread took its first batch: then it is exporting.
    assert len(waits) <= 1
    # Its first batch (512) and a full queue (2,048) are exported; the rest is dropped.
    assert drops.dropped == {"queue_full": ended - 512 - 2048}
    assert exporter.spans == 512 + 2048


@pytest.mark.parametrize("tracing", [Counted(hold=True)], indirect=True)
def test_the_export_thread_is_nudged_only_when_it_can_take_the_gil(
    tracing: tuple[Tracing, Any, Drops], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A nudge (sleep(0)) costs the loop 75 µs here: it is spent only on a thread that is
    # woken for a batch or is exporting, never on one asleep until its next batch.
    spans, processor, drops = tracing
    nudges: list[int] = []
    monkeypatch.setattr(bridge.span_export, "nudge", lambda: nudges.append(1))
    batch = processor._batch_processor
    for n in range(511):  # a batch is 512: the thread sleeps on
        spans.spans.start(f"s{n}", None, {}).end()
    assert nudges == []
    spans.spans.start("s511", None, {}).end()  # the batch is full: woken, and nudged
    assert nudges == [1]
    deadline = time.monotonic() + 30
    while not batch._export_lock.locked():  # exporting (held by the exporter)
        assert time.monotonic() < deadline
        time.sleep(0.001)
    for n in range(2 * bridge.span_export.NUDGE_EVERY):
        spans.spans.start(f"t{n}", None, {}).end()
    assert len(nudges) == 3  # one each NUDGE_EVERY spans while it exports
    processor.span_exporter.release.set()
    spans.shutdown()
    assert drops.dropped == {}
    assert processor.span_exporter.spans == 512 + 2 * bridge.span_export.NUDGE_EVERY
