"""The consuming half of ``type: redis``: ``RedisSource`` (see ``connectors.redis``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bridge.errors import ConnectorError
from bridge.transport import ConnectorStatus, Delivery, Settlement
from connectors.redis.config import RedisConfig
from connectors.redis.connection import client, connector_error
from connectors.redis.entry import entry_parts, text

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("connectors.redis")

Entry = tuple[bytes, dict[bytes, bytes] | None]


def default_consumer() -> str:
    """One consumer name per process: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisSource:
    """Consumes one stream through a consumer group; semantics in ``connectors.redis``."""

    def __init__(self, cfg: RedisConfig, name: str) -> None:
        if cfg.consume is None:
            raise ValueError(f"connector {name!r} has no consume section")
        self.cfg = cfg
        self.consume = cfg.consume
        self.name = name
        self.stream = cfg.consume.stream
        self.group = cfg.consume.group
        self.consumer = cfg.consume.consumer or default_consumer()
        self._body_field = cfg.consume.body_field.encode()
        self._redis: Redis | None = None
        self._buffer: deque[Delivery] = deque()
        self._inflight: set[bytes] = set()  # handed out (or buffered), not settled
        self._room = asyncio.Event()
        self._acks: list[bytes] = []
        self._returns: list[bytes] = []
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._intake_stopped = False
        self._closing = False
        self._history = True  # read this consumer's own pending entries first
        self._claim_at = 0.0
        self._cursor = b"0-0"
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = False
        self._lag: float | None = None
        self.claimed = 0  # entries taken over from other (dead) consumers
        self.rejected = 0  # entries over the delivery limit

    async def start(self) -> None:
        """Connect, create (``declare``) or check the group, start the acker.

        Raises:
            ConnectorError: cannot connect, or the stream/group is missing.
        """
        from redis.exceptions import RedisError, ResponseError

        await self._close(asyncio.get_running_loop().time() + 5.0)
        self._stopped.clear()
        self._intake_stopped = False
        self._closing = False
        self._history = True
        self._claim_at = 0.0
        block = self.consume.block
        redis = self._redis = client(self.cfg, self.name, blocking=block)
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
        self._room.set()
        self._tasks = [
            asyncio.create_task(self._acker(), name=f"redis-acks:{self.name}"),
            asyncio.create_task(self._upkeep(), name=f"redis-upkeep:{self.name}"),
        ]

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

    # ------------------------------------------------------------------ intake

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Entries (this consumer's pending ones first, then claimed and new) until ``stop()``."""
        while not self._stopped.is_set():
            if self._buffer:
                yield self._buffer.popleft()
                continue
            if self._intake_stopped:
                await self._stopped.wait()
                return
            try:
                await self._fill()
            except (OSError, ConnectionError) as exc:  # redis-py reconnects on the next command
                await self._trouble(exc)
            except Exception as exc:
                from redis.exceptions import RedisError

                if not isinstance(exc, RedisError):
                    raise
                await self._trouble(exc)

    async def _trouble(self, exc: BaseException) -> None:
        if self._connected:
            log.warning(
                "redis read failed; retrying",
                extra={"connector": self.name, "error": repr(exc)},
            )
        self._connected = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), 0.5)

    async def _fill(self) -> None:
        redis = self._redis
        if redis is None:
            await self._stopped.wait()
            return
        room = self.consume.max_in_flight - len(self._inflight)
        if room <= 0:
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), self.consume.block)
            return
        loop = asyncio.get_running_loop()
        if self._history:
            reply = await redis.xreadgroup(
                self.group, self.consumer, {self.stream: "0"}, count=room
            )
            entries = _entries(reply)
            if not entries:
                self._history = False
            await self._take(redis, entries, counted=False)
        elif loop.time() >= self._claim_at:
            await self._claim(redis, room)
        else:
            reply = await redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=min(self.consume.read_count, room),
                block=max(int(self.consume.block * 1000), 1),
            )
            await self._take(redis, _entries(reply), counted=True)
        self._connected = True

    async def _claim(self, redis: Redis, room: int) -> None:
        """XAUTOCLAIM entries idle past ``claim_idle`` (their consumer died, or returned)."""
        idle = int(self.consume.claim_idle * 1000)
        reply = await redis.xautoclaim(
            self.stream, self.group, self.consumer, idle, start_id=self._cursor, count=room
        )
        cursor, entries = reply[0], reply[1]
        self._cursor = cursor if isinstance(cursor, bytes) else str(cursor).encode()
        if self._cursor == b"0-0":  # a full pass: next one after claim_interval
            self._claim_at = asyncio.get_running_loop().time() + self.consume.claim_interval
        fresh = [(i, f) for i, f in entries if i not in self._inflight]
        self.claimed += len(fresh)
        await self._take(redis, fresh, counted=False)

    async def _take(self, redis: Redis, entries: list[Entry], *, counted: bool) -> None:
        """Buffer the entries as deliveries (or give them back if intake has stopped)."""
        if not entries:
            return
        gone = [i for i, fields in entries if not fields]  # deleted (XDEL/trim) while pending
        if gone:
            await redis.xack(self.stream, self.group, *gone)
        live = [(i, f) for i, f in entries if f]
        counts = {i: 1 for i, _ in live} if counted else await self._counts(redis, live)
        if self._intake_stopped:
            await self._give_back(redis, [i for i, _ in live])
            return
        for entry_id, fields in live:
            if entry_id in self._inflight:
                continue
            self._inflight.add(entry_id)
            self._buffer.append(self._delivery(entry_id, fields, counts.get(entry_id, 1)))

    async def _counts(self, redis: Redis, entries: Sequence[Entry]) -> dict[bytes, int]:
        """Delivery counts (XPENDING ``times_delivered``) of entries pending here."""
        if not entries:
            return {}
        pipe = redis.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(
                self.stream, self.group, entry_id, entry_id, 1, consumername=self.consumer
            )
        out: dict[bytes, int] = {}
        for rows in await pipe.execute():
            for row in rows:
                out[_as_bytes(row["message_id"])] = int(row["times_delivered"])
        return out

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes], count: int) -> Delivery:
        body, headers, unreadable = entry_parts(fields, self._body_field)
        ident = entry_id.decode()
        meta: dict[str, Any] = {
            "stream": self.stream,
            "group": self.group,
            "entry_id": ident,
            "message_id": f"{self.stream}-{ident}",
            "receive_count": count,
        }
        limit = self.consume.max_deliveries
        if count > limit:
            self.rejected += 1
            meta["reject_reason"] = "delivery_limit"
            meta["reject_detail"] = f"delivered {count} times, limit {limit}"
        elif unreadable is not None:
            meta["reject_reason"] = "invalid_utf8"
            meta["reject_detail"] = unreadable

        async def settle(outcome: Settlement) -> None:
            (self._acks if outcome is Settlement.ACK else self._returns).append(entry_id)
            self._wake.set()

        return Delivery(body, headers, meta, settle, self.name)

    # ------------------------------------------------------------------ settlement

    async def _acker(self) -> None:
        """XACK settled entries, a batch per wake-up; return RETRY_LATER ones."""
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
        await self._flush()  # what was settled before stop

    async def _flush(self) -> None:
        redis = self._redis
        acks, self._acks = self._acks, []
        returns, self._returns = self._returns, []
        if redis is None or not (acks or returns):
            return
        try:
            if acks:
                await redis.xack(self.stream, self.group, *acks)
            if returns:
                await self._give_back(redis, returns)
        except Exception as exc:  # left pending: claimed again later, the ledger dedupes
            log.warning(
                "redis XACK failed; entries stay pending",
                extra={"connector": self.name, "error": repr(exc), "entries": len(acks)},
            )
        finally:
            self._inflight.difference_update(acks)
            self._inflight.difference_update(returns)
            self._room.set()

    async def _give_back(self, redis: Redis, ids: Iterable[bytes]) -> None:
        """Make pending entries claimable at once (XCLAIM to ourselves with IDLE set to
        ``claim_idle``, JUSTID so the delivery count is unchanged): Redis has no nack."""
        ids = list(ids)
        if not ids:
            return
        idle = int(self.consume.claim_idle * 1000)
        await redis.xclaim(
            self.stream, self.group, self.consumer, 0, _ids(ids), idle=idle, justid=True
        )
        self._claim_at = 0.0  # ours too: claim them back at the next turn

    async def _upkeep(self) -> None:
        """Keep entries in flight here fresh (so nobody claims them), refresh the lag."""
        interval = min(self.consume.claim_interval, self.consume.claim_idle / 3)
        while True:
            await asyncio.sleep(interval)
            redis = self._redis
            if redis is None:
                return
            try:
                mine = [i for i in self._inflight if i not in self._acks]
                for start in range(0, len(mine), 1000):
                    await redis.xclaim(
                        self.stream,
                        self.group,
                        self.consumer,
                        0,
                        _ids(mine[start : start + 1000]),
                        justid=True,
                    )
                await self._refresh_lag(redis)
                self._connected = True
            except Exception as exc:
                self._connected = False
                log.debug("redis upkeep failed", extra={"connector": self.name, "error": repr(exc)})

    async def _refresh_lag(self, redis: Redis) -> None:
        for group in await redis.xinfo_groups(self.stream):
            if text(group["name"]) == self.group:
                lag = group.get("lag")
                pending = float(group.get("pending") or 0)
                # lag (Redis 7+) counts entries never delivered to the group; it is unknown
                # (nil) after some deletions. Pending entries are work not done yet too.
                self._lag = (float(lag) if lag is not None else 0.0) + pending
                return

    def status(self) -> ConnectorStatus:
        """Connected while commands succeed; lag is the group's lag plus its pending entries."""
        connected = self._connected and self._redis is not None and not self._stopped.is_set()
        lag = {self.stream: self._lag} if self._lag is not None else {}
        return ConnectorStatus(connected, "" if connected else "redis unreachable", lag)

    # ------------------------------------------------------------------ stop

    async def stop_intake(self) -> None:
        """Read no more; give back what was read but not handed out. Idempotent."""
        self._intake_stopped = True
        buffered = [d.meta["entry_id"].encode() for d in self._buffer]
        self._buffer.clear()
        redis = self._redis
        if redis is not None and buffered:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._give_back(redis, buffered)
            self._inflight.difference_update(buffered)

    async def stop(self, deadline: float) -> None:
        """Give back what was buffered, write pending settlements, close. Idempotent."""
        if self._redis is not None and not self._intake_stopped:
            await self.stop_intake()
        self._stopped.set()
        await self._close(deadline)

    async def _close(self, deadline: float) -> None:
        tasks, self._tasks = self._tasks, []
        remaining = max(deadline - asyncio.get_running_loop().time(), 1.0)
        self._closing = True
        self._wake.set()
        if tasks:  # the acker writes what was settled, then ends
            await asyncio.wait(tasks[:1], timeout=remaining)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that swallows its cancellation (a client retrying inside)
            # must not hang the stop past its deadline.
            _, stuck = await asyncio.wait(tasks, timeout=max(remaining, 1.0))
            if stuck:
                log.warning(
                    "redis source tasks did not end in time",
                    extra={"connector": self.name, "count": len(stuck)},
                )
        redis = self._redis
        self._redis = None
        self._connected = False
        self._buffer.clear()
        self._inflight.clear()
        if redis is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(remaining):
                    await redis.aclose()


def _ids(ids: Iterable[bytes]) -> list[Any]:
    return list(ids)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply (RESP2: ``[[stream, [(id, fields), ...]]]``)."""
    return [(_as_bytes(i), f) for _, entries in reply or () for i, f in entries]
