"""Fresh statistics for a young ledger, so the plans of its claims follow its size.

asyncpg prepares a statement once per connection, and from its sixth execution
PostgreSQL keeps one generic plan for it, made with the table's statistics of that
moment. A new ledger has none, so the plan of its lookups (made with the claims, or on
their own) reads the whole table (a hash join over a sequential scan; the claims
themselves find their rows through the primary key, by their insert's conflict check)
and keeps reading it as the table grows, until autovacuum
analyzes the table, a minute later at the soonest (``autovacuum_naptime``). Measured
with that plan: a claim of 4 keys took 0.4 ms on an empty ledger and 5.4 ms at 20,000
rows, and at 1,000 events/s the claims' round trip grew from 1.6 to 7 ms within two
seconds of a new schema's life.

While the ledger is young (fewer than ``UNTIL`` rows), ``Growth`` counts the rows the
claims of this process add and runs ``ANALYZE`` on the ledger's key columns each time
they have made the table ``FACTOR`` times larger than at its last analysis (the first at
``FIRST`` rows). New statistics make every connection plan the claims again, and from a
few thousand rows the plan looks each key up in the primary key. Past ``UNTIL`` rows
autovacuum's own analyses (after every tenth of growth) keep the plans right. Each
replica counts its own claims, so each analyzes on its own schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("bridge.store")

FIRST = 1_000
"""Rows added to a ledger never analyzed before its first analysis."""
FACTOR = 4
"""How many times larger the ledger grows between two analyses while it is young."""
UNTIL = 1_000_000
"""Rows from which the ledger is left to autovacuum."""


class Growth:
    """Analyzes a young table as this process's writes grow it.

    Args:
        analyze: runs ``ANALYZE`` on the table (one round trip).
        rows: the table's rows at its last analysis, as ``pg_class.reltuples`` has
            them (-1: never analyzed).
    """

    def __init__(self, analyze: Callable[[], Awaitable[object]], rows: float) -> None:
        self._analyze = analyze
        self._rows = max(rows, 0.0)
        self._added = 0
        self._task: asyncio.Task[None] | None = None
        self.analyses = 0

    @property
    def young(self) -> bool:
        """Whether the table is still analyzed here (else ``added`` need not be called)."""
        return self._rows < UNTIL

    def added(self, rows: int) -> None:
        """``rows`` were added to the table: analyze it if it outgrew its statistics."""
        if self._rows >= UNTIL:
            return
        self._added += rows
        if self._task is None and self._added >= max(FIRST, self._rows * (FACTOR - 1)):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        added = self._added
        try:
            await self._analyze()
            self.analyses += 1
        except Exception as exc:  # the plans stay as they are until the next growth
            log.warning("could not analyze the ledger", extra={"error": str(exc)})
        finally:
            self._rows += added
            self._added -= added
            self._task = None

    async def idle(self) -> None:
        """Return once no analysis is under way."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        """Stop an analysis under way (the server finishes or cancels it on its own)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
