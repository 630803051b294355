"""``bridge run`` stopping with a drain: when a connector fails for good mid-run (an SQS
queue deleted under it), and on SIGTERM with messages still arriving (intake stops
first). Real brokers: Tansu for Kafka, moto for SQS."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.kafka import KafkaAdmin
from tests.fixtures.sqs import SqsKit
from tests.support import (
    BridgeProcess,
    executions,
    kafka_connector,
    read_lines,
    recorder,
    recording_bridge,
    seen,
    sqs_connector,
    until,
    write_config,
)

pytestmark = pytest.mark.e2e

SLOW_SECONDS = 3.0  # the slow handler's sleep: long enough to be caught in flight


def error_lines(proc: BridgeProcess) -> list[str]:
    return [line for line in read_lines(proc.log_path) if line.startswith("error:")]


async def produce(kafka: KafkaAdmin, topic: str, keys: range) -> None:
    await kafka.produce(topic, ((f"k{n}", json.dumps({"key": n}).encode(), {}) for n in keys))


@pytest.mark.timeout(180)
async def test_a_connector_failing_for_good_drains_the_others_before_exit(
    kafka: KafkaAdmin, sqs: SqsKit, sqs_env: dict[str, str], tmp_path: Path
) -> None:
    """The SQS queue is deleted while Kafka deliveries run on a slow handler: the bridge
    exits 1 with one error line, after those runs finished and their offsets were
    committed; a restarted bridge does not run them again."""
    topic, group = await kafka.new_topic(), kafka.name("g")
    queue = await sqs.queue("doomed")
    await sqs.send(queue, [json.dumps({"key": f"sqs-{n}"}) for n in range(3)])
    first = range(10)
    await produce(kafka, topic, first)
    kafka_in = kafka_connector(kafka.bootstrap, topic, group)
    handlers = [recorder("slow", "slow", on="test/msg"), recorder("fast", on="test/item")]
    config = write_config(
        tmp_path,
        connectors={"in": kafka_in, "jobs": sqs_connector(queue)},
        handlers=handlers,
        drain_timeout="30s",
    )
    env = {**sqs_env, "BRIDGE_TEST_SLOW_SECONDS": str(SLOW_SECONDS)}
    proc, record = recording_bridge(config, tmp_path, **env)
    proc.start()
    try:
        await proc.wait_ready(60)
        await until(lambda: len(seen(record, "fast")) == 3, 30, "the SQS messages", watch=[proc])
        await proc.wait_metric("bridge_in_flight", len(first), connector="in")
        await sqs.client.delete_queue(QueueUrl=queue)
        sqs.urls.remove(queue)
        code = await proc.exited(within=60)
    finally:
        proc.kill()
    assert code == 1, proc.log_tail()
    (line,) = error_lines(proc)
    assert "SQS" in line
    # The runs in flight finished, once each, and their offsets were committed.
    assert Counter(key for _, key in executions(record)["slow"]) == {str(n): 1 for n in first}
    assert await kafka.committed(group, topic, 1) == {0: len(first)}

    # A bridge without the failed connector picks up after the committed offsets.
    second = range(10, 15)
    await produce(kafka, topic, second)
    config = write_config(
        tmp_path, connectors={"in": kafka_in}, handlers=handlers[:1], file_name="again.yaml"
    )
    again = BridgeProcess(config, tmp_path, env={**env, "BRIDGE_TEST_RECORD": str(record)})
    again.start()
    try:
        everything = {str(n) for n in (*first, *second)}
        await until(lambda: seen(record, "slow") == everything, 60, "all keys", watch=[again])
        assert await again.stop() == 0
    finally:
        again.kill()
    runs = Counter(key for _, key in executions(record)["slow"])
    assert runs == dict.fromkeys(everything, 1)  # nothing lost, nothing run twice


@pytest.mark.timeout(120)
async def test_sqs_intake_stops_when_the_drain_begins(
    sqs: SqsKit, sqs_env: dict[str, str], tmp_path: Path
) -> None:
    """Messages sent while the bridge drains are never received by it: the next consumer
    gets them as first receives."""
    queue = await sqs.queue("drain", visibility=30)
    config = write_config(
        tmp_path,
        connectors={"jobs": sqs_connector(queue)},
        handlers=[recorder("slow", "slow")],
        drain_timeout="30s",
    )
    proc, record = recording_bridge(config, tmp_path, **sqs_env, BRIDGE_TEST_SLOW_SECONDS="5")
    proc.start()
    try:
        await proc.wait_ready(60)
        await sqs.send(queue, [json.dumps({"key": f"before-{n}"}) for n in range(3)])
        await proc.wait_metric("bridge_in_flight", 3, connector="jobs")
        assert proc.proc is not None
        proc.proc.terminate()  # SIGTERM: the drain begins; the slow runs take ~5 s more
        # A long poll that was under way when the drain began may still take what comes
        # within its 2 s; after that, nothing may be received.
        await asyncio.sleep(2.5)
        await sqs.send(queue, [json.dumps({"key": f"during-{n}"}) for n in range(5)])
        assert await proc.exited(within=60) == 0  # one signal only: a second skips the drain
    finally:
        proc.kill()
    assert seen(record, "slow") == {f"before-{n}" for n in range(3)}
    response = await sqs.client.receive_message(
        QueueUrl=queue,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    messages = response.get("Messages") or []
    counts = {
        json.loads(m["Body"])["key"]: int(m["Attributes"]["ApproximateReceiveCount"])
        for m in messages
    }
    assert counts == {f"during-{n}": 1 for n in range(5)}  # ours is their first receive
