"""The bridge's Grafana dashboard, built with grafana-foundation-sdk.

Run ``python deploy/grafana/dashboard.py`` to rewrite ``bridge-dashboard.json`` next to
it; tests/integration/test_prometheus.py fails when the committed JSON differs from what
this builds, and runs every panel's query against a real Prometheus scraping a bridge.

Queries use two template variables: ``$datasource`` (a Prometheus data source) and
``$instance`` (the bridge instances to show, all by default).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).with_name("bridge-dashboard.json")
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'instance=~"$instance"'
RATE = "$__rate_interval"


def rate(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{SEL}}}[{RATE}]))"


def quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{SEL}}}[{RATE}])))"


# (title, unit, [(expr, legend)]), laid out two to a row.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Events in by connector",
        "ops",
        [(rate("bridge_events_received_total", "connector"), "{{connector}}")],
    ),
    (
        "Invalid input by connector and reason",
        "ops",
        [(rate("bridge_events_invalid_total", "connector, reason"), "{{connector}} {{reason}}")],
    ),
    (
        "Runs by handler and outcome",
        "ops",
        [(rate("bridge_runs_total", "handler, outcome"), "{{handler}} {{outcome}}")],
    ),
    (
        "Run duration p50 / p99 per handler",
        "s",
        [
            (quantile(0.5, "bridge_run_duration_seconds", "handler"), "{{handler}} p50"),
            (quantile(0.99, "bridge_run_duration_seconds", "handler"), "{{handler}} p99"),
        ],
    ),
    (
        "Retries, dead letters and parked runs",
        "ops",
        [
            (rate("bridge_retries_total", "handler"), "retries {{handler}}"),
            (rate("bridge_dead_letters_total", "handler"), "dead letters {{handler}}"),
            (rate("bridge_runs_parked_total", "handler"), "parked {{handler}}"),
        ],
    ),
    (
        "In flight",
        "short",
        [(f"sum by (connector) (bridge_in_flight{{{SEL}}})", "{{connector}}")],
    ),
    (
        "Source lag and queue depth per connector",
        "short",
        [(f"sum by (connector) (bridge_source_lag{{{SEL}}})", "{{connector}}")],
    ),
    (
        "Store latency p99 by operation",
        "s",
        [(quantile(0.99, "bridge_store_seconds", "operation"), "{{operation}}")],
    ),
    (
        "Store errors by operation",
        "ops",
        [(rate("bridge_store_errors_total", "operation"), "{{operation}}")],
    ),
    (
        "Fan-out width (handlers per event)",
        "short",
        [
            (quantile(0.5, "bridge_fanout_width", "instance"), "p50 {{instance}}"),
            (quantile(0.99, "bridge_fanout_width", "instance"), "p99 {{instance}}"),
        ],
    ),
    (
        "Internal errors and unrouted events",
        "ops",
        [
            (rate("bridge_internal_errors_total", "connector"), "internal {{connector}}"),
            (rate("bridge_events_unrouted_total", "connector"), "unrouted {{connector}}"),
        ],
    ),
    (
        "Ready, store and connectors up",
        "short",
        [
            (f"bridge_ready{{{SEL}}}", "ready {{instance}}"),
            (f"bridge_store_up{{{SEL}}}", "store {{instance}}"),
            (f"bridge_connector_up{{{SEL}}}", "{{connector}} {{instance}}"),
        ],
    ),
    (
        "Process CPU and event loop lag",
        "s",
        [
            (f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])", "cpu {{instance}}"),
            (f"bridge_event_loop_lag_seconds{{{SEL}}}", "loop lag {{instance}}"),
        ],
    ),
    (
        "Process memory and Python GC",
        "short",
        [
            (f"process_resident_memory_bytes{{{SEL}}}", "rss bytes {{instance}}"),
            (
                f"sum by (instance, generation) (rate(python_gc_collections_total{{{SEL}}}[{RATE}]))",
                "gc gen {{generation}} {{instance}}",
            ),
        ],
    ),
]


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    board = (
        dashboard.Dashboard("Fan-out bridge")
        .uid("fanout-bridge")
        .tags(["fanout-bridge"])
        .refresh("30s")
        .time("now-1h", "now")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Instance")
            .datasource(DS)
            .query("label_values(bridge_ready, instance)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    for title, unit, queries in PANELS:
        panel = (
            timeseries.Panel()
            .title(title)
            .unit(unit)
            .datasource(DS)
            .height(8)
            .span(12)
            .legend(
                common.VizLegendOptions()
                .show_legend(True)
                .display_mode(LegendDisplayMode.LIST)
                .placement(LegendPlacement.BOTTOM)
                .calcs([])
            )
            .tooltip(
                common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
            )
        )
        for i, (expr, legend) in enumerate(queries):
            panel = panel.with_target(
                prometheus.Dataquery()
                .expr(expr)
                .legend_format(legend)
                .ref_id(chr(ord("A") + i))
                .datasource(DS)
            )
        board = board.with_panel(panel)
    built: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return built


def render() -> str:
    """The JSON file's text."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
