"""Every PostgreSQL store call answers or raises ``StoreError`` within its deadline.

The store reaches the real server through a TCP proxy that the test turns into a
black hole (``tests.fixtures.tcp_proxy``), or another session holds an ACCESS
EXCLUSIVE lock on the ledger. Either way a call must fail with ``StoreError`` within
the URL's ``timeout`` (the ping within ``ping_timeout``), never hang; and once the
database answers again the same store works without help.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import pytest

from bridge.errors import StoreError
from bridge.store.contracts import InboxEntry, LedgerEntry
from bridge.store.postgres import PostgresStore
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.fixtures.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TIMEOUT = 1.0
PING = 0.5
SLACK = 3.0  # scheduling, cancelling the query; far below "hangs"


@pytest.fixture
async def proxied(postgres: str) -> AsyncIterator[tuple[PostgresStore, TcpProxy, str]]:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
        f"?schema={schema}&timeout={TIMEOUT}&ping_timeout={PING}"
    )
    await store.open()
    yield store, proxy, schema
    proxy.restore()
    await store.close()
    await proxy.close()
    await drop_schema(schema)


async def fails_within(call: Awaitable[Any], bound: float) -> float:
    """Seconds ``call`` took to raise ``StoreError``; fails if it answers or takes past 10 s."""
    started = time.monotonic()
    with pytest.raises(StoreError):
        await asyncio.wait_for(call, 10.0)
    took = time.monotonic() - started
    assert took < bound, f"StoreError after {took:.1f}s, deadline {bound - SLACK:g}s"
    return took


async def test_a_black_holed_database_fails_every_call_in_time(
    proxied: tuple[PostgresStore, TcpProxy, str],
) -> None:
    store, proxy, _ = proxied
    await store.ledger_record([LedgerEntry("h", "k0", "e0")])
    assert await store.ping() is True
    proxy.black_hole()
    started = time.monotonic()
    assert await asyncio.wait_for(store.ping(), 10.0) is False
    assert time.monotonic() - started < PING + SLACK
    await fails_within(store.ledger_final([("h", "k0")]), TIMEOUT + SLACK)
    await fails_within(store.inbox_put([InboxEntry("i", b"{}")]), TIMEOUT + SLACK)
    await fails_within(store.ledger_record([LedgerEntry("h", "k1", "e1")]), TIMEOUT + SLACK)
    # Several at once: each one's deadline holds, none waits behind the others.
    calls = [fails_within(store.ledger_final([("h", f"k{n}")]), TIMEOUT + SLACK) for n in range(20)]
    await asyncio.gather(*calls)
    proxy.restore()

    async def answers() -> bool:
        return await store.ping()

    for _ in range(50):
        if await answers():
            break
        await asyncio.sleep(0.2)
    assert await store.ledger_final([("h", "k0")]) == {("h", "k0"): "succeeded"}
    await store.ledger_record([LedgerEntry("h", "k1", "e1")])


async def test_a_locked_ledger_fails_calls_in_time(
    proxied: tuple[PostgresStore, TcpProxy, str],
) -> None:
    store, _, schema = proxied
    await store.ledger_record([LedgerEntry("h", "k0", "e0")])
    holder = await asyncpg.connect(POSTGRES_URL)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(f'LOCK TABLE "{schema}".ledger IN ACCESS EXCLUSIVE MODE')
        assert await asyncio.wait_for(store.ping(), 10.0) is False
        await fails_within(store.ledger_final([("h", "k0")]), TIMEOUT + SLACK)
        await fails_within(store.ledger_record([LedgerEntry("h", "k1", "e1")]), TIMEOUT + SLACK)
        await store.inbox_put([InboxEntry("i", b"{}")])  # the inbox is not locked
        await tx.rollback()
    finally:
        await holder.close()
    assert await store.ping() is True
    await store.ledger_record([LedgerEntry("h", "k1", "e1")])
    assert await store.ledger_final([("h", "k1")]) == {("h", "k1"): "succeeded"}


async def test_closing_a_black_holed_store_ends_in_time(
    proxied: tuple[PostgresStore, TcpProxy, str],
) -> None:
    store, proxy, _ = proxied
    await store.ledger_record([LedgerEntry("h", "k0", "e0")])
    proxy.black_hole()
    started = time.monotonic()
    await asyncio.wait_for(store.close(), 30.0)
    assert time.monotonic() - started < TIMEOUT + SLACK
