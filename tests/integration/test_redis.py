"""The Redis Streams connector against the real server: the Source and Publisher contract
suites, the entry mapping, the consumer group (declare, claims of a dead consumer's
entries with their delivery count, the delivery limit), lag, and the dev check."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from bridge.embedded import Brokers
from bridge.errors import BridgeError, ConnectorError, InvalidEvent
from bridge.events import EventCatalog, load_schema
from bridge.normalize import Normalizer
from bridge.transport import Settlement
from connectors import KINDS
from connectors.redis import RedisConfig, check_reachable
from connectors.redis.consume import RedisSource
from connectors.redis.publish import RedisPublisher
from tests.contract import PublisherContract, SourceContract, nothing_within, running, take
from tests.fixtures.redis import RedisAdmin
from tests.support import until

pytestmark = pytest.mark.integration


def redis_config(url: str, stream: str | None = None, **consume: Any) -> RedisConfig:
    """A connector config consuming ``stream`` in group ``bridge`` (publish-only without)."""
    data: dict[str, Any] = {"type": "redis", "url": url}
    if stream is not None:
        data["consume"] = {
            "stream": stream,
            "group": "bridge",
            "declare": True,
            "max_in_flight": 100,
            "block": "200ms",
            **consume,
        }
    return RedisConfig.model_validate(data)


class RedisHarness:
    """Streams on the real server; entries added with redis-py (``data`` + header fields)."""

    def __init__(self, admin: RedisAdmin) -> None:
        self.admin = admin

    async def new_destination(self) -> str:
        return self.admin.stream()

    def source(self, destination: str) -> RedisSource:
        return RedisSource(redis_config(self.admin.url, destination), "redis")

    def publisher(self) -> RedisPublisher:
        return RedisPublisher(redis_config(self.admin.url), "redis")

    async def produce(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None = None
    ) -> None:
        await self.admin.add(destination, body, headers)


@pytest.fixture
def harness(redis_admin: RedisAdmin) -> RedisHarness:
    return RedisHarness(redis_admin)


class TestRedisSource(SourceContract):
    settle_grace = 0.3


class TestRedisPublisher(PublisherContract):
    pass


def normalizer(cfg: RedisConfig) -> Normalizer:
    assert cfg.consume is not None
    catalog = EventCatalog({"test/*": load_schema("none")})
    return Normalizer("redis", "redis", cfg.consume.event, catalog, 1000)


# --------------------------------------------------------------------------- mapping


async def test_plain_json_fields_and_cloudevents_map_to_events(redis_admin: RedisAdmin) -> None:
    stream = redis_admin.stream()
    cfg = redis_config(redis_admin.url, stream, event={"type": "test/{data.kind}"})
    await redis_admin.add(stream, b'{"kind": "json", "n": 1}')
    await redis_admin.add(stream, None, {"kind": "fields", "n": "2"})  # no data field
    await redis_admin.add(
        stream,
        b'{"n": 3}',
        {"ce-specversion": "1.0", "ce-id": "ce-3", "ce-type": "test/binary", "ce-source": "s"},
    )
    structured = {"specversion": "1.0", "id": "ce-4", "type": "test/structured", "source": "s"}
    await redis_admin.add(stream, orjson.dumps({**structured, "data": {"n": 4}}))
    normalize = normalizer(cfg)
    async with running(RedisSource(cfg, "redis")) as source:
        got = await take(source, 4)
        events = [normalize(d) for d in got]
        for d in got:
            await d.settle(Settlement.ACK)
    assert [e.type for e in events] == [
        "test/json",
        "test/fields",
        "test/binary",
        "test/structured",
    ]
    assert [e.data["n"] for e in events] == [1, "2", 3, 4]
    assert events[2].id == "ce-3" and events[3].id == "ce-4"
    # The stable id of a plain entry: stream + entry id, as in meta.
    assert events[0].id == got[0].meta["message_id"] == f"{stream}-{got[0].meta['entry_id']}"
    assert events[0].transport["redis.receive_count"] == 1
    assert await redis_admin.pending(stream) == 0


async def test_bad_entries_are_rejected_with_a_reason_and_the_next_flows(
    redis_admin: RedisAdmin,
) -> None:
    stream = redis_admin.stream()
    cfg = redis_config(redis_admin.url, stream, event={"type": "test/item"})
    await redis_admin.add(stream, b"{not json")
    await redis_admin.add(stream, b'{"s": "\xff\xfe"}')
    await redis_admin.add(stream, b'{"big": "' + b"x" * 2000 + b'"}')
    await redis_admin.add(stream, None, {"f": b"\xff"})
    await redis_admin.add(stream, b'{"ok": true}')
    normalize = normalizer(cfg)
    reasons: list[str] = []
    async with running(RedisSource(cfg, "redis")) as source:
        for d in await take(source, 5):
            try:
                normalize(d)
                reasons.append("ok")
            except InvalidEvent as exc:
                reasons.append(exc.reason)
    assert reasons == ["malformed_json", "invalid_utf8", "too_large", "invalid_utf8", "ok"]


# --------------------------------------------------------------------------- the group


async def test_missing_group_without_declare_is_a_config_error(redis_admin: RedisAdmin) -> None:
    stream = redis_admin.stream()
    source = RedisSource(redis_config(redis_admin.url, stream, declare=False), "redis")
    with pytest.raises(ConnectorError, match="not found") as info:
        await source.start()
    assert not info.value.retriable
    await redis_admin.add(stream, b"{}")
    with pytest.raises(ConnectorError, match="group 'bridge'"):
        await source.start()


async def test_dead_consumers_entries_are_claimed_with_their_delivery_count(
    redis_admin: RedisAdmin,
) -> None:
    stream = redis_admin.stream()
    await redis_admin.group(stream)
    for i in range(5):
        await redis_admin.add(stream, f"d-{i}".encode())
    # A consumer that read the entries and died: they stay pending under its name.
    await redis_admin.client.xreadgroup("bridge", "dead-1", {stream: ">"}, count=5)
    cfg = redis_config(
        redis_admin.url, stream, consumer="alive", claim_idle="300ms", claim_interval="100ms"
    )
    async with running(RedisSource(cfg, "redis")) as source:
        got = await take(source, 5, within=10)
        for d in got:
            await d.settle(Settlement.ACK)
        assert source.claimed == 5
    assert sorted(bytes(d.body) for d in got) == [f"d-{i}".encode() for i in range(5)]
    assert {d.meta["receive_count"] for d in got} == {2}
    assert await redis_admin.pending(stream) == 0


async def test_in_flight_entries_are_not_claimed_by_another_replica(
    redis_admin: RedisAdmin,
) -> None:
    stream = redis_admin.stream()
    fast = {"claim_idle": "600ms", "claim_interval": "100ms"}
    await redis_admin.add(stream, b"slow")
    first = RedisSource(redis_config(redis_admin.url, stream, consumer="one", **fast), "redis")
    second = RedisSource(redis_config(redis_admin.url, stream, consumer="two", **fast), "redis")
    async with running(first), running(second):
        (held,) = await take(first, 1)
        # Five claim_idle periods: the upkeep keeps the entry fresh, nobody claims it.
        assert await nothing_within(second, 3.0)
        await held.settle(Settlement.ACK)
    assert await redis_admin.pending(stream) == 0


async def test_over_the_delivery_limit_is_rejected_and_acked(redis_admin: RedisAdmin) -> None:
    stream = redis_admin.stream()
    cfg = redis_config(
        redis_admin.url, stream, max_deliveries=2, claim_idle="200ms", claim_interval="50ms"
    )
    await redis_admin.add(stream, b'{"poison": true}')
    await redis_admin.add(stream, b'{"fine": true}')
    counts: list[int] = []
    async with running(RedisSource(cfg, "redis")) as source:
        iterator = source.deliveries().__aiter__()
        fine = None
        while True:  # the poison comes back after each RETRY_LATER (a crash, say)
            d = await asyncio.wait_for(iterator.__anext__(), 10)
            if d.body == b'{"fine": true}':
                fine = d
                await d.settle(Settlement.ACK)
                continue
            counts.append(d.meta["receive_count"])
            if "reject_reason" in d.meta:
                with pytest.raises(InvalidEvent, match="delivery_limit"):
                    normalizer(cfg)(d)
                await d.settle(Settlement.ACK)  # what the dispatcher does with a dead letter
                break
            await d.settle(Settlement.RETRY_LATER)
        await iterator.aclose()  # type: ignore[attr-defined]
    assert fine is not None
    assert counts == [1, 2, 3]
    assert await redis_admin.pending(stream) == 0


async def test_deleted_pending_entries_are_acked_and_skipped(redis_admin: RedisAdmin) -> None:
    stream = redis_admin.stream()
    await redis_admin.group(stream)
    gone = await redis_admin.add(stream, b"gone")
    await redis_admin.add(stream, b"kept")
    await redis_admin.client.xreadgroup("bridge", "same", {stream: ">"}, count=2)
    await redis_admin.client.xdel(stream, gone)
    cfg = redis_config(redis_admin.url, stream, consumer="same")
    async with running(RedisSource(cfg, "redis")) as source:
        (kept,) = await take(source, 1)
        await kept.settle(Settlement.ACK)
    assert kept.body == b"kept"
    assert await redis_admin.pending(stream) == 0


async def test_status_reports_group_lag(redis_admin: RedisAdmin) -> None:
    stream = redis_admin.stream()
    cfg = redis_config(
        redis_admin.url, stream, max_in_flight=2, claim_interval="100ms", claim_idle="1s"
    )
    for i in range(10):
        await redis_admin.add(stream, f"{i}".encode())
    async with running(RedisSource(cfg, "redis")) as source:
        got = await take(source, 2)  # max_in_flight: 8 undelivered + 2 pending
        await until(lambda: source.status().lag.get(stream) == 10.0, 5, "lag of 10")
        assert source.status().connected
        for d in got:
            await d.settle(Settlement.ACK)
        for _ in range(4):  # two at a time: max_in_flight
            for d in await take(source, 2):
                await d.settle(Settlement.ACK)
        await until(lambda: source.status().lag.get(stream) == 0.0, 5, "lag of 0")


# --------------------------------------------------------------------------- publish


async def test_publisher_trims_with_maxlen(redis_admin: RedisAdmin) -> None:
    stream = redis_admin.stream()
    cfg = RedisConfig.model_validate(
        {"type": "redis", "url": redis_admin.url, "publish": {"maxlen": 10, "approximate": False}}
    )
    publisher = RedisPublisher(cfg, "redis")
    await publisher.start()
    try:
        for i in range(30):
            await publisher.publish(stream, f"{i}".encode(), {"ce-id": f"e{i}"}, None)
    finally:
        await publisher.close()
    entries = await redis_admin.client.xrange(stream)
    assert len(entries) == 10
    assert entries[-1][1] == {b"ce-id": b"e29", b"data": b"29"}


async def test_unreachable_server_is_a_connector_error() -> None:
    cfg = redis_config("redis://127.0.0.1:1/0", "nowhere")
    with pytest.raises(ConnectorError, match="cannot consume"):
        await RedisSource(cfg, "redis").start()
    publisher = RedisPublisher(RedisConfig.model_validate({"url": "redis://127.0.0.1:1"}), "r")
    with pytest.raises(ConnectorError, match="XADD"):
        await publisher.publish("s", b"{}", {}, None)
    await publisher.close()


def test_dev_check_says_when_redis_cannot_be_reached(redis_url: str, tmp_path: Any) -> None:
    brokers = Brokers(tmp_path)
    check_reachable("r", RedisConfig.model_validate({"url": redis_url}), brokers)
    with pytest.raises(BridgeError, match=r"no Redis server answers at 127\.0\.0\.1:1\b"):
        check_reachable("r", RedisConfig.model_validate({"url": "redis://127.0.0.1:1"}), brokers)
    assert KINDS["redis"].embedded is check_reachable


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="needs `key: field:NAME`"):
        redis_config("redis://x", "s", ordering="key")
    with pytest.raises(ValueError, match="key is `field:NAME`"):
        redis_config("redis://x", "s", ordering="key", key="header:k")
    keyed = redis_config("redis://x", "s", ordering="partition", key="field:user")
    assert keyed.consume is not None and keyed.consume.key_field == b"user"
    with pytest.raises(ValueError, match="extra"):
        RedisConfig.model_validate({"url": "redis://x", "nope": 1})
    cfg = redis_config("redis://x", "s", max_in_flight=2000)
    assert cfg.consume is not None and cfg.consume.read_count == 500


async def test_acl_user_and_password(redis_admin: RedisAdmin) -> None:
    user = f"bridge-test-{redis_admin.token}"
    stream = redis_admin.stream()
    await redis_admin.client.execute_command(
        # The least the bridge needs, as docs/transports-redis-nats.md gives it.
        *("ACL", "SETUSER", user, "on", ">s3cret", "~test.*"),
        *("+@stream", "+ping", "+client|setname"),
    )
    try:
        cfg = redis_config(redis_admin.url, stream)
        good = cfg.model_copy(update={"username": user, "password": "s3cret"})
        await redis_admin.add(stream, b"acl")
        async with running(RedisSource(good, "redis")) as source:
            (got,) = await take(source, 1)
            await got.settle(Settlement.ACK)
        assert got.body == b"acl"
        bad = cfg.model_copy(update={"username": user, "password": "wrong"})
        with pytest.raises(ConnectorError, match="login refused") as info:
            await RedisSource(bad, "redis").start()
        assert not info.value.retriable
    finally:
        await redis_admin.client.execute_command("ACL", "DELUSER", user)


def test_tls_needs_a_rediss_url() -> None:
    cfg = RedisConfig.model_validate({"url": "redis://127.0.0.1:6379", "tls": {"verify": True}})
    with pytest.raises(ConnectorError, match="rediss://"):
        RedisPublisher(cfg, "redis")._client()


async def test_connections_killed_by_the_server_are_reopened(redis_admin: RedisAdmin) -> None:
    stream = redis_admin.stream()
    name = f"kill-{redis_admin.token}"
    cfg = redis_config(redis_admin.url, stream, claim_interval="100ms", claim_idle="1s")
    async with running(RedisSource(cfg, name)) as source:
        await redis_admin.add(stream, b"before")
        (first,) = await take(source, 1)
        await first.settle(Settlement.ACK)
        clients = await redis_admin.client.client_list()
        ours = [c["id"] for c in clients if c.get("name") == f"bridge-{name}"]
        assert ours, "the source has no connection to kill"
        for client_id in ours:
            await redis_admin.client.client_kill_filter(_id=client_id)
        for i in range(5):
            await redis_admin.add(stream, f"after-{i}".encode())
        got = await take(source, 5, within=15)
        for d in got:
            await d.settle(Settlement.ACK)
        await until(lambda: source.status().connected, 5, "connected again")
    assert sorted(bytes(d.body) for d in got) == [f"after-{i}".encode() for i in range(5)]

    async def nothing_pending() -> bool:
        return await redis_admin.pending(stream) == 0

    await until(nothing_pending, 5, "every entry acked")
