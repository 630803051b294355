"""Leased claims (``bridge.leases``) through the inbox and parked-run sources on one shared store.

Two sources stand for two replicas sharing a store (SQLite forced ``shared``, as in
the contract suites; ``tests/integration/test_postgres_leases.py`` runs the same on
PostgreSQL). Each is consumed the way the runtime consumes a source: a delivery is
taken, then waits for one of ``max_in_flight`` slots, and is settled when its run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest

from bridge.errors import StoreError
from bridge.inbox import Inbox, InboxSource
from bridge.metrics import Metrics
from bridge.scheduler import ParkedSource
from bridge.store import MemoryStore, SqliteStore, Store
from bridge.store.contracts import InboxEntry, ParkedRun
from bridge.transport import Delivery, Settlement, Source
from tests.contract import take
from tests.support import until

LEASE = 0.3  # seconds; runs below hold their slot for several leases
HOLD = 4 * LEASE
SLOTS = 2


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = SqliteStore(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    store.shared = True
    yield store
    await store.close()


async def consume(
    source: Source,
    runs: Counter[str],
    slots: int,
    before_ack: Callable[[Delivery], Awaitable[None]] | None = None,
) -> None:
    """The runtime's loop: take a delivery, wait for a slot, run it (hold ``HOLD``), ACK."""
    limit = asyncio.Semaphore(slots)
    tasks: set[asyncio.Task[None]] = set()

    async def process(delivery: Delivery) -> None:
        try:
            runs[str(delivery.meta["message_id"])] += 1
            await asyncio.sleep(HOLD)
            if before_ack is not None:
                await before_ack(delivery)
        finally:
            limit.release()
            await delivery.settle(Settlement.ACK)

    try:
        async for delivery in source.deliveries():
            await limit.acquire()
            task = asyncio.create_task(process(delivery))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def consuming(
    sources: list[Source],
    runs: Counter[str],
    before_ack: Callable[[Delivery], Awaitable[None]] | None = None,
) -> AsyncIterator[None]:
    for source in sources:
        await source.start()
    tasks = [asyncio.create_task(consume(s, runs, SLOTS, before_ack)) for s in sources]
    try:
        yield
    finally:
        for source in sources:
            await source.stop(0.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_inbox_entries_run_once_while_slots_stay_full_past_the_lease(store: Store) -> None:
    """Two replicas, slots held for four leases: no entry is handed out twice."""
    inbox = Inbox(store)
    count = 12
    await inbox.put([InboxEntry(id=f"e{n}", body=b"{}") for n in range(count)])
    sources: list[Source] = [
        InboxSource(inbox, name=f"r{n}", poll_interval=0.05, lease=LEASE, capacity=SLOTS)
        for n in range(2)
    ]
    runs: Counter[str] = Counter()

    async def all_done() -> bool:
        return not await store.inbox_pending(0, count)

    async with consuming(sources, runs):
        await until(all_done, 60, "every entry finished")
    assert set(runs) == {f"e{n}" for n in range(count)}
    assert [e for e, n in runs.items() if n > 1] == []


async def test_parked_runs_run_once_while_slots_stay_full_past_the_lease(store: Store) -> None:
    count = 12
    now = time.time()
    await store.parked_put(
        [
            ParkedRun(
                id=f"p{n}",
                handler="h",
                event={"id": f"p{n}", "type": "t", "source": "s"},
                connector="test",
                attempt=2,
                due_at=now - 1,
            )
            for n in range(count)
        ]
    )
    sources: list[Source] = [
        ParkedSource(store, name=f"r{n}", poll_interval=0.05, lease=LEASE, capacity=SLOTS)
        for n in range(2)
    ]
    runs: Counter[str] = Counter()

    async def forget(delivery: Delivery) -> None:  # the dispatcher's part, before it settles
        await store.parked_done([delivery.meta["parked_id"]])

    async def all_done() -> bool:
        return not await store.parked_list()

    async with consuming(sources, runs, forget):
        await until(all_done, 60, "every parked run finished")
    assert set(runs) == {f"p{n}" for n in range(count)}
    assert [e for e, n in runs.items() if n > 1] == []


def _ahead(seconds: float) -> Callable[[], float]:
    """A wall clock ``seconds`` ahead: the other replica sees every lease run out."""
    return lambda: time.time() + seconds


async def test_a_stolen_inbox_lease_leaves_the_result_to_the_new_holder(store: Store) -> None:
    inbox = Inbox(store)
    await inbox.put([InboxEntry(id="x", body=b"{}")])
    metrics = Metrics()
    old = InboxSource(inbox, name="old", poll_interval=0.05, metrics=metrics)
    new = InboxSource(inbox, name="new", poll_interval=0.05, wall=_ahead(100.0))
    third = InboxSource(inbox, name="third", poll_interval=0.05)
    for source in (old, new, third):
        await source.start()
    [late] = await take(old, 1)
    [current] = await take(new, 1)  # the old holder's lease ran out (as the new one sees it)
    assert late.meta["message_id"] == current.meta["message_id"] == "x"

    # The old holder's late ACK does not finish the entry the new holder runs...
    await late.settle(Settlement.ACK)
    assert [e.id for e in await store.inbox_pending(0, 10)] == ["x"]
    assert metrics.counters[("bridge_lease_lost_total", (("source", "old"),))] == 1
    # ...nor does its late RETRY_LATER release the new holder's lease to a third replica.
    await late.settle(Settlement.RETRY_LATER)
    with pytest.raises(TimeoutError):
        await take(third, 1, within=0.3)
    # The new holder's result stands: it gives the entry back, and it runs again.
    await current.settle(Settlement.RETRY_LATER)
    [again] = await take(third, 1)
    await again.settle(Settlement.ACK)
    assert await store.inbox_pending(0, 10) == []


async def test_a_stolen_parked_lease_is_not_released_by_the_old_holder(store: Store) -> None:
    await store.parked_put(
        [
            ParkedRun(
                id="r",
                handler="h",
                event={"id": uuid.uuid4().hex, "type": "t", "source": "s"},
                connector="test",
                attempt=2,
                due_at=time.time() - 1,
            )
        ]
    )
    old = ParkedSource(store, name="old", poll_interval=0.05)
    new = ParkedSource(store, name="new", poll_interval=0.05, wall=_ahead(100.0))
    third = ParkedSource(store, name="third", poll_interval=0.05)
    for source in (old, new, third):
        await source.start()
    [late] = await take(old, 1)
    [current] = await take(new, 1)
    assert late.meta["parked_id"] == current.meta["parked_id"] == "r"
    await late.settle(Settlement.RETRY_LATER)  # shutdown of the old holder, say
    with pytest.raises(TimeoutError):
        await take(third, 1, within=0.3)
    await current.settle(Settlement.RETRY_LATER)
    [again] = await take(third, 1)
    assert again.meta["parked_id"] == "r"


async def test_claims_no_more_than_the_free_slots(store: Store) -> None:
    """What a source holds (claimed, handed out or not) never passes its capacity."""
    inbox = Inbox(store)
    await inbox.put([InboxEntry(id=f"c{n}", body=b"{}") for n in range(10)])
    source = InboxSource(inbox, name="one", poll_interval=0.05, capacity=3)
    other = InboxSource(inbox, name="two", poll_interval=0.05, capacity=100)
    await source.start()
    await other.start()
    deliveries = source.deliveries().__aiter__()
    got = [await deliveries.__anext__() for _ in range(3)]  # all three slots taken, held open
    rest = await take(other, 7, within=5.0)  # the first source left the other seven unclaimed
    assert len({d.meta["message_id"] for d in got + rest}) == 10
    assert source.status().lag == {"pending_in_flight": 3.0}
    for d in got + rest:
        await d.settle(Settlement.ACK)
    await deliveries.aclose()  # type: ignore[attr-defined]
    assert await store.inbox_pending(0, 100) == []


async def test_an_entry_claimed_again_by_its_own_holder_is_settled_once(store: Store) -> None:
    """A holder whose lease lapsed (its clock jumped, say) and that claims the entry again
    settles it through the newer claim only."""
    inbox = Inbox(store)
    await inbox.put([InboxEntry(id="y", body=b"{}")])
    skew = [0.0]
    metrics = Metrics()
    source = InboxSource(
        inbox, name="one", poll_interval=0.05, metrics=metrics, wall=lambda: time.time() + skew[0]
    )
    await source.start()
    deliveries = source.deliveries().__aiter__()
    first = await deliveries.__anext__()
    skew[0] = 100.0  # its own lease has run out, as it sees it
    second = await asyncio.wait_for(deliveries.__anext__(), 5.0)
    assert first.meta["message_id"] == second.meta["message_id"] == "y"
    await first.settle(Settlement.RETRY_LATER)  # late: must not release the newer claim
    assert metrics.counters[("bridge_lease_lost_total", (("source", "one"),))] == 1
    other = InboxSource(inbox, name="two", poll_interval=0.05)
    await other.start()
    with pytest.raises(TimeoutError):
        await take(other, 1, within=0.3)
    await second.settle(Settlement.ACK)
    await deliveries.aclose()  # type: ignore[attr-defined]
    assert await store.inbox_pending(0, 10) == []


class _RenewalsFail(MemoryStore):
    """An in-memory store whose lease renewals fail (the store went away)."""

    async def inbox_renew(self, seqs: Iterable[int], until: float, owner: str) -> list[int]:
        raise StoreError("the store is down")


async def test_failed_renewals_are_counted_and_the_entry_is_taken_over_once() -> None:
    store = _RenewalsFail()
    store.shared = True  # as replicas sharing it
    inbox = Inbox(store)
    await inbox.put([InboxEntry(id="z", body=b"{}")])
    metrics = Metrics()
    old = InboxSource(inbox, name="old", poll_interval=0.05, lease=LEASE, metrics=metrics)
    new = InboxSource(inbox, name="new", poll_interval=0.05, lease=LEASE)
    await old.start()
    await new.start()
    [late] = await take(old, 1)
    [current] = await take(new, 1, within=10 * LEASE)  # the old lease lapsed unrenewed
    labels = (("source", "old"),)
    assert metrics.counters[("bridge_lease_renewal_failures_total", labels)] >= 1
    await late.settle(Settlement.ACK)
    assert metrics.counters[("bridge_lease_lost_total", labels)] == 1
    assert [e.id for e in await store.inbox_pending(0, 10)] == ["z"]  # the new holder's
    await current.settle(Settlement.ACK)
    assert await store.inbox_pending(0, 10) == []
    await old.stop(0.0)
    await new.stop(0.0)
