"""In-process counters and histograms with the names of DESIGN §7, rendered for Prometheus.

Cheap enough for the hot path: an increment is a dict update. The telemetry
issue may export the same figures through OpenTelemetry; the names stay.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

Labels = tuple[tuple[str, str], ...]
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_HELP = {
    "bridge_events_received_total": ("counter", "Messages received from sources."),
    "bridge_events_invalid_total": ("counter", "Messages that could not become events."),
    "bridge_events_unrouted_total": ("counter", "Events that no handler subscribes to."),
    "bridge_messages_skipped_total": (
        "counter",
        "Messages that are on purpose no event (tombstones under `tombstones: drop`).",
    ),
    "bridge_runs_total": ("counter", "Finished runs by handler and outcome."),
    "bridge_retries_total": ("counter", "Attempts retried after a failure."),
    "bridge_runs_parked_total": (
        "counter",
        "Retries parked in the store because their delay was past the inline limit.",
    ),
    "bridge_dead_letters_total": ("counter", "Dead letters stored."),
    "bridge_internal_errors_total": (
        "counter",
        "Unexpected engine failures on a delivery; each is retried up to limits.poison_limit.",
    ),
    "bridge_filter_errors_total": ("counter", "Filters that failed at run time (no match)."),
    "bridge_lease_lost_total": (
        "counter",
        "Leased inbox entries taken over by another holder; their late result was not settled.",
    ),
    "bridge_lease_renewal_failures_total": (
        "counter",
        "Lease renewals (inbox entries, parked runs) that failed; tried again a third of a "
        "lease later.",
    ),
    "bridge_store_round_trips_total": (
        "counter",
        "Store round trips (a SQLite thread hand-off, a PostgreSQL connection use) by operation;"
        " the ledger's are batched across deliveries.",
    ),
    "bridge_in_flight": ("gauge", "Deliveries being processed."),
    "bridge_source_lag": ("gauge", "Backlog of a source (lag or queue depth)."),
    "bridge_event_loop_lag_seconds": ("gauge", "How late the event loop woke a 1 s sleeper."),
    "bridge_fanout_width": ("histogram", "Handlers matched per event."),
    "bridge_run_duration_seconds": ("histogram", "Run duration, all attempts included."),
}


class Metrics:
    """Counters, gauges and histograms keyed by name and labels."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self.gauges: dict[tuple[str, Labels], float] = {}
        self._hist: dict[tuple[str, Labels], list[float]] = {}
        self._bounds: dict[str, tuple[float, ...]] = {}

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        self.counters[(name, labels)] += value

    def set(self, name: str, labels: Labels, value: float) -> None:
        self.gauges[(name, labels)] = value

    def add(self, name: str, labels: Labels, value: float) -> None:
        key = (name, labels)
        self.gauges[key] = self.gauges.get(key, 0.0) + value

    def observe(
        self, name: str, labels: Labels, value: float, buckets: tuple[float, ...] = _BUCKETS
    ) -> None:
        key = (name, labels)
        hist = self._hist.get(key)
        if hist is None:
            hist = self._hist[key] = [0.0] * (len(buckets) + 2)  # buckets..., +Inf, sum
            self._bounds[name] = buckets
        for i, bound in enumerate(buckets):
            if value <= bound:
                hist[i] += 1
                break
        else:
            hist[len(buckets)] += 1
        hist[-1] += value

    def value(self, name: str, **labels: str) -> float:
        """Sum of a counter or gauge over series whose labels include ``labels``."""
        want = set(labels.items())
        total = 0.0
        for (n, lab), v in [*self.counters.items(), *self.gauges.items()]:
            if n == name and want <= set(lab):
                total += v
        return total

    def render(self) -> str:
        """The Prometheus text exposition format."""
        return "".join(self._lines())

    def _lines(self) -> Iterator[str]:
        names = sorted({n for n, _ in [*self.counters, *self.gauges, *self._hist]})
        for name in names:
            kind, text = _HELP.get(name, ("untyped", name))
            yield f"# HELP {name} {text}\n# TYPE {name} {kind}\n"
            for (n, labels), value in sorted(self.counters.items()):
                if n == name:
                    yield f"{name}{_fmt(labels)} {value}\n"
            for (n, labels), value in sorted(self.gauges.items()):
                if n == name:
                    yield f"{name}{_fmt(labels)} {value}\n"
            for (n, labels), hist in sorted(self._hist.items()):
                if n != name:
                    continue
                cumulative = 0.0
                bounds = (*self._bounds.get(name, _BUCKETS), float("inf"))
                for bound, count in zip(bounds, hist[:-1], strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    yield f"{name}_bucket{_fmt((*labels, ('le', le)))} {cumulative}\n"
                yield f"{name}_count{_fmt(labels)} {cumulative}\n"
                yield f"{name}_sum{_fmt(labels)} {hist[-1]}\n"


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
