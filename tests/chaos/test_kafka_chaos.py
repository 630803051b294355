"""Chaos on Kafka (Tansu): ``bridge run`` SIGKILLed at random moments, and replicas
scaled 1 -> 3 -> 1 in one consumer group, under load. Counted, reported, asserted.

Scenario 1 (``kafka_sigkill``): 0 lost; repeated executions of a handler <= kills x
``max_in_flight``; per key, the first executions follow the offsets.
Scenario 2 (``kafka_rebalance``): 0 lost; no process commits a partition it does not
own at that moment (from its ``kafka commit`` / ``assigned`` / ``released`` log lines,
a check that is shown to fail on a log that does), and the group's committed offsets
end at what was produced.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import orjson
import pytest

from tests.chaos.report import ChaosReport
from tests.chaos.tally import Tally
from tests.conftest import CHAOS_FULL
from tests.fixtures.kafka import KafkaAdmin, commits_outside_ownership, log_records
from tests.support import (
    READY_WITHIN,
    BridgeProcess,
    kafka_replicas,
    line_count,
    recorder,
    recording_bridge,
    until,
    write_kafka_config,
)

pytestmark = pytest.mark.chaos

PARTITIONS = 12
KEYS = 600
HANDLERS = ("a", "b")


def messages(start: int, stop: int) -> list[tuple[str | None, bytes, dict[str, str]]]:
    return [(key_of(n), orjson.dumps({"seq": n}), {}) for n in range(start, stop)]


def key_of(n: int) -> str:
    return f"k{n % KEYS}"


# --------------------------------------------------------------------------- 1. SIGKILL


@pytest.mark.timeout(1800 if CHAOS_FULL else 150)
async def test_sigkilled_at_random_moments_loses_nothing(kafka: KafkaAdmin, tmp_path: Path) -> None:
    # The small run: 20,000 messages, since the bridge went through 8,000 in about a second
    # (SQLite ledger, Kafka) and a kill could come after the stream had finished.
    total = 100_000 if CHAOS_FULL else 20_000
    kills = 5 if CHAOS_FULL else 2
    max_in_flight = 500
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    report = ChaosReport("kafka_sigkill", sent=total)
    report.extra.update(
        seed=seed, partitions=PARTITIONS, keys=KEYS, handlers=len(HANDLERS), kills=kills
    )
    report.extra["max_in_flight"] = max_in_flight
    topic = await kafka.new_topic(partitions=PARTITIONS)
    group = kafka.name("group")
    config = write_kafka_config(
        tmp_path,
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=group,
        handlers=[recorder(h, on="test/msg") for h in HANDLERS],
        consume={"max_in_flight": max_in_flight},
    )
    await kafka.produce(topic, messages(0, total))
    executions = total * len(HANDLERS)
    # Random moments: after a random share of the work, plus a random fraction of a second.
    # The small run's stream lasts a few seconds on an idle machine, so its moments stop
    # earlier and its fractions are shorter: a kill after the last execution kills nothing.
    # The full run's too: a fast host ran the 200,000 executions at 50,000 a second, so a
    # kill at 90 % plus half a second came after the last (its records, duplicates
    # included, 200,324); at 80 % plus a fifth of a second, up to 90 % of the work is done.
    last, pause = (0.8, 0.2) if CHAOS_FULL else (0.6, 0.1)
    points = sorted(rng.uniform(0.05, last) for _ in range(kills))
    bridge, record = recording_bridge(config, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready(READY_WITHIN)
        for point in points:
            target = int(point * executions)
            await until(
                lambda t=target: line_count(record) >= t,  # type: ignore[misc]
                600,
                f"{target} executions",
                watch=[bridge],
                every=0.2,
            )
            await asyncio.sleep(rng.uniform(0, pause))
            bridge.kill()
            killed_at, done = time.monotonic(), line_count(record)
            assert done < executions, "the kill came after the stream had finished"
            report.faults.append(f"SIGKILL after {done} of {executions} executions")
            bridge.start()
            await until(
                lambda d=done: line_count(record) > d,  # type: ignore[misc]
                120,
                "work after the restart",
                watch=[bridge],
                every=0.2,
            )
            report.recovery_seconds.append(round(time.monotonic() - killed_at, 2))
        await until(
            lambda: (
                line_count(record) >= executions and Tally.of(record).missing(HANDLERS, total) == 0
            ),
            900,
            "every message through every handler",
            every=1.0,
            watch=[bridge],
        )
        await bridge.wait_ready(READY_WITHIN)
        report.dead_lettered = len(await bridge.dead_letters(limit="1000"))
        assert bridge.terminate() == 0
    finally:
        bridge.kill()

    tally = Tally.of(record)
    committed = await kafka.committed(group, topic, PARTITIONS)
    report.delivered = tally.delivered(HANDLERS, total)
    report.lost = tally.missing(HANDLERS, total)
    per_handler = {h: tally.duplicates(h) for h in HANDLERS}
    report.duplicates = sum(per_handler.values())
    violations = {h: tally.order_violations(h, key_of) for h in HANDLERS}
    report.extra.update(
        duplicates_per_handler=per_handler,
        duplicate_bound_per_handler=kills * max_in_flight,
        order_violations=violations,
        committed=sum(v or 0 for v in committed.values()),
    )
    report.write()

    assert report.lost == 0
    for handler, repeated in per_handler.items():
        assert repeated <= kills * max_in_flight, (handler, repeated)
    assert violations == dict.fromkeys(HANDLERS, 0)
    assert report.dead_lettered == 0
    assert report.extra["committed"] == total
    generations = {line.split(" ", 1)[0] for line in record.read_text().splitlines()}
    assert generations == {str(g) for g in range(1, kills + 2)}, "a generation did no work"


# --------------------------------------------------------------------------- 2. rebalance


def test_ownership_check_catches_a_commit_after_release(tmp_path: Path) -> None:
    """The check scenario 2 relies on does fail when a commit follows a release."""
    log = tmp_path / "bridge.log"
    lines = [
        {"message": "bridge running"},
        {"message": "kafka partitions assigned", "partitions": ["t/0", "t/1"]},
        {"message": "kafka commit", "offsets": {"t/0": 3, "t/1": 4}, "reason": "interval"},
        {"message": "kafka commit", "offsets": {"t/1": 6}, "reason": "revoke"},
        {"message": "kafka partitions released", "partitions": ["t/1"]},
        {"message": "kafka commit", "offsets": {"t/0": 5, "t/1": 7}, "reason": "interval"},
        {"message": "bridge running"},
        {"message": "kafka commit", "offsets": {"t/0": 9}, "reason": "interval"},
    ]
    log.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    bad = commits_outside_ownership(log)
    assert [b["offsets"] for b in bad] == [{"t/0": 5, "t/1": 7}, {"t/0": 9}]


@pytest.mark.timeout(1800 if CHAOS_FULL else 150)
async def test_replicas_one_three_one_under_load(kafka: KafkaAdmin, tmp_path: Path) -> None:
    total = 100_000 if CHAOS_FULL else 6_000
    chunk = 500 if CHAOS_FULL else 100
    # Paced, so that the stream outlasts the scaling (one replica alone handles ~2,000/s).
    rate = 1_500 if CHAOS_FULL else 300  # messages per second
    backlog = 10_000 if CHAOS_FULL else 1_000  # produced but not yet handled, at most
    report = ChaosReport("kafka_rebalance", sent=total)
    report.extra.update(
        partitions=PARTITIONS, handlers=len(HANDLERS), replicas=[1, 3, 1], rate_per_second=rate
    )
    topic = await kafka.new_topic(partitions=PARTITIONS)
    group = kafka.name("group")
    procs = kafka_replicas(
        tmp_path,
        ("a", "b", "c"),
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=group,
        handlers=[recorder(h, on="test/msg") for h in HANDLERS],
        consume={"max_in_flight": 300, "revoke_timeout": "5s"},
    )
    a, b, c = procs
    records = [p.workdir / "record.txt" for p in procs]
    produced = 0

    def handled() -> int:
        return line_count(*records) // len(HANDLERS)

    # The stream never runs dry before a scaling step has been seen to work: past 40%
    # (then 80%) of the messages it only trickles until b and c worked (then a alone).
    scaled_up, scaled_down = asyncio.Event(), asyncio.Event()

    async def produce() -> None:
        nonlocal produced
        started = time.monotonic()
        while produced < total:
            gate = scaled_down if scaled_up.is_set() else scaled_up
            cap = total * (0.8 if scaled_up.is_set() else 0.4)
            if not gate.is_set() and produced >= cap:
                stop = min(produced + 10, total)
                await kafka.produce(topic, messages(produced, stop))
                produced = stop
                await asyncio.sleep(0.5)
                continue
            ahead = produced / rate - (time.monotonic() - started)
            if ahead > 0 or produced - handled() >= backlog:
                await asyncio.sleep(max(ahead, 0.05))
                continue
            stop = min(produced + chunk, total)
            await kafka.produce(topic, messages(produced, stop))
            produced = stop

    running: list[BridgeProcess] = []  # the replicas that should be up

    producer = asyncio.create_task(produce())
    try:
        a.start()
        running.append(a)
        await a.wait_ready(READY_WITHIN)
        await until(lambda: handled() >= total * 0.15, 600, "15% handled", watch=running, every=0.2)
        up_at = time.monotonic()
        b.start()
        c.start()
        running.extend((b, c))
        await asyncio.gather(b.wait_ready(READY_WITHIN), c.wait_ready(READY_WITHIN))
        report.faults.append(f"scaled 1 -> 3 after {handled()} messages")
        # Each new replica takes partitions and does work.
        await until(
            lambda: line_count(records[1]) > 0 and line_count(records[2]) > 0,
            120,
            "b and c to work",
            watch=running,
            every=0.2,
        )
        report.recovery_seconds.append(round(time.monotonic() - up_at, 2))
        scaled_up.set()
        await until(lambda: handled() >= total * 0.6, 600, "60% handled", watch=running, every=0.2)
        report.faults.append(f"scaled 3 -> 1 after {handled()} messages")
        down_at = time.monotonic()
        del running[1:]
        codes = await asyncio.gather(b.stop(), c.stop())
        assert codes == [0, 0]
        at_down = line_count(records[0])
        await until(
            lambda: line_count(records[0]) > at_down + 100,
            120,
            "a to go on alone",
            watch=running,
            every=0.2,
        )
        report.recovery_seconds.append(round(time.monotonic() - down_at, 2))
        scaled_down.set()
        await producer
        await until(
            lambda: handled() >= total and Tally.of(*records).missing(HANDLERS, total) == 0,
            900,
            "every message through every handler",
            every=1.0,
            watch=running,
        )
        report.dead_lettered = len(await a.dead_letters(limit="1000"))
        assert a.terminate() == 0
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        for proc in procs:
            proc.kill()

    tally = Tally.of(*records)
    committed = await kafka.committed(group, topic, PARTITIONS)
    outside = {p.workdir.name: commits_outside_ownership(p.log_path) for p in procs}
    logs = {p.workdir.name: log_records(p.log_path) for p in procs}

    def count(name: str, message: str, **match: str) -> int:
        return sum(
            1
            for r in logs[name]
            if r.get("message") == message and all(r.get(k) == v for k, v in match.items())
        )

    report.delivered = tally.delivered(HANDLERS, total)
    report.lost = tally.missing(HANDLERS, total)
    report.duplicates = sum(tally.duplicates(h) for h in HANDLERS)
    report.extra.update(
        commits_outside_ownership={k: len(v) for k, v in outside.items()},
        commits={k: count(k, "kafka commit") for k in logs},
        revoke_commits={k: count(k, "kafka commit", reason="revoke") for k in logs},
        assignments={k: count(k, "kafka partitions assigned") for k in logs},
        revocations={k: count(k, "kafka partitions revoked") for k in logs},
        committed=sum(v or 0 for v in committed.values()),
        note="duplicates are allowed here: each replica has its own SQLite ledger",
    )
    report.write()

    assert report.lost == 0
    assert outside == {"a": [], "b": [], "c": []}
    assert report.extra["committed"] == total
    assert report.dead_lettered == 0
    # The rebalances happened: a was assigned alone, with b and c, and alone again.
    assert report.extra["assignments"]["a"] >= 3
    assert report.extra["revocations"]["a"] >= 2
    assert report.extra["assignments"]["b"] >= 1 and report.extra["assignments"]["c"] >= 1
