"""The flow-state contract (``FlowState``) every store passes: memory, SQLite, PostgreSQL."""

from __future__ import annotations

import asyncio

from bridge.store.contracts import Store


class FlowStateContract:
    """Subclass with a ``store`` fixture that yields an opened, empty store."""

    async def test_idempotency_keys_are_taken_once_per_ttl(self, store: Store) -> None:
        assert await store.flow_once("h", ["a", "b", "a"], 100.0, 10.0) == [True, True, False]
        assert await store.flow_once("h", ["a"], 105.0, 10.0) == [False]
        assert await store.flow_once("other", ["a"], 105.0, 10.0) == [True]
        assert await store.flow_once("h", ["a"], 110.0, 10.0) == [True]  # the ttl ended

    async def test_gcra_gives_each_start_time_once_in_order(self, store: Store) -> None:
        # 2 per second with a burst of 1: two at once, then one every half second.
        first = await store.flow_gcra("h", "k", 100.0, 0.5, 0.5, 3)
        second = await store.flow_gcra("h", "k", 100.0, 0.5, 0.5, 2)
        assert first == [100.0, 100.0, 100.5]
        assert second == [101.0, 101.5]
        assert await store.flow_gcra("h", "other", 100.0, 0.5, 0.5, 1) == [100.0]
        # Idle long enough, a key starts again from now.
        assert await store.flow_gcra("h", "k", 200.0, 0.5, 0.5, 1) == [200.0]

    async def test_a_late_clock_reading_never_starts_before_an_earlier_given_start(
        self, store: Store
    ) -> None:
        # Replicas read their clocks, then reach the store in another order.
        assert await store.flow_gcra("h", "k", 10.0, 1.0, 2.0, 1) == [10.0]
        assert await store.flow_gcra("h", "k", 9.0, 1.0, 2.0, 2) == [10.0, 10.0]

    async def test_concurrent_gcra_reservations_never_share_a_start(self, store: Store) -> None:
        got = await asyncio.gather(
            *(store.flow_gcra("h", "k", 0.0, 1.0, 0.0, 2) for _ in range(10))
        )
        times = sorted(t for batch in got for t in batch)
        assert times == [float(i) for i in range(20)]

    async def test_window_admits_at_most_the_limit_in_any_window(self, store: Store) -> None:
        assert await store.flow_window("h", "k", 10.0, 1.0, 3, 2) == 2
        assert await store.flow_window("h", "k", 10.5, 1.0, 3, 2) == 1
        assert await store.flow_window("h", "k", 10.9, 1.0, 3, 5) == 0
        assert await store.flow_window("h", "k", 11.0, 1.0, 3, 5) == 2  # t=10 left the window
        assert await store.flow_window("h", "x", 11.0, 1.0, 3, 1) == 1

    async def test_debounce_fires_the_last_event_once_after_the_quiet_period(
        self, store: Store
    ) -> None:
        assert await store.flow_debounce("h", "k", "e1", 0.0, 0.0, 5.0, None) == ("e1", 5.0)
        assert await store.flow_debounce("h", "k", "e2", 2.0, 2.0, 5.0, None) == ("e2", 7.0)
        assert await store.flow_debounce_fire("h", "k", "e1", 7.0) == ("superseded", 0.0)
        assert await store.flow_debounce_fire("h", "k", "e2", 6.0) == ("wait", 7.0)
        assert await store.flow_debounce_fire("h", "k", "e2", 7.0) == ("fire", 0.0)
        # Fired: the same event fires again (its run was killed after the fire and
        # resumes); an earlier event stays superseded.
        assert await store.flow_debounce_fire("h", "k", "e2", 9.0) == ("fire", 0.0)
        assert await store.flow_debounce_fire("h", "k", "e1", 9.0) == ("superseded", 0.0)
        assert await store.flow_debounce("h", "k", "e0", 1.0, 8.0, 5.0, None) == ("e2", -1.0)
        # A new window after the fire: its own first event.
        assert await store.flow_debounce("h", "k", "e3", 8.0, 8.0, 5.0, 6.0) == ("e3", 13.0)

    async def test_an_event_of_an_earlier_time_does_not_supersede_the_latest(
        self, store: Store
    ) -> None:
        # e2 (time 2) reaches a replica before e1 (time 1) reaches another.
        assert await store.flow_debounce("h", "k", "e2", 2.0, 3.0, 5.0, None) == ("e2", 8.0)
        assert await store.flow_debounce("h", "k", "e1", 1.0, 4.0, 5.0, None) == ("e2", 8.0)
        assert await store.flow_debounce_fire("h", "k", "e2", 8.0) == ("fire", 0.0)

    async def test_debounce_timeout_caps_the_wait_from_the_first_event(self, store: Store) -> None:
        assert await store.flow_debounce("h", "k", "e1", 0.0, 0.0, 5.0, 8.0) == ("e1", 5.0)
        assert await store.flow_debounce("h", "k", "e2", 4.0, 4.0, 5.0, 8.0) == ("e2", 8.0)
        assert await store.flow_debounce("h", "k", "e3", 7.0, 7.0, 5.0, 8.0) == ("e3", 8.0)
        assert await store.flow_debounce_fire("h", "k", "e3", 8.0) == ("fire", 0.0)

    async def test_slots_hold_one_owner_until_released_or_expired(self, store: Store) -> None:
        assert await store.flow_slot_take("h", "k", "a", 1, 0.0, 30.0) == []
        assert await store.flow_slot_take("h", "k", "b", 1, 1.0, 31.0) == ["a"]
        assert await store.flow_slot_take("h", "other", "b", 1, 1.0, 31.0) == []
        await store.flow_slot_release("h", "k", "a")
        assert await store.flow_slot_take("h", "k", "b", 1, 2.0, 32.0) == []
        # b's lease ends at 32 without renewal: c takes the key after that.
        assert await store.flow_slot_take("h", "k", "c", 1, 31.0, 61.0) == ["b"]
        assert await store.flow_slot_take("h", "k", "c", 1, 33.0, 63.0) == []
        assert await store.flow_slot_renew("h", [("k", "c"), ("k", "b")], 90.0) == [("k", "b")]

    async def test_a_cancelled_slot_tells_its_holder_at_renewal(self, store: Store) -> None:
        assert await store.flow_slot_take("h", "k", "a", 1, 0.0, 30.0) == []
        assert await store.flow_slot_renew("h", [("k", "a")], 40.0) == []
        await store.flow_slot_cancel("h", "k", ["a"])
        assert await store.flow_slot_renew("h", [("k", "a")], 50.0) == [("k", "a")]
        await store.flow_slot_release("h", "k", "a")
        assert await store.flow_slot_take("h", "k", "b", 1, 1.0, 31.0) == []

    async def test_concurrent_slot_takers_get_one_slot(self, store: Store) -> None:
        got = await asyncio.gather(
            *(store.flow_slot_take("h", "k", f"o{i}", 1, 0.0, 30.0) for i in range(10))
        )
        assert sum(1 for holders in got if holders == []) == 1

    async def test_a_retry_budget_admits_retries_as_a_share_of_first_attempts(
        self, store: Store
    ) -> None:
        # ratio 0.5, no reserve, a 10 s window in slices of 1 s.
        assert await store.flow_budget("b", 100.0, 10.0, 0.5, 0.0, 4, 0) == 0
        assert await store.flow_budget("b", 100.5, 10.0, 0.5, 0.0, 0, 5) == 2
        assert await store.flow_budget("b", 101.0, 10.0, 0.5, 0.0, 2, 5) == 1
        assert await store.flow_budget("other", 101.0, 10.0, 0.5, 0.0, 0, 5) == 1  # none yet
        # 20 s on, the window is empty again: one retry always goes through.
        assert await store.flow_budget("b", 121.0, 10.0, 0.5, 0.0, 0, 3) == 1
