"""The consuming half of ``type: redis``: ``RedisSource`` (see ``connectors.redis``).

The book of held entries (slots, key lanes, an entry read again while held) is the
SQS source's ``InFlight``, as on NATS, keyed by entry id. The settling side (XACK,
giving entries back, keeping them fresh, the lag) is ``connectors.redis.pending``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from bridge.errors import ConnectorError
from bridge.transport import Delivery, Settlement
from connectors.redis.config import RedisConfig
from connectors.redis.connection import client, connector_error
from connectors.redis.entry import entry_parts, text
from connectors.redis.pending import Entry, PendingEntries, as_bytes
from connectors.sqs.inflight import Held, InFlight

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("connectors.redis")


def default_consumer() -> str:
    """One consumer name per process: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisSource(PendingEntries):
    """Consumes one stream through a consumer group; semantics in ``connectors.redis``."""

    def __init__(self, cfg: RedisConfig, name: str) -> None:
        if cfg.consume is None:
            raise ValueError(f"connector {name!r} has no consume section")
        super().__init__(cfg.consume, name, cfg.consume.consumer or default_consumer())
        self.cfg = cfg
        self._body_field = cfg.consume.body_field.encode()
        self._key_field = cfg.consume.key_field
        self._book = InFlight(self.consume.max_in_flight, self._key_field is not None)
        self._reader: asyncio.Task[None] | None = None
        self._reading = False  # an XREADGROUP/XAUTOCLAIM is out
        self._history: bytes | None = b"0"  # where this consumer's own pending entries go on
        self._orphans_until: float | None = None  # ordered start: others' entries first
        self._failure: ConnectorError | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, create (``declare``) or check the group, start reading.

        Raises:
            ConnectorError: cannot connect, or the stream/group is missing.
        """
        from redis.exceptions import RedisError, ResponseError

        if self._reader is not None:
            self._reader.cancel()
        await self._close(asyncio.get_running_loop().time() + 5.0)
        self._reset()
        self._book = InFlight(self.consume.max_in_flight, self._key_field is not None)
        self._history = b"0"
        self._orphans_until = None
        self._failure = None
        redis = self._redis = client(self.cfg, self.name, blocking=self.consume.block)
        try:
            if self.consume.declare:
                try:
                    await redis.xgroup_create(
                        self.stream, self.group, id=self.consume.start_id, mkstream=True
                    )
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            else:
                await self._check_group(redis)
        except ConnectorError:
            await self._close(asyncio.get_running_loop().time() + 5.0)
            raise
        except (RedisError, OSError) as exc:
            await self._close(asyncio.get_running_loop().time() + 5.0)
            raise connector_error(self.name, f"cannot consume {self.stream!r}", exc) from exc
        self._connected = True
        self._reader = asyncio.create_task(self._read(redis), name=f"redis-read:{self.name}")
        self._reader.add_done_callback(self._reader_ended)
        self._start_chores()

    async def _check_group(self, redis: Redis) -> None:
        from redis.exceptions import ResponseError

        try:
            groups = await redis.xinfo_groups(self.stream)
        except ResponseError as exc:
            raise ConnectorError(
                f"redis {self.name}: stream {self.stream!r} not found ({exc}); create it or "
                "set `consume.declare: true`",
                retriable=False,
            ) from exc
        if not any(text(g["name"]) == self.group for g in groups):
            raise ConnectorError(
                f"redis {self.name}: group {self.group!r} of stream {self.stream!r} not found; "
                "create it or set `consume.declare: true`",
                retriable=False,
            )

    def _reader_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("redis reader failed", extra={"connector": self.name, "error": repr(exc)})
        self._failure = ConnectorError(f"redis {self.name}: reading failed: {exc!r}")
        self._closed.set()

    # ------------------------------------------------------------------ intake

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Entries (this consumer's pending ones first, then claimed and new) until ``stop()``.

        Raises:
            ConnectorError: the reader failed for good (not a Redis error: those are retried).
        """
        handed = self._book.handed_out(self._closed, lambda: self._failure)
        async with contextlib.aclosing(handed):
            async for delivery in handed:
                yield delivery

    async def _read(self, redis: Redis) -> None:
        """Read until intake stops: own pending entries, then (ordered) entries other
        consumers left, then new entries, with an XAUTOCLAIM pass every ``claim_interval``."""
        from redis.exceptions import RedisError

        loop = asyncio.get_running_loop()
        backoff = 0.5
        while not self._intake_stopped.is_set():
            taken = await self._book.reserve(self.consume.read_count)
            admitted = 0
            try:
                self._reading = True
                if self._history is not None:
                    admitted = await self._read_history(redis, taken)
                elif self._orphans_until is not None:
                    admitted = await self._claim_orphans(redis, taken)
                elif loop.time() >= self._claim_at and not self._keys_out:
                    # (not while entries are being given back: claimed now, they would
                    # only go back again, each claim adding to their delivery count)
                    admitted = await self._claim(redis, taken)
                else:
                    admitted = await self._read_new(redis, taken)
                self._connected = True
                backoff = 0.5
            except (RedisError, OSError, ConnectionError) as exc:  # redis-py reconnects
                if self._connected:
                    log.warning(
                        "redis read failed; retrying",
                        extra={"connector": self.name, "error": repr(exc)},
                    )
                self._connected = False
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._reading = False
                self._book.release(taken - admitted)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._intake_stopped.wait(), seconds)

    async def _read_history(self, redis: Redis, count: int) -> int:
        """This consumer's own pending entries (left by an earlier run with its name)."""
        reply = await redis.xreadgroup(
            self.group, self.consumer, {self.stream: self._history or b"0"}, count=count
        )
        entries = _entries(reply)
        if not entries:
            self._history = None
            if self._key_field is not None:
                self._orphans_until = (
                    asyncio.get_running_loop().time() + self.consume.claim_idle * 1.1 + 0.2
                )
            return 0
        self._history = entries[-1][0]
        return await self._take(redis, entries, counted=False)

    async def _claim_orphans(self, redis: Redis, count: int) -> int:
        """``ordering: key`` at start: entries another consumer left pending (it crashed,
        say) go before new ones of their key. Claim them, and while someone still holds
        entries, wait (at most ``claim_idle``, bounded) for them to become claimable."""
        admitted = await self._claim(redis, count)
        if admitted or self._cursor != b"0-0":
            return admitted  # a pass goes on
        loop = asyncio.get_running_loop()
        until = self._orphans_until or 0.0
        others = await self._others_pending(redis)
        if not others or loop.time() >= until:
            self._orphans_until = None
            self._claim_at = loop.time() + self.consume.claim_interval
            return 0
        log.info(
            "redis: entries pending on other consumers; claiming them before new entries",
            extra={
                "connector": self.name,
                "pending": others,
                "seconds": round(until - loop.time()),
            },
        )
        await self._pause(min(self.consume.claim_interval, max(until - loop.time(), 0.0)))
        return 0

    async def _others_pending(self, redis: Redis) -> int:
        summary = await redis.xpending(self.stream, self.group)
        return sum(
            int(c["pending"])
            for c in summary.get("consumers") or ()
            if text(c["name"]) != self.consumer
        )

    async def _claim(self, redis: Redis, count: int) -> int:
        """XAUTOCLAIM entries idle past ``claim_idle`` (their consumer died, or given back)."""
        loop = asyncio.get_running_loop()
        epoch, start = self._epoch, self._cursor
        if start == b"0-0":
            self._pass_epoch = epoch
        idle = int(self.consume.claim_idle * 1000)
        reply = await redis.xautoclaim(
            self.stream, self.group, self.consumer, idle, start_id=start, count=count
        )
        began: int | None = None
        if epoch == self._epoch:  # else entries were given back meanwhile: restart the pass
            began = self._pass_epoch
            self._cursor = as_bytes(reply[0])
            if self._cursor == b"0-0":  # a full pass: the next one after claim_interval
                self._claim_at = loop.time() + self.consume.claim_interval
                if self._pass_epoch == epoch:
                    self._pass_done(epoch)
        fresh = [
            (as_bytes(i), f) for i, f in reply[1] if as_bytes(i).decode() not in self._book.held
        ]
        self.claimed += len(fresh)
        return await self._take(redis, fresh, counted=False, pass_began=began)

    async def _read_new(self, redis: Redis, count: int) -> int:
        reply = await redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=count,
            block=max(int(self.consume.block * 1000), 1),
        )
        return await self._take(redis, _entries(reply), counted=True)

    async def _take(
        self,
        redis: Redis,
        entries: Sequence[Entry],
        *,
        counted: bool,
        pass_began: int | None = None,
    ) -> int:
        """Admit the entries into the book (or give them back if intake has stopped);
        return how many reserved slots they filled."""
        if not entries:
            return 0
        late = {i: self._key(f) for i, f in entries if f and self.blocked(self._key(f), pass_began)}
        if late:
            # Entries of keys given back (RETRY_LATER) and not claimed again yet: they go
            # back too, and come again after those (a claim pass goes in stream order).
            await self._give_back(redis, list(late))
            self._returned(late.values(), queued=False)
            entries = [(i, f) for i, f in entries if i not in late]
        gone = [i for i, fields in entries if not fields]  # deleted (XDEL/trim) while pending
        if gone:
            await redis.xack(self.stream, self.group, *gone)
        live = [(i, f) for i, f in entries if f]
        counts = {i: 1 for i, _ in live} if counted else await self._counts(redis, live)
        if self._intake_stopped.is_set():
            await self._give_back(redis, [i for i, _ in live])
            return 0
        for entry_id, fields in live:
            self._admit(entry_id, fields, counts.get(entry_id, 1))
        return len(live)

    def _key(self, fields: dict[bytes, bytes]) -> str | None:
        if self._key_field is None:
            return None
        value = fields.get(self._key_field)
        return None if value is None else text(value)

    def _admit(self, entry_id: bytes, fields: dict[bytes, bytes], count: int) -> None:
        key = self._key(fields)
        self._book.admit(
            entry_id.decode(), "", key, 0.0, lambda held: self._delivery(held, fields, count, key)
        )

    def _delivery(
        self, held: Held, fields: dict[bytes, bytes], count: int, key: str | None
    ) -> Delivery:
        body, headers, unreadable = entry_parts(fields, self._body_field)
        ident = held.message_id
        meta: dict[str, Any] = {
            "stream": self.stream,
            "group": self.group,
            "entry_id": ident,
            "message_id": f"{self.stream}-{ident}",
            "receive_count": count,
        }
        if self._key_field is not None:
            meta["key"] = key
        limit = self.consume.max_deliveries
        if count > limit:
            self.rejected += 1
            meta["reject_reason"] = "delivery_limit"
            meta["reject_detail"] = f"delivered {count} times, limit {limit}"
        elif unreadable is not None:
            meta["reject_reason"] = "invalid_utf8"
            meta["reject_detail"] = unreadable

        async def settle(outcome: Settlement) -> None:
            if held.done:
                return
            behind = self._book.finish(held, outcome)
            if outcome is Settlement.ACK:
                self._acks.append(ident.encode())
            else:  # those held behind it in its key lane go back too, to keep their order
                self._hand_back([held, *behind])
            self._wake.set()

        return Delivery(body, headers, meta, settle, self.name)

    # ------------------------------------------------------------------ stop

    async def stop_intake(self) -> None:
        """Read no more; give back what was read but not handed out. Idempotent."""
        redis = self._redis
        if redis is None or self._intake_stopped.is_set():
            return
        self._intake_stopped.set()
        reader = self._reader
        if reader is not None:
            # A read in progress is let finish (what it brings is given back); a reader
            # waiting for free slots is cancelled at once.
            grace = self.consume.block + self.cfg.command_timeout if self._reading else 0.0
            _, stuck = await asyncio.wait([reader], timeout=grace)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=2.0)
        undelivered = [h.message_id.encode() for h in self._book.take_undelivered()]
        if undelivered:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._give_back(redis, undelivered)

    async def stop(self, deadline: float) -> None:
        """Give back what was not handed out, write pending settlements, close. Idempotent."""
        if self._redis is not None:
            await self.stop_intake()
        self._closed.set()
        await self._close(deadline)
        self._reader = None


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply (RESP2: ``[[stream, [(id, fields), ...]]]``)."""
    return [(as_bytes(i), f) for _, entries in reply or () for i, f in entries]
