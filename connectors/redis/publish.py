"""The publishing half of ``type: redis``: ``RedisPublisher`` (XADD)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bridge.errors import ConnectorError
from bridge.transport import ConnectorStatus
from connectors.redis.config import RedisConfig
from connectors.redis.connection import client, close, connector_error
from connectors.redis.entry import entry_fields

if TYPE_CHECKING:
    from redis.asyncio import Redis


class RedisPublisher:
    """XADDs one entry per message to the stream named by the destination.

    The body goes in the ``data`` field (``consume.body_field`` when set), each header
    in a field of its own. With ``publish.maxlen`` the stream is trimmed on every XADD
    (``MAXLEN ~`` unless ``approximate: false``). The key is not used: a stream is
    one ordered log.
    """

    def __init__(self, cfg: RedisConfig, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self._body_field = cfg.consume.body_field if cfg.consume else "data"
        self._redis: Redis | None = None
        self._ok = True

    def _client(self) -> Redis:
        if self._redis is None:
            self._redis = client(self.cfg, self.name)
        return self._redis

    async def start(self) -> None:
        """Create the client (it connects on first use)."""
        self._client()

    async def publish(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None
    ) -> None:
        """XADD; return once Redis has the entry.

        Raises:
            ConnectorError: Redis refused the entry or could not be reached.
        """
        from redis.exceptions import RedisError

        if not destination:
            raise ConnectorError(f"redis {self.name}: empty stream name", retriable=False)
        fields = entry_fields(body, dict(headers), self._body_field)
        options = self.cfg.publish
        try:
            async with asyncio.timeout(self.cfg.command_timeout):
                await self._client().xadd(
                    destination,
                    fields,  # type: ignore[arg-type]
                    maxlen=options.maxlen,
                    approximate=options.approximate,
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._ok = False
            raise connector_error(self.name, f"XADD to {destination!r} failed", exc) from exc
        self._ok = True

    def status(self) -> ConnectorStatus:
        """Connected unless the last XADD failed."""
        return ConnectorStatus(self._ok, "" if self._ok else "last XADD failed")

    async def close(self) -> None:
        """Close the client. Idempotent."""
        redis, self._redis = self._redis, None
        if redis is not None:
            await close(redis)
