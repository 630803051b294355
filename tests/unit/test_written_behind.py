"""Successes written behind their runs (``bridge.dispatch.recorder``): deliveries share
ledger writes, and none settles, and no run counts, before its entries are written."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Sequence

import pytest

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.store import MemoryStore
from bridge.store.contracts import LedgerEntry
from bridge.transport import Settlement
from tests.support import until
from tests.unit.test_dispatch import CALLS, FakeClock, delivery, process

FOUR = """\
version: 1
store: memory://
server: {enabled: false}
handlers:
"""


class GatedStore(MemoryStore):
    """A memory store whose ledger writes wait for ``gate``; each write's size is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.writes: list[int] = []

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        self.writes.append(len(entries))
        await self.gate.wait()
        await super().ledger_record(entries)


def bridge(store: MemoryStore, width: int = 2) -> Runtime:
    handlers = "".join(
        f"- {{id: h{n}, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}}\n"
        for n in range(width)
    )
    cfg = load_config_text(FOUR + textwrap.indent(handlers, "  "), {})
    runtime = Runtime(cfg, store=store, clock=FakeClock())
    runtime.build()
    return runtime


def succeeded(runtime: Runtime) -> float:
    return sum(
        v
        for (name, labels), v in runtime.metrics.counters.items()
        if name == "bridge_runs_total" and ("outcome", "succeeded") in labels
    )


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


async def test_a_delivery_settles_and_its_runs_count_only_once_written() -> None:
    store = GatedStore()
    runtime = bridge(store)
    task = asyncio.create_task(process(runtime, delivery("e1")[0]))
    await until(lambda: sum(CALLS.values()) == 2 and bool(store.writes), 5, "both handlers ran")
    await asyncio.sleep(0.05)
    assert not task.done()  # both runs ended; their write has not
    assert succeeded(runtime) == 0
    assert await store.ledger_final([("h0", "t\x1fe1"), ("h1", "t\x1fe1")]) == {}
    store.gate.set()
    assert await task is Settlement.ACK
    assert succeeded(runtime) == 2
    final = await store.ledger_final([("h0", "t\x1fe1"), ("h1", "t\x1fe1")])
    assert set(final.values()) == {"succeeded"} and len(final) == 2


async def test_the_successes_of_many_deliveries_share_a_few_writes() -> None:
    store = GatedStore()
    store.gate.set()
    runtime = bridge(store, width=4)
    outcomes = await asyncio.gather(*(process(runtime, delivery(f"e{n}")[0]) for n in range(50)))
    assert outcomes == [Settlement.ACK] * 50
    assert sum(CALLS.values()) == 200
    assert sum(store.writes) == 200  # every run's entry, each once
    assert len(store.writes) <= 4, store.writes  # one write per run would be 200
    assert succeeded(runtime) == 200


async def test_a_duplicate_that_comes_during_the_write_does_not_run_again() -> None:
    store = GatedStore()
    runtime = bridge(store)
    first = asyncio.create_task(process(runtime, delivery("e1")[0]))
    await until(lambda: sum(CALLS.values()) == 2 and bool(store.writes), 5, "the first ran")
    second = asyncio.create_task(process(runtime, delivery("e1")[0]))
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()  # the duplicate follows the first
    store.gate.set()
    assert await first is Settlement.ACK
    assert await second is Settlement.ACK
    assert CALLS == {"h0:e1": 1, "h1:e1": 1}
    assert store.writes == [2]


async def test_a_duplicate_after_a_failed_write_runs_the_branches_again() -> None:
    store = GatedStore()
    runtime = bridge(store)
    fail = True

    async def record(entries: Sequence[LedgerEntry]) -> None:
        await store.gate.wait()
        if fail:
            from bridge.errors import StoreError

            raise StoreError("disk full")
        await MemoryStore.ledger_record(store, entries)

    store.ledger_record = record  # type: ignore[method-assign]
    first = asyncio.create_task(process(runtime, delivery("e1")[0]))
    await until(lambda: sum(CALLS.values()) == 2, 5, "the first ran")
    second = asyncio.create_task(process(runtime, delivery("e1")[0]))
    await asyncio.sleep(0.05)
    store.gate.set()
    assert await first is Settlement.RETRY_LATER
    fail = False
    assert await second is Settlement.ACK  # not recorded: this copy ran them again
    assert CALLS == {"h0:e1": 2, "h1:e1": 2}
    assert succeeded(runtime) == 2


async def test_a_cancelled_delivery_does_not_cancel_the_write_it_shares() -> None:
    store = GatedStore()
    runtime = bridge(store)
    one = asyncio.create_task(process(runtime, delivery("e1")[0]))
    two = asyncio.create_task(process(runtime, delivery("e2")[0]))
    await until(lambda: sum(CALLS.values()) == 4 and bool(store.writes), 5, "all four ran")
    one.cancel()
    await asyncio.sleep(0.05)
    assert not one.done()  # cancelled once the write it waits for is done
    store.gate.set()
    assert await two is Settlement.ACK
    with pytest.raises(asyncio.CancelledError):
        await one
    final = await store.ledger_final([(f"h{h}", f"t\x1fe{e}") for h in (0, 1) for e in (1, 2)])
    assert len(final) == 4  # the cancelled delivery's runs were recorded all the same


async def test_the_bridge_closing_writes_what_its_runs_noted() -> None:
    store = GatedStore()
    runtime = bridge(store)
    task = asyncio.create_task(process(runtime, delivery("e1")[0]))
    await until(lambda: sum(CALLS.values()) == 2 and bool(store.writes), 5, "both ran")
    assert runtime.dispatcher is not None
    closing = asyncio.create_task(runtime.dispatcher.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waits for the write
    store.gate.set()
    await closing
    assert await task is Settlement.ACK
    assert len(await store.ledger_final([("h0", "t\x1fe1"), ("h1", "t\x1fe1")])) == 2


async def test_an_entry_the_store_refuses_fails_only_its_own_run_and_delivery() -> None:
    """Two deliveries share a write; the store refuses one entry of one of them. That
    delivery is left for redelivery and its refused run is not counted; its sibling run
    and the other delivery are recorded and counted."""
    from bridge.errors import StoreError

    store = GatedStore()
    runtime = bridge(store)

    async def record(entries: Sequence[LedgerEntry]) -> None:
        await store.gate.wait()
        if any(e.handler == "h1" and e.key == "t\x1fbad" for e in entries):
            raise StoreError("value refused")
        await MemoryStore.ledger_record(store, entries)

    store.ledger_record = record  # type: ignore[method-assign]
    bad = asyncio.create_task(process(runtime, delivery("bad")[0]))
    good = asyncio.create_task(process(runtime, delivery("good")[0]))
    await until(lambda: sum(CALLS.values()) == 4, 5, "both deliveries ran")
    store.gate.set()
    assert await bad is Settlement.RETRY_LATER
    assert await good is Settlement.ACK
    assert succeeded(runtime) == 3  # h1 on "bad" is not counted
    final = await store.ledger_final(
        [(h, f"t\x1f{e}") for h in ("h0", "h1") for e in ("bad", "good")]
    )
    assert final == {
        ("h0", "t\x1fbad"): "succeeded",
        ("h0", "t\x1fgood"): "succeeded",
        ("h1", "t\x1fgood"): "succeeded",
    }
