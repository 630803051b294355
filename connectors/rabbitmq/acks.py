"""``ChannelAcks``: the settlements of one AMQP channel, written together.

See ``connectors.rabbitmq`` for the semantics: a delivery tag belongs to its
channel, so nothing is written once that channel is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel

log = logging.getLogger("connectors.rabbitmq")


class ChannelAcks:
    """The settlements of one AMQP channel, written together once per event-loop turn.

    Delivery tags belong to their channel and rise in delivery order. Settlements
    gathered in one turn go out as: the nacks (requeue) first, then one
    ``basic.ack(multiple)`` for the settled prefix of the delivered tags, then
    single acks for the rest. A multiple ack names a tag still unacked on the
    broker (another would be an "unknown delivery tag" channel error) and covers
    only tags that are all settled. Nothing is written once the channel is closed:
    the broker has requeued those messages already.
    """

    def __init__(self, channel: AbstractChannel, on_stale: Callable[[int], None]) -> None:
        self.channel = channel
        self.delivered: deque[int] = deque()  # tags not yet part of a settled prefix
        self.finished: set[int] = set()  # settled tags still behind an unsettled one
        self.acks: list[int] = []
        self.nacks: list[int] = []
        self.on_stale = on_stale  # told how many settlements were dropped: channel gone
        self.task: asyncio.Task[None] | None = None

    def settle(self, tag: int, ack: bool) -> None:
        """Queue a settlement; it is written on the next turn of the event loop."""
        if self.channel.is_closed:
            self.on_stale(1)
            return
        (self.acks if ack else self.nacks).append(tag)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._flush())

    async def flushed(self) -> None:
        """Wait until every queued settlement has been written (or dropped)."""
        while self.task is not None:
            await asyncio.wait((self.task,))

    async def _flush(self) -> None:
        from aio_pika.exceptions import AMQPError

        try:
            while self.acks or self.nacks:
                acks, nacks = self.acks, self.nacks
                self.acks, self.nacks = [], []
                if self.channel.is_closed:
                    self.on_stale(len(acks) + len(nacks))
                    continue
                try:
                    await self._write(acks, nacks)
                except (AMQPError, ConnectionError, RuntimeError) as exc:
                    if not self.channel.is_closed:
                        log.error("rabbitmq ack failed", extra={"error": repr(exc)})
                    self.on_stale(len(acks) + len(nacks))
        finally:
            self.task = None

    async def _write(self, acks: list[int], nacks: list[int]) -> None:
        channel = self.channel
        for tag in nacks:
            await channel.basic_nack(tag, requeue=True)
        finished, delivered = self.finished, self.delivered
        finished.update(nacks)
        finished.update(acks)
        prefix_end = 0
        while delivered and delivered[0] in finished:
            prefix_end = delivered.popleft()
            finished.discard(prefix_end)
        in_prefix = [tag for tag in acks if tag <= prefix_end]
        if len(in_prefix) == 1:
            await channel.basic_ack(in_prefix[0])
        elif in_prefix:
            await channel.basic_ack(max(in_prefix), multiple=True)
        for tag in acks:
            if tag > prefix_end:
                await channel.basic_ack(tag)
