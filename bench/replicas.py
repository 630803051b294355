"""Replicas (issue 18): two ``bridge run`` processes on one PostgreSQL schema, one Kafka
consumer group on a 4-partition topic.

Both replicas start on the empty topic and wait until the group has settled (each
logged the same generation's assignment, 2 partitions each); then ``events``
messages (``{"n": i}``, keyed over ``KEYS`` keys) are produced, and each replica's
4 handlers (``tests.apps.recorder:record``) append one line per run to the
replica's record file: the side effects counted.

Reported: the combined rate (first handler run to the last, over both replicas),
the store round trips per event (``bridge_store_round_trips_total`` scraped from
both replicas' ``/metrics`` before the messages and once every delivery is settled),
and the events lost (a (handler, n) pair never run) and duplicated (run twice).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.brokers import KEYS, PARTITIONS
from bench.common import Env, goal
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.support import BridgeProcess, kafka_connector, recorder, until, write_config

WIDTH = 4
REPLICAS = 2


def replica(root: Path, name: str, bootstrap: str, topic: str, store: str) -> BridgeProcess:
    """One replica (not started): its own directory, config and record file."""
    workdir = root / name
    workdir.mkdir(parents=True)
    config = write_config(
        workdir,
        store=store,
        drain_timeout="20s",
        telemetry={"logs": {"format": "json", "level": "INFO"}},
        connectors={
            "in": kafka_connector(
                bootstrap,
                topic,
                f"group-{topic}",
                max_in_flight=1000,
                fetch_max_wait="5ms",
                commit_interval="200ms",
            )
        },
        handlers=[recorder(f"h{n}", on="test/msg") for n in range(1, WIDTH + 1)],
    )
    return BridgeProcess(config, workdir, env={"BRIDGE_TEST_RECORD": str(workdir / "record.txt")})


def assignments(proc: BridgeProcess) -> tuple[int, list[str]] | None:
    """The replica's latest (generation, partitions) assignment, from its log."""
    latest = None
    if not proc.log_path.exists():
        return None
    for line in proc.log_path.read_bytes().splitlines():
        if b"kafka partitions assigned" in line and line.startswith(b"{"):
            record = orjson.loads(line)
            latest = (int(record.get("generation") or 0), list(record.get("partitions") or []))
    return latest


def settled_group(procs: list[BridgeProcess]) -> bool:
    """Every replica has partitions of the same generation, and together all of them."""
    seen = [assignments(p) for p in procs]
    if any(s is None or not s[1] for s in seen):
        return False
    generations = {s[0] for s in seen if s is not None}
    covered = sum(len(s[1]) for s in seen if s is not None)
    return len(generations) == 1 and covered == PARTITIONS


def lines(proc: BridgeProcess) -> int:
    path = proc.workdir / "record.txt"
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def produce(bootstrap: str, topic: str, events: int) -> float:
    """``events`` messages ``{"n": i}``; the seconds it took."""
    started = time.perf_counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, orjson.dumps({"n": n}), key=f"k{n % KEYS}".encode())
            for n in range(events)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def run_replicas(bootstrap: str, topic: str, events: int, root: Path) -> dict[str, Any]:
    """One run: two replicas on a fresh schema, ``events`` messages on ``topic``
    (``PARTITIONS`` partitions, empty); the figures and the counts of side effects."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store = f"{POSTGRES_URL}?schema={schema}"
    procs = [replica(root, f"r{i}", bootstrap, topic, store) for i in range(REPLICAS)]
    try:
        for proc in procs:  # one by one: two first migrations of one schema would race
            proc.start()
            await proc.wait_ready(120)
        await until(lambda: settled_group(procs), 120, "the group to settle", every=0.1)

        async def trips() -> float:
            return sum([await p.metric("bridge_store_round_trips_total") for p in procs])

        before = await trips()
        target = events * WIDTH
        producing = asyncio.create_task(produce(bootstrap, topic, events))
        first = last = 0.0
        deadline = time.monotonic() + max(120.0, events / 50)
        while (done := sum(lines(p) for p in procs)) < target:
            now = time.perf_counter()
            if done and not first:
                first = now
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {target} handler runs")
            for proc in procs:
                if proc.proc is not None and proc.proc.poll() is not None:
                    raise RuntimeError(f"replica exited:\n{proc.log_tail()}")
            await asyncio.sleep(0.005)
        last = time.perf_counter()
        produce_seconds = await producing

        async def idle() -> bool:
            return all([await p.metric("bridge_in_flight") == 0 for p in procs])

        for _ in range(600):  # settled: every delivery's ledger entries committed
            if await idle():
                break
            await asyncio.sleep(0.05)
        after = await trips()
    finally:
        for proc in procs:
            await proc.stop()
        await drop_schema(schema)
    runs: Counter[tuple[str, str]] = Counter()
    per_replica = []
    for proc in procs:
        path = proc.workdir / "record.txt"
        text = path.read_text() if path.exists() else ""
        mine = [line.split(" ") for line in text.splitlines()]
        per_replica.append(len(mine))
        runs.update((fields[1], fields[4]) for fields in mine)
    expected = {(f"h{h}", str(n)) for h in range(1, WIDTH + 1) for n in range(events)}
    return {
        "events": events,
        "events_per_s": events / max(last - first, 1e-9),
        "produce_seconds": produce_seconds,
        "round_trips_per_event": (after - before) / events,
        "runs_per_replica": per_replica,
        "lost": len(expected - set(runs)),
        "duplicated": sum(n - 1 for n in runs.values() if n > 1),
        "unexpected": len(set(runs) - expected),
    }


async def replicas(env: Env) -> dict[str, Any]:
    """Scenario: the combined rate of two replicas, their round trips, nothing lost or twice."""
    from bench.brokers import Tansu

    broker: Tansu = env.extra["tansu"]
    events = env.size(6_000, 400)
    outcomes = []
    for run in range(env.runs):
        topic = await broker.new_topic()
        root = Path(env.workdir) / f"replicas-{time.time_ns()}"
        outcome = await run_replicas(broker.bootstrap, topic, events, root)
        outcomes.append(outcome)
        print(
            f"  replicas run {run + 1}: {outcome['events_per_s']:,.0f} events/s,"
            f" {outcome['round_trips_per_event']:.3f} round trips/event,"
            f" runs per replica {outcome['runs_per_replica']},"
            f" lost {outcome['lost']}, duplicated {outcome['duplicated']}",
            flush=True,
        )
    rates = [o["events_per_s"] for o in outcomes]
    trips = max(o["round_trips_per_event"] for o in outcomes)
    lost = sum(o["lost"] for o in outcomes)
    duplicated = sum(o["duplicated"] for o in outcomes)
    return {
        "unit": "events/s",
        "variants": {
            "2_replicas_postgres": {
                "median": sorted(rates)[len(rates) // 2],
                "min": min(rates),
                "max": max(rates),
                "runs": len(rates),
            }
        },
        "ratios": {},
        "replicas": REPLICAS,
        "partitions": PARTITIONS,
        "handlers": WIDTH,
        "round_trips_per_event": trips,
        "lost": lost,
        "duplicated": duplicated,
        "runs": outcomes,
        "goals": [
            goal(
                "replicas: store round trips per event (2 replicas, PostgreSQL)", trips, "<=", 0.1
            ),
            goal("replicas: events lost + duplicated", float(lost + duplicated), "<=", 0.0),
        ],
    }
