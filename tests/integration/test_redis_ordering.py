"""``ordering: key`` on Redis Streams, against the real server: one entry per key at a
time in stream order while other keys run in parallel, kept across a RETRY_LATER
(the entry and those behind it go back and come again first) and across the claim of
a dead consumer's entries (a new consumer claims them before new entries of their key)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.transport import Delivery, Settlement
from connectors.redis.consume import RedisSource
from tests.contract import nothing_within, running, take
from tests.fixtures.redis import RedisAdmin
from tests.integration.test_redis import redis_config

pytestmark = pytest.mark.integration

FAST = {"claim_idle": "1s", "claim_interval": "100ms"}


def keyed(url: str, stream: str, **consume: object) -> RedisSource:
    cfg = redis_config(url, stream, ordering="key", key="field:user", **FAST, **consume)
    return RedisSource(cfg, "redis")


async def add(admin: RedisAdmin, stream: str, *bodies: str) -> None:
    """Entries ``<user><n>`` keyed by their first letter (``-`` for no key field)."""
    for body in bodies:
        headers = {} if body.startswith("-") else {"user": body[0]}
        await admin.add(stream, body.encode(), headers)


def bodies(got: list[Delivery]) -> set[str]:
    return {bytes(d.body).decode() for d in got}


async def drain(source: RedisSource, count: int, order: dict[str, list[str]]) -> None:
    """Take ``count`` deliveries one at a time, noting each key's order, and ack them."""
    for _ in range(count):
        (d,) = await take(source, 1, within=15)
        order.setdefault(d.meta["key"] or "-", []).append(bytes(d.body).decode())
        await d.settle(Settlement.ACK)


async def test_one_entry_per_key_at_a_time_while_keys_run_in_parallel(
    redis_admin: RedisAdmin,
) -> None:
    stream = redis_admin.stream()
    await add(redis_admin, stream, "a0", "a1", "b0", "a2", "b1", "-0", "-1")
    async with running(keyed(redis_admin.url, stream)) as source:
        first = await take(source, 4)
        # The head of each key, and both entries without the key field, run together.
        assert bodies(first) == {"a0", "b0", "-0", "-1"}
        assert {d.meta["key"] for d in first} == {"a", "b", None}
        assert await nothing_within(source, 0.5)  # a1 waits for a0, b1 for b0
        for d in first:
            await d.settle(Settlement.ACK)
        order: dict[str, list[str]] = {}
        second = await take(source, 2)
        assert bodies(second) == {"a1", "b1"}
        for d in second:
            await d.settle(Settlement.ACK)
        await drain(source, 1, order)
    assert order == {"a": ["a2"]}
    assert await redis_admin.pending(stream) == 0


async def test_a_key_keeps_its_order_across_a_redelivery(redis_admin: RedisAdmin) -> None:
    stream = redis_admin.stream()
    await add(redis_admin, stream, "a0", "a1", "a2", "b0")
    async with running(keyed(redis_admin.url, stream)) as source:
        first = await take(source, 2)
        assert bodies(first) == {"a0", "b0"}
        a0 = next(d for d in first if d.body == b"a0")
        await a0.settle(Settlement.RETRY_LATER)  # a1 and a2, held behind it, go back too
        await add(redis_admin, stream, "a3", "b1")
        order: dict[str, list[str]] = {}
        (again,) = await take(source, 1, within=10)
        assert again.body == b"a0"
        assert again.meta["receive_count"] == 2  # Redis's own count, kept
        order["a"] = ["a0"]
        await again.settle(Settlement.ACK)
        b0 = next(d for d in first if d.body == b"b0")
        await b0.settle(Settlement.ACK)
        await drain(source, 4, order)
    assert order == {"a": ["a0", "a1", "a2", "a3"], "b": ["b1"]}
    assert await redis_admin.pending(stream) == 0


async def test_a_key_keeps_its_order_across_the_claim_of_a_dead_consumers_entries(
    redis_admin: RedisAdmin,
) -> None:
    stream = redis_admin.stream()
    await redis_admin.group(stream)
    await add(redis_admin, stream, "a0", "a1", "b0")
    # A consumer read them and died: they stay pending under its name.
    await redis_admin.client.xreadgroup("bridge", "dead-1", {stream: ">"}, count=3)
    await add(redis_admin, stream, "a2", "c0")  # newer entries: a2 must wait for a0 and a1
    async with running(keyed(redis_admin.url, stream, consumer="alive")) as source:
        first = await take(source, 3, within=10)
        # a0 and b0 (claimed) run in parallel with c0 (new): keys run side by side.
        assert bodies(first) == {"a0", "b0", "c0"}
        assert {d.body: d.meta["receive_count"] for d in first} == {b"a0": 2, b"b0": 2, b"c0": 1}
        assert source.claimed == 3  # a0, a1, b0
        assert await nothing_within(source, 0.5)
        order = {"a": ["a0"]}
        for d in first:
            await d.settle(Settlement.ACK)
        await drain(source, 2, order)
    assert order == {"a": ["a0", "a1", "a2"]}
    assert await redis_admin.pending(stream) == 0


async def test_a_restarted_source_claims_what_its_crashed_predecessor_held_first(
    redis_admin: RedisAdmin,
) -> None:
    """The bridge's own source crashes (a new consumer name after the restart, as with the
    default ``<hostname>-<pid>``) holding a key's first entries, one of them handed out."""
    stream = redis_admin.stream()
    await add(redis_admin, stream, "a0", "a1")
    crashed = keyed(redis_admin.url, stream, consumer="first")
    await crashed.start()
    (a0,) = await take(crashed, 1)  # a0 out, a1 waiting behind it in its lane
    assert a0.body == b"a0"
    for task in [crashed._reader, *crashed._tasks]:  # a crash: nothing acked, nothing given back
        assert task is not None
        task.cancel()
    await asyncio.sleep(0.1)
    await add(redis_admin, stream, "a2")
    order: dict[str, list[str]] = {}
    async with running(keyed(redis_admin.url, stream, consumer="second")) as source:
        await drain(source, 3, order)
        assert await nothing_within(source, 0.5)
    assert crashed._redis is not None
    await crashed._redis.aclose()
    assert order == {"a": ["a0", "a1", "a2"]}
    assert await redis_admin.pending(stream) == 0
