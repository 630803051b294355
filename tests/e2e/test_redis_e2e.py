"""The ``bridge`` command on the real Redis: bad entries and an entry over the delivery
limit are dead-lettered with a reason and acked while the next flows; the group's lag
reaches /metrics; entries a ``publish`` handler XADDs carry the CloudEvent as ``ce-*``
fields and the stream is trimmed to ``publish.maxlen``; ``bridge dev`` says clearly when
no Redis server answers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.fixtures.redis import RedisAdmin, redis_connector
from tests.support import (
    BridgeProcess,
    dev_output_with,
    free_port,
    recorder,
    recording_bridge,
    seen,
    until,
    write_config,
)

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(120)
async def test_bad_entries_and_the_delivery_limit_become_dead_letters(
    redis_admin: RedisAdmin, tmp_path: Path
) -> None:
    stream = redis_admin.stream("bad")
    await redis_admin.group(stream)
    # An entry a dead consumer held 10 times already: the bridge claims it as the 11th.
    poison = await redis_admin.add(stream, b'{"seq": "poison"}')
    await redis_admin.client.xreadgroup("bridge", "dead", {stream: ">"}, count=1)
    await redis_admin.client.xclaim(
        stream, "bridge", "dead", 0, [poison], idle=60_000, retrycount=10
    )
    await redis_admin.add(stream, b"{not json")
    await redis_admin.add(stream, b'{"seq": "\xff"}')
    await redis_admin.add(stream, b'{"seq": "' + b"x" * 5000 + b'"}')
    await redis_admin.add(stream, b'{"seq": 1}')
    connector = redis_connector(
        redis_admin.url,
        stream,
        max_body_bytes=4096,
        max_deliveries=10,
        claim_idle="1s",
        claim_interval="200ms",
    )
    config = write_config(tmp_path, connectors={"redis": connector}, handlers=[recorder("a")])
    proc, record = recording_bridge(config, tmp_path)
    proc.start()
    try:
        await proc.wait_ready()
        await until(lambda: seen(record, "a") == {"1"}, 30, "the good entry", watch=[proc])

        async def all_filed() -> bool:
            return len(await proc.dead_letters()) == 4

        await until(all_filed, 30, "four dead letters", watch=[proc])
        reasons = sorted(d["reason"].split(":")[0] for d in await proc.dead_letters())
        assert reasons == ["delivery_limit", "invalid_utf8", "malformed_json", "too_large"]

        async def nothing_pending() -> bool:
            return await redis_admin.pending(stream) == 0

        await until(nothing_pending, 10, "every entry acked", watch=[proc])
        lag = f'bridge_source_lag{{connector="redis",part="{stream}"}} 0'

        async def lag_shown() -> bool:
            return await proc.metrics_have(lag)

        await until(lag_shown, 10, "the group's lag of 0 in /metrics", watch=[proc])
        assert proc.terminate() == 0
    finally:
        proc.kill()


async def test_bridge_dev_says_clearly_when_no_redis_server_answers(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    connector = redis_connector(f"redis://127.0.0.1:{redis_port}/0", "s")
    config = write_config(
        tmp_path,
        connectors={"redis": connector},
        handlers=[{"id": "h", "on": "test/item", "type": "log"}],
        store="memory://",
        server={"listen": f"127.0.0.1:{port}"},
    )
    text = await dev_output_with(config, "no Redis server answers")
    assert f"127.0.0.1:{redis_port}" in text
    assert "bridge dev starts none for Redis" in text
    assert "Traceback" not in text


async def test_publish_round_trip_xadds_ce_fields_trimmed_to_maxlen(
    redis_admin: RedisAdmin, tmp_path: Path
) -> None:
    total, maxlen = 50, 20
    stream, out = redis_admin.stream("in"), redis_admin.stream("out")
    await redis_admin.group(stream)
    connector = {
        **redis_connector(redis_admin.url, stream),
        "publish": {"maxlen": maxlen, "approximate": False},
    }
    handlers = [
        {
            "id": "forward",
            "on": "test/item",
            "type": "publish",
            "connector": "redis",
            "destination": out,
        }
    ]
    config = write_config(tmp_path, connectors={"redis": connector}, handlers=handlers)
    proc = BridgeProcess(config, tmp_path)
    proc.start()
    try:
        await proc.wait_ready()
        for n in range(total):
            await redis_admin.add(stream, orjson.dumps({"seq": n}), {"x-n": str(n)})

        async def forwarded() -> bool:
            if not await redis_admin.client.exists(out):
                return False
            info = await redis_admin.client.xinfo_stream(out)
            return int(info["entries-added"]) == total  # Redis 7: every XADD, trimmed or not

        await until(forwarded, 30, "every entry forwarded", watch=[proc])
        assert proc.terminate() == 0
    finally:
        proc.kill()
    entries = await redis_admin.client.xrange(out)
    assert len(entries) == maxlen  # trimmed on every XADD
    for _, fields in entries:
        assert fields[b"ce-type"] == b"test/item"
        assert fields[b"ce-id"].startswith(stream.encode() + b"-")  # <stream>-<entry id>
        assert orjson.loads(fields[b"data"])["seq"] in range(total)
