"""In-process counters and histograms with the names of DESIGN §7, rendered for Prometheus.

Cheap enough for the hot path: an increment is a dict update. The telemetry
issue may export the same figures through OpenTelemetry; the names stay.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

Labels = tuple[tuple[str, str], ...]
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HELP = {
    "bridge_events_received_total": ("counter", "Messages received from sources."),
    "bridge_events_invalid_total": (
        "counter",
        "Messages that could not become events, and events the event API refused, by reason.",
    ),
    "bridge_events_unrouted_total": ("counter", "Events that no handler subscribes to."),
    "bridge_messages_skipped_total": (
        "counter",
        "Messages that are on purpose no event (tombstones under `tombstones: drop`).",
    ),
    "bridge_runs_total": (
        "counter",
        "Finished runs by handler and outcome (succeeded, dead_lettered; with flow control "
        "also skipped, debounced, cancelled).",
    ),
    "bridge_runs_throttled_total": (
        "counter",
        "Runs that waited for a throttle's start time before starting.",
    ),
    "bridge_runs_queued_total": (
        "counter",
        "Runs parked in the store to wait for a throttle's start time or a debounce's "
        "quiet period longer than the inline limit (their messages settled).",
    ),
    "bridge_retries_total": ("counter", "Attempts retried after a failure."),
    "bridge_history_dropped_total": (
        "counter",
        "Events left out of the run history because its write buffer was full.",
    ),
    "bridge_runs_parked_total": (
        "counter",
        "Retries parked in the store because their delay was past the inline limit.",
    ),
    "bridge_runs_suspended_total": (
        "counter",
        "Runs parked by a durable sleep or wait (`ctx.sleep`, `ctx.wait_for_event`), by "
        "handler and kind (sleeping, waiting).",
    ),
    "bridge_dead_letters_total": (
        "counter",
        'Runs dead-lettered, by handler; handler="" for unrouted events and internal errors '
        "(invalid input counts in bridge_events_invalid_total only).",
    ),
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
    "bridge_store_errors_total": ("counter", "Store calls that failed (StoreError) by operation."),
    "bridge_store_round_trips_total": (
        "counter",
        "Store round trips (a SQLite thread hand-off, a PostgreSQL connection use) by operation;"
        " the ledger's are batched across deliveries.",
    ),
    "bridge_in_flight": ("gauge", "Deliveries being processed."),
    "bridge_ready": ("gauge", "1 while the bridge is ready (started, store and sources up)."),
    "bridge_store_up": ("gauge", "1 while the store answers its ping, checked every 5 s."),
    "bridge_connector_up": ("gauge", "1 while a source's connector is connected."),
    "bridge_source_lag": ("gauge", "Backlog of a source (lag or queue depth)."),
    "bridge_event_loop_lag_seconds": ("gauge", "How late the event loop woke a 1 s sleeper."),
    "bridge_fanout_width": ("histogram", "Handlers matched per event."),
    "bridge_run_duration_seconds": ("histogram", "Run duration, all attempts included."),
    "bridge_store_seconds": ("histogram", "Store call duration by operation."),
}

# Reasons an input is invalid that every source can meet; their series exist from
# start-up so a rate over them is 0 rather than absent.
INVALID_REASONS = ("malformed_json", "invalid_cloudevent", "unknown_type", "mapping", "schema")
# Process and Python runtime metrics, named as prometheus_client names them.
_RUNTIME = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=_RUNTIME)
PlatformCollector(registry=_RUNTIME)
GCCollector(registry=_RUNTIME)


class Metrics:
    """Counters, gauges and histograms keyed by name and labels."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self.gauges: dict[tuple[str, Labels], float] = {}
        self._hist: dict[tuple[str, Labels], list[float]] = {}
        self._bounds: dict[str, tuple[float, ...]] = {}
        # Called with every observation when histograms are also exported elsewhere (OTLP).
        self.on_observe: Callable[[str, Labels, float, tuple[float, ...]], None] | None = None

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        self.counters[(name, labels)] += value

    def zero(self, name: str, labels: Labels = ()) -> None:
        """Export counter ``name`` with ``labels`` at 0 until it first moves."""
        self.counters[(name, labels)] += 0.0

    def declare(
        self, name: str, labels: Labels = (), buckets: tuple[float, ...] = _BUCKETS
    ) -> None:
        """Export histogram ``name`` with ``labels`` empty until its first observation."""
        if (name, labels) not in self._hist:
            self._hist[(name, labels)] = [0.0] * (len(buckets) + 2)
            self._bounds[name] = buckets

    def set(self, name: str, labels: Labels, value: float) -> None:
        self.gauges[(name, labels)] = value

    def add(self, name: str, labels: Labels, value: float) -> None:
        key = (name, labels)
        self.gauges[key] = self.gauges.get(key, 0.0) + value

    def observe(
        self, name: str, labels: Labels, value: float, buckets: tuple[float, ...] = _BUCKETS
    ) -> None:
        if self.on_observe is not None:
            self.on_observe(name, labels, value, buckets)
        key = (name, labels)
        hist = self._hist.get(key)
        if hist is None:
            hist = self._hist[key] = [0.0] * (len(buckets) + 2)  # buckets..., +Inf, sum
            self._bounds[name] = buckets
        hist[bisect_left(buckets, value)] += 1  # the first bound >= value; past them all: +Inf
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
        return "".join(self._lines()) + generate_latest(_RUNTIME).decode()

    def _lines(self) -> Iterator[str]:
        names = sorted({n for n, _ in [*self.counters, *self.gauges, *self._hist]})
        for name in names:
            kind, text = HELP.get(name, ("untyped", name))
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


def preset(
    metrics: Metrics,
    *,
    handlers: Iterable[str],
    sources: Iterable[str],
    leased: Iterable[str],
    operations: Iterable[str],
    ingresses: Iterable[str] = (),
    suspending: Iterable[str] = (),
    cancellable: Iterable[str] = (),
) -> None:
    """Export every counter at 0 with the label sets the config makes known.

    Rates and alerts then work before the first failure: ``rate(x[5m])`` is 0, not
    empty, and ``increase`` sees the first increment. ``suspending``: handlers whose
    runs may sleep or wait (``bridge_runs_suspended_total{kind}``); ``cancellable``:
    handlers with ``cancel_on`` (``bridge_runs_total{outcome="cancelled"}``).
    """
    for handler in handlers:
        h = (("handler", handler),)
        for outcome in ("succeeded", "dead_lettered"):
            metrics.zero("bridge_runs_total", (*h, ("outcome", outcome)))
        for name in (
            "bridge_retries_total",
            "bridge_runs_parked_total",
            "bridge_dead_letters_total",
            "bridge_filter_errors_total",
        ):
            metrics.zero(name, h)
        metrics.declare("bridge_run_duration_seconds", h)
    for handler in suspending:
        for kind in ("sleeping", "waiting"):
            metrics.zero("bridge_runs_suspended_total", (("handler", handler), ("kind", kind)))
    for handler in cancellable:
        metrics.zero("bridge_runs_total", (("handler", handler), ("outcome", "cancelled")))
    metrics.zero("bridge_dead_letters_total", (("handler", ""),))
    for source in sources:
        c = (("connector", source),)
        for name in (
            "bridge_events_received_total",
            "bridge_events_unrouted_total",
            "bridge_internal_errors_total",
        ):
            metrics.zero(name, c)
        for reason in INVALID_REASONS:
            metrics.zero("bridge_events_invalid_total", (*c, ("reason", reason)))
        metrics.zero("bridge_messages_skipped_total", (*c, ("reason", "tombstone")))
        metrics.set("bridge_in_flight", c, 0.0)
    for ingress in ingresses:  # webhooks: what they refuse is invalid input too
        for reason in INVALID_REASONS:
            metrics.zero(
                "bridge_events_invalid_total", (("connector", ingress), ("reason", reason))
            )
    for source in leased:
        for name in ("bridge_lease_lost_total", "bridge_lease_renewal_failures_total"):
            metrics.zero(name, (("source", source),))
    for operation in operations:
        metrics.zero("bridge_store_errors_total", (("operation", operation),))
