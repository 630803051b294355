"""The inbox on SQLite."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence

from bridge.store import rows
from bridge.store.contracts import InboxEntry
from bridge.store.sqlite.connection import IN_LIST, SqliteConnection, in_lists


class SqliteInbox(SqliteConnection):
    """``InboxStore`` on SQLite: ``seq`` is the table's autoincrement key."""

    async def inbox_put(self, entries: Sequence[InboxEntry]) -> list[bool]:
        single = len(entries) <= _ROWS
        return await self._write(
            lambda c: inbox_insert(c, entries), len(entries), "inbox_put", single=single
        )

    async def inbox_pending(self, after_seq: int, limit: int) -> list[InboxEntry]:
        found = await self._read(
            lambda c: c.execute(
                f"SELECT {rows.INBOX_COLUMNS} FROM inbox"
                " WHERE done_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall(),
            "inbox_pending",
        )
        return [rows.inbox_entry(r) for r in found]

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        now = time.time()
        marked = list(seqs)
        if marked:
            single = len(marked) <= IN_LIST
            await self._write(
                lambda c: inbox_mark_done(c, marked, now), len(marked), "inbox_done", single=single
            )

    async def inbox_claim(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[InboxEntry]:
        def claim(conn: sqlite3.Connection) -> list[InboxEntry]:
            found = conn.execute(
                f"SELECT {rows.INBOX_COLUMNS} FROM inbox"
                " WHERE done_at IS NULL AND leased_until < ? ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE inbox SET leased_until = ?, lease_owner = ? WHERE seq = ?",
                [(now + lease, owner, r[0]) for r in found],
            )
            return [rows.inbox_entry(r) for r in found]

        return await self._call(claim)

    async def inbox_lease(self, seqs: Iterable[int], until: float) -> None:
        params = [(until, s) for s in seqs]
        await self._call(
            lambda c: c.executemany("UPDATE inbox SET leased_until = ? WHERE seq = ?", params)
        )

    async def inbox_renew(self, seqs: Iterable[int], until: float, owner: str) -> list[int]:
        wanted = list(seqs)

        def renew(conn: sqlite3.Connection) -> list[int]:
            return [
                s
                for s in wanted
                if conn.execute(
                    "UPDATE inbox SET leased_until = ? WHERE seq = ? AND lease_owner = ?"
                    " AND done_at IS NULL",
                    (until, s, owner),
                ).rowcount
            ]

        return await self._call(renew)

    async def inbox_finish(self, seqs: Iterable[int], owner: str) -> list[int]:
        wanted = list(seqs)
        now = time.time()

        def finish(conn: sqlite3.Connection) -> list[int]:
            return [
                s
                for s in wanted
                if conn.execute(
                    "UPDATE inbox SET done_at = ?, body = NULL WHERE seq = ? AND lease_owner = ?"
                    " AND done_at IS NULL",
                    (now, s, owner),
                ).rowcount
            ]

        return await self._call(finish)

    async def inbox_purge(self, older_than: float) -> int:
        count: int = await self._call(
            lambda c: (
                c.execute(
                    "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < ?", (older_than,)
                ).rowcount
            )
        )
        return count


_ROWS = 500
"""Rows per ``INSERT`` of ``inbox_insert``: 6 variables each, under SQLite's 32,766."""
_DONE = "UPDATE inbox SET done_at = ?, body = NULL WHERE seq IN ({marks})"


def inbox_mark_done(conn: sqlite3.Connection, seqs: list[int], now: float) -> None:
    """Mark entries done (their bodies dropped) in one ``UPDATE`` per ``IN_LIST``, not one
    step per entry as ``executemany`` takes: each gives up and takes back the GIL, which
    the event loop's thread may hold."""
    for sql, part in in_lists(_DONE, seqs):
        conn.execute(sql, [now, *part]).close()


def inbox_insert(conn: sqlite3.Connection, entries: Sequence[InboxEntry]) -> list[bool]:
    """Insert entries not yet known by (event source, id), setting their ``seq``; True for
    each new one (of two with one identity in ``entries``, the first).

    One statement per ``_ROWS`` entries, not one per entry: each statement gives up and
    takes back the GIL, which the event loop's thread may hold. Rows go in the order of
    ``entries``, so their ``seq`` follows it. Runs inside the caller's transaction (a
    join's close puts its outcome this way).
    """
    out = [False] * len(entries)
    first: dict[tuple[str, str], int] = {}
    for n, e in enumerate(entries):  # keyed as the TEXT columns give them back
        first.setdefault((str(e.event_source), str(e.id)), n)
    unique = [entries[n] for n in first.values()]
    for start in range(0, len(unique), _ROWS):
        part = unique[start : start + _ROWS]
        cursor = conn.execute(
            "INSERT OR IGNORE INTO inbox (id, event_source, source, handler, body, created_at)"
            f" VALUES {','.join(['(?, ?, ?, ?, ?, ?)'] * len(part))}"
            " RETURNING seq, event_source, id",
            [
                v
                for e in part
                for v in (e.id, e.event_source, e.source, e.handler, e.body, e.created_at)
            ],
        )
        for seq, event_source, event_id in cursor.fetchall():
            n = first[(event_source, event_id)]
            entries[n].seq = seq
            out[n] = True
        cursor.close()
    return out
