"""The inbox's source (``InboxSource``) passes the Source conformance suite.

It runs over SQLite and memory, each in both of its modes: the cursor over pending
entries that a store of one process uses, and the leased claims (``LeasedClaims``)
that a store shared by replicas uses (forced here with ``shared = True``; the
PostgreSQL replicas test covers the shared store itself).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from bridge.inbox import Inbox, InboxSource
from bridge.store import MemoryStore, SqliteStore, Store
from bridge.store.contracts import InboxEntry
from bridge.transport import Settlement
from tests.contract import SourceContract, running, take

_names = itertools.count()


class InboxHarness:
    """Destinations are names of inbox sources; each test has a store of its own."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.inbox = Inbox(store)

    async def new_destination(self) -> str:
        return f"inbox-{next(_names)}"

    def source(self, destination: str) -> InboxSource:
        return InboxSource(self.inbox, name=destination, poll_interval=0.05)

    def publisher(self) -> None:
        raise NotImplementedError("the inbox is written by Inbox.put, not by a Publisher")

    async def produce(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None = None
    ) -> None:
        # An inbox entry has no headers: what it keeps is the structured CloudEvent body.
        await self.inbox.put([InboxEntry(id=uuid.uuid4().hex, body=body, source=destination)])


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


class InboxSourceContract(SourceContract):
    settle_grace = 0.1

    @pytest.mark.skip(
        reason="does not apply: an inbox entry carries no transport headers (the event's "
        "attributes are in its structured CloudEvent body, delivered as "
        "application/cloudevents+json), so the suite's x-test header cannot come back; "
        "test_delivers_every_body checks the rest of this test"
    )
    async def test_delivers_every_message(self, harness: InboxHarness) -> None:  # type: ignore[override]
        raise AssertionError("skipped")

    async def test_delivers_every_body(self, harness: InboxHarness) -> None:
        """test_delivers_every_message without its header assertion."""
        dest = await harness.new_destination()
        sent = [f"m-{i}".encode() for i in range(20)]
        for body in sent:
            await harness.produce(dest, body, {"x-test": "yes"})
        async with running(harness.source(dest)) as source:
            got = await take(source, len(sent))
            for d in got:
                await d.settle(Settlement.ACK)
        assert sorted(bytes(d.body) for d in got) == sorted(sent)
        assert all(d.headers == {"content-type": "application/cloudevents+json"} for d in got)


class TestInboxSourceCursor(InboxSourceContract):
    """A store of one process: the source reads pending entries after a cursor."""

    @pytest.fixture
    def harness(self, store: Store) -> InboxHarness:
        return InboxHarness(store)


class TestInboxSourceLeased(InboxSourceContract):
    """A store shared by replicas: the source claims entries under a lease."""

    @pytest.fixture
    def harness(self, store: Store) -> InboxHarness:
        store.shared = True
        return InboxHarness(store)
