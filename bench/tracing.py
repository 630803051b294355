"""Tracing cost (scenario 6): the core pipeline with tracing off, at 10% and at 100% sampling.

The bridge is fed by the in-process memory connector (4 no-op handlers, ledger
off) so the figures show the bridge's own cost of creating, sampling and ending
spans: a batch span processor with an exporter that drops everything. Run with the
collector tuned as ``bridge run`` tunes it (``bench.durable.tuned_gc``), as the ``ledger``
and ``kafka`` scenarios are: untuned, the traced variants paid for full collections of the
heap the earlier scenarios of ``make bench`` left behind (10 %: 0.69 in the full suite,
0.82 run alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bench.common import Env, Samples, goal
from bench.core import memory_bridge
from bench.durable import tuned_gc
from bench.payload import body


class DropExporter(SpanExporter):
    """Accepts spans and throws them away."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@tuned_gc
async def sampling(env: Env) -> dict[str, Any]:
    """Scenario 6: events/s untraced, at 10% and at 100% sampling."""
    events = env.size(5_000, 300)
    bodies = [body(n) for n in range(events)]
    await memory_bridge(bodies[: min(1000, events)])  # warm up
    samples = Samples()
    exported = {"sampled_10pct": 0, "sampled_100pct": 0}
    rounds = env.rounds()
    for _ in range(rounds):  # interleaved so load drift hits every variant alike
        for label, ratio in (("off", None), ("sampled_10pct", 0.1), ("sampled_100pct", 1.0)):
            exporter = DropExporter()
            tally = await memory_bridge(
                bodies,
                sample_ratio=ratio,
                span_exporter=exporter if ratio is not None else None,
            )
            samples.add(label, tally)
            if label in exported:
                exported[label] += exporter.spans
    result = samples.result(
        "events/s",
        [("sampled_10pct", "off"), ("sampled_100pct", "off")],
        events_per_run=events,
        spans_exported=exported,
        # At 100 %: a delivery span and one attempt span per handler (4), every event.
        spans_expected_100pct=events * 5 * rounds,
    )
    r = result["ratios"]
    result["goals"] = [
        goal(
            "tracing 10%: traced / untraced", r["sampled_10pct/off"], ">=", 0.8, "sampled_10pct/off"
        ),
        goal(
            "tracing 100%: traced / untraced",
            r["sampled_100pct/off"],
            ">=",
            0.5,
            "sampled_100pct/off",
        ),
    ]
    return result
