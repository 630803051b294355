"""The ledger's batched calls on PostgreSQL: a batch is one pool connection and, in the
common case, one statement (one round trip), whatever the number of deliveries in it.

Two lanes, so a lookup never waits behind a write. The lookups and run claims of a
batch are one statement (``unnest`` arrays); its claims commit without waiting for
the WAL flush (a claim is a lease between live replicas, not a record). Up to two
such batches are in flight, the second only once a claim waited 5 ms for the first.
The successes of a batch are one atomic statement (``unnest`` arrays); with dead
letters, all go in one transaction; up to two write batches are in flight. Each
caller is answered once its write committed, durably.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from bridge.errors import StoreError
from bridge.store.batching import Call, Lane, count_round_trip
from bridge.store.contracts import DeadLetter, LedgerEntry
from bridge.store.postgres.connection import PostgresConnection
from bridge.store.postgres.dead_letters import ADD, add_args
from bridge.store.postgres.growth import Growth
from bridge.store.postgres.ledger import RECORD, RECORD_ALL, record_args
from bridge.store.postgres.packed import HEXADECIMAL_PROBE, Packed

Pair = tuple[str, str]

_READ = (
    "SELECT l.handler, l.key, l.status FROM ledger l"
    " JOIN unnest($1::text[], $2::text[]) AS k(handler, key)"
    " ON l.handler = k.handler AND l.key = k.key WHERE l.status <> 'running'"
)

# The claims of a batch in one statement: each key with its own event, owner and
# deadline, inserted as ``running`` unless its row is there and not claimable; a claim
# counts as expired if it ended before the earliest ``now`` of the batch. The keys of a
# statement are distinct (``_claim_rows``). The server takes them in key order (code
# point order, as Python sorts text), as the successes' statements take theirs: two
# statements locking the same keys cannot deadlock (the client sorted the rows before,
# at a cost of its own). It answers how many keys it claimed: when that is every key
# (the common case), each key's status is ``claimed`` and nothing else is read;
# otherwise ``_STATUS`` reads what the others hold. No row of the ledger is read but
# through the primary key, by the insert's conflict check: a join of the keys
# with the ledger, as this statement had, took as long as the inserts themselves (3.5
# against 6 ms for 1,000 keys), and read the whole table while its plan was made on an
# empty ledger.
# The owner is kept in ``result`` and the deadline in ``finished_at``, so a claim needs
# no column of its own. A row another transaction inserts meanwhile makes the INSERT
# wait for it, then skip it unless claimable.
# A claim this process (``owner``) holds is taken again at once: the fan-out claims a
# key only while it leads that key's run in this process (its single-flight map), so
# such a claim is stale, left by a claim whose answer was lost (the store hung after
# committing it); waiting for it to lapse would hold the message for minutes.
# The lookups of the batch go with it (``UNION ALL``), each row flagged ``true``.
_CLAIM = (
    "WITH cfg AS (SELECT set_config('synchronous_commit', 'off', true)),"
    " claimed AS (INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
    "  SELECT k.handler, k.key, k.event_id, 'running', to_jsonb(k.owner), k.until"
    "  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $6::float8[])"
    "  AS k(handler, key, event_id, owner, until)"
    '  ORDER BY k.handler COLLATE "C", k.key COLLATE "C"'
    "  ON CONFLICT (key, handler) DO UPDATE SET status = 'running',"
    "  result = excluded.result, finished_at = excluded.finished_at,"
    "  event_id = excluded.event_id"
    "  WHERE ledger.status = 'running'"
    "   AND (ledger.finished_at < $5 OR ledger.result = excluded.result)"
    "  RETURNING 1)"
    " SELECT NULL, NULL, (SELECT count(*) FROM claimed)::text, false FROM cfg"
    " UNION ALL SELECT l.handler, l.key, l.status, true FROM ledger l"
    "  JOIN unnest($7::text[], $8::text[]) AS r(handler, key)"
    "  ON l.handler = r.handler AND l.key = r.key WHERE l.status <> 'running'"
)

# What the keys a claim did not take hold (rarely: a redelivery, another replica's run):
# a final status, ``running`` (another owner's claim, or none at all: polled again), or
# ``claimed`` for a claim of this owner's, which that statement took.
_STATUS = (
    "SELECT l.handler, l.key, CASE WHEN l.status = 'running' AND l.result = to_jsonb(k.owner)"
    " THEN 'claimed' ELSE l.status END FROM ledger l"
    " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(handler, key, owner)"
    " ON l.handler = k.handler AND l.key = k.key"
)


# The statements of the hot path with their arrays read from one text each (``packed``).
_CLAIMS = Packed(_CLAIM)
_HELD = Packed(_STATUS)
_RECORDS = Packed(RECORD_ALL)
_KEY = itemgetter(0, 1)  # (handler, key) of a row of claim or record arguments


class PostgresBatches(PostgresConnection):
    """``ledger_final``, ``ledger_claim``, ``ledger_record`` and ``dead_letter_final`` in
    batches across callers."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        super().__init__(url, pool_size=pool_size)
        # Claims: a claim made while a batch is in flight waits for it (up to 5 ms, then
        # a second batch goes beside it). Under load the claims of a round trip's time
        # share the next statement, and fewer server backends compete with the bridge
        # for the cores: 13 % more events/s than four batches in flight at once, each
        # of a loop turn's claims, on the memory connector (0.017 round trips an event
        # instead of 0.037); at 1,000 events/s the added p99 did not move beyond its noise.
        self._reads = Lane(self._flush_reads, self.deadlines.call, flights=2, patience=0.005)
        # Two write batches in flight: a success made while one commits goes at once,
        # not after that commit's WAL flush (the server flushes both together), which
        # halved the p99 from produce to settled at 1,000 events/s. Each batch locks its
        # keys in key order, as the claims do, so two cannot deadlock.
        self._writes = Lane(self._flush_writes, self.deadlines.call, flights=2)
        self.growth: Growth | None = None  # analyzes the ledger while it is young, once open
        # Whether the server reads floats written in hexadecimal (read once open): the
        # claims' deadlines and the successes' finish times are sent so.
        self.hexadecimal = False

    async def open(self) -> None:
        await super().open()
        if self.growth is None:
            self.hexadecimal = await self._reads_hexadecimal()
            rows = await self._run(
                "fetchval", "SELECT reltuples FROM pg_class WHERE oid = 'ledger'::regclass"
            )
            self.growth = Growth(self._analyze_ledger, rows)

    async def _reads_hexadecimal(self) -> bool:
        import asyncpg

        try:
            return bool(await self._run("fetchval", HEXADECIMAL_PROBE))
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.DataError):  # it refuses the text
                return False
            raise

    async def _analyze_ledger(self) -> None:
        # The columns its plans join on: the row count comes with any.
        await self._run("execute", "ANALYZE ledger (key, handler)")

    async def ledger_final(self, keys: Sequence[Pair]) -> dict[Pair, str]:
        if not keys:
            return {}
        found: dict[Pair, str] = await self._reads.call("final", keys)
        return found

    async def ledger_claim(
        self,
        keys: Sequence[Pair],
        read: Sequence[Pair],
        event_id: str,
        owner: str,
        now: float,
        until: float,
    ) -> dict[Pair, str]:
        found: dict[Pair, str] = await self._reads.call(
            "claim", keys, read, event_id, owner, now, until
        )
        return found

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        if entries:
            await self._writes.call("record", entries)

    async def dead_letter_final(self, letter: DeadLetter, entry: LedgerEntry | None) -> None:
        await self._writes.call("dead_letter", letter, entry)

    async def close(self) -> None:
        await self._reads.idle()
        await self._writes.idle()
        if self.growth is not None:
            await self.growth.close()
        await super().close()

    async def _flush_reads(self, calls: list[Call]) -> None:
        # One statement per round, each its own (implicit) transaction: a batch costs one
        # round trip, not the five of BEGIN, SET, claim, read and COMMIT.
        count_round_trip(self, "ledger_read_batch")

        rounds, distinct = _rounds(calls)

        async def run(conn: Any) -> list[dict[Pair, str]]:
            if len(rounds) < 2:
                return await _reads(self, conn, calls, rounds, distinct)
            async with conn.transaction():  # rounds of claims: all or none
                return await _reads(self, conn, calls, rounds, distinct)

        answers = await self._bounded(run, None)
        for call, answer in zip(calls, answers, strict=True):
            call.answer(answer)
        growth = self.growth
        if growth is not None and growth.young and rounds:  # rows the claims may have added
            growth.added(sum(len(calls[i].args[0]) for group in rounds for i in group))

    async def _flush_writes(self, calls: list[Call]) -> None:
        count_round_trip(self, "ledger_write_batch")
        if all(call.kind == "record" for call in calls):
            # Successes only (the common case): one statement, no transaction around
            # it. If one entry is bad (its result cannot even be encoded, or the server
            # refuses it), each call on its own, below.
            try:
                entries = _entries(calls, range(len(calls)))
                hexadecimal = self.hexadecimal
                await self._bounded(lambda conn: _record_all(conn, entries, hexadecimal), None)
            except (StoreError, ValueError, TypeError) as exc:
                if isinstance(exc, StoreError) and not isinstance(exc.__cause__, _data_errors()):
                    raise
                # One bad entry: each call on its own, in the transaction below.
            else:
                for call in calls:
                    call.answer(None)
                return

        async def run(conn: Any) -> list[BaseException | None]:
            async with conn.transaction():
                return await _writes(conn, calls, self.hexadecimal)

        errors = await self._bounded(run, None)
        for call, error in zip(calls, errors, strict=True):
            if error is None:
                call.answer(None)
            else:
                call.fail(error)


def _rounds(calls: list[Call]) -> tuple[list[list[int]], bool]:
    """The claims of a batch in rounds with distinct keys: a key two deliveries claim in
    one batch goes to the first; the second, in the next statement, sees it ``running``.
    And whether no key comes twice in the batch (then it is one round)."""
    claims = [i for i, call in enumerate(calls) if call.kind == "claim"]
    every: set[Pair] = set()
    count = 0
    for i in claims:
        keys = calls[i].args[0]
        every.update(keys)
        count += len(keys)
    if len(every) == count:
        return ([claims] if claims else []), True  # the common case
    rounds: list[list[int]] = []
    taken: list[set[Pair]] = []  # the keys of each round (one set each, not one per call)
    for i in claims:
        mine = calls[i].args[0]
        for group, keys in zip(rounds, taken, strict=True):
            if keys.isdisjoint(mine):
                group.append(i)
                keys.update(mine)
                break
        else:
            rounds.append([i])
            taken.append(set(mine))
    return rounds, False


async def _reads(
    store: Any, conn: Any, calls: list[Call], rounds: list[list[int]], distinct: bool
) -> list[dict[Pair, str]]:
    """The answers of a batch of lookups and claims: one statement per round of claims
    (the lookups go with the first; a second, counted on ``store``, for keys a round did
    not claim), or one lookup statement."""
    answers: list[dict[Pair, str]] = [{} for _ in calls]
    wanted: set[Pair] = set()
    for call in calls:
        wanted.update(call.args[0] if call.kind == "final" else call.args[1])
    reads = list(wanted)
    final: dict[Pair, str] = {}
    for group in rounds:
        rows = _claim_rows(calls, group, distinct)
        found = await conn.fetch(
            *_CLAIMS.call(
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                min(calls[i].args[4] for i in group),
                [r[4] for r in rows],
                [p[0] for p in reads],
                [p[1] for p in reads],
                hexadecimal=store.hexadecimal,
            )
        )
        reads = []  # read once, with the first round
        claimed = 0
        for handler, key, text, is_read in found:
            if is_read:
                final[(handler, key)] = text
            elif text is not None:
                claimed = int(text)
        if claimed == len(rows):  # the common case: each key of each call claimed
            for i in group:
                answers[i] = dict.fromkeys(calls[i].args[0], "claimed")
            continue
        # Some were not claimed: what they hold (none, released meanwhile: polled).
        status = dict.fromkeys(map(_KEY, rows), "running")
        count_round_trip(store, "ledger_status")
        held = await conn.fetch(
            *_HELD.call([r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows])
        )
        status.update(((handler, key), text) for handler, key, text in held)
        for i in group:
            answers[i] = {k: status[k] for k in calls[i].args[0] if k in status}
    if reads:
        found = await conn.fetch(_READ, [p[0] for p in reads], [p[1] for p in reads])
        final = {(r["handler"], r["key"]): r["status"] for r in found}
    if wanted:
        for i, call in enumerate(calls):
            want = call.args[0] if call.kind == "final" else call.args[1]
            answers[i].update((k, final[k]) for k in want if k in final)
    return answers


def _claim_rows(
    calls: list[Call], group: list[int], distinct: bool
) -> list[tuple[str, str, str, str, float]]:
    """The rows of a round of claims, each key once (its first row, unless ``distinct``
    says no key comes twice): one statement cannot claim a key twice."""
    rows: list[tuple[str, str, str, str, float]] = []
    for i in group:
        keys, _, event_id, owner, _, until = calls[i].args
        rows += [(h, k, event_id, owner, until) for h, k in keys]
    if not distinct:
        first: dict[Pair, tuple[str, str, str, str, float]] = {}
        for row in rows:
            first.setdefault((row[0], row[1]), row)
        if len(first) < len(rows):
            rows = list(first.values())
    return rows


def _entries(calls: list[Call], indexes: Sequence[int]) -> list[tuple[Any, ...]]:
    """The record arguments (``record_args``) of ``calls[i]`` for ``i`` in ``indexes``."""
    return [record_args(e) for i in indexes for e in calls[i].args[0]]


async def _writes(conn: Any, calls: list[Call], hexadecimal: bool) -> list[BaseException | None]:
    """A batch of successes and dead letters in the connection's transaction; each call's
    error (a bad value fails only its own call)."""
    errors: list[BaseException | None] = [None] * len(calls)
    records = [i for i, c in enumerate(calls) if c.kind == "record"]
    if records:
        try:
            entries = _entries(calls, records)
            async with conn.transaction():  # a savepoint
                await _record_all(conn, entries, hexadecimal)
        except _data_errors():
            # One bad entry must not fail the others: each on its own.
            for i in records:
                errors[i] = await _alone(conn, _record, calls[i].args[0])
    for i, call in enumerate(calls):
        if call.kind == "dead_letter":
            errors[i] = await _alone(conn, _dead_letter, *call.args)
    return errors


async def _record_all(conn: Any, entries: list[tuple[Any, ...]], hexadecimal: bool) -> None:
    """``RECORD`` each of ``entries`` (``record_args``) in one statement: ``unnest``
    arrays, one execution on the server where ``executemany`` runs one per entry (a
    quarter less of the server's CPU per event), which takes them in key order. An
    atomic ``executemany`` in key order when a key comes twice (one statement cannot
    update a row twice)."""
    columns = [list(c) for c in zip(*entries, strict=True)]
    if len(set(zip(columns[0], columns[1], strict=True))) < len(entries):
        await conn.executemany(RECORD, sorted(entries, key=_KEY))
    else:
        await conn.execute(*_RECORDS.call(*columns, hexadecimal=hexadecimal))


async def _record(conn: Any, entries: Sequence[LedgerEntry]) -> None:
    await conn.executemany(RECORD, [record_args(e) for e in entries])


async def _dead_letter(conn: Any, letter: DeadLetter, entry: LedgerEntry | None) -> None:
    await conn.execute(ADD, *add_args(letter))
    if entry is not None:
        await conn.execute(RECORD, *record_args(entry))


async def _alone(conn: Any, write: Any, *args: Any) -> BaseException | None:
    """``write(conn, *args)`` in a savepoint of its own: its error (a bad value, a
    constraint), rolled back, fails only its call; a broken connection fails the batch."""
    try:
        async with conn.transaction():
            await write(conn, *args)
    except _data_errors() as exc:
        return StoreError(f"postgresql: {exc}")
    return None


def _data_errors() -> tuple[type[BaseException], ...]:
    """Errors of one statement's data, not of the connection (asyncpg imported lazily)."""
    import asyncpg

    return (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError, TypeError)
