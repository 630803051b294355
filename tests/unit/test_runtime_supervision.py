"""The runtime's supervision: a part that fails for good stops the bridge with a drain,
``max_in_flight`` holds across source restarts, intake stops before the drain, and the
completion-type cache is bounded.

The sources here are real implementations of the Source contract, scripted to fail,
restart or keep offering messages; the runtime, dispatcher and handlers are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.dispatch.completion import COMPLETION_CACHE_SIZE, Completions
from bridge.dispatch.env import DispatchConfig, DispatchEnv
from bridge.errors import ConnectorError
from bridge.routing import Router
from bridge.store import MemoryStore
from bridge.transport import Delivery, Settlement

HANDLER_SECONDS = 1.0  # longer than the pump's first restart backoff (0.5 s)
_ids = itertools.count()


class Concurrency:
    """What the handlers of this module saw: runs in progress, their peak, runs done."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.done = 0
        self.started_at: list[float] = []

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


SEEN = Concurrency()


async def slow_counted(event: Event[Any], ctx: Context) -> None:
    """Count itself in, sleep ``HANDLER_SECONDS``, count itself out."""
    SEEN.started_at.append(asyncio.get_running_loop().time())
    SEEN.running += 1
    SEEN.peak = max(SEEN.peak, SEEN.running)
    try:
        await asyncio.sleep(HANDLER_SECONDS)
    finally:
        SEEN.running -= 1
    SEEN.done += 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    SEEN.reset()


def body(event_id: str) -> bytes:
    return orjson.dumps(
        {"specversion": "1.0", "id": event_id, "source": "t", "type": "test/event", "data": {}}
    )


class Journal:
    """The order in which settlements, source stops and the store's close happened."""

    def __init__(self) -> None:
        self.entries: list[str] = []


class JournaledStore(MemoryStore):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    async def close(self) -> None:
        self.journal.entries.append("store closed")
        await super().close()


class ScriptedSource:
    """A source that hands out ``per_start`` deliveries per start, then fails (retriable
    or not, per ``fail``); ``fail=None`` waits for ``stop()`` instead. Deliveries are
    settled into ``settled``."""

    def __init__(
        self,
        name: str,
        per_start: int,
        fail: ConnectorError | None = None,
        journal: Journal | None = None,
        starts_failing: int = 1_000,
    ) -> None:
        self.name = name
        self.per_start = per_start
        self.fail = fail
        self.journal = journal or Journal()
        self.starts = 0
        self.starts_failing = starts_failing
        self.settled: dict[str, Settlement] = {}
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        self.starts += 1

    async def deliveries(self) -> AsyncIterator[Delivery]:
        for _ in range(self.per_start):
            event_id = f"{self.name}-{next(_ids)}"
            yield Delivery(body(event_id), {}, {}, self._settler(event_id), self.name)
        if self.fail is not None and self.starts <= self.starts_failing:
            raise self.fail
        await self._stopped.wait()

    def _settler(self, event_id: str) -> Any:
        async def settle(outcome: Settlement) -> None:
            self.settled[event_id] = outcome
            self.journal.entries.append(f"settled {self.name}")

        return settle

    async def stop(self, deadline: float) -> None:
        self._stopped.set()
        self.journal.entries.append(f"stopped {self.name}")


CONFIG = """\
version: 1
store: memory://
server: {enabled: false}
drain_timeout: 10s
connectors:
CONNECTORS
handlers:
  - id: slow
    on: test/event
    type: python
    function: tests.unit.test_runtime_supervision:slow_counted
"""


def runtime_with(
    sources: dict[str, Any], max_in_flight: int = 100, store: MemoryStore | None = None
) -> Runtime:
    """A runtime whose memory connectors (one per name) consume from the given sources."""
    connectors = "".join(
        f"  {name}: {{type: memory, consume: {{max_in_flight: {max_in_flight}, "
        "event: {type: test/event}}}\n"
        for name in sources
    )
    text = CONFIG.replace("CONNECTORS\n", connectors)
    cfg = load_config_text(textwrap.dedent(text), {})
    runtime = Runtime(cfg, store=store or MemoryStore())
    runtime.build()
    for slot in runtime.slots:
        if slot.name in sources:
            slot.source = sources[slot.name]
    return runtime


async def wait_for(check: Any, within: float, what: str) -> None:
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.02)
    assert check(), what


# --------------------------------------------------------------------------- item 4


async def test_a_source_failing_for_good_stops_the_bridge_with_a_drain() -> None:
    """The fatal error no longer tears down the task group: the other source's in-flight
    runs finish and are acked, every source is stopped, the store is closed last, and
    ``run()`` raises the error afterwards."""
    journal = Journal()
    busy = ScriptedSource("busy", per_start=3, journal=journal)
    doomed = ScriptedSource(
        "doomed", per_start=0, fail=ConnectorError("queue gone", retriable=False), journal=journal
    )
    runtime = runtime_with({"busy": busy, "doomed": doomed}, store=JournaledStore(journal))
    # The failing source waits until the busy one's runs are in flight.
    original = doomed.deliveries

    async def late_failure() -> AsyncIterator[Delivery]:
        await wait_for(lambda: SEEN.running == 3, 10, "three runs in flight")
        async for delivery in original():
            yield delivery

    doomed.deliveries = late_failure  # type: ignore[method-assign]
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(runtime.run(), 30)
    errors = caught.value.exceptions
    assert [str(e) for e in errors] == ["queue gone"]
    assert SEEN.done == 3  # the in-flight runs finished
    assert list(busy.settled.values()) == [Settlement.ACK] * 3
    entries = journal.entries
    assert entries[-1] == "store closed"
    assert {"stopped busy", "stopped doomed"} <= set(entries)
    assert max(entries.index(e) for e in entries if e.startswith("settled")) < entries.index(
        "stopped busy"
    )


# --------------------------------------------------------------------------- item 7b


async def test_max_in_flight_holds_across_a_source_restart() -> None:
    """Each start hands out two deliveries, then the source fails (retriable) and the pump
    restarts it while the runs of the last start are still going."""
    source = ScriptedSource(
        "flaky", per_start=2, fail=ConnectorError("link lost", retriable=True), starts_failing=2
    )
    runtime = runtime_with({"flaky": source}, max_in_flight=2)
    task = asyncio.create_task(runtime.run())
    try:
        await wait_for(lambda: SEEN.done == 6, 30, "six runs done")
    finally:
        runtime.request_stop()
        await asyncio.wait_for(task, 30)
    assert source.starts == 3
    assert SEEN.peak == 2, f"{SEEN.peak} runs at once with max_in_flight 2"
    assert list(source.settled.values()) == [Settlement.ACK] * 6


# --------------------------------------------------------------------------- item 7d


class OfferingSource(ScriptedSource):
    """A source that receives in the background, as SQS long polls and AMQP prefetch do:
    a receiver takes what the broker offers into a buffer until ``stop_intake``."""

    def __init__(self, name: str) -> None:
        super().__init__(name, per_start=0)
        self.broker: asyncio.Queue[str] = asyncio.Queue()
        self.buffer: asyncio.Queue[str] = asyncio.Queue()
        self.received: list[str] = []
        self.intake_open = True
        self._receiver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        self._receiver = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        while self.intake_open:
            event_id = await self.broker.get()
            if not self.intake_open:
                self.broker.put_nowait(event_id)
                return
            self.received.append(event_id)
            self.buffer.put_nowait(event_id)

    async def deliveries(self) -> AsyncIterator[Delivery]:
        while True:
            event_id = await self.buffer.get()
            yield Delivery(body(event_id), {}, {}, self._settler(event_id), self.name)

    async def stop_intake(self) -> None:
        self.intake_open = False
        if self._receiver is not None:
            self._receiver.cancel()
        while not self.buffer.empty():  # received, never handed out: back to the broker
            self.broker.put_nowait(self.buffer.get_nowait())

    async def stop(self, deadline: float) -> None:
        await self.stop_intake()
        await super().stop(deadline)


async def test_intake_stops_before_the_drain() -> None:
    """Messages offered while in-flight runs drain are neither received nor started."""
    source = OfferingSource("offers")
    runtime = runtime_with({"offers": source})
    task = asyncio.create_task(runtime.run())
    try:
        for n in range(3):
            source.broker.put_nowait(f"before-{n}")
        await wait_for(lambda: SEEN.running == 3, 10, "three runs in flight")
        runtime.request_stop()
        drain_began = asyncio.get_running_loop().time()
        await asyncio.sleep(0.1)
        for n in range(5):  # the drain lasts about HANDLER_SECONDS more
            source.broker.put_nowait(f"during-{n}")
            await asyncio.sleep(0.05)
    finally:
        if not task.done():
            await asyncio.wait_for(task, 30)
    assert [e for e in source.received if e.startswith("during")] == []
    assert source.broker.qsize() == 5  # still on the broker for the next consumer
    assert [t for t in SEEN.started_at if t > drain_began] == []
    assert SEEN.done == 3


# --------------------------------------------------------------------------- item 7e


def test_completion_type_cache_is_bounded() -> None:
    """Event types made from data (``db/{data.table}``) do not grow the cache without end."""
    completions = Completions(
        DispatchConfig(completions={"order/*": "order/done"}),
        Router([]),
        DispatchEnv(MemoryStore()),
    )
    assert completions.completion_type("order/placed") == "order/done"
    for n in range(COMPLETION_CACHE_SIZE + 500):
        completions.completion_type(f"db/table{n}")
        if n % 1000 == 0:
            assert completions.completion_type("order/placed") == "order/done"  # kept: in use
    assert len(completions._types) == COMPLETION_CACHE_SIZE
    assert "order/placed" in completions._types
    assert "db/table0" not in completions._types  # least recently used went first
    assert completions.completion_type("db/table0") is None
