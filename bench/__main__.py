"""``python -m bench`` (``make bench``): the whole benchmark suite in one run.

Starts Tansu (Kafka) and moto (SQS) as the tests do, uses RabbitMQ on
127.0.0.1:5672, runs every scenario with its comparisons interleaved, and writes
``latest.json``, ``latest.md`` and ``latest.png`` to ``bench/results`` (or ``--out``).

    python -m bench                  # every scenario, 3 runs each (about 20 minutes,
                                     # 10 of them the soak)
    python -m bench --quick          # tiny counts, 1 run: a smoke test, not figures
    python -m bench --only kafka,latency
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import (
    core,
    durable,
    kafka,
    ledger,
    memory,
    nats,
    rabbitmq,
    redis,
    replicas,
    report,
    soak,
    sqs,
    threads,
    tracing,
    webhook,
)
from bench.brokers import SQS_CREDENTIALS, Tansu, moto_server, rabbitmq_version
from bench.common import RESULTS, Env, machine

Scenario = Callable[[Env], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "ledger": (
        "The durable path: memory connector, ledger off / memory / SQLite / PostgreSQL",
        ledger.durable,
    ),
    "kafka": ("Kafka: bridge vs raw aiokafka vs FastStream", kafka.throughput),
    "rabbitmq": ("RabbitMQ: bridge vs raw aio-pika vs FastStream", rabbitmq.throughput),
    "sqs": ("SQS (moto): bridge vs raw aiobotocore", sqs.throughput),
    "redis": ("Redis Streams: bridge vs raw redis-py vs FastStream", redis.throughput),
    "nats": ("NATS JetStream: bridge vs raw nats-py vs FastStream", nats.throughput),
    "webhook": ("Webhook ingress: bridge inbox vs bare aiohttp", webhook.ingress),
    "latency": ("Kafka produce-to-handler latency at 1,000 msg/s", kafka.latency),
    "replicas": (
        "Replicas: 2 bridge processes, one PostgreSQL schema, one Kafka group",
        replicas.replicas,
    ),
    "tracing": ("Tracing: off / 10% / 100% sampling", tracing.sampling),
    "threads": (
        "Thread hand-off under load: a thread's lateness, with and without the nudge",
        threads.hand_off,
    ),
    "memory": ("Memory: RSS idle and under overload", memory.rss),
    "soak": ("Soak: RSS with the UI and run history on, 50-event batches to /v1/events", soak.soak),
    "width": ("Width: handlers per event 1, 4, 16, 64", core.width),
    "durable_latency": (
        "Durable path latency at 1,000 events/s (memory connector)",
        durable.latency,
    ),
}
NEEDS_KAFKA = {"kafka", "latency", "memory", "replicas"}


async def suite(env: Env, names: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        if NEEDS_KAFKA & set(names):
            tansu = Tansu()
            stack.callback(tansu.close)
            await tansu.wait()
            env.kafka_bootstrap = tansu.bootstrap
            env.extra["tansu"] = tansu
        if "sqs" in names:
            os.environ.update(SQS_CREDENTIALS)
            env.sqs_endpoint = await stack.enter_async_context(moto_server())
        if "rabbitmq" in names:
            env.extra["rabbitmq_version"] = await rabbitmq_version(env.rabbitmq_url)
        for name in names:
            title, scenario = SCENARIOS[name]
            print(f"== {name}: {title}", flush=True)
            started = time.perf_counter()
            try:
                result = await scenario(env)
            except Exception as exc:  # one broken scenario must not lose the others' figures
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}", "goals": [], "ratios": {}}
            result = {"title": title, **result, "seconds": time.perf_counter() - started}
            results[name] = result
            print(f"   ({result['seconds']:.0f} s)", flush=True)
            for line in result.get("goals", []):
                verdict = "met" if line["met"] else "NOT met"
                print(f"   {line['goal']}: {line['value']:.3g} (goal {line['target']}) {verdict}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1",
                        help="tiny counts and 1 run (also BENCH_QUICK=1)")  # fmt: skip
    parser.add_argument("--runs", type=int, help="repeats of each variant (default 3, quick 1)")
    parser.add_argument("--only", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.* go")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    runs = args.runs or (1 if args.quick else 3)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env = Env(quick=args.quick, runs=runs, workdir=Path(tmp))
        env.rabbitmq_url = os.environ.get("BENCH_RABBITMQ_URL", env.rabbitmq_url)
        described = machine()
        results = asyncio.run(suite(env, names))
    document = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "runs": runs,
        "machine": {**described, "load_average_after": list(os.getloadavg())},
        "versions": report.versions(env),
        "seconds": time.perf_counter() - started,
        "goals": [g | {"scenario": n} for n, r in results.items() for g in r.get("goals", [])],
        "scenarios": results,
    }
    paths = report.write(document, args.out, plot=not args.no_plot)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
