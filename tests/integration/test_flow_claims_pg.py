"""On PostgreSQL, a run's ledger claim is renewed while the run waits at admission and runs
(``bridge.dispatch.claims.ClaimKeeper``): a redelivered copy in another replica never
runs it a second time, however long it waited. Real server on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.dispatch.claims import ClaimKeeper
from bridge.dispatch.runs import BoundHandler
from bridge.normalize import Normalizer
from bridge.store.postgres import PostgresStore
from bridge.transport import Delivery, EventMapping, Settlement
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.unit.test_flow_queue import claim_order

pytestmark = pytest.mark.integration
RUNS: list[str] = []


@pytest.fixture
async def url(postgres: str) -> AsyncIterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{POSTGRES_URL}?schema={schema}"
    await drop_schema(schema)


async def test_a_kept_claim_outlives_its_lease_and_a_lapsed_one_is_taken(url: str) -> None:
    a, b = PostgresStore(url), PostgresStore(url)
    await a.open()
    await b.open()
    try:
        now = time.time()
        found = await a.ledger_claim([("h", "kept"), ("h", "lapsed")], [], "e", "A", now, now + 1)
        assert found == {("h", "kept"): "claimed", ("h", "lapsed"): "claimed"}
        keeper = ClaimKeeper(a, "A", time.time)
        async with keeper.kept(("h", "kept"), 1.0):
            await asyncio.sleep(2.5)  # over twice the lease
            now = time.time()
            taken = await b.ledger_claim([("h", "kept"), ("h", "lapsed")], [], "e", "B", now, now)
        assert taken == {("h", "kept"): "running", ("h", "lapsed"): "claimed"}
        assert keeper.renewals >= 2
        await keeper.close()
    finally:
        await a.close()
        await b.close()


async def slow(event: Event[Any], ctx: Context) -> str:
    RUNS.append(event.id)
    await asyncio.sleep(float(event.data.get("hold", 0)))
    return event.id


def replica(url: str) -> tuple[Runtime, PostgresStore]:
    text = textwrap.dedent(
        """\
        version: 1
        store: memory://
        server: {enabled: false}
        events: {"c/*": {schema: none}}
        handlers:
          - id: h
            on: c/e
            type: python
            function: tests.integration.test_flow_claims_pg:slow
            concurrency_key: "{data.k}"
            concurrency_per_key: 1
        """
    )
    store = PostgresStore(url)
    runtime = Runtime(load_config_text(text, {}), store=store)
    runtime.build()
    return runtime, store


async def process(runtime: Runtime, event_id: str, data: dict[str, Any]) -> Settlement:
    body = orjson.dumps(
        {"specversion": "1.0", "id": event_id, "source": "c", "type": "c/e", "data": data}
    )

    async def settle(_: Settlement) -> None:
        return None

    norm = Normalizer("c", "memory", EventMapping(type="c/e"), runtime.catalog, 10_000)
    assert runtime.dispatcher is not None
    return await runtime.dispatcher.process(Delivery(body, {}, {}, settle, "c"), norm)


async def test_a_run_waiting_at_admission_past_its_claim_is_not_run_twice(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Claims of 1 s (not the handler's longest run plus a minute), so that the run's wait
    # for its concurrency key outlasts its claim several times over.
    monkeypatch.setattr(BoundHandler, "longest_run", property(lambda b: 1.0))
    RUNS.clear()
    (one, a), (two, b) = replica(url), replica(url)
    await a.open()
    await b.open()
    try:
        blocker = asyncio.ensure_future(process(one, "blocker", {"k": "x", "hold": 4}))
        await asyncio.sleep(0.5)
        waiting = asyncio.ensure_future(process(one, "e1", {"k": "x"}))
        await asyncio.sleep(2.5)  # e1 waits for the key; its claim was renewed
        copy = await process(two, "e1", {"k": "x"})  # a redelivered copy, in another replica
        assert copy is Settlement.ACK
        assert await blocker is Settlement.ACK and await waiting is Settlement.ACK
        assert sorted(RUNS) == ["blocker", "e1"]  # e1 ran once
    finally:
        for runtime in (one, two):
            assert runtime.dispatcher is not None
            await runtime.dispatcher.close()
        await a.close()
        await b.close()


async def test_due_parked_runs_are_claimed_highest_priority_first(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    try:
        assert await claim_order(store) == ["p1", "p3", "p2"]
    finally:
        await store.close()
