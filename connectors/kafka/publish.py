"""``KafkaPublisher``: sends to topics with ``acks=all``, without the idempotent producer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from bridge.errors import ConnectorError
from connectors.kafka.client import connection_options, milliseconds, retriable
from connectors.kafka.config import KafkaConfig


class KafkaPublisher:
    """Sends messages to topics (``destination`` is the topic) with ``acks=all``.

    ``publish()`` returns once the broker has acknowledged the message; a failure
    raises ``ConnectorError``. The producer starts on ``start()`` (or the first
    publish) and stops on ``close()``.
    """

    ce_prefix = "ce_"  # CloudEvents Kafka protocol binding

    def __init__(self, cfg: KafkaConfig, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the producer (once).

        Raises:
            ConnectorError: bad settings (not retriable) or the cluster cannot be reached.
        """
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is not None:
                return
            p = self.cfg.publish
            try:
                producer = AIOKafkaProducer(
                    acks="all",
                    enable_idempotence=False,  # not every Kafka-protocol broker has it
                    compression_type=None if p.compression == "none" else p.compression,
                    linger_ms=int(p.linger * 1000),
                    max_batch_size=p.max_batch_bytes,
                    request_timeout_ms=milliseconds(p.request_timeout),
                    **connection_options(self.cfg),
                )
            except (RuntimeError, ValueError, AssertionError) as exc:  # e.g. a missing codec
                raise ConnectorError(f"kafka producer settings: {exc}", retriable=False) from exc
            try:
                await producer.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise ConnectorError(
                    f"kafka producer could not start: {exc!r}", retriable=retriable(exc)
                ) from exc
            self._producer = producer

    async def publish(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None
    ) -> None:
        """Send one message to the topic ``destination``; return once the broker has it.

        Raises:
            ConnectorError: the producer could not start or the send failed.
        """
        from aiokafka.errors import KafkaError

        if self._producer is None:
            await self.start()
        try:
            await self._producer.send_and_wait(
                destination,
                body,
                key=key.encode() if key is not None else None,
                headers=[(k, v.encode()) for k, v in headers.items()],
            )
        except KafkaError as exc:
            raise ConnectorError(
                f"kafka publish to {destination!r} failed: {exc!r}", retriable=retriable(exc)
            ) from exc

    async def close(self) -> None:
        """Flush and stop the producer."""
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
