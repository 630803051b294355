"""The conformance suite every Source and Publisher runs.

A broker's test module subclasses ``SourceContract`` / ``PublisherContract`` and
provides a ``harness`` fixture implementing ``Harness`` for its transport. The
memory connector runs it in tests/unit; each real broker in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import pytest

from bridge.transport import Delivery, Publisher, Settlement, Source, StopsIntake


class Harness(Protocol):
    """What the contract needs of a transport."""

    async def new_destination(self) -> str:
        """A fresh, empty topic/queue (unique per test)."""

    def source(self, destination: str) -> Source:
        """A source consuming ``destination`` (not started)."""

    def publisher(self) -> Publisher:
        """A publisher (not started) that can send to destinations."""

    async def produce(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None = None
    ) -> None:
        """Put one message on ``destination`` with the transport's own client."""


async def take(source: Source, count: int, within: float = 30.0) -> list[Delivery]:
    """The next ``count`` deliveries of a started source (fails after ``within`` seconds)."""
    out: list[Delivery] = []
    iterator = source.deliveries().__aiter__()

    async def pull() -> None:
        while len(out) < count:
            out.append(await iterator.__anext__())

    try:
        await asyncio.wait_for(pull(), within)
    finally:
        with contextlib.suppress(Exception):
            await iterator.aclose()  # type: ignore[attr-defined]
    return out


async def nothing_within(source: Source, seconds: float) -> bool:
    """True when the source yields nothing for ``seconds``."""
    iterator = source.deliveries().__aiter__()
    try:
        await asyncio.wait_for(iterator.__anext__(), seconds)
    except TimeoutError:
        return True
    finally:
        with contextlib.suppress(Exception):
            await iterator.aclose()  # type: ignore[attr-defined]
    return False


@contextlib.asynccontextmanager
async def running(source: Source) -> AsyncIterator[Source]:
    await source.start()
    try:
        yield source
    finally:
        await source.stop(asyncio.get_running_loop().time() + 10)


def _body(delivery: Delivery) -> bytes:
    return bytes(delivery.body)


class SourceContract:
    """Every Source: delivers each message, ACK is final, RETRY_LATER redelivers."""

    settle_grace: float = 1.0  # how long after settling before a new consumer looks

    async def test_delivers_every_message(self, harness: Harness) -> None:
        dest = await harness.new_destination()
        sent = [f"m-{i}".encode() for i in range(20)]
        for body in sent:
            await harness.produce(dest, body, {"x-test": "yes"})
        async with running(harness.source(dest)) as source:
            got = await take(source, len(sent))
            for d in got:
                await d.settle(Settlement.ACK)
        assert sorted(_body(d) for d in got) == sorted(sent)
        assert all(d.headers.get("x-test") == "yes" for d in got)

    async def test_ack_is_final_and_unacked_come_back(self, harness: Harness) -> None:
        dest = await harness.new_destination()
        for i in range(10):
            await harness.produce(dest, f"n-{i}".encode(), {})
        async with running(harness.source(dest)) as source:
            got = await take(source, 10)
            acked = got[:5]
            for d in acked:
                await d.settle(Settlement.ACK)
            for d in got[5:]:
                await d.settle(Settlement.RETRY_LATER)
        await asyncio.sleep(self.settle_grace)
        async with running(harness.source(dest)) as source:
            again = await take(source, 5)
            for d in again:
                await d.settle(Settlement.ACK)
            assert await nothing_within(source, self.settle_grace)
        assert {_body(d) for d in again} == {_body(d) for d in got[5:]}

    async def test_meta_has_a_stable_message_id(self, harness: Harness) -> None:
        dest = await harness.new_destination()
        await harness.produce(dest, b"{}", {})
        async with running(harness.source(dest)) as source:
            (first,) = await take(source, 1)
            await first.settle(Settlement.RETRY_LATER)
        await asyncio.sleep(self.settle_grace)
        async with running(harness.source(dest)) as source:
            (second,) = await take(source, 1)
            await second.settle(Settlement.ACK)
        assert first.meta.get("message_id") is not None
        assert first.meta["message_id"] == second.meta["message_id"]

    async def test_stop_is_idempotent(self, harness: Harness) -> None:
        dest = await harness.new_destination()
        source = harness.source(dest)
        await source.start()
        deadline = asyncio.get_running_loop().time() + 10
        await source.stop(deadline)
        await source.stop(deadline)

    async def test_after_stop_intake_handed_out_deliveries_still_settle(
        self, harness: Harness
    ) -> None:
        """A source that receives in the background (``StopsIntake``): once its intake has
        stopped (the drain began), what it handed out can still be acked, and what arrives
        afterwards is left to the next consumer. Sources without it hold nothing back."""
        dest = await harness.new_destination()
        for i in range(3):
            await harness.produce(dest, f"a-{i}".encode(), {})
        first = harness.source(dest)
        if not isinstance(first, StopsIntake):
            pytest.skip(
                "does not apply: this source holds nothing back from other consumers beyond "
                "what its deliveries() handed out"
            )
        async with running(first):
            got = await take(first, 3)
            await first.stop_intake()
            await first.stop_intake()  # idempotent
            for i in range(3):
                await harness.produce(dest, f"b-{i}".encode(), {})
            await asyncio.sleep(self.settle_grace)
            for d in got:
                await d.settle(Settlement.ACK)
        await asyncio.sleep(self.settle_grace)
        async with running(harness.source(dest)) as source:
            again = await take(source, 3)
            for d in again:
                await d.settle(Settlement.ACK)
            assert await nothing_within(source, self.settle_grace)
        assert {_body(d) for d in again} == {f"b-{i}".encode() for i in range(3)}


class PublisherContract:
    """Every Publisher: what it publishes can be consumed back, headers intact."""

    async def test_publish_then_consume(self, harness: Harness) -> None:
        dest = await harness.new_destination()
        publisher = harness.publisher()
        start = getattr(publisher, "start", None)
        if start is not None:
            await start()
        try:
            for i in range(10):
                await publisher.publish(
                    dest,
                    f"p-{i}".encode(),
                    {"traceparent": f"00-{i:032x}-{i + 1:016x}-01"},
                    f"k{i % 3}",
                )
        finally:
            close = getattr(publisher, "close", None)
            if close is not None:
                await close()
        async with running(harness.source(dest)) as source:
            got = await take(source, 10)
            for d in got:
                await d.settle(Settlement.ACK)
        assert sorted(_body(d) for d in got) == sorted(f"p-{i}".encode() for i in range(10))
        by_body = {_body(d): d for d in got}
        for i in range(10):
            assert (
                by_body[f"p-{i}".encode()].headers.get("traceparent")
                == f"00-{i:032x}-{i + 1:016x}-01"
            )


__all__ = [
    "Harness",
    "PublisherContract",
    "SourceContract",
    "nothing_within",
    "pytest",
    "running",
    "take",
]
