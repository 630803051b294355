"""The contract every Store implementation passes (memory, SQLite; PostgreSQL subclasses it)."""

from __future__ import annotations

import asyncio
import time

from bridge.store.contracts import (
    Attempt,
    Cancellation,
    DeadLetter,
    EventRecord,
    InboxEntry,
    Join,
    LedgerEntry,
    ParkedRun,
    RunRecord,
    Store,
)


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
            event_type="order/placed",
            created_at=1.0,
        )
        second = DeadLetter(reason="bad json", connector="c", body="{nope", created_at=2.0)
        await store.dead_letter_add(first)
        await store.dead_letter_add(second)
        listed = await store.dead_letters()
        assert [d.id for d in listed] == [second.id, first.id]  # newest first
        assert [d.id for d in await store.dead_letters(handler="h1")] == [first.id]
        assert [d.id for d in await store.dead_letters(event_id="e1")] == [first.id]
        assert await store.dead_letters(event_id="e2") == []
        assert [d.id for d in await store.dead_letters(event_type="order/placed")] == [first.id]
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

    async def test_inbox_done_marks_exactly_the_entries_given_in_one_call(
        self, store: Store
    ) -> None:
        """700 entries: 600 marked done in one call (every seq but each seventh), the rest
        still pending, in order."""
        entries = [InboxEntry(f"e{n}", b"{}") for n in range(700)]
        assert await store.inbox_put(entries) == [True] * 700
        pending = await store.inbox_pending(0, 1000)
        kept = [e for n, e in enumerate(pending) if n % 7 == 0][:100]
        done = [e.seq for e in pending if e not in kept]
        assert len(done) == 600
        await store.inbox_done(done)
        left = await store.inbox_pending(0, 1000)
        assert [e.id for e in left] == [e.id for e in kept]

    async def test_inbox_identity_is_the_event_source_and_id(self, store: Store) -> None:
        # CloudEvents: source + id identify an event; two producers may both send id 1.
        first = [InboxEntry("1", b"a", event_source="producer-a")]
        assert await store.inbox_put(first) == [True]
        assert await store.inbox_put([InboxEntry("1", b"b", event_source="producer-b")]) == [True]
        assert await store.inbox_put([InboxEntry("1", b"c", event_source="producer-a")]) == [False]
        both = [InboxEntry("2", b"x", event_source="s"), InboxEntry("2", b"x", event_source="s")]
        assert await store.inbox_put(both) == [True, False]
        pending = await store.inbox_pending(0, 10)
        assert [(e.id, e.body) for e in pending] == [("1", b"a"), ("1", b"b"), ("2", b"x")]
        await store.inbox_done([pending[0].seq])
        # Still known once finished: a late copy is a duplicate.
        again = [InboxEntry("1", b"d", event_source="producer-a")]
        assert await store.inbox_put(again) == [False]

    async def test_dead_letter_final_writes_the_letter_and_its_ledger_entry(
        self, store: Store
    ) -> None:
        letter = DeadLetter(reason="boom", connector="c", handler="h", event_id="e")
        await store.dead_letter_final(letter, LedgerEntry("h", "k", "e", "dead_lettered", "boom"))
        assert (await store.dead_letter_get(letter.id)) is not None
        assert await store.ledger_final([("h", "k")]) == {("h", "k"): "dead_lettered"}
        # Never over a success; without a ledger entry (ledger off), the letter alone.
        await store.ledger_record([LedgerEntry("h", "k2", "e", "succeeded")])
        await store.dead_letter_final(
            DeadLetter(reason="late", connector="c", handler="h"),
            LedgerEntry("h", "k2", "e", "dead_lettered"),
        )
        assert await store.ledger_final([("h", "k2")]) == {("h", "k2"): "succeeded"}
        alone = DeadLetter(reason="x", connector="c", handler="h")
        await store.dead_letter_final(alone, None)
        assert (await store.dead_letter_get(alone.id)) is not None

    async def test_replay_entries_carry_their_handler(self, store: Store) -> None:
        await store.inbox_put([InboxEntry("r1", b"{}", source="replay", handler="h7")])
        (entry,) = await store.inbox_pending(0, 10)
        assert (entry.source, entry.handler) == ("replay", "h7")

    async def test_ping(self, store: Store) -> None:
        assert await store.ping()

    async def test_ledger_get_returns_results(self, store: Store) -> None:
        await store.ledger_record(
            [
                LedgerEntry("h1", "k", "e", "succeeded", {"n": 1}),
                LedgerEntry("h2", "k", "e", "dead_lettered", {"error": "boom"}),
            ]
        )
        got = await store.ledger_get([("h1", "k"), ("h2", "k"), ("h3", "k")])
        assert set(got) == {("h1", "k"), ("h2", "k")}
        assert got[("h1", "k")].result == {"n": 1}
        assert got[("h2", "k")].status == "dead_lettered"
        assert got[("h2", "k")].result == {"error": "boom"}

    async def test_parked_runs_are_claimed_once_while_leased(self, store: Store) -> None:
        now = time.time()
        runs = [
            ParkedRun(
                f"p{i}", "h", {"id": f"e{i}"}, "c", 2, now - 10 + i, [Attempt(1, now, 0.1, "x")]
            )
            for i in range(5)
        ]
        runs.append(ParkedRun("later", "h", {"id": "later"}, "c", 2, now + 3600))
        await store.parked_put(runs)
        first, second = await asyncio.gather(
            store.parked_claim(now, 3, lease=60), store.parked_claim(now, 3, lease=60)
        )
        claimed = [r.id for r in first + second]
        assert sorted(claimed) == [f"p{i}" for i in range(5)]  # each once, never "later"
        assert len(set(claimed)) == 5
        got = next(r for r in first + second if r.id == "p0")
        assert got.attempt == 2 and got.attempts[0].error == "x" and got.event == {"id": "e0"}
        assert await store.parked_claim(now, 10, lease=60) == []  # all leased
        # a lease that ran out (its holder died) makes the run claimable again
        again = await store.parked_claim(now + 61, 10, lease=60)
        assert sorted(r.id for r in again) == [f"p{i}" for i in range(5)]
        await store.parked_done(["p0", "p1"])
        # parking again replaces the run and releases its lease
        await store.parked_put([ParkedRun("p2", "h", {"id": "e2"}, "c", 3, now + 100)])
        listed = await store.parked_list()
        assert [r.id for r in listed][-2:] == ["p2", "later"]
        assert {r.id for r in listed} == {"p2", "p3", "p4", "later"}
        assert next(r for r in listed if r.id == "p2").attempt == 3
        assert [r.id for r in await store.parked_claim(now + 110, 10, 60)] == ["p2"]

    async def test_steps_keep_the_first_result(self, store: Store) -> None:
        assert await store.step_get("e", "h", "charge") == (False, None)
        await store.step_put("e", "h", "charge", {"charge_id": "ch_1"})
        await store.step_put("e", "h", "charge", {"charge_id": "ch_2"})
        assert await store.step_get("e", "h", "charge") == (True, {"charge_id": "ch_1"})
        await store.step_put("e", "h", "none", None)
        assert await store.step_get("e", "h", "none") == (True, None)
        assert await store.step_get("e", "other", "charge") == (False, None)

    async def test_join_collects_members_once_and_closes_once(self, store: Store) -> None:
        now = time.time()
        join = Join("j1", "agg", {"id": "start", "data": {"n": 2}}, 2, now + 60)
        assert await store.join_open(join)
        assert not await store.join_open(join)
        assert [j.id for j in await store.join_open_list("agg")] == ["j1"]
        assert await store.join_open_list("other") == []
        got = await store.join_add("j1", "m1", {"ok": True})
        assert got is not None and got.members == {"m1": {"ok": True}}
        got = await store.join_add("j1", "m1", {"ok": False})  # a redelivered member
        assert got is not None and got.members == {"m1": {"ok": True}}
        got = await store.join_add("j1", "m2", 7)
        assert got is not None and got.members == {"m1": {"ok": True}, "m2": 7}
        assert await store.join_add("nope", "m", 1) is None
        outcome = InboxEntry(id="j1-done", body=b"{}", source="join")
        results = await asyncio.gather(
            *(store.join_close("j1", "completed", outcome) for _ in range(5))
        )
        assert results.count(True) == 1
        assert await store.join_open_list("agg") == []
        closed = await store.join_get("j1")
        assert closed is not None and closed.status == "completed"
        assert [e.id for e in await store.inbox_pending(0, 10)] == ["j1-done"]

    async def test_join_deadlines_and_buffer(self, store: Store) -> None:
        now = time.time()
        await store.join_open(Join("late", "agg", {"id": "s1"}, 3, now - 1))
        await store.join_open(Join("fresh", "agg", {"id": "s2"}, None, now + 60))
        await store.join_add("late", "m1", 1)
        due = await store.join_due(now, 10)
        assert [j.id for j in due] == ["late"] and due[0].members == {"m1": 1}
        assert await store.join_close("late", "timed_out", None)
        assert await store.join_due(now, 10) == []
        await store.join_buffer_add("agg", "b1", {"id": "b1"}, now + 30)
        await store.join_buffer_add("agg", "b1", {"id": "b1"}, now + 30)
        await store.join_buffer_add("agg", "b2", {"id": "b2"}, now - 1)
        await store.join_buffer_add("other", "b3", {"id": "b3"}, now + 30)
        assert await store.join_buffered("agg", now) == [{"id": "b1"}]
        purged = await store.join_purge(now, closed_before=now + 3600)
        assert purged == 2  # the expired buffered event and the closed join
        assert await store.join_get("late") is None
        assert await store.join_get("fresh") is not None

    async def test_cron_advances_once_per_tick(self, store: Store) -> None:
        assert await store.cron_last("digest") is None
        results = await asyncio.gather(*(store.cron_advance("digest", 100.0) for _ in range(5)))
        assert results.count(True) == 1
        assert await store.cron_last("digest") == 100.0
        assert not await store.cron_advance("digest", 50.0)
        assert await store.cron_advance("digest", 160.0)
        assert await store.cron_last("digest") == 160.0
        assert await store.cron_last("other") is None

    async def test_history_pages_filters_and_purges(self, store: Store) -> None:
        events = [
            EventRecord(
                id=f"e{i}",
                type="a/b" if i % 2 else "c/d",
                source="api",
                received_at=1000.0 + i,
                status="succeeded" if i % 3 else "partial",
                correlation_id="corr-x" if i == 4 else f"corr-{i}",
                parent_id="e0" if i in (1, 2) else None,
                event={"id": f"e{i}", "data": {"i": i}},
            )
            for i in range(10)
        ]
        runs = [
            RunRecord("e1", "h2", "dead_lettered", [Attempt(1, 1.0, 0.2, "boom")], error="boom"),
            RunRecord("e1", "h1", "running", []),
        ]
        await store.history_put(events, runs)
        await store.history_put(
            [], [RunRecord("e1", "h1", "succeeded", [], {"ok": 1}, None, ["e2"])]
        )
        page = await store.history_events(limit=4)
        assert [r.id for r in page] == ["e9", "e8", "e7", "e6"]
        page2 = await store.history_events(limit=4, before=page[-1].received_at)
        assert [r.id for r in page2] == ["e5", "e4", "e3", "e2"]
        assert [r.id for r in await store.history_events(type="a/b", limit=3)] == ["e9", "e7", "e5"]
        assert [r.id for r in await store.history_events(status="partial")] == [
            "e9",
            "e6",
            "e3",
            "e0",
        ]
        assert [r.id for r in await store.history_events(search="corr-x")] == ["e4"]
        assert [r.id for r in await store.history_events(search="e7")] == ["e7"]
        one = await store.history_event("e4")
        assert one is not None and one.event == {"id": "e4", "data": {"i": 4}}
        got = await store.history_runs("e1")
        assert [(r.handler, r.status) for r in got] == [
            ("h1", "succeeded"),
            ("h2", "dead_lettered"),
        ]
        assert got[0].result == {"ok": 1} and got[0].children == ["e2"]
        # Any status a flow control gives a run is kept, with its reason and due time.
        waiting = RunRecord("e3", "h1", "throttled", [], error="limit 5/s", due_at=1234.5)
        await store.history_put([], [waiting])
        assert await store.history_runs("e3") == [waiting]
        assert got[1].attempts[0].error == "boom"
        assert [r.id for r in await store.history_children("e0")] == ["e1", "e2"]
        kids = await store.history_children_of(["e0", "e9", "e0"])
        assert sorted(r.id for r in kids) == ["e1", "e2"]
        assert await store.history_children_of([]) == []
        # a status update replaces the record
        events[9].status = "dead_lettered"
        await store.history_put([events[9]], [])
        assert [r.id for r in await store.history_events(status="dead_lettered")] == ["e9"]
        assert await store.history_purge(older_than=1002.0, keep=5) == 5
        assert [r.id for r in await store.history_events()] == ["e9", "e8", "e7", "e6", "e5"]
        assert await store.history_runs("e1") == []

    async def test_history_runs_keep_their_due_time(self, store: Store) -> None:
        reason = "sleeping until 2026-12-03T15:00:00+00:00 (step 'nap')"
        await store.history_put(
            [EventRecord("ev", "a/b", "api", 1000.0, event={"id": "ev"})],
            [
                RunRecord("ev", "nap", "sleeping", [], None, reason, due_at=1_764_774_000.5),
                RunRecord("ev", "ok", "succeeded", [], {"ok": 1}),
            ],
        )
        got = {r.handler: r for r in await store.history_runs("ev")}
        assert (got["nap"].status, got["nap"].error) == ("sleeping", reason)
        assert got["nap"].due_at == 1_764_774_000.5
        assert got["ok"].due_at is None
        # resumed and finished: the due time goes with the state it described
        await store.history_put([], [RunRecord("ev", "nap", "succeeded", [], None)])
        assert [r.due_at for r in await store.history_runs("ev")] == [None, None]

    async def test_history_event_status_is_computed_from_all_runs_and_arrival_is_kept(
        self, store: Store
    ) -> None:
        def arrival(status: str, received_at: float, source: str) -> EventRecord:
            return EventRecord("ev", "a/b", source, received_at, status, event={"id": "ev"})

        runs = [
            RunRecord("ev", "a", "succeeded", []),
            RunRecord("ev", "b", "dead_lettered", [], error="boom"),
            RunRecord("ev", "c", "dead_lettered", [], error="boom"),
        ]
        await store.history_put([arrival("partial", 1000.0, "orders")], runs)
        # A replay of b starts: the event is running again, but it arrived when it arrived.
        await store.history_put([arrival("running", 2000.0, "api")], [])
        got = await store.history_event("ev")
        assert got is not None
        assert (got.status, got.received_at, got.source) == ("running", 1000.0, "orders")
        # The replay of b succeeds: its delivery saw only b, but c is still dead-lettered.
        await store.history_put(
            [arrival("succeeded", 2001.0, "api")], [RunRecord("ev", "b", "succeeded", [])]
        )
        got = await store.history_event("ev")
        assert got is not None
        assert (got.status, got.received_at, got.source) == ("partial", 1000.0, "orders")
        assert [r.id for r in await store.history_events(status="partial")] == ["ev"]
        assert await store.history_events(status="succeeded") == []
        assert [r.id for r in await store.history_events(before=1500.0)] == ["ev"]
        # The last dead-lettered branch succeeds on its replay: now every run has.
        await store.history_put(
            [arrival("succeeded", 2002.0, "api")], [RunRecord("ev", "c", "succeeded", [])]
        )
        got = await store.history_event("ev")
        assert got is not None and (got.status, got.received_at) == ("succeeded", 1000.0)
        assert got.runs == 3  # the handlers it ran through, counted over all stored runs
        # A dead letter that was replayed and failed again keeps the event dead-lettered.
        await store.history_put(
            [arrival("succeeded", 2003.0, "api")], [RunRecord("ev", "a", "dead_lettered", [])]
        )
        got = await store.history_event("ev")
        assert got is not None and got.status == "partial"
        # An event with no runs keeps the status it is reported with.
        await store.history_put([EventRecord("lone", "x/y", "api", 5.0, "unrouted")], [])
        lone = await store.history_event("lone")
        assert lone is not None and lone.status == "unrouted"

    async def test_inbox_claims_are_exclusive_while_leased(self, store: Store) -> None:
        await store.inbox_put([InboxEntry(f"i{n}", b"x") for n in range(6)])
        now = time.time()
        first, second = await asyncio.gather(
            store.inbox_claim(now, 4, 30.0), store.inbox_claim(now, 4, 30.0)
        )
        ids = [e.id for e in first + second]
        assert sorted(ids) == [f"i{n}" for n in range(6)] and len(set(ids)) == 6
        assert await store.inbox_claim(now, 10, 30.0) == []
        by_id = {e.id: e for e in first + second}
        await store.inbox_done([by_id["i0"].seq])
        await store.inbox_lease([by_id["i1"].seq], 0.0)  # released: claimable at once
        await store.inbox_lease([by_id["i2"].seq], now + 100)  # extended
        assert [e.id for e in await store.inbox_claim(now + 1, 10, 30.0)] == ["i1"]
        # leases that ran out (their holder died) are claimable again; done entries never
        later = await store.inbox_claim(now + 60, 10, 30.0)
        assert [e.id for e in later] == ["i1", "i3", "i4", "i5"]
        assert [e.id for e in await store.inbox_claim(now + 200, 10, 30.0)] == [
            "i1",
            "i2",
            "i3",
            "i4",
            "i5",
        ]

    async def test_parked_leases_extend_and_release(self, store: Store) -> None:
        now = time.time()
        await store.parked_put(
            [ParkedRun(f"p{i}", "h", {"id": f"e{i}"}, "c", 2, now - 1) for i in range(3)]
        )
        assert len(await store.parked_claim(now, 10, 30.0)) == 3
        await store.parked_lease(["p0"], 0.0)
        assert [r.id for r in await store.parked_claim(now, 10, 30.0)] == ["p0"]
        await store.parked_lease(None, 0.0)
        assert len(await store.parked_claim(now, 10, 30.0)) == 3
        # Parked again while its lease was being renewed: the renewal does not hold it.
        await store.parked_put([ParkedRun("p1", "h", {"id": "e1"}, "c", 3, now - 1)])
        await store.parked_lease(["p1"], now + 100)
        assert [r.id for r in await store.parked_claim(now, 10, 30.0)] == ["p1"]

    async def test_inbox_leases_act_only_for_their_owner(self, store: Store) -> None:
        """Renew, release and finish act where the claim's owner token still holds the lease."""
        await store.inbox_put([InboxEntry(f"o{n}", b"x") for n in range(3)])
        now = time.time()
        mine = {e.id: e.seq for e in await store.inbox_claim(now, 3, 30.0, "a")}
        seqs = sorted(mine.values())
        assert sorted(await store.inbox_renew(seqs, now + 30.0, "a")) == seqs
        assert await store.inbox_renew(seqs, now + 30.0, "b") == []  # not b's
        assert await store.inbox_finish([mine["o0"]], "b") == []
        assert len(await store.inbox_pending(0, 10)) == 3
        # o0's lease runs out and b takes it: a's renewals, finish and release miss it now
        taken = await store.inbox_claim(now + 61, 1, 30.0, "b")
        assert [e.id for e in taken] == ["o0"]
        stolen = taken[0].seq
        assert stolen not in await store.inbox_renew(seqs, now + 90.0, "a")
        assert await store.inbox_finish([stolen], "a") == []
        assert await store.inbox_renew([stolen], 0.0, "a") == []  # a late release
        assert await store.inbox_claim(now + 62, 10, 30.0, "c") == []  # b still holds it
        assert await store.inbox_finish([stolen], "b") == [stolen]
        assert await store.inbox_renew([stolen], now + 90.0, "b") == []  # finished
        # a releases one of its own: claimable at once
        [own] = [s for s in seqs if s != stolen][:1]
        assert await store.inbox_renew([own], 0.0, "a") == [own]
        assert [e.seq for e in await store.inbox_claim(now + 1, 10, 30.0, "c")] == [own]

    async def test_parked_leases_act_only_for_their_owner(self, store: Store) -> None:
        now = time.time()
        await store.parked_put(
            [ParkedRun(f"q{i}", "h", {"id": f"e{i}"}, "c", 2, now - 1) for i in range(2)]
        )
        assert len(await store.parked_claim(now, 10, 30.0, "a")) == 2
        assert sorted(await store.parked_renew(["q0", "q1"], now + 30.0, "a")) == ["q0", "q1"]
        assert await store.parked_renew(["q0", "q1"], now + 30.0, "b") == []
        # q0's lease runs out and b takes it: a's renewal and late release miss it
        assert [r.id for r in await store.parked_claim(now + 61, 1, 30.0, "b")] == ["q0"]
        assert await store.parked_renew(["q0", "q1"], now + 90.0, "a") == ["q1"]
        assert await store.parked_renew(["q0"], 0.0, "a") == []
        assert await store.parked_claim(now + 62, 10, 30.0, "c") == []
        # parked again (the dispatcher): its lease is released, no renewal holds it again
        await store.parked_put([ParkedRun("q1", "h", {"id": "e1"}, "c", 3, now - 1)])
        assert await store.parked_renew(["q1"], now + 90.0, "a") == []
        assert [r.id for r in await store.parked_claim(now + 1, 10, 30.0, "c")] == ["q1"]

    async def test_parked_wake_brings_due_times_forward_only(self, store: Store) -> None:
        now = time.time()
        await store.parked_put(
            [
                ParkedRun("w0", "h", {"id": "e0"}, "c", 1, now + 3600),
                ParkedRun("w1", "h", {"id": "e1"}, "c", 1, now - 100),
            ]
        )
        assert await store.parked_claim(now, 10, 30.0, "a") != []  # w1 only: w0 sleeps
        assert sorted(await store.parked_wake(["w0", "w1", "gone"], now)) == ["w0", "w1"]
        due = {r.id: r.due_at for r in await store.parked_list()}
        assert due == {"w0": now, "w1": now - 100}  # never later than it was
        # w0 is due now; w1 stays leased to a (a wake does not take a lease away)
        assert [r.id for r in await store.parked_claim(now + 1, 10, 30.0, "b")] == ["w0"]

    async def test_parked_of_lists_one_handlers_runs_due_or_not(self, store: Store) -> None:
        now = time.time()
        await store.parked_put(
            [
                ParkedRun("p0", "h", {"id": "e0"}, "c", 1, now + 3600),
                ParkedRun("p1", "h", {"id": "e1"}, "c", 2, now - 100),
                ParkedRun("p2", "other", {"id": "e2"}, "c", 1, now - 50),
            ]
        )
        assert [r.id for r in await store.parked_claim(now, 10, 30.0, "a")] == ["p1", "p2"]
        assert [(r.id, r.event) for r in await store.parked_of("h")] == [
            ("p1", {"id": "e1"}),
            ("p0", {"id": "e0"}),
        ]
        assert await store.parked_of("none") == []

    async def test_cancellations_keep_the_latest_and_expire(self, store: Store) -> None:
        now = time.time()
        await store.cancel_record(
            [
                Cancellation("h", "k1", now - 10, now + 100),
                Cancellation("h", "k2", now - 5, now + 1),
                Cancellation("other", "k1", now - 1, now + 100),
            ]
        )
        await store.cancel_record([Cancellation("h", "k1", now - 20, now + 50)])  # older
        assert await store.cancel_find("h", ["k1", "k2", "k3"], now) == {
            "k1": now - 10,
            "k2": now - 5,
        }
        await store.cancel_record([Cancellation("h", "k1", now, now + 200)])  # later
        assert await store.cancel_find("h", ["k1"], now) == {"k1": now}
        assert await store.cancel_find("h", [], now) == {}
        assert await store.cancel_purge(now + 2) == 1  # h/k2
        assert await store.cancel_find("h", ["k1", "k2"], now + 2) == {"k1": now}
        assert await store.cancel_find("other", ["k1"], now + 2) == {"k1": now - 1}

    async def test_concurrent_join_adds_see_each_other(self, store: Store) -> None:
        now = time.time()
        for n in range(20):
            await store.join_open(Join(f"j{n}", "agg", {"id": f"s{n}"}, 2, now + 60))
        results = await asyncio.gather(
            *(store.join_add(f"j{n}", m, m) for n in range(20) for m in ("a", "b"))
        )
        sizes = [len(j.members) for j in results if j is not None]
        # Whatever the interleaving, for every join one of the two adds saw both members.
        for n in range(20):
            pair = sizes[2 * n : 2 * n + 2]
            assert max(pair) == 2, (n, pair)

    async def test_collected_buffered_members_are_forgotten(self, store: Store) -> None:
        now = time.time()
        for i in ("b1", "b2"):
            await store.join_buffer_add("agg", i, {"id": i}, now + 30)
        await store.join_buffer_remove("agg", ["b1"])
        assert await store.join_buffered("agg", now) == [{"id": "b2"}]

    async def test_integers_beyond_64_bits_come_back_exact(self, store: Store) -> None:
        # JSON bounds no integer and producers send wide ones (Jackson's BigInteger,
        # Python's json); orjson alone would read them back as rounded floats.
        wide = {"big": 2**64, "low": -(2**63) - 1, "rows": [10**30, 1]}
        await store.ledger_record([LedgerEntry("h", "k", "e", "succeeded", wide)])
        got = await store.ledger_get([("h", "k")])
        assert got[("h", "k")].result == wide
        assert type(got[("h", "k")].result["low"]) is int
        letter = DeadLetter(reason="boom", connector="c", handler="h", event={"data": wide})
        await store.dead_letter_add(letter)
        stored = await store.dead_letter_get(letter.id)
        assert stored is not None and stored.event == {"data": wide}
        assert type(stored.event["data"]["big"]) is int
