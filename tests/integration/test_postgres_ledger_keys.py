"""The ledger's keys on PostgreSQL compare byte for byte (migration 12) and its primary
key is (key, handler) (migration 13); a ledger of before keeps its runs through both."""

from __future__ import annotations

import uuid

import pytest

from bridge.store.contracts import LedgerEntry
from bridge.store.postgres import MIGRATIONS, PostgresStore
from tests.fixtures.postgres import POSTGRES_URL, drop_schema, schema_at

pytestmark = pytest.mark.integration

SOURCE = "kafka://orders-cluster/orders"
# Keys that a locale orders otherwise than their bytes do (case, accents, symbols), and
# keys equal under some collations' rules but not byte for byte.
KEYS = [
    ("notify", f"{SOURCE}\x1fzebra"),
    ("notify", f"{SOURCE}\x1fZebra"),
    ("notify", f"{SOURCE}\x1fécole"),
    ("notify", f"{SOURCE}\x1fecole"),
    ("Notify", f"{SOURCE}\x1f-1"),
    ("notify", f"{SOURCE}\x1f\u00e9"),  # é, one code point
    ("notify", f"{SOURCE}\x1fe\u0301"),  # é, e and a combining accent
]


async def test_a_ledger_of_before_keeps_its_runs_and_compares_keys_byte_for_byte(
    postgres: str,
) -> None:
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    kept = {k: "succeeded" if i % 2 == 0 else "dead_lettered" for i, k in enumerate(KEYS)}
    conn = await schema_at(schema, 11)  # as the version before left it, with runs recorded
    try:
        await conn.executemany(
            "INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
            " VALUES ($1, $2, 'e', $3, '1', 1)",
            [(h, k, status) for (h, k), status in kept.items()],
        )
    finally:
        await conn.close()
    store = PostgresStore(f"{POSTGRES_URL}?schema={schema}")
    await store.open()
    try:
        assert await store.ledger_final(KEYS) == kept
        # The same keys in another case or form are other runs: claimable, one each.
        upper = ((h.upper(), k.upper()) for h, k in KEYS)
        others = [k for k in dict.fromkeys(upper) if k not in kept]
        claimed = await store.ledger_claim(others + KEYS, [], "e2", "A", 100.0, 200.0)
        assert claimed == {**dict.fromkeys(others, "claimed"), **kept}
        await store.ledger_record([LedgerEntry(h, k, "e2", "succeeded") for h, k in others])
        assert await store.ledger_final(others) == dict.fromkeys(others, "succeeded")
        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": f'"{schema}"'})
        try:
            collations = await conn.fetch(
                "SELECT column_name, collation_name FROM information_schema.columns"
                " WHERE table_schema = $1 AND table_name = 'ledger'"
                " AND column_name IN ('handler', 'key') ORDER BY column_name",
                schema,
            )
            primary = await conn.fetchval(
                "SELECT pg_get_indexdef(indexrelid) FROM pg_index"
                " WHERE indrelid = 'ledger'::regclass AND indisprimary"
            )
            version = await conn.fetchval("SELECT max(version) FROM bridge_schema")
            rows = await conn.fetchval("SELECT count(*) FROM ledger")
        finally:
            await conn.close()
        assert [tuple(r) for r in collations] == [("handler", "C"), ("key", "C")]
        assert primary.endswith("USING btree (key, handler)")
        assert version == len(MIGRATIONS) and rows == len(KEYS) + len(others)
    finally:
        await store.close()
        await drop_schema(schema)
