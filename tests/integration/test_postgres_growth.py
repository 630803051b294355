"""A young ledger on PostgreSQL is analyzed as it grows, so the claims' cached plan looks
keys up in the primary key instead of reading the whole table (``bridge.store.postgres.growth``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

import bridge.store.postgres.growth as growth
from bridge.store.contracts import LedgerEntry
from bridge.store.postgres import PostgresStore
from bridge.store.postgres.batch import _CLAIMS
from tests.fixtures.pg_instance import PgInstance, private_postgres
from tests.fixtures.postgres import fresh_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg() -> Iterator[PgInstance]:
    """A server of this module's own: the shared one's other tests create and drop schemas,
    and enough of that makes every backend drop its cached plans (a shared cache reset)."""
    with private_postgres() as instance:
        yield instance


@pytest.fixture
async def fresh(pg: PgInstance) -> AsyncIterator[PostgresStore]:
    async with fresh_store(pg.url) as store:
        yield store


async def grow(store: PostgresStore, events: int, first: int = 0) -> None:
    """Claim and record ``events`` events of 4 handlers from event ``first``, 25 a call."""
    now = time.time()
    for base in range(first, first + events, 25):
        keys = [(f"h{h}", f"ev-{e}") for e in range(base, base + 25) for h in range(4)]
        claimed = await store.ledger_claim(keys, [], "x", "owner", now, now + 60)
        assert set(claimed.values()) == {"claimed"}
        await store.ledger_record([LedgerEntry(h, k, f"ev-{k}") for h, k in keys])


def literal(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class Claims:
    """The claims statement prepared on a connection of its own, its generic plan cached
    from the first execution (as on the bridge's connections: asyncpg prepares a statement
    once, and from its sixth execution PostgreSQL keeps its generic plan)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def prepare(cls, store: PostgresStore) -> Claims:
        conn = await asyncpg.connect(
            store.dsn, server_settings={"search_path": f'"{store.schema}"'}
        )
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE claims AS {_CLAIMS.packed}")
        claims = cls(conn)
        await claims.plan()  # made now, on the ledger as it is
        return claims

    async def plan(self) -> str:
        now = time.time()
        keys = sorted((f"h{h}", "new") for h in range(4))
        args = _CLAIMS.call(
            [k[0] for k in keys],
            [k[1] for k in keys],
            ["new"] * 4,
            ["owner"] * 4,
            now,
            [now + 60] * 4,
            [],
            [],
        )[1:]
        rows = await self.conn.fetch(f"EXPLAIN EXECUTE claims({', '.join(map(literal, args))})")
        return "\n".join(r[0] for r in rows)

    async def close(self) -> None:
        await self.conn.close()


async def reltuples(store: PostgresStore) -> float:
    conn = await asyncpg.connect(store.dsn, server_settings={"search_path": f'"{store.schema}"'})
    try:
        rows: float = await conn.fetchval(
            "SELECT reltuples FROM pg_class WHERE oid = 'ledger'::regclass"
        )
        return rows
    finally:
        await conn.close()


async def test_a_growing_ledger_is_analyzed_and_its_claims_use_the_primary_key(
    fresh: PostgresStore,
) -> None:
    assert await reltuples(fresh) < 0  # a new ledger: never analyzed
    claims = await Claims.prepare(fresh)
    assert "Seq Scan on ledger" in await claims.plan()  # the plan for an empty table
    await grow(fresh, 2_000)  # 8,000 rows: analyzed at 1,000 and at 4,000 added
    assert fresh.growth is not None
    await fresh.growth.idle()
    assert fresh.growth.analyses == 2
    assert 3_000 <= await reltuples(fresh) <= 8_000
    plan = await claims.plan()  # the analyses made every connection plan it again
    await claims.close()
    assert "Index Scan using ledger_pkey on ledger" in plan
    assert "Seq Scan on ledger" not in plan
    # Each analysis is one counted round trip.
    assert fresh.round_trips["_analyze_ledger"] == 2


async def test_without_the_analyses_the_cached_plan_reads_the_whole_ledger(
    fresh: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the bridge did before: the same growth, no analysis; the plan stays the one
    # made for an empty table.
    monkeypatch.setattr(growth, "FIRST", 10**9)
    claims = await Claims.prepare(fresh)
    await grow(fresh, 2_000)
    assert fresh.growth is not None and fresh.growth.analyses == 0
    assert await reltuples(fresh) < 0
    plan = await claims.plan()
    await claims.close()
    assert "Seq Scan on ledger" in plan


async def test_a_large_ledger_is_left_to_autovacuum(
    fresh: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(growth, "UNTIL", 4_000)
    await grow(fresh, 2_000)
    assert fresh.growth is not None
    await fresh.growth.idle()
    assert fresh.growth.analyses == 2  # at 1,000 rows, then at 4,000: no more
    await grow(fresh, 4_000, first=2_000)  # 16,000 more rows, 4 times the table
    await fresh.growth.idle()
    assert fresh.growth.analyses == 2
