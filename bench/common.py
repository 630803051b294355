"""What every benchmark shares: run settings, medians, percentiles, machine description."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SHORT_ROUNDS = 9
"""Rounds a short scenario runs at least in a full run (``Env.rounds``)."""


@dataclass
class Env:
    """What one suite run hands every scenario.

    ``quick`` shrinks message counts and durations (a smoke run: the figures mean
    nothing); ``runs`` is how often each variant is repeated, interleaved with
    its comparisons. Broker addresses are filled in by the suite once started.
    """

    quick: bool = False
    runs: int = 3
    workdir: Path = Path(".")
    kafka_bootstrap: str = ""
    sqs_endpoint: str = ""
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    extra: dict[str, Any] = field(default_factory=dict)

    def size(self, full: int, quick: int) -> int:
        """``full`` normally, ``quick`` in quick mode."""
        return quick if self.quick else full

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def rounds(self, least: int = SHORT_ROUNDS) -> int:
        """Rounds of a short scenario: ``runs``, but at least ``least`` in a full run. A
        round of the ``ledger`` or ``tracing`` scenario takes 2-3 seconds, and the host's
        speed moved by half between such rounds (``ledger off`` 9,017, 13,541 and 14,625
        events/s in three of them); more rounds cost seconds and steady the medians."""
        return self.runs if self.quick else max(self.runs, least)


def machine() -> dict[str, Any]:
    """A description of where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dev dependency
        pass
    return {
        "platform": platform.platform(),
        "processor": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "load_average_1_5_15": list(os.getloadavg()),
        "wakeup_us": wakeups(),
    }


def wakeups(trips: int = 5000, repeats: int = 3) -> dict[str, dict[str, float]]:
    """µs of a wake-up round trip between two threads of this process (a byte through a
    pipe each way), the two on different cores and on one core: wall clock and CPU (both
    threads), medians of ``repeats``. Each store round trip and each hand-off to another
    thread or process (the SQLite store's thread, a PostgreSQL backend) pays such wake-ups;
    on a host where waking another core is dear, the durable variants read lower beside
    the bridge with the ledger off, which pays none. Measured: 6-8 µs on one core of a
    virtual machine whose wake-ups across its two cores took 52-100 µs (35-56 of CPU)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, (mine, theirs) in (("across_cores", cpus[:2]), ("one_core", (cpus[0], cpus[0]))):
        samples = [_ping_pong(trips, mine, theirs) for _ in range(repeats)]
        out[name] = {
            "wall": round(statistics.median(s[0] for s in samples), 1),
            "cpu": round(statistics.median(s[1] for s in samples), 1),
        }
    return out


def _ping_pong(trips: int, mine: int, theirs: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per round trip, this thread on core ``mine``, its peer on ``theirs``."""
    there, into = os.pipe()
    back, home = os.pipe()
    before = os.sched_getaffinity(0)

    def peer() -> None:
        os.sched_setaffinity(0, {theirs})  # 0: the calling thread
        for _ in range(trips):
            os.read(there, 1)
            os.write(home, b"x")

    thread = threading.Thread(target=peer, daemon=True)
    os.sched_setaffinity(0, {mine})
    try:
        thread.start()
        started, used = time.perf_counter(), _cpu()
        for _ in range(trips):
            os.write(into, b"x")
            os.read(back, 1)
        wall, cpu = time.perf_counter() - started, _cpu() - used
        thread.join()
    finally:
        os.sched_setaffinity(0, before)
        for fd in (there, into, back, home):
            os.close(fd)
    return wall / trips * 1e6, cpu / trips * 1e6


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime


def summary(samples: list[float]) -> dict[str, float]:
    """Median, min and max of a list of samples."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
    }


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest-rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def spread_ms(samples_ns: list[int]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds of latencies in nanoseconds."""
    if not samples_ns:
        return {
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
            "samples": 0,
        }
    ms = [s / 1e6 for s in samples_ns]
    return {
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "samples": len(ms),
    }


def holds(value: float, op: str, target: float) -> bool:
    """Whether ``value op target`` (op is ``>=`` or ``<=``) holds."""
    return value >= target if op == ">=" else value <= target


def goal(
    name: str,
    value: float,
    op: str,
    target: float,
    ratio: str | None = None,
    rounds: list[float] | None = None,
) -> dict[str, Any]:
    """One goal line: ``value op target`` (op is ``>=`` or ``<=``) and whether it holds;
    ``ratio`` names the scenario's ratio it reads, so the report can show its CPU twin and
    its value in each round (``ratio_rounds``); ``rounds``: those values for a goal that is
    not such a ratio."""
    met = holds(value, op, target)
    line: dict[str, Any] = {"goal": name, "value": value, "target": f"{op} {target:g}", "met": met}
    if ratio is not None:
        line["ratio"] = ratio
    if rounds is not None:
        line["rounds"] = rounds
    return line


def throughput_result(
    unit: str,
    samples: dict[str, list[float]],
    pairs: list[tuple[str, str]],
    cpu: dict[str, list[float]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The common shape of a throughput scenario: every variant's summary, and for each
    ``(variant, baseline)`` pair the ratio of their medians, named ``variant/baseline``.

    ``ratio_rounds`` gives each ratio within each round (the n-th run of the variant
    over the n-th of its baseline, run beside it: the scenarios interleave their
    variants), so a reader sees how far the same code moved between rounds.

    ``cpu`` (CPU microseconds of this process per message, per variant) adds
    ``cpu_us_per_msg`` and ``cpu_ratios`` (baseline CPU / variant CPU: the throughput
    ratio the two would have on an idle core, far less noisy than wall-clock rates
    on a shared machine)."""
    variants = {name: summary(values) for name, values in samples.items() if values}
    ratios = {
        f"{name}/{base}": variants[name]["median"] / variants[base]["median"]
        for name, base in pairs
        if name in variants and base in variants
    }
    rounds = {
        f"{name}/{base}": [a / b for a, b in zip(samples[name], samples[base], strict=False)]
        for name, base in pairs
        if name in variants and base in variants
    }
    out = {"unit": unit, "variants": variants, "ratios": ratios, "ratio_rounds": rounds}
    if cpu:
        per = {name: summary(values) for name, values in cpu.items() if values}
        out["cpu_us_per_msg"] = per
        out["cpu_ratios"] = {
            f"{name}/{base}": per[base]["median"] / per[name]["median"]
            for name, base in pairs
            if name in per and base in per
        }
    return {**out, **extra}


class Samples:
    """Per-variant samples of one throughput scenario: rate and CPU per message of each run."""

    def __init__(self, names: list[str] | None = None) -> None:
        self.rates: dict[str, list[float]] = {name: [] for name in names or ()}
        self.cpu: dict[str, list[float]] = {name: [] for name in names or ()}

    def add(self, name: str, tally: Any, per: int = 4) -> None:
        """Record a ``bench.payload.Tally`` (``per`` handler runs make one message)."""
        self.rates.setdefault(name, []).append(tally.rate(per))
        self.cpu.setdefault(name, []).append(tally.cpu_us(per))

    def progress(self, label: str, run: int) -> None:
        """One line per run, so a long suite shows where it is."""
        last = ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in self.rates.items() if v)
        print(f"  {label} run {run + 1}: {last}", flush=True)

    def result(self, unit: str, pairs: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
        return throughput_result(unit, self.rates, pairs, self.cpu, **extra)
