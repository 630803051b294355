"""The Kafka source: an aiokafka consumer-group member that commits only finished offsets.

Delivery semantics are described in ``connectors.kafka``; the bookkeeping (order,
backpressure, committable prefixes) lives in ``connectors.kafka.intake`` and the
commit requests in ``connectors.kafka.commit``. This module is the I/O around them,
in three tasks owned by the source:

* the fetch loop feeds the intake from ``getmany``, partition by partition
  (``connectors.kafka.fetch``: a batch that cannot be decoded blocks its partition
  only). While the partitions are paused it waits for room (so that records aiokafka
  has prefetched are not dropped) but polls at least every half ``max_poll_interval``,
  so a slow handler never costs the member its place in the group;
* the commit loop commits every ``commit_interval`` and refreshes end offsets for lag;
* aiokafka's coordinator calls the rebalance listener: on revoke the partitions
  drain (up to ``revoke_timeout``), their finished prefix is committed and they are
  released, all under the commit lock, so no commit can follow a release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from bridge.errors import ConnectorError
from bridge.transport import ConnectorStatus, Delivery, Settlement
from connectors.kafka.client import connection_options, milliseconds, retriable
from connectors.kafka.commit import Commits, generation
from connectors.kafka.config import KafkaConfig
from connectors.kafka.fetch import Fetcher
from connectors.kafka.intake import Intake, PartitionState

log = logging.getLogger("connectors.kafka")

_RETRY_LATER_DELAY = 1.0  # seconds before a RETRY_LATER message is handed out again
_LAG_EVERY = 5  # refresh end offsets every this many commit intervals
_COMMIT_TIMEOUT = 15.0  # aiokafka retries a commit forever on retriable errors; we do not


class KafkaSource:
    """Consumes ``consume.topics`` as a member of ``consume.group_id``.

    ``start()`` returns once the group is joined and partitions are assigned;
    ``deliveries()`` yields until ``stop()``, which commits the finished prefix of every
    partition and leaves the group. After the stream failed (``ConnectorError`` from
    ``deliveries()``), ``start()`` may be called again: the runtime restarts sources.
    ``commits`` counts successful commit requests.
    """

    def __init__(self, cfg: KafkaConfig, name: str) -> None:
        if cfg.consume is None:
            raise ValueError(f"connector {name!r} has no consume section")
        self.cfg = cfg
        self.consume = cfg.consume
        self.name = name
        self.intake = self._new_intake()
        self._consumer: Any = None
        self._failure: ConnectorError | None = None
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()  # set when paused partitions resume
        self._commits = Commits(name)
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def commits(self) -> int:
        """Successful commit requests since the source was made."""
        return self._commits.count

    def _new_intake(self) -> Intake:
        c = self.consume

        def pause(tps: list[Any]) -> None:
            if self._consumer is not None and tps:
                owned = self._consumer.assignment()
                self._consumer.pause(*[tp for tp in tps if tp in owned])

        def resume(tps: list[Any]) -> None:
            self._room.set()
            if self._consumer is not None and tps:
                owned = self._consumer.assignment()
                self._consumer.resume(*[tp for tp in tps if tp in owned])

        return Intake(
            ordering=c.ordering,
            max_in_flight=c.max_in_flight,
            max_uncommitted=c.max_uncommitted,
            pause=pause,
            resume=resume,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the consumer (after closing what a failed run left) and its fetch and commit loops.

        Raises:
            ConnectorError: the consumer could not start (``retriable`` per the error).
        """
        from aiokafka import AIOKafkaConsumer

        loop = asyncio.get_running_loop()
        await self._close_consumer(loop.time() + 10.0)  # what a failed run left behind
        c = self.consume
        # A fresh intake: deliveries of a failed run settle into the old one (ignored).
        self.intake = self._new_intake()
        self._failure = None
        self._stopping.clear()
        consumer = AIOKafkaConsumer(
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset=c.start_from,
            session_timeout_ms=milliseconds(c.session_timeout),
            heartbeat_interval_ms=milliseconds(c.heartbeat_interval),
            max_poll_interval_ms=milliseconds(c.max_poll_interval),
            # how long the broker waits for members to rejoin: cover the revoke drain
            rebalance_timeout_ms=milliseconds(c.revoke_timeout + c.session_timeout),
            fetch_max_wait_ms=milliseconds(c.fetch_max_wait),
            **connection_options(self.cfg),
        )
        consumer.subscribe(c.topics, listener=_listener(self, consumer))
        self._consumer = consumer
        try:
            await consumer.start()
        except Exception as exc:
            await self._close_consumer(loop.time() + 5.0)
            raise ConnectorError(
                f"kafka consumer could not start: {exc!r}", retriable=retriable(exc)
            ) from exc
        self._tasks = [
            asyncio.create_task(self._fetch_loop(consumer), name=f"kafka-fetch:{self.name}"),
            asyncio.create_task(self._commit_loop(consumer), name=f"kafka-commit:{self.name}"),
        ]

    async def stop(self, deadline: float) -> None:
        """Stop intake, commit the finished prefix of every partition, leave the group."""
        self.intake.closing = True
        self._wakeup.set()
        await self._close_consumer(deadline)

    async def _close_consumer(self, deadline: float) -> None:
        self._stopping.set()
        self._drained.set()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        consumer = self._consumer
        if consumer is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await self._commits.commit(
                consumer, self.intake, None, "shutdown", max(deadline - loop.time(), 1.0)
            )
        finally:
            self.intake.release_all()
            self._consumer = None
            try:
                await asyncio.wait_for(consumer.stop(), max(deadline - loop.time(), 1.0))
            except Exception as exc:  # closing goes on; the broker expires the session
                log.warning(
                    "kafka consumer did not close cleanly",
                    extra={"connector": self.name, "error": repr(exc)},
                )

    def status(self) -> ConnectorStatus:
        """Connected once started; lag per ``topic/partition``: end offset minus committed.

        The detail names each blocked partition (a batch it cannot decode) and why.
        """
        if self._consumer is None:
            return ConnectorStatus(False, "not started")
        if self._failure is not None:
            return ConnectorStatus(False, str(self._failure))
        intake = self.intake
        live = intake.live()
        detail = (
            f"partitions={len(live)} in_flight={intake.in_flight} buffered={intake.buffered}"
            f" paused={intake.paused_all} commits={self.commits}"
        )
        # Still connected: the other partitions flow, and a restart would not help.
        blocked = [f"{s.label}: {s.blocked}" for s in intake.blocked()]
        if blocked:
            detail += " blocked: " + "; ".join(blocked)
        return ConnectorStatus(True, detail, {s.label: s.lag() for s in live})

    # ------------------------------------------------------------------ intake

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Fetched messages in the configured order, at most ``max_in_flight`` unsettled.

        Ends after ``stop()``; raises ``ConnectorError`` when the consumer failed.
        """
        while True:
            if self._failure is not None:
                raise self._failure
            intake = self.intake
            item = intake.take()
            if item is not None:
                yield self._delivery(*item)
                continue
            if intake.closing:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    def _delivery(self, state: PartitionState, record: Any) -> Delivery:
        topic, partition, offset = record.topic, record.partition, record.offset
        raw = record.headers
        headers = (
            {k: v.decode("utf-8", "replace") if v is not None else "" for k, v in raw}
            if raw
            else {}
        )
        meta: dict[str, Any] = {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": record.timestamp,
            "message_id": f"{topic}-{partition}-{offset}",
        }
        if record.key is not None:
            meta["key"] = record.key.decode("utf-8", "replace")
        if record.value is None:  # a tombstone (consume.tombstones), not an empty body
            meta["tombstone"] = True
        intake = self.intake
        settled = False

        async def settle(outcome: Settlement) -> None:
            nonlocal settled
            if settled:  # the runtime settles once; a second call must not count twice
                return
            settled = True
            if intake.settle(state, record, outcome):
                self._retry_later(intake, state, record)
            if state.draining and state.in_flight == 0:
                self._drained.set()
            self._wakeup.set()

        return Delivery(record.value or b"", headers, meta, settle, self.name)

    def _retry_later(self, intake: Intake, state: PartitionState, record: Any) -> None:
        # A short delay, so that a failing store is not hammered.
        def again() -> None:
            self._timers.discard(handle)
            intake.requeue(state, record)
            self._wakeup.set()

        handle = asyncio.get_running_loop().call_later(_RETRY_LATER_DELAY, again)
        self._timers.add(handle)

    async def _fetch_loop(self, consumer: Any) -> None:
        intake = self.intake
        # While paused, records aiokafka already fetched stay buffered as long as getmany
        # is not called (a call on a paused partition drops them, to be fetched again).
        # So wait for room, but call it (paused) within max_poll_interval all the same.
        budget = min(self.consume.max_poll_interval / 2, 30.0)
        fetcher = Fetcher(self.name, intake)
        try:
            while not self._stopping.is_set():
                if intake.paused_all:
                    self._room.clear()
                    # Not wait_for: on Python 3.11 it swallows the cancellation when the
                    # room opens in the same loop iteration (the last settles before a
                    # stop), and this loop then kept the stop waiting for ever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(budget):
                            await self._room.wait()
                batch = await fetcher.round(consumer)
                if batch:
                    intake.accept(batch, consumer.highwater)
                    self._wakeup.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaces through deliveries(); the runtime restarts us
            log.error("kafka consumer failed", extra={"connector": self.name, "error": repr(exc)})
            self._failure = ConnectorError(
                f"kafka consumer failed: {exc!r}", retriable=retriable(exc)
            )
            self._wakeup.set()

    # ------------------------------------------------------------------ commits

    async def _commit_loop(self, consumer: Any) -> None:
        rounds = 0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.consume.commit_interval)
            if self._stopping.is_set():
                return
            await self._commits.commit(consumer, self.intake, None, "interval", _COMMIT_TIMEOUT)
            rounds += 1
            if rounds % _LAG_EVERY == 0:
                await self._commits.refresh_ends(consumer, self.intake)

    # ------------------------------------------------------------------ rebalance

    async def _on_revoked(self, consumer: Any, revoked: Iterable[Any]) -> None:
        intake = self.intake
        states = [s for tp in revoked if (s := intake.partitions.get(tp)) is not None]
        if not states:
            return
        intake.drain(states)
        busy = sum(s.in_flight for s in states)
        log.info(
            "kafka partitions revoked",
            extra={
                "connector": self.name,
                "partitions": sorted(s.label for s in states),
                "in_flight": busy,
                "generation": generation(consumer),
            },
        )
        if busy:
            await self._wait_drained(states, self.consume.revoke_timeout)
            left = sum(s.in_flight for s in states)
            if left:
                log.warning(
                    "revoke timeout: in-flight deliveries of revoked partitions are left to "
                    "their next owner",
                    extra={"connector": self.name, "count": left},
                )
        async with self._commits.lock:
            await self._commits.commit_locked(
                consumer, self.intake, states, "revoke", _COMMIT_TIMEOUT
            )
            intake.release(states)
        log.info(
            "kafka partitions released",
            extra={
                "connector": self.name,
                "partitions": sorted(s.label for s in states),
                "generation": generation(consumer),
            },
        )

    async def _wait_drained(self, states: list[PartitionState], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s.in_flight for s in states) and not self._stopping.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), remaining)

    def _on_assigned(self, consumer: Any, assigned: Iterable[Any]) -> None:
        assigned = set(assigned)
        self.intake.assign(assigned)
        log.info(
            "kafka partitions assigned",
            extra={
                "connector": self.name,
                "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in assigned),
                "generation": generation(consumer),
            },
        )


def _listener(source: KafkaSource, consumer: Any) -> Any:
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await source._on_revoked(consumer, revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            source._on_assigned(consumer, assigned)

    return Listener()
