"""``NatsPublisher``: JetStream publish with a publish ack and ``Nats-Msg-Id``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from bridge.errors import ConnectorError
from connectors.nats.config import NatsConfig
from connectors.nats.connection import open_connection

MSG_ID = "Nats-Msg-Id"


class NatsPublisher:
    """Publishes to subjects (``destination`` is the subject) through JetStream.

    ``publish()`` returns once a stream has stored the message (the publish ack).
    ``Nats-Msg-Id`` is the CloudEvents id (``ce-id``) when there is one, so a
    republished event is dropped by the stream's duplicate window.
    """

    ce_prefix = "ce-"  # CloudEvents NATS protocol binding

    def __init__(self, cfg: NatsConfig, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self._nc: Any = None
        self._js: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect (once).

        Raises:
            ConnectorError: no server could be reached.
        """
        async with self._lock:
            if self._nc is None:
                self._nc = await open_connection(self.cfg, self.name)
                self._js = self._nc.jetstream()

    async def publish(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None
    ) -> None:
        """Publish to the subject ``destination``; return once JetStream stored it.

        Raises:
            ConnectorError: no stream takes the subject, or no publish ack came in time.
        """
        from nats.errors import Error as NatsError
        from nats.js.errors import NoStreamResponseError

        if self._js is None:
            await self.start()
        out = dict(headers)
        out.setdefault(
            MSG_ID,
            out.get("ce-id") or out.get("bridge-dead-letter-id") or uuid.uuid4().hex,
        )
        try:
            await self._js.publish(destination, body, timeout=self.cfg.publish_timeout, headers=out)
        except NoStreamResponseError as exc:
            raise ConnectorError(
                f"NATS publish to {destination!r}: no stream stores this subject"
            ) from exc
        except (NatsError, OSError, TimeoutError) as exc:
            raise ConnectorError(f"NATS publish to {destination!r} failed: {exc!r}") from exc

    async def close(self) -> None:
        """Flush and close the connection."""
        async with self._lock:
            nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await nc.drain()
            except Exception:
                await nc.close()
