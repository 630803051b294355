"""Core throughput: memory source -> normalize -> validate -> 4 no-op handlers -> settle.

Compared in one run with a bare loop doing the same work: JSON parse, pydantic
validation, ``asyncio.gather`` of the same four coroutines. The bridge runs with
the ledger off and with the ledger on (SQLite, group commit). Run:
``python -m bench.core [--events N] [--runs R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import repeat, summary, write
from bench.payload import HANDLERS, SubscriberCreated, body, bridge_config
from bridge.config import load_config_text
from bridge.runtime import Runtime
from connectors.memory import BROKER

MEMORY_CONNECTOR = """\
    type: memory
    topic: {topic}
    consume: {{event: {{type: subscriber/created}}, max_in_flight: {max_in_flight}}}
"""

_topics = iter(range(1_000_000))
MAX_IN_FLIGHT = 1000


async def bare_loop(bodies: list[bytes]) -> float:
    """Events per second of the same work without the bridge."""
    start = time.perf_counter()
    for raw in bodies:
        data = SubscriberCreated.model_validate(orjson.loads(raw))
        await asyncio.gather(*(h(data, None) for h in HANDLERS))
    return len(bodies) / (time.perf_counter() - start)


async def bridge(
    bodies: list[bytes],
    ledger: bool,
    workdir: Path,
    *,
    sample_ratio: float | None = None,
    span_exporter: Any = None,
) -> float:
    """Events per second through a running bridge, from the first put to the last ack."""
    topic = f"bench-{next(_topics)}"
    store = f"sqlite:///{workdir}/{topic}.db" if ledger else "memory://"
    cfg = load_config_text(
        bridge_config(
            MEMORY_CONNECTOR.format(topic=topic, max_in_flight=MAX_IN_FLIGHT),
            store=store,
            ledger=ledger,
        ),
        {},
    )
    if sample_ratio is not None:
        cfg.telemetry.traces.sample_ratio = sample_ratio
    runtime = Runtime(cfg, span_exporter=span_exporter)
    task = asyncio.create_task(runtime.run())
    while not runtime.ready:
        await asyncio.sleep(0.01)
    state = BROKER.topic(topic)
    start = time.perf_counter()
    for raw in bodies:
        BROKER.put(topic, raw)
    while state.acked < len(bodies):
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - start
    runtime.request_stop()
    await task
    return len(bodies) / elapsed


async def main(events: int, runs: int) -> dict[str, object]:
    bodies = [body(n) for n in range(events)]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        await bare_loop(bodies[:1000])  # warm up imports and caches
        await bridge(bodies[:1000], False, workdir)
        bare, off, on = [], [], []
        for _ in range(runs):  # interleaved, so drift in machine load hits all three alike
            bare += await repeat(1, lambda: bare_loop(bodies))
            off += await repeat(1, lambda: bridge(bodies, False, workdir))
            on += await repeat(1, lambda: bridge(bodies, True, workdir))
    b, f, n = summary(bare), summary(off), summary(on)
    result = {
        "events_per_run": events,
        "bare_loop_eps": b,
        "bridge_ledger_off_eps": f,
        "bridge_ledger_on_eps": n,
        "ratio_ledger_off": f["median"] / b["median"],
        "ratio_ledger_on": n["median"] / b["median"],
        "overhead_us_per_event_ledger_off": (1 / f["median"] - 1 / b["median"]) * 1e6,
        "overhead_us_per_event_ledger_on": (1 / n["median"] - 1 / b["median"]) * 1e6,
        "goal": "bridge (ledger off) >= 0.5 x bare loop",
    }
    result["goal_met"] = result["ratio_ledger_off"] >= 0.5
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(main(args.events, args.runs))
    path = write("core", result)
    print(f"bare loop        {result['bare_loop_eps']['median']:>10,.0f} events/s")  # type: ignore[index]
    print(
        f"bridge, ledger off {result['bridge_ledger_off_eps']['median']:>8,.0f} events/s  ratio {result['ratio_ledger_off']:.2f}  +{result['overhead_us_per_event_ledger_off']:.1f} us/event"
    )  # type: ignore[index]
    print(
        f"bridge, ledger on  {result['bridge_ledger_on_eps']['median']:>8,.0f} events/s  ratio {result['ratio_ledger_on']:.2f}  +{result['overhead_us_per_event_ledger_on']:.1f} us/event"
    )  # type: ignore[index]
    print(
        f"goal (>= 0.5 with the ledger off): {'met' if result['goal_met'] else 'NOT met'}   -> {path}"
    )


if __name__ == "__main__":
    cli()
