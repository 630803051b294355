"""One fetch round of the Kafka source: records per partition, undecodable batches isolated.

aiokafka decodes (decompresses) a partition's record batches while ``getmany`` hands
them out, and raises ``UnsupportedCodecError`` for a batch whose codec it cannot
decode: a codec library that is missing, or a codec it does not know. Left alone,
that error fails the consumer, and with it every topic of the connector, at every
restart. Worse, raised by a call that had already taken records of other partitions,
it drops those records (their positions had moved on). So a round:

* waits for records with one ``getmany`` over the partitions that fetch normally,
  taking *at most one* record: when it raises, nothing of another partition was taken;
* then takes each fetchable partition's records with a ``getmany`` of its own, so an
  error is tied to its partition and costs no other partition anything. The room
  left under ``max_in_flight`` is shared: an equal part for each partition first, then
  what is left to those that had more, the first partition turning every round.

A partition whose ``getmany`` raised *steps* from then on, one record per call, so
the records before the undecodable batch are still delivered. When a one-record call
raises, the batch at the partition's position cannot be decoded: the partition is
*blocked* (paused, reported by ``KafkaSource.status()`` and logged with its topic,
offset and codec); its commit point stays before the batch, so nothing is lost, and
every other partition flows on. The block lasts until the partition is assigned
afresh (a rebalance or a restart), which tries again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from connectors.kafka.intake import Intake, PartitionState

log = logging.getLogger("connectors.kafka")

_WAIT_MS = 1000  # the waiting call's timeout
_STEPPING_WAIT_MS = 100  # the same while a partition steps: its records are taken after it
_PROBE_DELAY = 0.05  # seconds between rounds while an error is not yet tied to a partition
_PROBE_ROUNDS = 40  # after this many such rounds, wait with the shared call again


class Fetcher:
    """Takes fetched records from aiokafka's consumer into one ``Intake``, round by round."""

    def __init__(self, name: str, intake: Intake) -> None:
        self.name = name
        self.intake = intake
        self._probing = 0  # rounds left without the waiting call (it raised, partition unknown)
        self._turn = 0  # which fetchable partition is served first (it turns every round)

    async def round(self, consumer: Any) -> dict[Any, list[Any]]:
        """Wait (about a second at most) for records; return those taken, per partition.

        Raises:
            Exception: whatever ``getmany`` raises, except ``UnsupportedCodecError``.
        """
        from aiokafka.errors import UnsupportedCodecError

        states = self.intake.fetchable()
        steady = [s.tp for s in states if not s.stepping]
        batch: dict[Any, list[Any]] = {}
        try:
            if not states:
                # Everything paused: poll all the same, the group wants a poll within
                # max_poll_interval (paused partitions return nothing).
                batch = await consumer.getmany(timeout_ms=_WAIT_MS, max_records=1)
            elif steady and not self._probing:
                wait = _WAIT_MS if len(steady) == len(states) else _STEPPING_WAIT_MS
                batch = await consumer.getmany(*steady, timeout_ms=wait, max_records=1)
            else:
                self._probing = max(self._probing - 1, 0)
                await asyncio.sleep(_PROBE_DELAY)
        except UnsupportedCodecError:
            # One record at most per call: nothing was taken from another partition. Which
            # partition failed is found by the calls of its own below, once it is refetched.
            self._probing = _PROBE_ROUNDS
        batch = {tp: list(records) for tp, records in batch.items()}
        if not states:
            return batch
        # The room is shared: first an equal part for each partition, then what is left
        # to those that had more, starting one further each round. Filled from the first
        # partition alone, the room would hold few keys (ordering: key), so few messages
        # could run at once, and the other partitions would wait behind it.
        self._turn = (self._turn + 1) % len(states)
        states = states[self._turn :] + states[: self._turn]
        share = max(self._room(batch) // len(states), 1)
        more = [s for s in states if await self._take(consumer, s, batch, share) >= share]
        for state in more:
            room = self._room(batch)
            if room <= 0:
                break
            await self._take(consumer, state, batch, room)
        return batch

    def _room(self, batch: dict[Any, list[Any]]) -> int:
        intake = self.intake
        return intake.limit - intake.buffered - intake.in_flight - sum(map(len, batch.values()))

    async def _take(
        self, consumer: Any, state: PartitionState, batch: dict[Any, list[Any]], most: int
    ) -> int:
        """Take up to ``most`` records of ``state`` (one at least); how many were taken."""
        from aiokafka.errors import UnsupportedCodecError

        tp = state.tp
        taken = 0
        while not state.draining and taken < most:  # a revoked partition is left to its next owner
            room = self._room(batch)
            size = 1 if state.stepping else max(min(room, most - taken), 1)
            try:
                got = await consumer.getmany(tp, timeout_ms=0, max_records=size)
            except UnsupportedCodecError as exc:
                self._probing = 0
                if size > 1:  # records before the batch may decode: step up to it
                    state.stepping = True
                else:  # nothing at the position decodes
                    await self._block(consumer, state, exc)
                return taken
            records = got.get(tp)
            if not records:
                return taken
            batch.setdefault(tp, []).extend(records)
            taken += len(records)
            if not state.stepping or room <= 1:
                return taken
        return taken

    async def _block(self, consumer: Any, state: PartitionState, exc: Exception) -> None:
        try:
            offset = await asyncio.wait_for(consumer.position(state.tp), 5.0)
        except Exception:  # not worth failing over: the last offset taken says nearly as much
            offset = state.next_offset
        reason = f"batch at offset {offset} cannot be decoded: {exc}"
        self.intake.block(state, reason)
        log.error(
            "kafka partition stopped: a batch cannot be decoded; the partition's other "
            "records wait, other partitions go on",
            extra={
                "connector": self.name,
                "topic": state.tp.topic,
                "partition": state.label,
                "offset": offset,
                "error": str(exc),
            },
        )
