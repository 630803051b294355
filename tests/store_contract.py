"""The contract every Store implementation passes (memory, SQLite; PostgreSQL subclasses it)."""

from __future__ import annotations

import asyncio
import time

from bridge.store.base import Attempt, DeadLetter, InboxEntry, LedgerEntry, Store


class StoreContract:
    """Subclass with a ``store`` fixture that yields an opened, empty store."""

    async def test_ledger_records_and_reads_final_runs(self, store: Store) -> None:
        await store.ledger_record(
            [
                LedgerEntry("h1", "k1", "e1", "succeeded", {"n": 1}),
                LedgerEntry("h2", "k1", "e1", "dead_lettered", "boom"),
            ]
        )
        found = await store.ledger_final([("h1", "k1"), ("h2", "k1"), ("h3", "k1")])
        assert found == {("h1", "k1"): "succeeded", ("h2", "k1"): "dead_lettered"}

    async def test_succeeded_is_never_overwritten_but_replaces_dead_lettered(
        self, store: Store
    ) -> None:
        await store.ledger_record([LedgerEntry("h", "k", "e", "dead_lettered")])
        await store.ledger_record([LedgerEntry("h", "k", "e", "succeeded")])
        await store.ledger_record([LedgerEntry("h", "k", "e", "dead_lettered")])
        assert await store.ledger_final([("h", "k")]) == {("h", "k"): "succeeded"}

    async def test_concurrent_ledger_writes_all_land(self, store: Store) -> None:
        await asyncio.gather(
            *(store.ledger_record([LedgerEntry("h", f"k{i}", f"e{i}")]) for i in range(300))
        )
        found = await store.ledger_final([("h", f"k{i}") for i in range(300)])
        assert len(found) == 300

    async def test_dead_letters_roundtrip_filter_and_status(self, store: Store) -> None:
        first = DeadLetter(
            reason="boom",
            connector="c",
            handler="h1",
            event={"id": "e1"},
            attempts=[Attempt(1, time.time(), 0.5, "x")],
            event_id="e1",
            created_at=1.0,
        )
        second = DeadLetter(reason="bad json", connector="c", body="{nope", created_at=2.0)
        await store.dead_letter_add(first)
        await store.dead_letter_add(second)
        listed = await store.dead_letters()
        assert [d.id for d in listed] == [second.id, first.id]  # newest first
        assert [d.id for d in await store.dead_letters(handler="h1")] == [first.id]
        got = await store.dead_letter_get(first.id)
        assert got is not None and got.attempts == first.attempts and got.event == {"id": "e1"}
        assert await store.dead_letter_set_status(first.id, "replayed")
        assert [d.id for d in await store.dead_letters(status="replayed")] == [first.id]
        assert not await store.dead_letter_set_status("nope", "discarded")
        assert await store.dead_letter_get("nope") is None

    async def test_inbox_dedupes_orders_and_completes(self, store: Store) -> None:
        fresh = await store.inbox_put(
            [InboxEntry("a", b"1"), InboxEntry("b", b"2"), InboxEntry("a", b"dup")]
        )
        assert fresh == [True, True, False]
        pending = await store.inbox_pending(0, 10)
        assert [(e.id, e.body) for e in pending] == [("a", b"1"), ("b", b"2")]
        assert pending[0].seq < pending[1].seq
        assert [e.id for e in await store.inbox_pending(pending[0].seq, 10)] == ["b"]
        await store.inbox_done([pending[0].seq])
        assert [e.id for e in await store.inbox_pending(0, 10)] == ["b"]
        # A finished id is still known: posting it again is a duplicate.
        assert await store.inbox_put([InboxEntry("a", b"again")]) == [False]
        assert await store.inbox_purge(time.time() + 1) == 1
        assert await store.inbox_put([InboxEntry("a", b"after purge")]) == [True]

    async def test_replay_entries_carry_their_handler(self, store: Store) -> None:
        await store.inbox_put([InboxEntry("r1", b"{}", source="replay", handler="h7")])
        (entry,) = await store.inbox_pending(0, 10)
        assert (entry.source, entry.handler) == ("replay", "h7")

    async def test_ping(self, store: Store) -> None:
        assert await store.ping()
