"""``NatsSource``: a durable JetStream pull consumer (see ``connectors.nats``).

The book of held messages (slots, key lanes, a message fetched again while held) is
the SQS source's ``InFlight``: the same bookkeeping, keyed by stream sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from bridge.errors import ConnectorError
from bridge.transport import ConnectorStatus, Delivery, Settlement
from connectors.nats.config import NatsConfig, NatsConsumeConfig
from connectors.nats.connection import open_connection
from connectors.sqs.inflight import Held, InFlight

log = logging.getLogger("bridge.connectors.nats")

MSG_ID = "Nats-Msg-Id"


class NatsSource:
    """Consumes one stream through a durable pull consumer; acks after every branch is final.

    Args:
        cfg: the connector config (``consume`` must be set).
        name: the connector's name.
    """

    def __init__(self, cfg: NatsConfig, name: str) -> None:
        if cfg.consume is None:
            raise ValueError(f"connector {name!r} has no consume section")
        self.cfg = cfg
        self.consume: NatsConsumeConfig = cfg.consume
        self.name = name
        self._ordered = self.consume.ordering != "none"
        header = self.consume.key.removeprefix("header:")
        self._key_header = None if self.consume.key == "subject" else header
        self._book = InFlight(self.consume.max_in_flight, self._ordered)
        self._msgs: dict[str, Any] = {}  # stream sequence -> the newest Msg of a held message
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._ack_wait = self.consume.ack_wait
        self._tasks: list[asyncio.Task[None]] = []
        self._fetcher: asyncio.Task[None] | None = None
        self._fetching = False  # a pull request is out
        self._hold = 0.0  # seconds to wait before the first pull (ordering after a crash)
        # After a crash: how many of the predecessor's unacked messages (stream sequence
        # up to ``_old_last``) are still to come back before a newer message may run.
        self._awaited = 0
        self._old_last = 0
        self._intake_stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._failure: ConnectorError | None = None
        self._problem = ""
        self._pending: float | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, declare or bind the consumer, then start fetching.

        Raises:
            ConnectorError: no server answers, or the stream/consumer is missing
                (``retriable`` False) and ``declare`` is not set.
        """
        if self._nc is not None:
            return
        self._book = InFlight(self.consume.max_in_flight, self._ordered)
        self._msgs.clear()
        self._intake_stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._failure = None
        nc = await open_connection(self.cfg, self.name)
        try:
            js = nc.jetstream()
            info = await self._consumer(js)
            self._ack_wait = float(info.config.ack_wait or self.consume.ack_wait)
            self._sub = await js.pull_subscribe_bind(
                durable=self.consume.durable, stream=self.consume.stream
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        self._nc, self._js = nc, js
        self._pending = float(info.num_pending)
        self._hold = 0.0
        self._awaited = 0
        if self._ordered and info.num_ack_pending:
            # Messages a crashed predecessor held are redelivered only once their ack_wait
            # runs out; JetStream hands redeliveries out before new messages, so waiting
            # that long before the first pull keeps a key's order across the crash. A
            # server slow to redeliver (a loaded machine) can still hand out a newer
            # message first: ``_fetch`` holds those back until the old ones are in.
            self._hold = self._ack_wait * 1.1 + 0.2
            self._awaited = int(info.num_ack_pending)
            self._old_last = int(info.delivered.stream_seq)
        self._fetcher = self._task(self._fetch(), f"nats-fetch:{self.name}")
        self._tasks = [
            self._task(self._heartbeat(), f"nats-heartbeat:{self.name}"),
            self._task(self._poll_lag(), f"nats-lag:{self.name}"),
        ]

    async def _consumer(self, js: Any) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        c = self.consume
        try:
            if c.declare is None:
                return await js.consumer_info(c.stream, c.durable)
            d = c.declare
            try:
                await js.stream_info(c.stream)
            except NotFoundError:
                await js.add_stream(
                    StreamConfig(
                        name=c.stream,
                        subjects=list(d.subjects or c.subjects),
                        storage=StorageType.MEMORY if d.storage == "memory" else StorageType.FILE,
                        max_age=d.max_age,
                        duplicate_window=d.duplicate_window,
                        num_replicas=d.replicas,
                    )
                )
            filters = list(c.subjects)
            return await js.add_consumer(
                c.stream,
                ConsumerConfig(
                    durable_name=c.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=c.ack_wait,
                    max_deliver=c.max_deliver,
                    max_ack_pending=c.max_in_flight,
                    filter_subject=filters[0] if len(filters) == 1 else None,
                    filter_subjects=filters if len(filters) > 1 else None,
                ),
            )
        except NotFoundError as exc:
            raise ConnectorError(
                f"NATS stream {c.stream!r} or consumer {c.durable!r} does not exist "
                "(set consume.declare to create them)",
                retriable=False,
            ) from exc
        except Exception as exc:
            raise ConnectorError(f"NATS consumer setup failed: {exc!r}") from exc

    def _task(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_ended)
        return task

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("nats task failed", extra={"connector": self.name, "error": repr(exc)})
        if self._failure is None:
            self._failure = ConnectorError(f"NATS {task.get_name()} failed: {exc!r}")
        self._closed.set()

    async def stop_intake(self) -> None:
        """Fetch no more; hand back (nak, no delay) what was fetched but not handed out.
        Handed-out deliveries keep their in-progress acks and can be settled. Idempotent."""
        if self._nc is None or self._intake_stopped.is_set():
            return
        self._intake_stopped.set()
        if self._fetcher is not None:
            # A pull request in progress is let finish (what it brings is handed back below);
            # a fetcher waiting for free slots is cancelled at once.
            grace = self.consume.fetch_wait + 2 if self._fetching else 0
            _, pending = await asyncio.wait([self._fetcher], timeout=grace)
            await _cancel(pending)
        for held in self._book.take_undelivered():
            await self._nak(self._msgs.pop(held.message_id, None), 0.0)

    async def stop(self, deadline: float) -> None:
        """Stop intake, close the connection (the durable consumer stays). Idempotent."""
        nc = self._nc
        if nc is None:
            return
        await self.stop_intake()
        self._closed.set()
        await _cancel(self._tasks)
        self._nc = self._js = self._sub = None
        remaining = max(0.1, deadline - asyncio.get_running_loop().time())
        # Acks are written to the connection's buffer: flush them before closing.
        with contextlib.suppress(Exception):
            await nc.flush(timeout=remaining)
        with contextlib.suppress(Exception):
            await nc.close()

    # ------------------------------------------------------------------ intake

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Yield deliveries until ``stop()``.

        Raises:
            ConnectorError: a background task failed for good.
        """
        handed = self._book.handed_out(self._closed, lambda: self._failure)
        async with contextlib.aclosing(handed):
            async for delivery in handed:
                yield delivery

    async def _fetch(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        loop = asyncio.get_running_loop()
        backoff = 0.5
        if self._hold:
            log.info(
                "nats: unacked messages of an earlier consumer; waiting ack_wait for them first",
                extra={"connector": self.name, "seconds": round(self._hold, 2)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._intake_stopped.wait(), self._hold)
        # After a crash (see start): the predecessor's messages as they come back, and
        # newer ones fetched meanwhile, by stream sequence. They are admitted once every
        # one of the predecessor's is in, in sequence order, so the newer ones last
        # (their ack_waits run out in no set order: a message its in-progress acks kept
        # longer comes back later); at the latest after two more ack_waits, as another
        # replica may have them.
        back: dict[int, Any] = {}
        give_up = loop.time() + 2 * self._ack_wait + self.consume.fetch_wait
        while not self._intake_stopped.is_set():
            if self._awaited and (
                loop.time() > give_up or len(back) >= self.consume.max_in_flight - 1
            ):  # (the second: no room left to fetch the rest in)
                self._awaited = 0
            if back and not self._awaited:
                expires = loop.time() + self._ack_wait
                for seq in sorted(back):
                    self._admit(back[seq], expires)
                back.clear()
            want = await self._reserve()
            try:
                self._fetching = True
                msgs = await self._sub.fetch(want, timeout=self.consume.fetch_wait)
            except (NatsTimeout, TimeoutError):
                self._fetching = False
                self._book.release(want)
                continue
            except Exception as exc:
                self._fetching = False
                self._book.release(want)
                self._problem = repr(exc)
                log.warning(
                    "nats fetch failed; retrying",
                    extra={"connector": self.name, "error": repr(exc), "retry_in": backoff},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._intake_stopped.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self._fetching = False
            backoff = 0.5
            self._problem = ""
            self._book.release(want - len(msgs))
            expires = loop.time() + self._ack_wait
            for msg in msgs:
                if self._awaited or back:  # the rest of the batch too, in order
                    seq = msg.metadata.sequence.stream
                    if seq in back:  # fetched again (its ack_wait ran out): the newest
                        self._book.release(1)
                    elif seq <= self._old_last and self._awaited:
                        self._awaited -= 1
                    back[seq] = msg
                    continue
                self._admit(msg, expires)

    async def _reserve(self) -> int:
        """Slots for one pull request: at least a quarter of ``max_in_flight`` (up to
        ``fetch_batch``), so a busy source does not send one request per settled message."""
        batch = self.consume.fetch_batch
        low = min(batch, max(1, self.consume.max_in_flight // 4))
        taken = await self._book.reserve(batch)
        try:
            while taken < low:
                taken += await self._book.reserve(low - taken)
        except BaseException:
            self._book.release(taken)
            raise
        return taken

    def _admit(self, msg: Any, expires: float) -> None:
        meta = msg.metadata
        seq = str(meta.sequence.stream)
        self._msgs[seq] = msg  # a message fetched again while held settles with its newest Msg
        headers = dict(msg.headers or {})
        if self._key_header is None:
            key: str | None = msg.subject
        else:
            key = headers.get(self._key_header)
        self._book.admit(
            seq, "", key, expires, lambda held: self._delivery(held, msg, headers, key)
        )

    def _delivery(self, held: Held, msg: Any, headers: dict[str, str], key: str | None) -> Delivery:
        meta = msg.metadata
        message_id = headers.get(MSG_ID) or f"{meta.stream}-{meta.sequence.stream}"
        return Delivery(
            msg.data,
            headers,
            {
                "subject": msg.subject,
                "stream": meta.stream,
                "consumer": meta.consumer,
                "sequence": meta.sequence.stream,
                "consumer_sequence": meta.sequence.consumer,
                "receive_count": meta.num_delivered,
                "message_id": message_id,
                "key": key,
                "timestamp": meta.timestamp.isoformat() if meta.timestamp else None,
            },
            self._settler(held),
            self.name,
        )

    # ------------------------------------------------------------------ settle

    def _settler(self, held: Held) -> Any:
        async def settle(outcome: Settlement) -> None:
            if held.done:
                return
            msg = self._msgs.pop(held.message_id, None)
            behind = self._book.finish(held, outcome)
            if outcome is Settlement.ACK:
                # The dispatcher settles ACK after every branch is final or dead-lettered.
                await self._ack(msg)
                return
            # Those held behind it in its key lane go back too, with the same delay.
            await self._nak(msg, self.consume.retry_delay)
            for other in behind:
                await self._nak(self._msgs.pop(other.message_id, None), self.consume.retry_delay)

        return settle

    async def _ack(self, msg: Any) -> None:
        if msg is None:
            return
        try:
            await msg.ack()
        except Exception as exc:  # it comes back after ack_wait; the ledger skips what ran
            raise ConnectorError(f"NATS ack failed: {exc!r}") from exc

    async def _nak(self, msg: Any, delay: float) -> None:
        if msg is None:
            return
        try:
            await msg.nak(delay=delay or None)
        except Exception as exc:  # it comes back after ack_wait anyway
            log.warning("nats nak failed", extra={"connector": self.name, "error": repr(exc)})

    # ------------------------------------------------------------------ chores

    async def _heartbeat(self) -> None:
        """Send +WPI (in progress) for held messages before their ack_wait runs out."""
        loop = asyncio.get_running_loop()
        tick = max(0.1, self._ack_wait / 4)
        margin = self._ack_wait / 2
        while not self._closed.is_set():
            await asyncio.sleep(tick)
            now = loop.time()
            for held in self._book.expiring(now + margin):
                msg = self._msgs.get(held.message_id)
                if msg is None or held.done:
                    continue
                try:
                    await msg.in_progress()
                except Exception as exc:  # disconnected: redelivered later, the ledger copes
                    log.warning(
                        "nats in-progress ack failed",
                        extra={"connector": self.name, "error": repr(exc)},
                    )
                    break
                held.expires = now + self._ack_wait

    async def _poll_lag(self) -> None:
        c = self.consume
        while not self._closed.is_set():
            await asyncio.sleep(c.health_interval)
            js = self._js
            if js is None:
                return
            try:
                info = await js.consumer_info(c.stream, c.durable)
            except Exception as exc:
                self._problem = f"consumer info: {exc!r}"
                continue
            self._pending = float(info.num_pending)

    def status(self) -> ConnectorStatus:
        """Connected or not, and the consumer's pending count as lag (what KEDA reads)."""
        nc = self._nc
        connected = bool(nc is not None and nc.is_connected)
        lag = (
            {}
            if self._pending is None
            else {f"{self.consume.stream}/{self.consume.durable}": self._pending}
        )
        detail = self._problem or ("" if connected else "not connected")
        return ConnectorStatus(connected, detail, lag)


async def _cancel(tasks: Any) -> None:
    # Bounded: nats-py turns a cancelled request into its own TimeoutError, so a task
    # may swallow one cancellation; the loops also end on ``_closed``.
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=2.0)
