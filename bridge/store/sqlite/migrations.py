"""The SQLite schema, versioned by ``PRAGMA user_version``: a store of any older version opens."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _inbox_identity(conn: sqlite3.Connection) -> None:
    """Rebuild the inbox unique on (event_source, id) instead of id alone.

    SQLite cannot drop a column's UNIQUE constraint, so the table is copied,
    with whatever columns it has by now (other migrations may have added some).
    Entries stored before keep an empty ``event_source``: a later copy of one of
    them is accepted again, and the ledger's fallback to the key of before
    (``bridge.dispatch.runs.BoundHandler.keys``) keeps it from running again.
    """
    info = conn.execute("PRAGMA table_info(inbox)").fetchall()
    columns = [(row[1], row[2], row[3], row[4]) for row in info if row[1] not in ("seq", "id")]
    defs = []
    for name, kind, notnull, default in columns:
        text = f"{name} {kind}" + (" NOT NULL" if notnull else "")
        defs.append(text + (f" DEFAULT {default}" if default is not None else ""))
    names = ", ".join(["seq", "id", *(c[0] for c in columns)])
    conn.execute(
        "CREATE TABLE inbox_by_identity (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        f" id TEXT NOT NULL, {', '.join(defs)}, event_source TEXT NOT NULL DEFAULT '',"
        " UNIQUE (event_source, id))"
    )
    conn.execute(f"INSERT INTO inbox_by_identity ({names}) SELECT {names} FROM inbox")
    conn.execute("DROP TABLE inbox")
    conn.execute("ALTER TABLE inbox_by_identity RENAME TO inbox")
    conn.execute("CREATE INDEX inbox_pending ON inbox (seq) WHERE done_at IS NULL")
    conn.execute("CREATE INDEX inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL")


MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: ledger, dead letters, inbox
    """
    CREATE TABLE ledger (
        handler TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        status TEXT NOT NULL,
        result BLOB,
        finished_at REAL NOT NULL,
        PRIMARY KEY (handler, key)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        connector TEXT NOT NULL,
        handler TEXT,
        event_id TEXT,
        record BLOB NOT NULL
    );
    CREATE INDEX dead_letters_by_time ON dead_letters (created_at DESC);
    CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        handler TEXT,
        body BLOB,
        created_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX inbox_pending ON inbox (seq) WHERE done_at IS NULL;
    CREATE INDEX inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;
    """,
    # 2: orchestration: parked retries, durable steps, joins, cron positions
    """
    CREATE TABLE parked (
        id TEXT PRIMARY KEY,
        handler TEXT NOT NULL,
        due_at REAL NOT NULL,
        leased_until REAL NOT NULL DEFAULT 0,
        record BLOB NOT NULL
    );
    CREATE INDEX parked_due ON parked (due_at);
    CREATE TABLE steps (
        event_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        step TEXT NOT NULL,
        result BLOB,
        created_at REAL NOT NULL,
        PRIMARY KEY (event_id, handler, step)
    ) WITHOUT ROWID;
    CREATE TABLE joins (
        id TEXT PRIMARY KEY,
        handler TEXT NOT NULL,
        status TEXT NOT NULL,
        expected INTEGER,
        deadline REAL NOT NULL,
        start BLOB NOT NULL,
        created_at REAL NOT NULL,
        closed_at REAL
    );
    CREATE INDEX joins_open ON joins (handler, created_at) WHERE status = 'open';
    CREATE INDEX joins_deadline ON joins (deadline) WHERE status = 'open';
    CREATE TABLE join_members (
        join_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        value BLOB,
        UNIQUE (join_id, member_id)
    );
    CREATE TABLE join_buffer (
        handler TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (handler, event_id)
    );
    CREATE TABLE cron (name TEXT PRIMARY KEY, last_tick REAL NOT NULL);
    """,
    # 3: run history for the developer UI
    """
    CREATE TABLE history_events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        received_at REAL NOT NULL,
        correlation_id TEXT,
        parent_id TEXT,
        record BLOB NOT NULL
    );
    CREATE INDEX history_by_time ON history_events (received_at DESC, id DESC);
    CREATE INDEX history_by_correlation ON history_events (correlation_id);
    CREATE INDEX history_by_parent ON history_events (parent_id);
    CREATE TABLE history_runs (
        event_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (event_id, handler)
    ) WITHOUT ROWID;
    """,
    # 4: inbox leases, so that processes sharing a store never take the same entry
    """
    ALTER TABLE inbox ADD COLUMN leased_until REAL NOT NULL DEFAULT 0;
    """,
    # 5: dead letters found by event (the UI's event page) and by event type
    """
    ALTER TABLE dead_letters ADD COLUMN event_type TEXT;
    CREATE INDEX dead_letters_by_event ON dead_letters (event_id);
    CREATE INDEX dead_letters_by_type ON dead_letters (event_type, created_at DESC);
    """,
    # 6: inbox identity: unique on (the event's CloudEvents source, id), no longer on id alone
    _inbox_identity,
    # 7: lease owners on inbox entries and parked runs: a holder whose lease was taken over
    # neither renews, finishes nor releases it
    """
    ALTER TABLE inbox ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE parked ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
    """,
    # 8: cancellations (cancel_on): runs of a handler for a key created before `at`
    """
    CREATE TABLE cancellations (
        handler TEXT NOT NULL,
        key TEXT NOT NULL,
        at REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE INDEX cancellations_expiry ON cancellations (expires_at);
    """,
    # 9: flow-control state (bridge.store.contracts.flow): throttles, rate limits, debounces,
    # idempotency keys and singleton slots, by handler and key
    """
    CREATE TABLE IF NOT EXISTS flow_once (
        handler TEXT NOT NULL, key TEXT NOT NULL, until REAL NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS flow_gcra (
        handler TEXT NOT NULL, key TEXT NOT NULL, tat REAL NOT NULL,
        seen REAL NOT NULL, PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS flow_window (
        handler TEXT NOT NULL, key TEXT NOT NULL, times TEXT NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS flow_budgets (
        name TEXT PRIMARY KEY, slices TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS flow_debounce (
        handler TEXT NOT NULL, key TEXT NOT NULL, event_id TEXT NOT NULL,
        event_at REAL NOT NULL, first_at REAL NOT NULL, due_at REAL NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS flow_slots (
        handler TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL,
        until REAL NOT NULL, cancel INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (handler, key, owner)
    );
    """,
    # 10: facts about the store; `legacy_keys` when the ledger may hold runs recorded
    # under the default key of before (the event id alone, without its source): a key
    # without the separator. A store created at this version or later never has one, and
    # its lookups skip the keys of before (bridge.dispatch.fanout).
    """
    CREATE TABLE bridge_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO bridge_meta (name, value) SELECT 'legacy_keys', '1'
        WHERE EXISTS (SELECT 1 FROM ledger WHERE instr(key, char(31)) = 0);
    """,
    # 11: the ledger keyed by (key, handler), not (handler, key). The runs of one event
    # share its key, so their rows sit together: a lookup of an event's handlers is one
    # descent of the tree, not one per handler, and a batch of successes writes an
    # event's rows in one place. Every query names both columns, or neither.
    """
    CREATE TABLE ledger_by_key (
        handler TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        status TEXT NOT NULL,
        result BLOB,
        finished_at REAL NOT NULL,
        PRIMARY KEY (key, handler)
    ) WITHOUT ROWID;
    INSERT INTO ledger_by_key (handler, key, event_id, status, result, finished_at)
        SELECT handler, key, event_id, status, result, finished_at FROM ledger;
    DROP TABLE ledger;
    ALTER TABLE ledger_by_key RENAME TO ledger;
    """,
]

LEGACY_KEYS = "SELECT 1 FROM bridge_meta WHERE name = 'legacy_keys'"
"""A row if the ledger may hold runs recorded under the default key of before."""


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations this database has not seen, each in its own transaction.

    A migration is a script, or a function given the connection inside the transaction.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        if isinstance(script, str):
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            script(conn)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
