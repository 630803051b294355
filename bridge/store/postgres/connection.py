"""The PostgreSQL connection pool: opening (with migrations), one-statement calls, transactions.

asyncpg is imported here and in the other modules of this package only, and only
when a store is used, so the bridge runs without it on SQLite.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.errors import StoreError
from bridge.store.postgres.migrations import migrate


def split_url(url: str) -> tuple[str, str]:
    """(asyncpg DSN, schema) from ``postgresql://...?schema=NAME``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
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
        self.dsn, self.schema = split_url(url)
        self.pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        """Create the pool and migrate the schema.

        Raises:
            StoreError: the database cannot be reached or migrated.
        """
        import asyncpg

        if self._pool is not None:
            return
        schema = self.schema
        try:
            # A startup parameter, not a SET: the pool's RESET ALL on release keeps it.
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                server_settings={"search_path": f'"{schema}"'},
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await migrate(conn, schema)
        except (OSError, asyncpg.PostgresError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc

    async def close(self) -> None:
        """Close the pool. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> bool:
        """True when the database answers."""
        try:
            return bool(await self._run("fetchval", "SELECT 1"))
        except StoreError:
            return False

    async def _run(self, method: str, sql: str, *args: Any) -> Any:
        import asyncpg

        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            return await getattr(self._pool, method)(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc

    async def _tx(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``fn(connection)`` in one transaction."""
        import asyncpg

        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await fn(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc
