"""The SQLite ledger's own cost by its shape: a row per (key, handler), as today, against
one row per key holding its handlers' statuses (a shape not built; this measures what it
could save before anyone builds it).

Both shapes do what the bridge does for an event of 4 handlers that all succeed, on the
loop's connections as the bridge opens them (WAL, ``synchronous=NORMAL``): the lookup of
its key (16 events a read, as deliveries come in runs of 16), then its successes
upserted (32 events a transaction, about what a write batch held in the ``ledger``
benchmark), with a checkpoint every ``_CHECKPOINT_ROWS`` rows written, as the bridge's
store asks for one. Today's shape is written and read by the bridge's own code
(``ledger_insert``, ``_final``) on a database its migrations made; the packed shape by
the equivalent statements on a table of ``(key, event_id, statuses, finished_at)`` with
``json_patch`` merging a key's statuses (without today's rule that a success is never
overwritten, which a real one would add to the merge). CPU of this process per event,
rounds interleaved, medians::

    python -m bench.ledger_shape             # 4,000 and 20,000 events, sequential and
                                             # random keys, 5 rounds
    python -m bench.ledger_shape --quick     # a smoke test

Writes ``bench/results/ledger-shape.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.store.contracts import LedgerEntry
from bridge.store.sqlite import SqliteStore
from bridge.store.sqlite.batch import (
    _CHECKPOINT_ROWS,
    _checkpoint,
    _final,
    _in_transaction,
    _open_reader,
    _open_writer,
)
from bridge.store.sqlite.connection import in_lists
from bridge.store.sqlite.ledger import ledger_insert

HANDLERS = ("send-welcome-email", "create-profile", "track-analytics", "setup-preferences")
READ_RUN = 16
WRITE_RUN = 32
RESULTS = Path(__file__).resolve().parent / "results"
_PACKED = (
    "CREATE TABLE IF NOT EXISTS ledger (key TEXT PRIMARY KEY, event_id TEXT NOT NULL,"
    " statuses TEXT NOT NULL, finished_at REAL NOT NULL) WITHOUT ROWID"
)
_PACKED_UPSERT = (
    " ON CONFLICT (key) DO UPDATE SET statuses = json_patch(ledger.statuses, excluded.statuses),"
    " finished_at = excluded.finished_at"
)
_LOOK = "SELECT key, statuses FROM ledger WHERE key IN ({marks})"
_STATUSES = json.dumps(dict.fromkeys(HANDLERS, "succeeded"), separators=(",", ":"))


def today(path: Path, keys: list[str]) -> tuple[float, int]:
    """CPU seconds of the lookups and upserts of ``keys``, a row per (key, handler); the
    successes stored."""
    asyncio.run(_migrated(SqliteStore(f"sqlite:///{path}")))

    def look(reader: sqlite3.Connection, part: list[str]) -> bool:
        return bool(_final(reader, [[(h, k) for h in HANDLERS] for k in part]))

    # The entries are made before the clock starts: the bridge makes them whatever the shape.
    now = time.time()
    made = {k: [LedgerEntry(h, k, k, "succeeded", None, now) for h in HANDLERS] for k in keys}

    def write(writer: sqlite3.Connection, run: list[str]) -> None:
        ledger_insert(writer, [entry for k in run for entry in made[k]])

    spent, writer = _timed(path, keys, look, write, len(HANDLERS))
    stored = writer.execute("SELECT COUNT(*) FROM ledger WHERE status = 'succeeded'").fetchone()[0]
    writer.close()
    return spent, int(stored)


def packed(path: Path, keys: list[str]) -> tuple[float, int]:
    """The same for one row per key; the successes stored (statuses in its rows)."""
    setup = sqlite3.connect(str(path), isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute(_PACKED)
    setup.close()

    def look(reader: sqlite3.Connection, part: list[str]) -> bool:
        # As today's ``_final``: ``in_lists``' padded, prepared IN lists.
        return any(reader.execute(sql, keys).fetchall() for sql, keys in in_lists(_LOOK, part))

    def write(writer: sqlite3.Connection, run: list[str]) -> None:
        now = time.time()
        values: list[object] = []
        for k in run:
            values.extend((k, k, _STATUSES, now))
        rows = ",".join(["(?, ?, ?, ?)"] * len(run))
        sql = f"INSERT INTO ledger (key, event_id, statuses, finished_at) VALUES {rows}"
        writer.execute(sql + _PACKED_UPSERT, values).close()

    spent, writer = _timed(path, keys, look, write, 1)
    stored = 0
    for (statuses,) in writer.execute("SELECT statuses FROM ledger"):
        stored += sum(s == "succeeded" for s in json.loads(statuses).values())
    writer.close()
    return spent, stored


def _timed(
    path: Path,
    keys: list[str],
    look: Callable[[sqlite3.Connection, list[str]], bool],
    write: Callable[[sqlite3.Connection, list[str]], None],
    rows_per_event: int,
) -> tuple[float, sqlite3.Connection]:
    """CPU seconds of looking ``keys`` up and writing them as the bridge does (a transaction
    a run of ``WRITE_RUN``, a checkpoint every ``_CHECKPOINT_ROWS`` rows); the writer."""
    writer, reader = _open_writer(str(path)), _open_reader(str(path))
    unchecked = 0
    start = time.process_time()
    for at in range(0, len(keys), WRITE_RUN):
        run = keys[at : at + WRITE_RUN]
        for r in range(0, len(run), READ_RUN):
            if look(reader, run[r : r + READ_RUN]):
                raise AssertionError("a new key was found in the ledger")
        _in_transaction(writer, lambda conn: write(conn, run))  # noqa: B023
        unchecked += len(run) * rows_per_event
        if unchecked >= _CHECKPOINT_ROWS:
            unchecked = 0
            _checkpoint(writer)
    spent = time.process_time() - start
    reader.close()
    return spent, writer


async def _migrated(store: SqliteStore) -> None:
    await store.open()
    await store.close()


SHAPES: dict[str, Callable[[Path, list[str]], tuple[float, int]]] = {
    "row_per_handler": today,
    "row_per_key": packed,
}


KEYS: dict[str, Callable[[int, int], list[str]]] = {
    # as the memory connector names its events (topic-offset), as in the ledger benchmark
    "sequential": lambda n, count: [f"signups-{n}-{i}" for i in range(count)],
    # as producers that name events by UUID do
    "random": lambda n, count: [str(uuid.uuid4()) for _ in range(count)],
}


def measure(events: int, keys: str, rounds: int, workdir: Path) -> dict[str, Any]:
    """µs of CPU per event for each shape, ``rounds`` interleaved rounds of ``events``
    events named the ``keys`` way."""
    spent: dict[str, list[float]] = {name: [] for name in SHAPES}
    stored: dict[str, int] = {}
    for n in range(rounds):
        named = KEYS[keys](n, events)
        for name, shape in SHAPES.items():
            seconds, stored[name] = shape(workdir / f"{name}-{keys}-{events}-{n}.db", named)
            spent[name].append(seconds / events * 1e6)
    medians = {name: statistics.median(values) for name, values in spent.items()}
    return {
        "events": events,
        "keys": keys,
        "rounds": rounds,
        "cpu_us_per_event": medians,
        "cpu_us_per_event_rounds": spent,
        "successes_stored": stored,
        "row_per_key/row_per_handler": medians["row_per_key"] / medians["row_per_handler"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts, 1 round")
    parser.add_argument("--out", type=Path, default=RESULTS / "ledger-shape.json")
    args = parser.parse_args()
    sizes, rounds = ((64,), 1) if args.quick else ((4000, 20000), 5)
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "handlers": len(HANDLERS),
            "sizes": [measure(size, keys, rounds, Path(tmp)) for keys in KEYS for size in sizes],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for size in result["sizes"]:
        cpu = size["cpu_us_per_event"]
        print(
            f"{size['events']} events, {size['keys']} keys:"
            f" a row per handler {cpu['row_per_handler']:.1f} µs an event,"
            f" a row per key {cpu['row_per_key']:.1f}"
            f" ({size['row_per_key/row_per_handler']:.2f})"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
