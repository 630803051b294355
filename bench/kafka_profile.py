"""A text profile (pyinstrument) of one Kafka variant of ``bench.kafka`` on Tansu.

    python -m bench.kafka_profile bridge_sqlite      # -> bench/results/profiles/kafka-bridge_sqlite.txt
    python -m bench.kafka_profile raw --events 8000 --out /tmp/p.txt

Variants: ``raw``, ``bridge`` (ledger off), ``bridge_sqlite``, ``faststream_autocommit``.
A warm-up run goes first; then a fresh topic is filled and profiled, filling and group
join included (they show as ``Tansu.fill`` and idle time); the header's rate and CPU time
are the tally's, first handler run to last, as in the benchmark. The collector is tuned
as ``bridge run`` tunes it (``--gc default`` leaves it alone), as in ``bench.kafka``.

    python -m bench.kafka_profile source             # the source alone, no broker

``source`` prints the Kafka source's own CPU per message without a broker: a batch
accepted, every record handed out through ``deliveries()`` and settled ``ACK``.

    python -m bench.kafka_profile bridge_sqlite --areas   # cProfile, time by area

``--areas`` profiles the consuming run only (the topic is filled first) with cProfile
and prints the event loop thread's own time per area (Kafka source, aiokafka, runtime,
normalizer, dispatch, store, asyncio scheduling, idle). cProfile's per-call overhead
inflates call-heavy code, so read the shares, not the microseconds; the store's
thread is not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from pyinstrument import Profiler

from bench import kafka
from bench.brokers import Tansu
from bench.common import RESULTS
from bench.payload import Tally
from bench.profile import write_profile
from bridge.app.runtime import tune_gc


async def one(variant: str, tansu: Tansu, events: int, workdir: Path) -> Tally:
    bootstrap = tansu.bootstrap
    topic = await tansu.new_topic()
    await tansu.fill(topic, events)
    if variant == "raw":
        return await kafka.raw(bootstrap, topic, events)
    if variant == "faststream_autocommit":
        return await kafka.faststream(bootstrap, topic, events, ack=False)
    store = "memory://"
    if variant == "bridge_sqlite":
        store = f"sqlite:///{workdir}/kafka-{time.time_ns()}.db"
    return await kafka.bridge(bootstrap, topic, events, store)


async def profile(variant: str, events: int, interval: float) -> tuple[str, str]:
    tansu = Tansu()
    try:
        await tansu.wait()
        with tempfile.TemporaryDirectory(prefix="kprofile-") as tmp:
            await one(variant, tansu, 500, Path(tmp))  # warm up
            profiler = Profiler(interval=interval, async_mode="disabled")
            profiler.start()
            tally = await one(variant, tansu, events, Path(tmp))
            profiler.stop()
    finally:
        tansu.close()
    header = (
        f"# kafka {variant}: {events} messages, Tansu, 4 partitions, 4 no-op handlers;"
        f" {tally.rate(4):,.0f} msg/s, {tally.cpu_us(4):.0f} µs CPU per message (under the"
        " profiler)\n"
    )
    return header, profiler.output_text(unicode=True, color=False, show_all=False)


async def source_cost(messages: int = 20_000, rounds: int = 7) -> float:
    """Median CPU µs per message of the Kafka source alone (accept, deliveries(), settle)."""
    import gc
    import statistics

    from aiokafka.structs import ConsumerRecord, TopicPartition

    from bridge.transport import Settlement
    from connectors.kafka import KafkaConfig, KafkaSource

    cfg = KafkaConfig.model_validate(
        {
            "bootstrap_servers": "127.0.0.1:9",
            "consume": {"topics": ["t"], "group_id": "g", "max_in_flight": 10 * messages},
        }
    )
    tps = [TopicPartition("t", p) for p in range(4)]
    per = messages // len(tps)
    samples = []
    for _ in range(rounds):
        src = KafkaSource(cfg, "k")
        src.intake.assign(tps)
        batch = {
            tp: [
                ConsumerRecord(tp.topic, tp.partition, n, 0, 0, f"customer-{n % 250}".encode(),
                               b"{}", None, 10, 2, [])
                for n in range(per)
            ]
            for tp in tps
        }  # fmt: skip
        deliveries = src.deliveries()
        gc.collect()
        gc.disable()  # the code's own cost: the collector is measured with the bridge
        start = time.process_time()
        src.intake.accept(batch, lambda tp: per)
        out = []
        for _ in range(per * len(tps)):
            out.append(await anext(deliveries))
            if len(out) >= 1000 or not src.intake.ready:  # settle, freeing each key's next
                for delivery in out:
                    await delivery.settle(Settlement.ACK)
                out.clear()
        samples.append((time.process_time() - start) / (per * len(tps)) * 1e6)
        gc.enable()
    return statistics.median(samples)


AREAS = (
    ("kafka source (connectors/kafka)", ("connectors/kafka",)),
    ("aiokafka", ("aiokafka/",)),
    ("runtime (bridge/app)", ("bridge/app",)),
    ("normalizer (normalize, events, attributes, pydantic)",
     ("bridge/normalize", "bridge/events", "bridge/attributes", "pydantic", "validate_python",
      "orjson", "bridge/formats", "bridge/catalog")),
    ("store and ledger batching (bridge/store)", ("bridge/store", "SimpleQueue")),
    ("dispatch (bridge/dispatch, deadlines, context, metrics, routing, handlers/python)",
     ("bridge/dispatch", "bridge/deadlines", "bridge/context", "bridge/metrics", "bridge/clock",
      "bridge/routing", "handlers/python", "ContextVar")),
    ("the handlers themselves (bench/payload)", ("bench/payload",)),
    ("asyncio scheduling (tasks, futures, call_soon, Context.run)",
     ("asyncio/", "_asyncio", "_contextvars", "_weakrefset")),
)  # fmt: skip


async def areas(variant: str, events: int) -> str:
    """The event loop thread's own time per area over one consuming run (cProfile)."""
    import collections
    import cProfile
    import pstats

    tansu = Tansu()
    try:
        await tansu.wait()
        with tempfile.TemporaryDirectory(prefix="kprofile-") as tmp:
            await one(variant, tansu, 500, Path(tmp))  # warm up
            topic = await tansu.new_topic()
            await tansu.fill(topic, events)
            profiler = cProfile.Profile()
            profiler.enable()
            if variant == "raw":
                tally = await kafka.raw(tansu.bootstrap, topic, events)
            elif variant == "faststream_autocommit":
                tally = await kafka.faststream(tansu.bootstrap, topic, events, ack=False)
            else:
                store = f"sqlite:///{tmp}/k.db" if variant == "bridge_sqlite" else "memory://"
                tally = await kafka.bridge(tansu.bootstrap, topic, events, store)
            profiler.disable()
    finally:
        tansu.close()
    own: collections.Counter[str] = collections.Counter()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (file, _, function), (_, _, tottime, _, _) in stats.items():
        name = f"{file}:{function}"
        if "epoll" in function:
            own["idle (waiting in epoll)"] += tottime
            continue
        area = next((a for a, marks in AREAS if any(m in name for m in marks)), "other")
        own[area] += tottime
    busy = sum(v for k, v in own.items() if not k.startswith("idle"))
    lines = [
        f"# kafka {variant}: {events} messages; {tally.rate(4):,.0f} msg/s, {tally.cpu_us(4):.0f}"
        f" µs CPU per message under cProfile; share of the loop thread's busy time:"
    ]
    for area, seconds in own.most_common():
        share = f"{100 * seconds / busy:5.1f} %" if not area.startswith("idle") else "       "
        lines.append(f"  {share}  {seconds / events * 1e6:7.1f} µs/msg  {area}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_profile", description=__doc__)
    parser.add_argument(
        "variant", choices=("raw", "bridge", "bridge_sqlite", "faststream_autocommit", "source")
    )
    parser.add_argument("--gc", choices=("tuned", "default"), default="tuned")
    parser.add_argument("--areas", action="store_true", help="cProfile: time per area")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval (s)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.variant == "source":
        cost = asyncio.run(source_cost())
        print(f"kafka source alone: {cost:.2f} µs CPU per message (accept, deliveries(), settle)")
        return
    if args.gc == "tuned":
        tune_gc()
    if args.areas:
        print(asyncio.run(areas(args.variant, args.events)))
        return
    out = args.out or RESULTS / "profiles" / f"kafka-{args.variant}.txt"
    write_profile(out, *asyncio.run(profile(args.variant, args.events, args.interval)))


if __name__ == "__main__":
    main()
