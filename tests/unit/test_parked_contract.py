"""The scheduler's source of parked runs (``ParkedSource``) passes the Source conformance suite.

It runs over SQLite and memory, as a store of one process (the source releases
every lease on start) and as a store shared by replicas (``shared = True``: leases
are kept), both through ``LeasedClaims``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import orjson
import pytest

from bridge.scheduler import ParkedSource
from bridge.store import MemoryStore, SqliteStore, Store
from bridge.store.contracts import ParkedRun
from bridge.transport import Delivery, Settlement
from tests.contract import SourceContract, nothing_within, running, take

_names = itertools.count()


class ParkedHarness:
    """A destination is a handler; producing parks a run of it, due now."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def new_destination(self) -> str:
        return f"handler-{next(_names)}"

    def source(self, destination: str) -> ParkedSource:
        return ParkedSource(self.store, poll_interval=0.05)

    def publisher(self) -> None:
        raise NotImplementedError("runs are parked by the dispatcher, not by a Publisher")

    async def produce(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None = None
    ) -> None:
        # A parked run keeps an event (a JSON object), not raw bytes and headers: the body
        # becomes the event's data.
        event_id = uuid.uuid4().hex
        event = {"id": event_id, "type": "test", "source": "test", "data": body.decode()}
        run = ParkedRun(
            id=f"{event_id}:{destination}",
            handler=destination,
            event=event,
            connector="test",
            attempt=2,
            due_at=time.time() - 1.0,
        )
        await self.store.parked_put([run])

    async def forget(self, delivery: Delivery) -> None:
        """What the dispatcher does before it settles a parked run that became final."""
        await self.store.parked_done([delivery.meta["parked_id"]])


def _data(delivery: Delivery) -> bytes:
    data: str = orjson.loads(bytes(delivery.body))["data"]
    return data.encode()


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store: Store = (
        SqliteStore(f"sqlite:///{tmp_path}/state.db")
        if request.param == "sqlite"
        else MemoryStore()
    )
    await store.open()
    yield store
    await store.close()


class ParkedSourceContract(SourceContract):
    settle_grace = 0.1

    @pytest.mark.skip(
        reason="does not apply: a parked run is an event, not a raw message; its delivery's "
        "body is the event as JSON and it has no transport headers, so the suite's raw "
        "bodies and x-test header cannot come back as sent; test_delivers_every_run checks "
        "the rest of this test on the events' data"
    )
    async def test_delivers_every_message(self, harness: ParkedHarness) -> None:  # type: ignore[override]
        raise AssertionError("skipped")

    @pytest.mark.skip(
        reason="does not apply as written: ACK does not forget a parked run, the dispatcher "
        "does (parked_done, or parks it again) before it settles; a new ParkedSource on a "
        "store of one process releases every lease on start, so an ACKed run the dispatcher "
        "did not forget is taken again. test_forgotten_runs_are_final_and_unacked_come_back "
        "runs this test with the dispatcher's part"
    )
    async def test_ack_is_final_and_unacked_come_back(self, harness: ParkedHarness) -> None:  # type: ignore[override]
        raise AssertionError("skipped")

    async def test_delivers_every_run(self, harness: ParkedHarness) -> None:
        """test_delivers_every_message on the events' data, without its header assertion."""
        dest = await harness.new_destination()
        sent = [f"m-{i}".encode() for i in range(20)]
        for body in sent:
            await harness.produce(dest, body, {"x-test": "yes"})
        async with running(harness.source(dest)) as source:
            got = await take(source, len(sent))
            for d in got:
                await harness.forget(d)
                await d.settle(Settlement.ACK)
        assert sorted(_data(d) for d in got) == sorted(sent)
        assert all(d.meta["replay_handler"] == dest for d in got)

    async def test_forgotten_runs_are_final_and_unacked_come_back(
        self, harness: ParkedHarness
    ) -> None:
        """test_ack_is_final_and_unacked_come_back, with the dispatcher's parked_done."""
        dest = await harness.new_destination()
        for i in range(10):
            await harness.produce(dest, f"n-{i}".encode(), {})
        async with running(harness.source(dest)) as source:
            got = await take(source, 10)
            for d in got[:5]:
                await harness.forget(d)
                await d.settle(Settlement.ACK)
            for d in got[5:]:
                await d.settle(Settlement.RETRY_LATER)
        await asyncio.sleep(self.settle_grace)
        async with running(harness.source(dest)) as source:
            again = await take(source, 5)
            for d in again:
                await harness.forget(d)
                await d.settle(Settlement.ACK)
            assert await nothing_within(source, self.settle_grace)
        assert {_data(d) for d in again} == {_data(d) for d in got[5:]}


class TestParkedSourceOneProcess(ParkedSourceContract):
    """A store of one process: leases left by an earlier source are released on start."""

    @pytest.fixture
    def harness(self, store: Store) -> ParkedHarness:
        return ParkedHarness(store)


class TestParkedSourceShared(ParkedSourceContract):
    """A store shared by replicas: leases are kept across sources."""

    @pytest.fixture
    def harness(self, store: Store) -> ParkedHarness:
        store.shared = True
        return ParkedHarness(store)
