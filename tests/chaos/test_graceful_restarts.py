"""Chaos: rolling SIGTERM restarts of two ``bridge run`` replicas sharing a Kafka group,
with handlers that take 0..2 s, under a steady stream (scenario ``graceful_restarts``).

Each restart stops one replica with SIGTERM (it drains, commits, leaves the group; the
other replica's partitions are revoked, drained and committed too), then starts it
again and waits until it works before the next. Asserted with counts: 0 lost, 0
repeated executions, every exit code 0 within ``drain_timeout``, and no drain or
revoke left anything unfinished.

The replicas share a PostgreSQL store, as replicas are meant to (DESIGN §9). With a
ledger per replica, a rebalance does repeat work on the other replica: with
``ordering: key`` a revoked partition drops the messages waiting behind a busy key,
so its committed offset stops at the first of them while later offsets finish, and
the next owner runs those again (seen here: 25 repeats per handler in 3 restarts with SQLite).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.chaos.report import ChaosReport
from tests.chaos.tally import Tally
from tests.conftest import CHAOS_FULL
from tests.fixtures.kafka import KafkaAdmin, log_records
from tests.fixtures.postgres import drop_schema
from tests.support import READY_WITHIN, kafka_replicas, line_count, recorder, until

pytestmark = pytest.mark.chaos

PARTITIONS = 12
KEYS = 1_000
HANDLERS = ("fast", "sleepy")
DRAIN_TIMEOUT = 10.0


@pytest.mark.timeout(1800 if CHAOS_FULL else 150)
async def test_rolling_sigterm_restarts_lose_and_repeat_nothing(
    kafka: KafkaAdmin, postgres: str, tmp_path: Path
) -> None:
    restarts = 10 if CHAOS_FULL else 2
    rate = 60  # messages per second, steady while the restarts go on
    report = ChaosReport("graceful_restarts")
    report.extra.update(
        replicas=2,
        restarts=restarts,
        handler_seconds="0..2",
        drain_timeout=DRAIN_TIMEOUT,
        rate_per_second=rate,
        partitions=PARTITIONS,
    )
    topic = await kafka.new_topic(partitions=PARTITIONS)
    group = kafka.name("group")
    schema = f"chaos_graceful_{uuid.uuid4().hex[:8]}"
    procs = kafka_replicas(
        tmp_path,
        ("r0", "r1"),
        {"BRIDGE_CHAOS_MAX_SLEEP": "2"},
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=group,
        handlers=[
            recorder("fast", on="test/msg"),
            {
                "id": "sleepy",
                "on": "test/msg",
                "type": "python",
                "function": "tests.chaos.handlers:sleepy",
            },
        ],
        consume={"max_in_flight": 200},
        drain_timeout=f"{DRAIN_TIMEOUT:g}s",
        store=f"{postgres}?schema={schema}",
    )
    records = [p.workdir / "record.txt" for p in procs]
    produced = 0
    done_restarting = asyncio.Event()

    async def produce() -> None:
        nonlocal produced
        while not done_restarting.is_set():
            batch = [
                (f"k{n % KEYS}", orjson.dumps({"seq": n}), {})
                for n in range(produced, produced + rate // 4)
            ]
            await kafka.produce(topic, batch)
            produced += len(batch)
            await asyncio.sleep(0.25)

    exits: list[float] = []
    producer = asyncio.create_task(produce())
    try:
        for proc in procs:
            proc.start()
        await asyncio.gather(*(p.wait_ready(READY_WITHIN) for p in procs))
        await until(
            lambda: all(line_count(r) > 0 for r in records), 120, "both replicas to work", every=0.2
        )
        for n in range(restarts):
            proc = procs[n % 2]
            stopped_at = time.monotonic()
            code = await proc.stop(within=DRAIN_TIMEOUT + 30)
            exits.append(round(time.monotonic() - stopped_at, 2))
            assert code == 0, proc.log_tail()
            report.faults.append(f"SIGTERM to {proc.workdir.name} after {produced} messages")
            at = line_count(records[n % 2])
            proc.start()
            await proc.wait_ready(READY_WITHIN)
            await until(
                lambda r=records[n % 2], a=at: line_count(r) > a,  # type: ignore[misc]
                120,
                f"{proc.workdir.name} to work again",
                watch=procs,
                every=0.2,
            )
            report.recovery_seconds.append(round(time.monotonic() - stopped_at, 2))
        done_restarting.set()
        await producer
        report.sent = produced
        await until(
            lambda: Tally.of(*records).missing(HANDLERS, produced) == 0,
            300,
            "every message through every handler",
            every=1.0,
            watch=procs,
        )
        for proc in procs:
            stopped_at = time.monotonic()
            assert await proc.stop(within=DRAIN_TIMEOUT + 30) == 0
            exits.append(round(time.monotonic() - stopped_at, 2))
    finally:
        done_restarting.set()
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        for proc in procs:
            proc.kill()
        await drop_schema(schema)

    tally = Tally.of(*records)
    committed = await kafka.committed(group, topic, PARTITIONS)
    logs = [r for p in procs for r in log_records(p.log_path)]
    unfinished = [
        r
        for r in logs
        if r.get("message")
        in (
            "drain timeout: unfinished deliveries left for redelivery",
            "revoke timeout: in-flight deliveries of revoked partitions are left to "
            "their next owner",
        )
    ]
    report.delivered = tally.delivered(HANDLERS, produced)
    report.lost = tally.missing(HANDLERS, produced)
    per_handler = {h: tally.duplicates(h) for h in HANDLERS}
    report.duplicates = sum(per_handler.values())
    report.extra.update(
        exit_seconds=exits,
        duplicates_per_handler=per_handler,
        unfinished_at_drain_or_revoke=len(unfinished),
        revocations=sum(1 for r in logs if r.get("message") == "kafka partitions revoked"),
        committed=sum(v or 0 for v in committed.values()),
    )
    report.write()

    assert report.lost == 0
    assert report.duplicates == 0, per_handler
    assert all(seconds <= DRAIN_TIMEOUT for seconds in exits), exits
    assert unfinished == []
    assert report.extra["committed"] == produced
