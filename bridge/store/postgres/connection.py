"""The PostgreSQL connection pool: opening (with migrations), one-statement calls, transactions.

Every call has a deadline (``bridge.store.deadlines``: the URL's ``timeout``, default
5 s; ``ping_timeout`` for the ping, default 2 s): getting a pool connection and the
statements together must answer within it, else ``StoreError`` (at the deadline the
connection is cut). Inside that bound the server's own ``statement_timeout`` and
``lock_timeout`` (80% of it; startup parameters of every pool connection) end a
statement that runs or waits for a lock too long, and asyncpg's ``command_timeout``
cancels one the server does not answer.
Migrations run on a connection of their own, without these limits.

asyncpg is imported here and in the other modules of this package only, and only
when a store is used, so the bridge runs without it on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.errors import StoreError
from bridge.store.batching import count_round_trip
from bridge.store.deadlines import take_deadlines
from bridge.store.postgres.migrations import LEGACY_KEYS, migrate

_SERVER_SHARE = 0.8  # of the call deadline, for statement_timeout and lock_timeout


def split_url(url: str) -> tuple[str, str]:
    """(asyncpg DSN, schema) from ``postgresql://...?schema=NAME`` (deadlines left out)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    take_deadlines(query)
    schema = query.pop("schema", "public")
    if not schema.replace("_", "").isalnum():
        raise StoreError(f"invalid schema name {schema!r}")
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment)), schema


def count(status: Any) -> int:
    """Rows affected, from a command status such as ``DELETE 3``."""
    return int(str(status).rsplit(" ", 1)[-1])


class PostgresConnection:
    """A connection pool whose connections work in the store's schema.

    The concern classes of the PostgreSQL store build on this: each runs its
    statements through ``_run`` (one statement) or ``_tx`` (one transaction).
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.shared = True
        self.legacy_keys = True  # until open() read the schema's own
        self.dsn, self.schema = split_url(url)
        self.deadlines = take_deadlines(dict(parse_qsl(urlsplit(url).query)))
        self.pool_size = pool_size
        self._pool: Any = None
        self.round_trips: Counter[str] = Counter()
        """Pool connections used so far (one statement or transaction each), by operation."""
        self.metrics: Any = None
        """A ``bridge.metrics.Metrics`` to count them in as well (set by the assembly)."""

    async def open(self) -> None:
        """Create the pool and migrate the schema.

        Raises:
            StoreError: the database cannot be reached or migrated.
        """
        import asyncpg

        if self._pool is not None:
            return
        schema = self.schema
        call = self.deadlines.call
        # The server gives up a little before the client does: a statement it cancels
        # leaves a healthy connection, one the client cuts at the deadline does not.
        millis = str(max(1, round(call * 1000 * _SERVER_SHARE)))
        try:
            # Migrations may take long (an index on a big table): their own connection,
            # without the per-call limits.
            conn = await asyncpg.connect(self.dsn, server_settings={"search_path": f'"{schema}"'})
            try:
                async with conn.transaction():
                    await migrate(conn, schema)
                    self.legacy_keys = await conn.fetchval(LEGACY_KEYS) is not None
            finally:
                await conn.close()
            # Startup parameters, not SETs: they hold for the connection's life.
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                timeout=call,
                command_timeout=call,
                reset=_keep_session,
                server_settings={
                    "search_path": f'"{schema}"',
                    "statement_timeout": millis,
                    "lock_timeout": millis,
                },
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc

    async def close(self) -> None:
        """Close the pool, within the call deadline (then its connections are cut). Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.deadlines.call)
            except TimeoutError:
                pool.terminate()

    async def ping(self) -> bool:
        """True when the database answers within the ping deadline and its ledger (read by
        every delivery) can be read: a table another session locks counts as not ready."""
        try:
            await self._run("execute", "SELECT 1 FROM ledger LIMIT 0", deadline=self.deadlines.ping)
        except StoreError:
            return False
        return True

    async def _run(self, method: str, sql: str, *args: Any, deadline: float | None = None) -> Any:
        """One statement on a pool connection, answered within ``deadline`` (default: the
        call deadline) or ``StoreError``; one round trip of the calling method."""
        # The caller's name labels the count, so no call site has to name itself.
        count_round_trip(self, sys._getframe(1).f_code.co_name)
        return await self._bounded(lambda conn: getattr(conn, method)(sql, *args), deadline)

    async def _tx(self, fn: Callable[[Any], Awaitable[Any]], operation: str = "") -> Any:
        """Run ``fn(connection)`` in one transaction, within the call deadline or ``StoreError``;
        one round trip of ``operation`` (default: the calling method's name)."""
        count_round_trip(self, operation or sys._getframe(1).f_code.co_name)

        async def tx(conn: Any) -> Any:
            async with conn.transaction():
                return await fn(conn)

        return await self._bounded(tx, None)

    async def _bounded(self, use: Callable[[Any], Awaitable[Any]], deadline: float | None) -> Any:
        """``use(connection)`` on a pool connection: acquiring, using and releasing it end
        within ``deadline`` (default: the call deadline), else ``StoreError``.

        At the deadline the connection is terminated rather than cancelled politely: a
        cancel request and the rollback that follows would wait on the same silent
        network. The pool opens a new connection when it needs one.

        The connection is taken under ``asyncio.timeout``, not the pool's
        ``acquire(timeout=)``, which runs it in a task of its own (a turn of a busy event
        loop, and its CPU, per call).
        """
        import asyncpg

        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        seconds = deadline or self.deadlines.call
        loop = asyncio.get_running_loop()
        ends = loop.time() + seconds
        try:
            async with asyncio.timeout(seconds):
                conn = await pool.acquire()
        except TimeoutError as exc:
            raise StoreError(f"postgresql: no connection within {seconds:g}s") from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            # The statement waiting on it fails at once. If the deadline passed while the
            # connection was being released, it is the pool's again: nothing to cut.
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()

        timer = loop.call_at(ends, expire)
        try:
            return await use(conn)
        except Exception as exc:
            if expired or isinstance(exc, TimeoutError):
                raise StoreError(f"postgresql: no answer within {seconds:g}s") from exc
            if isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
                raise StoreError(f"postgresql: {exc}") from exc
            raise
        finally:
            try:
                # Terminated or broken: the pool opens a new one when it needs it.
                with contextlib.suppress(Exception):
                    await pool.release(conn)
            finally:
                timer.cancel()


async def _keep_session(conn: Any) -> None:
    """The pool's reset on release: nothing beyond the rollback of an open transaction,
    which asyncpg does anyway. The store keeps no session state (no SET, LISTEN, cursor
    or session advisory lock), so the default reset query (``RESET ALL`` and three
    more) would only cost a round trip per store call."""
