"""`bridge run` consuming Kafka (Tansu), killed, stopped and sharing a group with another bridge.

Proves, with counts:
* SIGKILL in the middle of the stream: after a restart every message reached every
  handler (0 lost); repeated handler runs are bounded by the in-flight window.
* SIGTERM under load: the drain commits what finished; after a restart nothing ran twice.
* Two bridges in one group, one leaving and rejoining mid-stream: 0 lost, and no
  process ever committed a partition it did not own at that moment.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.conftest import CHAOS_FULL
from tests.fixtures.kafka import (
    KafkaAdmin,
    commits_outside_ownership,
    executions,
    log_records,
    runs_per,
)
from tests.support import (
    BridgeProcess,
    kafka_replicas,
    line_count,
    read_lines,
    recorder,
    recording_bridge,
    until,
    write_kafka_config,
)

pytestmark = pytest.mark.e2e

HANDLERS = ("first", "second")
MSG = "test/msg"


def messages(
    count: int, keys: int = 64, start: int = 0
) -> list[tuple[str | None, bytes, dict[str, str]]]:
    return [(f"k{i % keys}", orjson.dumps({"seq": i}), {}) for i in range(start, start + count)]


def missing(record: Path, count: int, handlers: tuple[str, ...] = HANDLERS) -> int:
    """How many (handler, message) pairs have not run yet (at least; exact once the record
    has a line per pair: parsing it sooner would only take CPU from the bridge)."""
    pairs = count * len(handlers)
    lines = line_count(record)
    if lines < pairs:
        return pairs - lines
    done = set(runs_per(record))
    return sum(1 for h in handlers for i in range(count) if (h, str(i)) not in done)


async def halfway(bridge: BridgeProcess, record: Path, total: int) -> None:
    """Wait until the started bridge is ready and has recorded ``total // 2`` runs."""
    await bridge.wait_ready()
    await until(
        lambda: line_count(record) >= total // 2,
        120,
        "progress",
        every=0.2,
        watch=[bridge],
    )


async def restart_until_done(bridge: BridgeProcess, record: Path, total: int) -> None:
    """Start the stopped bridge again and wait until every message ran on every handler."""
    bridge.start()
    await bridge.wait_ready()
    await until(
        lambda: missing(record, total) == 0, 180, "every message", every=0.2, watch=[bridge]
    )


@pytest.mark.timeout(300)
async def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka: KafkaAdmin, tmp_path: Path
) -> None:
    # The size under `make chaos`; `make test` sends 6,000: the kill lands
    # a quarter of the way through, thousands of messages from the end (checked below).
    total, max_in_flight = (20_000 if CHAOS_FULL else 6_000), 500
    topic = await kafka.new_topic(partitions=4)
    config = write_kafka_config(
        tmp_path,
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=kafka.name("group"),
        handlers=[recorder(h, on=MSG) for h in HANDLERS],
        consume={"max_in_flight": max_in_flight},
    )
    await kafka.produce(topic, messages(total))
    bridge, record = recording_bridge(config, tmp_path)
    bridge.start()
    try:
        await halfway(bridge, record, total)
        bridge.kill()
        before = len(read_lines(record))
        await restart_until_done(bridge, record, total)
    finally:
        bridge.terminate()

    runs = runs_per(record)
    assert before < total * len(HANDLERS), "the kill came after the stream had finished"
    assert any(e.generation == 2 for e in executions(record)), "the restart did no work"
    for handler in HANDLERS:
        seen = {seq for h, seq in runs if h == handler}
        assert len(seen) == total, f"{handler}: {total - len(seen)} messages lost"
        repeated = sum(n - 1 for (h, _), n in runs.items() if h == handler)
        assert repeated <= max_in_flight, f"{handler} ran {repeated} messages twice"


@pytest.mark.timeout(240)
async def test_sigterm_under_load_then_restart_runs_nothing_twice(
    kafka: KafkaAdmin, tmp_path: Path
) -> None:
    total = 6_000
    topic = await kafka.new_topic(partitions=4)
    group = kafka.name("group")
    config = write_kafka_config(
        tmp_path,
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=group,
        handlers=[recorder("first", on=MSG), recorder("second", "slow", on=MSG)],
        consume={"max_in_flight": 200},
    )
    await kafka.produce(topic, messages(total))
    bridge, record = recording_bridge(config, tmp_path, BRIDGE_TEST_SLOW_SECONDS="0.02")
    bridge.start()
    try:
        await halfway(bridge, record, total)
        assert bridge.terminate() == 0
        stopped_at = len(read_lines(record))
        await restart_until_done(bridge, record, total)
    finally:
        bridge.terminate()

    runs = runs_per(record)
    assert stopped_at < total * len(HANDLERS), "SIGTERM came after the stream had finished"
    assert sum(1 for e in executions(record) if e.generation == 2) > 0
    assert len(runs) == total * len(HANDLERS)
    twice = {pair: n for pair, n in runs.items() if n > 1}
    assert twice == {}, f"{len(twice)} runs repeated after a graceful stop"
    messages_logged = [r.get("message") for r in log_records(bridge.log_path)]
    assert "drain timeout: unfinished deliveries left for redelivery" not in messages_logged
    committed = await kafka.committed(group, topic, 4)
    assert sum(v or 0 for v in committed.values()) == total


@pytest.mark.timeout(300)
async def test_two_members_one_leaves_and_rejoins_mid_stream(
    kafka: KafkaAdmin, tmp_path: Path
) -> None:
    partitions = 4
    topic = await kafka.new_topic(partitions=partitions)
    group = kafka.name("group")
    bridges = kafka_replicas(
        tmp_path,
        ("a", "b"),
        {"BRIDGE_TEST_SLOW_SECONDS": "0.01"},
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=group,
        handlers=[recorder("first", on=MSG), recorder("second", "slow", on=MSG)],
        consume={"max_in_flight": 100},
    )
    a, b = bridges
    record_a, record_b = (p.workdir / "record.txt" for p in bridges)
    produced = 0
    enough = asyncio.Event()

    async def produce_until_enough() -> None:
        # Traffic never stops before the last membership change has been seen to work.
        nonlocal produced
        while not enough.is_set():
            await kafka.produce(topic, messages(100, start=produced))
            produced += 100
            await asyncio.sleep(0.1)

    def runs_of(record: Path, generation: int) -> int:
        return sum(1 for e in executions(record) if e.generation == generation)

    def union_missing() -> int:
        done = set(runs_per(record_a)) | set(runs_per(record_b))
        return sum(1 for h in HANDLERS for i in range(produced) if (h, str(i)) not in done)

    producer = asyncio.create_task(produce_until_enough())
    try:
        a.start()
        await a.wait_ready()
        b.start()
        await b.wait_ready()
        await until(lambda: runs_of(record_b, 1) >= 200, 60, "b to work", every=0.2, watch=[a, b])
        assert b.terminate() == 0  # b leaves the group
        left_at = len(read_lines(record_a))
        await until(
            lambda: len(read_lines(record_a)) >= left_at + 400,
            60,
            "a to go on alone",
            every=0.2,
            watch=[a],
        )
        b.start()  # b rejoins
        await b.wait_ready()
        await until(
            lambda: runs_of(record_b, 2) >= 200, 60, "b to work again", every=0.2, watch=[a, b]
        )
        enough.set()
        await producer
        await until(lambda: union_missing() == 0, 180, "every message", every=0.2, watch=[a, b])
    finally:
        producer.cancel()
        for proc in bridges:
            proc.terminate()

    for proc in bridges:
        assert commits_outside_ownership(proc.log_path) == []
    log_a = log_records(a.log_path)
    assigned = [r for r in log_a if r.get("message") == "kafka partitions assigned"]
    # b's leave and rejoin may fold into one rebalance, so a sees at least 3 assignments
    # (alone, with b, after b's leave and/or rejoin); b, started twice, saw one each time.
    assert len(assigned) >= 3, "a missed a rebalance (b joined, left and rejoined)"
    assigned_b = [
        r for r in log_records(b.log_path) if r.get("message") == "kafka partitions assigned"
    ]
    assert len(assigned_b) >= 2, "b did not take partitions both times it joined"
    assert any(r.get("reason") == "revoke" for r in log_a if r.get("message") == "kafka commit")
    committed = await kafka.committed(group, topic, partitions)
    assert sum(v or 0 for v in committed.values()) == produced
