"""Leased claims on PostgreSQL: two replicas (two pools on one schema) whose in-flight slots
stay full for several leases hand out each inbox entry and parked run once.

The same scenario as ``tests/unit/test_leases.py``, on the real shared store.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from bridge.inbox import Inbox, InboxSource
from bridge.scheduler import ParkedSource
from bridge.store.contracts import InboxEntry, ParkedRun
from bridge.store.postgres import PostgresStore
from bridge.transport import Delivery, Source
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.support import until
from tests.unit.test_leases import LEASE, SLOTS, consuming

pytestmark = pytest.mark.integration

COUNT = 12


@pytest.fixture
async def replicas(postgres: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}"
    a, b = PostgresStore(url), PostgresStore(url)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()
    await drop_schema(schema)


async def test_inbox_entries_run_once_across_replicas(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = replicas
    await Inbox(a).put([InboxEntry(id=f"e{n}", body=b"{}") for n in range(COUNT)])
    sources: list[Source] = [
        InboxSource(Inbox(s), name=f"r{n}", poll_interval=0.05, lease=LEASE, capacity=SLOTS)
        for n, s in enumerate(replicas)
    ]
    runs: Counter[str] = Counter()

    async def all_done() -> bool:
        return not await a.inbox_pending(0, COUNT)

    async with consuming(sources, runs):
        await until(all_done, 60, "every entry finished")
    assert set(runs) == {f"e{n}" for n in range(COUNT)}
    assert [e for e, n in runs.items() if n > 1] == []


async def test_parked_runs_run_once_across_replicas(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = replicas
    now = time.time()
    await a.parked_put(
        [
            ParkedRun(f"p{n}", "h", {"id": f"p{n}", "type": "t", "source": "s"}, "c", 2, now - 1)
            for n in range(COUNT)
        ]
    )
    sources: list[Source] = [
        ParkedSource(s, name=f"r{n}", poll_interval=0.05, lease=LEASE, capacity=SLOTS)
        for n, s in enumerate(replicas)
    ]
    runs: Counter[str] = Counter()

    async def forget(delivery: Delivery) -> None:
        await a.parked_done([delivery.meta["parked_id"]])

    async def all_done() -> bool:
        return not await a.parked_list()

    async with consuming(sources, runs, forget):
        await until(all_done, 60, "every parked run finished")
    assert set(runs) == {f"p{n}" for n in range(COUNT)}
    assert [e for e, n in runs.items() if n > 1] == []
