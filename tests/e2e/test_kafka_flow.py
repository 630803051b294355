"""`bridge run` on Kafka (Tansu): ordering, poison messages, slow handlers, publish round trip.

Proves, with counts:
* ``ordering: key``: runs of one key never overlap and follow the produce order, while
  runs of different keys overlap.
* A handler that always fails on one message dead-letters it after its attempts; the
  rest of its partition (ordered by partition) is processed and committed.
* A handler slower than the session timeout (and than max_poll_interval) causes no
  rebalance: one assignment, each message run once.
* publish -> consume between two bridges keeps the trace id and the correlation id.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures.kafka import KafkaAdmin, executions, log_records
from tests.support import (
    BridgeProcess,
    read_lines,
    recorder,
    recording_bridge,
    until,
    write_kafka_config,
)

pytestmark = pytest.mark.e2e

# Handlers for these tests, written next to the config (its directory is importable).
PROBE = """
import asyncio, os

_fd = None


def _write(line):
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["PROBE_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, line.encode())


async def ordered(event, ctx):
    key = event.transport["kafka.key"]
    _write(f"start {key} {event.data['seq']}\\n")
    await asyncio.sleep(0.03)
    _write(f"end {key} {event.data['seq']}\\n")


async def trace(event, ctx):
    _write(
        f"{event.data['seq']} {event.traceparent} {event.correlationid} "
        f"{event.transport.get('kafka.key')} {event.id}\\n"
    )
"""


def probe_module(directory: Path) -> Path:
    (directory / "kafka_probe.py").write_text(PROBE)
    return directory / "probe.txt"


@pytest.mark.timeout(120)
async def test_key_order_holds_while_keys_run_concurrently(
    kafka: KafkaAdmin, tmp_path: Path
) -> None:
    keys, per_key = 8, 12
    topic = await kafka.new_topic(partitions=2)
    probe = probe_module(tmp_path)
    config = write_kafka_config(
        tmp_path,
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=kafka.name("group"),
        handlers=[
            {"id": "ordered", "on": "test/msg", "type": "python", "function": "kafka_probe:ordered"}
        ],
        consume={"ordering": "key", "max_in_flight": 100},
    )
    await kafka.produce(
        topic,
        [(f"key{n % keys}", orjson.dumps({"seq": n // keys}), {}) for n in range(keys * per_key)],
    )
    bridge = BridgeProcess(config, tmp_path, env={"PROBE_FILE": str(probe)})
    bridge.start()
    try:
        await bridge.wait_ready()
        await until(
            lambda: sum(line.startswith("end") for line in read_lines(probe)) == keys * per_key,
            60,
            "every message",
            every=0.2,
            watch=[bridge],
        )
    finally:
        bridge.terminate()

    running: dict[str, int] = {}
    started: dict[str, list[int]] = {f"key{k}": [] for k in range(keys)}
    most_keys_at_once = 0
    for line in read_lines(probe):
        what, key, seq = line.split()
        if what == "start":
            assert key not in running, f"two runs of {key} overlapped"
            running[key] = int(seq)
            started[key].append(int(seq))
            most_keys_at_once = max(most_keys_at_once, len(running))
        else:
            assert running.pop(key) == int(seq)
    assert all(seqs == list(range(per_key)) for seqs in started.values()), started
    assert most_keys_at_once >= 2, "different keys never ran concurrently"


@pytest.mark.timeout(120)
async def test_poison_message_is_dead_lettered_and_its_partition_flows_on(
    kafka: KafkaAdmin, tmp_path: Path
) -> None:
    total, poison_seq, attempts = 40, 10, 3
    topic = await kafka.new_topic(partitions=1)
    group = kafka.name("group")
    config = write_kafka_config(
        tmp_path,
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=group,
        handlers=[
            recorder(
                "picky",
                "poison",
                retry={
                    "attempts": attempts,
                    "backoff": "fixed",
                    "min_delay": "20ms",
                    "max_delay": "20ms",
                },
                on="test/msg",
            )
        ],
        consume={"ordering": "partition"},
    )
    await kafka.produce(
        topic,
        [(None, orjson.dumps({"seq": i, "poison": i == poison_seq}), {}) for i in range(total)],
    )
    bridge, record = recording_bridge(config, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready()
        await until(
            lambda: len(read_lines(record)) == total - 1 + attempts,
            60,
            "every message",
            every=0.2,
            watch=[bridge],
        )
    finally:
        assert bridge.terminate() == 0

    runs = executions(record)
    poisoned = [e for e in runs if e.extra == "poison"]
    processed = sorted(int(e.extra) for e in runs if e.extra != "poison")
    assert [e.attempt for e in poisoned] == list(range(1, attempts + 1))
    assert processed == [i for i in range(total) if i != poison_seq]
    with sqlite3.connect(tmp_path / "state.db") as db:
        letters = db.execute("SELECT handler, event_id FROM dead_letters").fetchall()
    assert letters == [("picky", f"{topic}-0-{poison_seq}")]
    assert await kafka.committed(group, topic, 1) == {0: total}


@pytest.mark.timeout(120)
async def test_handler_slower_than_session_timeout_causes_no_rebalance(
    kafka: KafkaAdmin, tmp_path: Path
) -> None:
    total = 4
    topic = await kafka.new_topic(partitions=1)
    config = write_kafka_config(
        tmp_path,
        bootstrap=kafka.bootstrap,
        topic=topic,
        group=kafka.name("group"),
        handlers=[recorder("sluggish", "slow", on="test/msg", timeout="30s")],
        consume={
            "ordering": "none",
            "max_in_flight": 2,  # the partition is paused while two 4 s runs go on
            "session_timeout": "2s",
            "heartbeat_interval": "500ms",
            "max_poll_interval": "2s",
        },
    )
    await kafka.produce(topic, [(None, orjson.dumps({"seq": i}), {}) for i in range(total)])
    bridge, record = recording_bridge(config, tmp_path, BRIDGE_TEST_SLOW_SECONDS="4")
    bridge.start()
    try:
        await bridge.wait_ready()
        await until(
            lambda: len(read_lines(record)) >= total, 60, "every message", every=0.2, watch=[bridge]
        )
    finally:
        assert bridge.terminate() == 0

    assert sorted(int(e.extra) for e in executions(record)) == list(range(total))
    messages = [r.get("message") for r in log_records(bridge.log_path)]
    assert messages.count("kafka partitions assigned") == 1
    assert messages.count("kafka partitions revoked") == 0


@pytest.mark.timeout(120)
async def test_publish_then_consume_keeps_trace_and_correlation_ids(
    kafka: KafkaAdmin, tmp_path: Path
) -> None:
    total = 50
    inbound = await kafka.new_topic(partitions=2)
    middle = await kafka.new_topic(partitions=2)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    probe = probe_module(second_dir)
    forward: dict[str, Any] = {
        "id": "forward",
        "on": "test/msg",
        "type": "publish",
        "connector": "out",
        "destination": middle,
        "key": "{data.user}",
    }
    first = write_kafka_config(
        first_dir,
        bootstrap=kafka.bootstrap,
        topic=inbound,
        group=kafka.name("group"),
        handlers=[forward],
        consume={"event": {"type": "test/msg", "correlation_id": ["header:x-correlation-id"]}},
        connectors={"out": {"type": "kafka", "bootstrap_servers": kafka.bootstrap}},
    )
    second = write_kafka_config(
        second_dir,
        bootstrap=kafka.bootstrap,
        topic=middle,
        group=kafka.name("group"),
        handlers=[
            {"id": "trace", "on": "test/msg", "type": "python", "function": "kafka_probe:trace"}
        ],
    )
    sent = {
        i: (f"{i + 1:032x}", f"{i + 7:016x}", f"corr-{i}", f"user-{i % 5}") for i in range(total)
    }
    await kafka.produce(
        inbound,
        [
            (
                None,
                orjson.dumps({"seq": i, "user": user}),
                {"traceparent": f"00-{trace}-{span}-01", "x-correlation-id": corr},
            )
            for i, (trace, span, corr, user) in sent.items()
        ],
    )
    bridges = [
        BridgeProcess(first, first_dir),
        BridgeProcess(second, second_dir, env={"PROBE_FILE": str(probe)}),
    ]
    try:
        for bridge in bridges:
            bridge.start()
        for bridge in bridges:
            await bridge.wait_ready()
        await until(
            lambda: len(read_lines(probe)) >= total, 60, "every message", every=0.2, watch=bridges
        )
    finally:
        for bridge in bridges:
            bridge.terminate()

    seen = {}
    for line in read_lines(probe):
        seq, traceparent, correlation, key, event_id = line.split()
        seen[int(seq)] = (traceparent.split("-")[1], correlation, key, event_id)
    assert len(seen) == total
    for i, (trace, _, corr, user) in sent.items():
        got_trace, got_corr, got_key, event_id = seen[i]
        assert (got_trace, got_corr, got_key) == (trace, corr, user)
        assert event_id.startswith(f"{inbound}-")  # the CloudEvent kept the first bridge's id
