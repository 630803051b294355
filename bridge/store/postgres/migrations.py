"""The PostgreSQL schema, versioned in a ``bridge_schema`` table: a store of any older version opens.

Migrations run under an advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

from typing import Any

_LOCK_ID = 0x62726467  # advisory lock for migrations ("brdg")

MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS ledger (
        handler TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        status TEXT NOT NULL,
        result JSONB,
        finished_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS dead_letters (
        id TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        connector TEXT NOT NULL,
        handler TEXT,
        event_id TEXT,
        record JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (created_at DESC);
    CREATE TABLE IF NOT EXISTS inbox (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        handler TEXT,
        body BYTEA,
        created_at DOUBLE PRECISION NOT NULL,
        done_at DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (seq) WHERE done_at IS NULL;
    CREATE INDEX IF NOT EXISTS inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;
    """,
    # 2: orchestration: parked retries, durable steps, joins, cron positions
    """
    CREATE TABLE IF NOT EXISTS parked (
        id TEXT PRIMARY KEY,
        handler TEXT NOT NULL,
        due_at DOUBLE PRECISION NOT NULL,
        leased_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        record JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS parked_due ON parked (due_at);
    CREATE TABLE IF NOT EXISTS steps (
        event_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        step TEXT NOT NULL,
        result JSONB,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (event_id, handler, step)
    );
    CREATE TABLE IF NOT EXISTS joins (
        id TEXT PRIMARY KEY,
        handler TEXT NOT NULL,
        status TEXT NOT NULL,
        expected INTEGER,
        deadline DOUBLE PRECISION NOT NULL,
        start JSONB NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        closed_at DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS joins_open ON joins (handler, created_at) WHERE status = 'open';
    CREATE INDEX IF NOT EXISTS joins_deadline ON joins (deadline) WHERE status = 'open';
    CREATE TABLE IF NOT EXISTS join_members (
        seq BIGSERIAL,
        join_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        value JSONB,
        PRIMARY KEY (join_id, member_id)
    );
    CREATE TABLE IF NOT EXISTS join_buffer (
        seq BIGSERIAL,
        handler TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event JSONB NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (handler, event_id)
    );
    CREATE TABLE IF NOT EXISTS cron (name TEXT PRIMARY KEY, last_tick DOUBLE PRECISION NOT NULL);
    """,
    # 3: run history for the developer UI
    """
    CREATE TABLE IF NOT EXISTS history_events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        correlation_id TEXT,
        parent_id TEXT,
        record JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS history_by_time ON history_events (received_at DESC, id DESC);
    CREATE INDEX IF NOT EXISTS history_by_correlation ON history_events (correlation_id);
    CREATE INDEX IF NOT EXISTS history_by_parent ON history_events (parent_id);
    CREATE TABLE IF NOT EXISTS history_runs (
        event_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        record JSONB NOT NULL,
        PRIMARY KEY (event_id, handler)
    );
    """,
    # 4: inbox leases, so that replicas never take the same entry
    """
    ALTER TABLE inbox ADD COLUMN IF NOT EXISTS leased_until DOUBLE PRECISION NOT NULL DEFAULT 0;
    """,
    # 5: dead letters found by event (the UI's event page) and by event type
    """
    ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS event_type TEXT;
    CREATE INDEX IF NOT EXISTS dead_letters_by_event ON dead_letters (event_id);
    CREATE INDEX IF NOT EXISTS dead_letters_by_type ON dead_letters (event_type, created_at DESC);
    """,
    # 6: inbox identity: unique on (the event's CloudEvents source, id), no longer on id alone.
    # Entries stored before keep an empty event_source (see the SQLite migration).
    """
    ALTER TABLE inbox ADD COLUMN IF NOT EXISTS event_source TEXT NOT NULL DEFAULT '';
    ALTER TABLE inbox DROP CONSTRAINT IF EXISTS inbox_id_key;
    CREATE UNIQUE INDEX IF NOT EXISTS inbox_identity ON inbox (event_source, id);
    """,
    # 7: lease owners on inbox entries and parked runs: a holder whose lease was taken over
    # neither renews, finishes nor releases it
    """
    ALTER TABLE inbox ADD COLUMN IF NOT EXISTS lease_owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE parked ADD COLUMN IF NOT EXISTS lease_owner TEXT NOT NULL DEFAULT '';
    """,
    # 8: cancellations (cancel_on): runs of a handler for a key created before `at`
    """
    CREATE TABLE IF NOT EXISTS cancellations (
        handler TEXT NOT NULL,
        key TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE INDEX IF NOT EXISTS cancellations_expiry ON cancellations (expires_at);
    """,
    # 9: flow-control state (bridge.store.contracts.flow): throttles, rate limits, debounces,
    # idempotency keys and singleton slots, by handler and key
    """
    CREATE TABLE IF NOT EXISTS flow_once (
        handler TEXT NOT NULL, key TEXT NOT NULL, until DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS flow_gcra (
        handler TEXT NOT NULL, key TEXT NOT NULL, tat DOUBLE PRECISION NOT NULL,
        seen DOUBLE PRECISION NOT NULL, PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS flow_window (
        handler TEXT NOT NULL, key TEXT NOT NULL, times DOUBLE PRECISION[] NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS flow_budgets (
        name TEXT PRIMARY KEY, slices JSONB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS flow_debounce (
        handler TEXT NOT NULL, key TEXT NOT NULL, event_id TEXT NOT NULL,
        event_at DOUBLE PRECISION NOT NULL, first_at DOUBLE PRECISION NOT NULL, due_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS flow_slots (
        handler TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL,
        until DOUBLE PRECISION NOT NULL, cancel BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (handler, key, owner)
    );
    """,
    # 10: facts about the store; `legacy_keys` when the ledger may hold runs recorded
    # under the default key of before (the event id alone, without its source): a key
    # without the separator. A schema created at this version or later never has one, and
    # its lookups and claims skip the keys of before (bridge.dispatch.fanout).
    """
    CREATE TABLE bridge_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO bridge_meta (name, value) SELECT 'legacy_keys', '1'
        WHERE EXISTS (SELECT 1 FROM ledger WHERE strpos(key, chr(31)) = 0);
    """,
    # 11: room in the ledger's pages for the update of each row. A run's row is written
    # twice: its claim inserts it, its end updates it. On a full page the update goes to
    # another page and adds an entry to the primary key's index; with room left on the
    # page it is a heap-only (HOT) update, which writes no index entry and is pruned in
    # place. An ended row is smaller than its claim (no owner), so 40 % of a page holds
    # the updates of nearly all its rows. Measured on the ledger benchmark: the server's
    # CPU per event 50.0 -> 42.5 µs, events/s +5 % (docs/performance.md); the heap takes
    # more pages for the same rows. New pages get the room; existing ones keep theirs.
    """
    ALTER TABLE ledger SET (fillfactor = 60);
    """,
    # 12: the ledger's keys compared byte for byte. Its lookups, claims and records find
    # their rows through the primary key's index, comparing (handler, key) at each level;
    # under the database's collation each comparison went through the locale (strcoll,
    # or ICU), about a seventh of the server's CPU on a claim or a record with C.UTF-8.
    # A key only ever needs equality, for which "C" is exact. Measured on the ledger
    # benchmark, alternated: the server's CPU per event 51.6 -> 45.7 µs in a C.UTF-8
    # database, 55.8 -> 45.0 µs in an ICU en-US one; events/s +5 %. The index is rebuilt,
    # the rows are not rewritten.
    """
    ALTER TABLE ledger ALTER COLUMN handler TYPE TEXT COLLATE "C",
        ALTER COLUMN key TYPE TEXT COLLATE "C";
    """,
    # 13: the ledger's primary key (key, handler), not (handler, key), as on SQLite
    # (its migration 11). The runs of one event share its key, so their index entries
    # sit together: an event's claims, records and lookups touch one leaf of the index,
    # not one a handler in as many places. Every query names both columns; ON CONFLICT
    # (handler, key) finds the index by its set of columns.
    # Measured on the ledger benchmark, alternated (3 pairs of 12,000 events): the
    # server's CPU per event 44.3 -> 39.7 µs, events/s +5.7 %. The index is rebuilt.
    """
    ALTER TABLE ledger DROP CONSTRAINT ledger_pkey, ADD PRIMARY KEY (key, handler);
    """,
]

LEGACY_KEYS = "SELECT 1 FROM bridge_meta WHERE name = 'legacy_keys'"
"""A row if the ledger may hold runs recorded under the default key of before."""


async def migrate(conn: Any, schema: str) -> None:
    """Create ``schema`` if needed and apply the migrations it has not seen.

    Runs in the caller's transaction, which holds the migration lock until it ends.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute("CREATE TABLE IF NOT EXISTS bridge_schema (version INTEGER NOT NULL)")
    version = await conn.fetchval("SELECT max(version) FROM bridge_schema") or 0
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        await conn.execute(script)
        await conn.execute("INSERT INTO bridge_schema (version) VALUES ($1)", number)
