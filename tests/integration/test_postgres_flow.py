"""Flow control between two runtimes, each with its own connection pool on one PostgreSQL
schema (two replicas in one test process): a singleton in ``cancel`` mode reaches the
run in the other replica through its slot's lease, and a concurrency key's slots are
shared."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.store.postgres import PostgresStore
from bridge.transport import Settlement
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.unit.test_dispatch import HEAD, delivery, process

pytestmark = pytest.mark.integration

SPANS: list[tuple[str, float, float | None, str]] = []  # event, start, end, how it ended
GATE: list[asyncio.Event] = []


async def held(event: Event[Any], ctx: Context) -> str:
    started = time.monotonic()
    try:
        await GATE[0].wait()
    except asyncio.CancelledError:
        SPANS.append((event.id, started, time.monotonic(), "cancelled"))
        raise
    SPANS.append((event.id, started, time.monotonic(), "done"))
    return event.id


@pytest.fixture
async def two(postgres: str) -> AsyncIterator[Any]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    stores: list[PostgresStore] = []

    async def build(handler: str) -> list[Runtime]:
        text = "ledger: false\n" + HEAD
        cfg = load_config_text(text + textwrap.indent(textwrap.dedent(handler), "  "), {})
        out = []
        for _ in range(2):
            store = PostgresStore(f"{POSTGRES_URL}?schema={schema}")
            await store.open()
            stores.append(store)
            runtime = Runtime(cfg, store=store)
            runtime.build()
            out.append(runtime)
        return out

    SPANS.clear()
    GATE[:] = [asyncio.Event()]
    yield build
    for store in stores:
        await store.close()
    await drop_schema(schema)


async def test_a_singleton_cancels_the_run_of_its_key_in_another_replica(two: Any) -> None:
    one, other = await two(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.integration.test_postgres_flow:held
          singleton: {key: "event.data.k", mode: cancel}
        """
    )
    first = asyncio.ensure_future(process(one, delivery("a1", {"k": "a"})[0]))
    await asyncio.sleep(0.5)
    second = asyncio.ensure_future(process(other, delivery("a2", {"k": "a"})[0]))
    assert await asyncio.wait_for(first, 10) is Settlement.ACK  # ended: cancelled
    await asyncio.sleep(0.2)
    GATE[0].set()
    assert await asyncio.wait_for(second, 10) is Settlement.ACK
    (a1, _, e1, how1), (a2, s2, _, how2) = SPANS
    assert (a1, how1, a2, how2) == ("a1", "cancelled", "a2", "done")
    assert e1 is not None and s2 >= e1  # the new run started once the old one had ended
    counted = one.metrics.counters
    assert counted[("bridge_runs_total", (("handler", "h"), ("outcome", "cancelled")))] == 1


async def test_a_concurrency_key_is_shared_by_replicas(two: Any) -> None:
    one, other = await two(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.integration.test_postgres_flow:held
          concurrency_key: "{data.k}"
        """
    )
    first = asyncio.ensure_future(process(one, delivery("a1", {"k": "a"})[0]))
    await asyncio.sleep(0.3)
    second = asyncio.ensure_future(process(other, delivery("a2", {"k": "a"})[0]))
    await asyncio.sleep(0.5)
    assert not second.done() and SPANS == []
    GATE[0].set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 10) == [Settlement.ACK] * 2
    (a1, _, e1, _), (a2, s2, _, _) = SPANS
    assert (a1, a2) == ("a1", "a2") and e1 is not None and s2 >= e1
