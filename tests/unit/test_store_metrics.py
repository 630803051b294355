"""Store calls are timed by operation, failures counted, and the ping sets store-up."""

from __future__ import annotations

import pytest

from bridge.errors import StoreError
from bridge.metrics import Metrics
from bridge.store.contracts.dead_letters import DeadLetter
from bridge.store.instrumented import instrument_store
from bridge.store.memory import MemoryStore


class FailingStore(MemoryStore):
    """A memory store whose dead-letter writes and pings fail, as a store that is down."""

    down = False

    async def dead_letter_add(self, letter: DeadLetter) -> None:
        if self.down:
            raise StoreError("store is down")
        await super().dead_letter_add(letter)

    async def ping(self) -> bool:
        return not self.down


async def test_calls_are_timed_and_failures_counted_per_operation() -> None:
    metrics = Metrics()
    store = FailingStore()
    operations = instrument_store(store, metrics)
    assert {"dead_letter_add", "ping"} <= set(operations)
    assert "open" not in operations
    assert instrument_store(store, metrics) == operations  # a second time changes nothing
    await store.open()
    await store.dead_letter_add(DeadLetter(reason="r", connector="c"))
    assert await store.ping()
    assert metrics.value("bridge_store_up") == 1
    store.down = True
    for _ in range(3):
        with pytest.raises(StoreError):
            await store.dead_letter_add(DeadLetter(reason="r", connector="c"))
    assert not await store.ping()
    assert metrics.value("bridge_store_errors_total", operation="dead_letter_add") == 3
    assert metrics.value("bridge_store_up") == 0
    text = metrics.render()
    assert 'bridge_store_seconds_count{operation="dead_letter_add"} 4.0' in text
    assert 'bridge_store_seconds_count{operation="ping"} 2.0' in text
