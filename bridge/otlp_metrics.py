"""The bridge's metrics pushed over OTLP/HTTP through the OpenTelemetry SDK.

The same instruments as /metrics: each counter and gauge of ``bridge.metrics`` is an
observable instrument read from the in-process figures at every export; histograms
are recorded as they are observed, with the same bucket bounds. Counter names drop
their ``_total`` suffix, as OpenTelemetry names them; a collector exporting to
Prometheus (or Prometheus's own OTLP receiver) adds it back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Histogram, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from bridge.config.models import OtlpMetricsConfig
from bridge.metrics import HELP, Labels, Metrics


def otel_name(name: str) -> str:
    """The OpenTelemetry instrument name of a Prometheus metric name."""
    return name.removesuffix("_total")


class OtlpMetrics:
    """Exports ``metrics`` every ``cfg.interval`` until ``shutdown``.

    Args:
        metrics: the bridge's figures.
        cfg: where and how often to push.
        service_name: the ``service.name`` resource attribute.
        exporter: export to this exporter instead of OTLP/HTTP (tests).
    """

    def __init__(
        self,
        metrics: Metrics,
        cfg: OtlpMetricsConfig,
        service_name: str,
        exporter: MetricExporter | None = None,
    ) -> None:
        self.metrics = metrics
        reader = PeriodicExportingMetricReader(
            exporter or _exporter(cfg), export_interval_millis=cfg.interval * 1000
        )
        self.provider = MeterProvider(
            resource=Resource.create({"service.name": service_name}), metric_readers=[reader]
        )
        self.meter = self.provider.get_meter("bridge")
        self._histograms: dict[str, Histogram] = {}
        for name, (kind, text) in HELP.items():
            if kind == "counter":
                self.meter.create_observable_counter(
                    otel_name(name), [self._reader(name, metrics.counters)], description=text
                )
            elif kind == "gauge":
                self.meter.create_observable_gauge(
                    name, [self._reader(name, metrics.gauges)], description=text
                )
        metrics.on_observe = self._observe

    def _reader(
        self, name: str, values: dict[tuple[str, Labels], float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, dict(lab)) for (n, lab), v in list(values.items()) if n == name]

        return observe

    def _observe(self, name: str, labels: Labels, value: float, buckets: tuple[float, ...]) -> None:
        hist = self._histograms.get(name)
        if hist is None:
            hist = self._histograms[name] = self.meter.create_histogram(
                name,
                unit="s" if name.endswith("_seconds") else "",
                description=HELP.get(name, ("histogram", name))[1],
                explicit_bucket_boundaries_advisory=buckets,
            )
        hist.record(value, dict(labels))

    def shutdown(self, timeout: float = 5.0) -> None:
        """Push what is left and stop, within ``timeout`` seconds (blocks: call it from
        a thread)."""
        self.metrics.on_observe = None
        self.provider.shutdown(timeout_millis=timeout * 1000)


def _exporter(cfg: OtlpMetricsConfig) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    endpoint = cfg.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if endpoint is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/metrics"
    kwargs: dict[str, Any] = {"headers": cfg.headers or None}
    if endpoint:
        kwargs["endpoint"] = endpoint
    return OTLPMetricExporter(**kwargs)
