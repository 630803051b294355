"""`bridge run` reading Kafka topics that librdkafka (``confluent-kafka``) wrote compressed.

Proves, with counts:
* every codec a producer may choose (none, gzip, snappy, lz4, zstd) is read: 50
  messages per codec, one topic each in one connector, give exactly 50 runs per codec;
* a codec that is unavailable (its library made missing in the bridge process) stops
  only its topic: every message of the other topic of the same connector runs, also
  those produced after the block; /readyz stays 200 and names the topic, offset and
  codec; the log names the topic; nothing of the blocked topic is committed; restarted
  with the codec, the bridge runs each of its messages exactly once and nothing of the
  other topic again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fixtures import librdkafka
from tests.fixtures.kafka import KafkaAdmin, log_records
from tests.support import (
    BridgeProcess,
    kafka_connector,
    read_lines,
    recorder,
    recording_bridge,
    until,
    write_config,
)

pytestmark = pytest.mark.e2e

PER_CODEC = 50

# Imported by the bridge as a handler module: the process then lacks zstd, as a machine
# without the codec's library would (the broker and the data are untouched).
NO_ZSTD = """
import aiokafka.codec

aiokafka.codec.has_zstd = lambda: False

from tests.apps.recorder import record  # noqa: E402,F401
"""


def runs(record: Path) -> Counter[str]:
    """How many times each data key ran (every handler of these tests records its key)."""
    return Counter(line.rsplit(" ", 1)[1] for line in read_lines(record))


def config(
    directory: Path, bootstrap: str, topics: list[str], group: str, function: str | None = None
) -> Path:
    """One Kafka connector over ``topics``, one recorder (``function``: another module's)."""
    connector: dict[str, Any] = kafka_connector(bootstrap, topics[0], group, topics=topics)
    handler = recorder("rec", on="test/msg")
    if function is not None:
        handler["function"] = function
    return write_config(
        directory,
        handlers=[handler],
        connectors={"in": connector},
        drain_timeout="20s",
        telemetry={"logs": {"format": "json", "level": "INFO"}},
    )


async def readyz(bridge: BridgeProcess) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{bridge.url}/readyz") as resp:
        return resp.status, await resp.json()


@pytest.mark.timeout(180)
async def test_every_codec_of_a_librdkafka_producer_is_read(
    kafka: KafkaAdmin, tmp_path: Path
) -> None:
    topics = {codec: await kafka.new_topic(prefix=codec) for codec in librdkafka.CODECS}
    for codec, topic in topics.items():
        messages = [
            (f"k{n}".encode(), orjson.dumps({"key": f"{codec}-{n}"})) for n in range(PER_CODEC)
        ]
        produced = await asyncio.to_thread(
            librdkafka.produce, kafka.bootstrap, topic, messages, codec
        )
        assert produced == PER_CODEC
    path = config(tmp_path, kafka.bootstrap, list(topics.values()), kafka.name("group"))
    bridge, record = recording_bridge(path, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready()
        total = PER_CODEC * len(topics)
        await until(
            lambda: sum(runs(record).values()) >= total, 60, "every message", watch=[bridge]
        )
        await asyncio.sleep(1.0)  # a repeat would show up by now
    finally:
        assert await bridge.stop() == 0

    counted = runs(record)
    per_codec = Counter(key.split("-")[0] for key in counted.elements())
    assert per_codec == dict.fromkeys(librdkafka.CODECS, PER_CODEC), per_codec
    assert set(counted.values()) == {1}, "a message ran more than once"


@pytest.mark.timeout(180)
async def test_an_unavailable_codec_stops_only_its_topic(kafka: KafkaAdmin, tmp_path: Path) -> None:
    zstd, plain = await kafka.new_topic(prefix="zstd"), await kafka.new_topic(prefix="plain")
    group = kafka.name("group")
    await asyncio.to_thread(
        librdkafka.produce,
        kafka.bootstrap,
        zstd,
        [(None, orjson.dumps({"key": f"zstd-{n}"})) for n in range(PER_CODEC)],
        "zstd",
    )
    await kafka.produce(
        plain, [(None, orjson.dumps({"key": f"plain-{n}"}), {}) for n in range(PER_CODEC)]
    )
    (tmp_path / "no_zstd.py").write_text(NO_ZSTD)
    path = config(tmp_path, kafka.bootstrap, [zstd, plain], group, "no_zstd:record")
    bridge, record = recording_bridge(path, tmp_path)
    plain_keys = {f"plain-{n}" for n in range(PER_CODEC + 20)}
    bridge.start()
    try:
        await bridge.wait_ready()

        async def blocked() -> bool:
            _, body = await readyz(bridge)
            return "blocked" in body["connectors"]["in"]["detail"]

        await until(blocked, 60, "/readyz names the blocked topic", watch=[bridge])
        # the other topic keeps flowing after the block
        await kafka.produce(
            plain,
            [
                (None, orjson.dumps({"key": f"plain-{n}"}), {})
                for n in range(PER_CODEC, PER_CODEC + 20)
            ],
        )
        await until(
            lambda: set(runs(record)) >= plain_keys, 60, "every plain message", watch=[bridge]
        )
        status, body = await readyz(bridge)
        assert status == 200 and body["ready"], body
        detail = body["connectors"]["in"]["detail"]
        assert f"{zstd}/0: batch at offset 0 cannot be decoded" in detail, detail
        assert "zstd compression codec not found" in detail, detail
        await asyncio.sleep(1.5)  # three commit intervals
    finally:
        assert await bridge.stop() == 0

    first = runs(record)
    assert first == dict.fromkeys(plain_keys, 1), "the plain topic ran other than once each"
    assert await kafka.committed(group, zstd, 1) == {0: None}
    assert await kafka.committed(group, plain, 1) == {0: PER_CODEC + 20}
    stopped = [r for r in log_records(bridge.log_path) if r.get("topic") == zstd]
    assert stopped and "cannot be decoded" in stopped[0]["message"], stopped

    # The codec is back: the same group reads the zstd topic from where it stood.
    config(tmp_path, kafka.bootstrap, [zstd, plain], group)
    bridge.start()
    zstd_keys = {f"zstd-{n}" for n in range(PER_CODEC)}
    try:
        await bridge.wait_ready()
        await until(
            lambda: set(runs(record)) >= zstd_keys, 60, "every zstd message", watch=[bridge]
        )
        await asyncio.sleep(1.0)
    finally:
        assert await bridge.stop() == 0
    assert runs(record) == dict.fromkeys(plain_keys | zstd_keys, 1)
