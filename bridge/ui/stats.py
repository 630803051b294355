"""Handlers' recent success rate and latency, from the metrics registry.

``bridge_runs_total{handler,outcome}`` and the ``bridge_run_duration_seconds``
histogram are cumulative since the process started. ``HandlerStats`` keeps a
snapshot each time it is asked (the UI polls) and reports the difference to the
newest snapshot at least ``window`` old: the last five minutes once the UI has
been watching that long, else everything since start.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.metrics import Metrics

RUNS = "bridge_runs_total"
DURATION = "bridge_run_duration_seconds"


@dataclass(slots=True)
class Tally:
    """One handler's cumulative figures at one moment."""

    succeeded: float = 0.0
    dead_lettered: float = 0.0
    buckets: list[float] = field(default_factory=list)  # per bound, then +Inf
    total_seconds: float = 0.0

    def minus(self, earlier: Tally) -> Tally:
        old = earlier.buckets or [0.0] * len(self.buckets)
        return Tally(
            self.succeeded - earlier.succeeded,
            self.dead_lettered - earlier.dead_lettered,
            [a - b for a, b in zip(self.buckets, old, strict=False)],
            self.total_seconds - earlier.total_seconds,
        )


def _tallies(metrics: Metrics, handlers: Iterable[str]) -> dict[str, Tally]:
    out = {h: Tally() for h in handlers}
    for (name, labels), value in list(metrics.counters.items()):
        if name != RUNS:
            continue
        tags = dict(labels)
        tally = out.get(tags.get("handler", ""))
        if tally is None:
            continue
        if tags.get("outcome") == "succeeded":
            tally.succeeded += value
        elif tags.get("outcome") == "dead_lettered":
            tally.dead_lettered += value
    # The registry keeps histograms privately; read, never written.
    hists: dict[tuple[str, Any], list[float]] = getattr(metrics, "_hist", {})
    for (name, labels), hist in list(hists.items()):
        if name != DURATION:
            continue
        tally = out.get(dict(labels).get("handler", ""))
        if tally is not None:
            tally.buckets = list(hist[:-1])
            tally.total_seconds = hist[-1]
    return out


def bounds_of(metrics: Metrics) -> tuple[float, ...]:
    bounds: dict[str, tuple[float, ...]] = getattr(metrics, "_bounds", {})
    return bounds.get(DURATION, ())


def quantile(buckets: list[float], bounds: tuple[float, ...], q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile (None when empty)."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return bounds[i] if i < len(bounds) else float("inf")
    return None


class HandlerStats:
    """Success rate and latency per handler over a sliding window.

    Args:
        metrics: the runtime's registry.
        handlers: the handler ids to report (every configured handler, even idle ones).
        window: seconds.
        clock: wall time (tests).
    """

    def __init__(
        self,
        metrics: Metrics,
        handlers: Iterable[str],
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.handlers = list(handlers)
        self.window = window
        self.clock = clock
        self._snapshots: deque[tuple[float, dict[str, Tally]]] = deque()
        self._started = clock()

    def report(self) -> dict[str, Any]:
        """``{"window_seconds": ..., "handlers": [{id, runs, succeeded, dead_lettered, ...}]}``."""
        now = self.clock()
        current = _tallies(self.metrics, self.handlers)
        baseline: dict[str, Tally] = {}
        since = self._started
        while len(self._snapshots) > 1 and now - self._snapshots[1][0] >= self.window:
            self._snapshots.popleft()
        if self._snapshots and now - self._snapshots[0][0] >= self.window:
            since, baseline = self._snapshots[0]
        self._snapshots.append((now, current))
        bounds = bounds_of(self.metrics)
        rows = []
        for handler in self.handlers:
            tally = current[handler].minus(baseline.get(handler, Tally()))
            runs = tally.succeeded + tally.dead_lettered
            count = sum(tally.buckets)
            p95 = quantile(tally.buckets, bounds, 0.95)
            rows.append(
                {
                    "id": handler,
                    "runs": int(runs),
                    "succeeded": int(tally.succeeded),
                    "dead_lettered": int(tally.dead_lettered),
                    "success_rate": round(tally.succeeded / runs, 4) if runs else None,
                    "mean_seconds": round(tally.total_seconds / count, 6) if count else None,
                    "p95_seconds": None if p95 is None or p95 == float("inf") else p95,
                    "total_runs": int(current[handler].succeeded + current[handler].dead_lettered),
                }
            )
        return {"window_seconds": round(now - since, 1), "handlers": rows}
