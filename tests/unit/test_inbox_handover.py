"""The inbox hands the events a webhook just stored to delivery without decoding them again.

Counted, not timed: which deliveries carry the built event, how many wait in memory
(never more than ``HANDOVER``), and that the event the normalizer returns is the
one decoding the stored body gives.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from pydantic import BaseModel

from bridge.events import Event, EventCatalog, EventSchema
from bridge.inbox import HANDOVER, Inbox, InboxSource
from bridge.normalize import Normalizer, with_transport
from bridge.store import SqliteStore
from bridge.store.contracts import InboxEntry
from bridge.transport import Delivery, EventMapping, Settlement


class Row(BaseModel):
    id: int
    email: str


CATALOG = EventCatalog({"db/users.insert": EventSchema("Row", Row.model_validate, Row)})


def event(n: int) -> Event[Row]:
    data = Row(id=n, email=f"user{n}@example.com")
    return Event(id=f"e{n}", source="bridge://hooks", type="db/users.insert", data=data,
                 time="2026-12-03T00:00:00Z", correlationid=f"e{n}")  # fmt: skip


async def read(source: InboxSource, count: int) -> list[Delivery]:
    out: list[Delivery] = []
    stream = source.deliveries()
    while len(out) < count:
        out.append(await asyncio.wait_for(anext(stream), 10))
    await stream.aclose()  # type: ignore[attr-defined]
    return out


async def test_new_events_are_handed_over_once_and_normalize_as_their_bodies(
    tmp_path: Path,
) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        inbox = Inbox(store)
        events = [event(n) for n in range(10)]
        assert await inbox.put_events(events[:5], "hooks", handover=True) == [True] * 5
        # A duplicate is not new: nothing more is held for it.
        assert await inbox.put_events([events[0], *events[5:]], "hooks", handover=True) == [
            False,
            *[True] * 5,
        ]
        assert inbox.held == 10
        # Emitted events (handover off) and a replay entry are decoded from their bodies.
        await inbox.put_events([event(100)], "emit")
        replay = event(200)
        await inbox.put([InboxEntry(replay.id, replay.to_json(), "replay", "h", 0.0, 0, "x")])
        assert inbox.held == 10
        source = InboxSource(inbox, name="api", poll_interval=0.05)
        await source.start()
        deliveries = await read(source, 12)
        assert [d.event is not None for d in deliveries] == [True] * 10 + [False, False]
        assert [d.event for d in deliveries[:10]] == events
        assert inbox.held == 0
        normalize = Normalizer("api", "inbox", EventMapping(), CATALOG, 1_000_000)
        for d in deliveries[:10]:
            decoded = normalize(Delivery(d.body, d.headers, d.meta))  # without the hand-over
            handed = normalize(d)
            assert handed == decoded
            assert handed.transport["inbox.seq"] == d.meta["seq"]
        for d in deliveries:
            await d.settle(Settlement.ACK)
    finally:
        await store.close()


async def test_what_waits_in_memory_is_bounded_and_the_oldest_is_decoded_instead(
    tmp_path: Path,
) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        inbox = Inbox(store)
        total = HANDOVER + 300
        for start in range(0, total, 100):  # no reader: a burst the handlers drain later
            batch = [event(n) for n in range(start, min(start + 100, total))]
            await inbox.put_events(batch, "hooks", handover=True)
            assert inbox.held <= HANDOVER
        assert inbox.held == HANDOVER
        source = InboxSource(inbox, name="api", poll_interval=0.05)
        await source.start()
        deliveries = await read(source, total)
        handed = [d.event is not None for d in deliveries]
        assert handed == [False] * 300 + [True] * HANDOVER  # the oldest 300 were forgotten
        assert inbox.held == 0
        normalize = Normalizer("api", "inbox", EventMapping(), CATALOG, 1_000_000)
        assert [normalize(d).data for d in deliveries] == [event(n).data for n in range(total)]
    finally:
        await store.close()


def test_a_handed_over_event_keeps_every_attribute_but_its_transport() -> None:
    """``with_transport`` (the hand-over's copy) is ``replace(transport=...)``: every other
    field carried, each one set to a value of its own so a field left out shows."""
    values = {f.name: f"value of {f.name}" for f in dataclasses.fields(Event)}
    full = Event(**{**values, "extensions": {"ext": "x"}, "transport": {"old": 1}})
    copied = with_transport(full, {"inbox.seq": 7})
    assert copied == dataclasses.replace(full, transport={"inbox.seq": 7})
    assert copied.transport == {"inbox.seq": 7} and full.transport == {"old": 1}
