"""Tracing cost: the core pipeline with tracing off, at 10% and at 100% sampling.

Batch span processor with an exporter that drops everything, so the figures show
the bridge's own cost of creating, sampling and ending spans. Run:
``python -m bench.tracing [--events N] [--runs R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bench.common import summary, write
from bench.core import bridge
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


async def main(events: int, runs: int) -> dict[str, Any]:
    bodies = [body(n) for n in range(events)]
    samples: dict[str, list[float]] = {"off": [], "10%": [], "100%": []}
    exported = {"10%": 0, "100%": 0}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        await bridge(bodies[:1000], False, workdir)
        for _ in range(runs):  # interleaved so load drift hits every variant alike
            samples["off"].append(await bridge(bodies, False, workdir))
            for label, ratio in (("10%", 0.1), ("100%", 1.0)):
                exporter = DropExporter()
                samples[label].append(
                    await bridge(bodies, False, workdir, sample_ratio=ratio, span_exporter=exporter)
                )
                exported[label] += exporter.spans
    off = summary(samples["off"])
    result: dict[str, Any] = {
        "events_per_run": events,
        "untraced_eps": off,
        "sampled_10pct_eps": summary(samples["10%"]),
        "sampled_100pct_eps": summary(samples["100%"]),
        "spans_exported": exported,
        "ratio_10pct": summary(samples["10%"])["median"] / off["median"],
        "ratio_100pct": summary(samples["100%"])["median"] / off["median"],
        "goals": {"10%": ">= 0.8", "100%": ">= 0.4"},
    }
    result["goals_met"] = {
        "10%": result["ratio_10pct"] >= 0.8,
        "100%": result["ratio_100pct"] >= 0.4,
    }
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(main(args.events, args.runs))
    path = write("tracing", result)
    print(f"untraced        {result['untraced_eps']['median']:>8,.0f} events/s")
    print(
        f"10% sampled     {result['sampled_10pct_eps']['median']:>8,.0f} events/s  ratio {result['ratio_10pct']:.2f} (goal >= 0.8)"
    )
    print(
        f"100% sampled    {result['sampled_100pct_eps']['median']:>8,.0f} events/s  ratio {result['ratio_100pct']:.2f} (goal >= 0.4)"
    )
    print(f"-> {path}")


if __name__ == "__main__":
    cli()
