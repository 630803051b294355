"""The run history recorder: bounded in memory, written in batches, best effort."""

from __future__ import annotations

import asyncio

from bridge import Event
from bridge.history import DROPPED, HistoryRecorder
from bridge.metrics import Metrics
from bridge.store.contracts import Attempt, RunRecord
from bridge.store.memory import MemoryStore

HANDLERS = ("a", "b", "c")


def report(recorder: HistoryRecorder, n: int) -> None:
    """One event through 3 handlers, as the dispatcher reports it."""
    event = Event(id=f"e{n}", source="test", type="test/event", data={"n": n}, correlationid="c")
    recorder.event_started(event, "api", None)
    for handler in HANDLERS:
        recorder.run(RunRecord(event.id, handler, "succeeded", [Attempt(1, 0.0, 0.001)]))
    recorder.event_finished(event, ["succeeded"] * len(HANDLERS))


async def test_a_burst_never_holds_more_than_the_cap_and_drops_are_counted() -> None:
    store, metrics = MemoryStore(), Metrics()
    recorder = HistoryRecorder(
        store, max_age=3600, max_events=10_000, max_pending=100, metrics=metrics
    )
    most = 0
    for n in range(1_000):  # no write in between: the store is "slow"
        report(recorder, n)
        most = max(most, recorder.pending)
    assert most == 100
    assert recorder.dropped == 900
    assert metrics.counters[(DROPPED, ())] == 900
    await recorder.flush()
    assert recorder.pending == 0
    stored = await store.history_events(limit=1_000)
    # The newest 100 are kept, whole: each with its 3 runs and final status.
    assert sorted(int(r.id[1:]) for r in stored) == list(range(900, 1_000))
    assert {r.status for r in stored} == {"succeeded"}
    assert stored[0].event["data"] == {"n": int(stored[0].id[1:])}
    assert [r.handler for r in await store.history_runs("e999")] == list(HANDLERS)


async def test_an_event_is_written_once_final_and_a_long_run_shows_as_running() -> None:
    store = MemoryStore()
    recorder = HistoryRecorder(store, max_age=3600, max_events=100, hold=3600)
    event = Event(id="slow", source="test", type="test/event", data={}, correlationid="c")
    recorder.event_started(event, "api", None)
    await recorder.flush()
    assert await store.history_event("slow") is None  # still running, held in memory
    recorder.event_finished(event, ["succeeded"])
    await recorder.flush()
    stored = await store.history_event("slow")
    assert stored is not None and stored.status == "succeeded" and stored.finished_at

    recorder.hold = 0.0  # running longer than hold: written as running, then updated
    late = Event(id="late", source="test", type="test/event", data={}, correlationid="c")
    recorder.event_started(late, "api", None)
    recorder.run(RunRecord("late", "a", "running"))
    await recorder.flush()
    stored = await store.history_event("late")
    assert stored is not None and stored.status == "running"
    recorder.run(RunRecord("late", "a", "succeeded"))
    recorder.event_finished(late, ["succeeded"])
    await recorder.close()
    stored = await store.history_event("late")
    assert stored is not None and stored.status == "succeeded"


class CountingStore(MemoryStore):
    """A memory store that records the size of each history write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, int]] = []

    async def history_put(self, events, runs):  # type: ignore[no-untyped-def]
        self.writes.append((len(events), len(runs)))
        await super().history_put(events, runs)


async def test_a_backlog_is_written_in_batches_of_at_most_batch_events_oldest_first() -> None:
    store = CountingStore()
    recorder = HistoryRecorder(store, max_age=3600, max_events=10_000, max_pending=5_000, batch=64)
    for n in range(1_000):  # a backlog behind a slow store
        report(recorder, n)
    assert recorder.pending == 1_000
    await recorder.flush()
    assert recorder.pending == 0 and recorder.dropped == 0
    # 15 full batches and the rest, each one store write with its events' runs.
    assert store.writes == [(64, 192)] * 15 + [(40, 120)]
    stored = await store.history_events(limit=2_000)
    assert len(stored) == 1_000 and {r.status for r in stored} == {"succeeded"}


async def test_a_batch_skips_events_still_running_and_leaves_them_pending() -> None:
    store = CountingStore()
    recorder = HistoryRecorder(store, max_age=3600, max_events=10_000, hold=3600, batch=10)
    running = Event(id="running", source="test", type="test/event", data={}, correlationid="c")
    recorder.event_started(running, "api", None)
    for n in range(25):
        report(recorder, n)
    await recorder.flush()
    assert store.writes == [(10, 30), (10, 30), (5, 15)]
    assert recorder.pending == 1  # the running event waits, held, to be written once final
    await recorder.close()
    assert store.writes[-1] == (1, 0) and recorder.pending == 0


class GatedStore(MemoryStore):
    """A memory store whose history writes wait for ``gate`` (a slow store)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    async def history_put(self, events, runs):  # type: ignore[no-untyped-def]
        self.writing.set()
        await self.gate.wait()
        await super().history_put(events, runs)


async def writing_e1() -> tuple[GatedStore, HistoryRecorder]:
    """A recorder whose own pass is writing event e1 to a store that holds the write."""
    store = GatedStore()
    recorder = HistoryRecorder(store, max_age=3600, max_events=100, interval=0.01)
    report(recorder, 1)
    await recorder.start()
    await asyncio.wait_for(store.writing.wait(), 5)
    return store, recorder


async def test_a_flush_waits_for_the_write_another_flush_has_under_way() -> None:
    # The recorder's own pass has taken the records and is writing them when a caller
    # flushes: the caller's flush returns only once those records are in the store (it
    # found nothing left to take, and returned at once before: the store read after it
    # did not have them yet).
    store, recorder = await writing_e1()
    flushed = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0.05)
    assert not flushed.done()  # the pass's write is still under way
    store.gate.set()
    await asyncio.wait_for(flushed, 5)
    stored = await store.history_event("e1")
    assert stored is not None and stored.status == "succeeded"
    assert len(await store.history_runs("e1")) == len(HANDLERS)
    await recorder.close()


async def test_closing_during_a_write_of_the_recorders_own_pass_loses_none_of_it() -> None:
    store, recorder = await writing_e1()
    report(recorder, 2)  # reported while the pass writes e1: left for the next write
    closing = asyncio.create_task(recorder.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # close waits for the write under way, does not cancel it
    store.gate.set()
    await asyncio.wait_for(closing, 5)
    for event_id in ("e1", "e2"):
        stored = await store.history_event(event_id)
        assert stored is not None and stored.status == "succeeded", event_id
        assert len(await store.history_runs(event_id)) == len(HANDLERS)
    assert recorder.pending == 0
