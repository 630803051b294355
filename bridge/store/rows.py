"""Row mapping shared by the SQL stores: stored rows and JSON columns to records.

SQLite hands rows as tuples, asyncpg as ``Record``; both index by position, so
each mapping reads the columns in the order of its ``*_COLUMNS`` list, which the
queries select. JSON columns arrive as bytes (SQLite BLOB), as text (PostgreSQL
JSONB) or already decoded; ``decode`` takes all three.
"""

from __future__ import annotations

from typing import Any

import bridge.jsonio as jsonio
from bridge.store.contracts import (
    Attempt,
    DeadLetter,
    EventRecord,
    InboxEntry,
    Join,
    LedgerEntry,
    ParkedRun,
    RunRecord,
)

INBOX_COLUMNS = "seq, id, source, handler, body, created_at"
JOIN_COLUMNS = "id, handler, start, expected, deadline, status, created_at"
LEDGER_COLUMNS = "handler, key, event_id, status, result, finished_at"


def encode(value: Any) -> bytes | None:
    """JSON bytes of ``value`` (None stays None); what is not JSON is stored as its ``str``."""
    if value is None:
        return None
    return jsonio.dumps(value, default=str)


def encode_text(value: Any) -> str | None:
    """``encode`` as text, for drivers that take JSON as a string."""
    return None if value is None else jsonio.dumps(value, default=str).decode()


def decode(raw: Any) -> Any:
    """The value of a JSON column: bytes or text are parsed, anything else (None, or a
    value the driver decoded already) is returned as is."""
    return jsonio.loads(raw) if isinstance(raw, str | bytes) else raw


def inbox_entry(row: Any) -> InboxEntry:
    """An inbox entry from a row of ``INBOX_COLUMNS``."""
    return InboxEntry(
        id=row[1], body=bytes(row[4]), source=row[2], handler=row[3], created_at=row[5], seq=row[0]
    )


def join(row: Any) -> Join:
    """A join (members not loaded) from a row of ``JOIN_COLUMNS``."""
    return Join(
        id=row[0],
        handler=row[1],
        start=decode(row[2]),
        expected=row[3],
        deadline=row[4],
        status=row[5],
        created_at=row[6],
    )


def ledger_entry(row: Any) -> LedgerEntry:
    """A ledger entry from a row of ``LEDGER_COLUMNS``."""
    return LedgerEntry(row[0], row[1], row[2], row[3], decode(row[4]), row[5])


def dead_letter(record: Any, status: str) -> DeadLetter:
    """A dead letter from its stored record, with the status of its ``status`` column
    (the column is what ``dead_letter_set_status`` changes)."""
    letter = DeadLetter.from_dict(decode(record))
    letter.status = status  # type: ignore[assignment]
    return letter


def parked_run(record: Any) -> ParkedRun:
    """A parked run from its stored record (``asdict`` as JSON)."""
    raw = dict(decode(record))
    raw["attempts"] = [Attempt(**a) for a in raw.get("attempts") or []]
    return ParkedRun(**raw)


def run_record(record: Any) -> RunRecord:
    """A history run from its stored record (``asdict`` as JSON)."""
    raw = dict(decode(record))
    raw["attempts"] = [Attempt(**a) for a in raw.get("attempts") or []]
    # Records written before ``reason`` was folded into ``error`` carry both keys.
    legacy = raw.pop("reason", None)
    if raw.get("error") is None:
        raw["error"] = legacy
    return RunRecord(**raw)


def event_record(record: Any) -> EventRecord:
    """A history event from its stored record (``asdict`` as JSON)."""
    return EventRecord(**decode(record))
