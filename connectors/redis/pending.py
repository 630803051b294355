"""The settling side of ``RedisSource``: XACK, giving entries back, keeping the entries
in flight fresh, the group's lag, and closing (see ``connectors.redis``).

``PendingEntries`` is the base of ``RedisSource``: it owns what stays pending in the
group on this consumer's name and the state the reader shares with it (the XAUTOCLAIM
cursor, the keys whose entries were given back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bridge.transport import ConnectorStatus
from connectors.redis.config import RedisConsumeConfig
from connectors.redis.connection import close
from connectors.redis.entry import text
from connectors.sqs.inflight import Held, InFlight

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("connectors.redis")

Entry = tuple[bytes, dict[bytes, bytes] | None]


def as_bytes(value: Any) -> bytes:
    """An entry id (or cursor) as bytes, whatever the client decoded it to."""
    return value if isinstance(value, bytes) else str(value).encode()


class PendingEntries:
    """What a consumer of a group holds pending, and how it gives it up.

    Args:
        consume: the consume config.
        name: the connector's name.
        consumer: this consumer's name in the group.
    """

    _book: InFlight

    def __init__(self, consume: RedisConsumeConfig, name: str, consumer: str) -> None:
        self.consume = consume
        self.name = name
        self.consumer = consumer
        self.stream = consume.stream
        self.group = consume.group
        self._redis: Redis | None = None
        self._acks: list[bytes] = []
        self._returns: list[tuple[bytes, str | None]] = []  # (entry id, its key)
        self._wake = asyncio.Event()
        self._intake_stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._claim_at = 0.0
        self._cursor = b"0-0"
        self._epoch = 0  # bumped when entries are given back: the claim pass restarts
        self._pass_epoch = -1  # the epoch when the current claim pass began at 0-0
        # Under ``ordering: key``: keys with entries queued to be given back, and keys
        # given back -> the epoch of that give-back (a claim pass begun since finds them).
        self._keys_out: Counter[str] = Counter()
        self._keys_back: dict[str, int] = {}
        self._connected = False
        self._lag: float | None = None
        self.claimed = 0  # entries taken over from other (dead) consumers, or given back
        self.rejected = 0  # entries over the delivery limit

    def _reset(self) -> None:
        self._intake_stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._claim_at = 0.0
        self._cursor = b"0-0"
        self._keys_out.clear()
        self._keys_back.clear()

    def _start_chores(self) -> None:
        self._tasks = [
            asyncio.create_task(self._acker(), name=f"redis-acks:{self.name}"),
            asyncio.create_task(self._upkeep(), name=f"redis-upkeep:{self.name}"),
        ]

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
                out[as_bytes(row["message_id"])] = int(row["times_delivered"])
        return out

    # ------------------------------------------------------------------ settlement

    def _hand_back(self, held: Iterable[Held]) -> None:
        """Queue entries settled RETRY_LATER to be given back. Under ``ordering: key``
        their keys are blocked until a claim pass has taken those entries again: entries
        of those keys read meanwhile go back too (``blocked``)."""
        for h in held:
            self._returns.append((h.message_id.encode(), h.group))
            if h.group is not None:
                self._keys_out[h.group] += 1

    def blocked(self, key: str | None, pass_began: int | None = None) -> bool:
        """Entries of ``key`` are being given back, or were and a claim pass begun since
        (at epoch ``pass_began``; None: the entry did not come from such a pass) has not
        taken them again yet: an entry of that key must not run before them."""
        if key is None:
            return False
        if key in self._keys_out:
            return True
        back = self._keys_back.get(key)
        return back is not None and (pass_began is None or pass_began < back)

    def _returned(self, keys: Iterable[str | None], queued: bool) -> None:
        """Keys whose entries were just given back (``queued``: by ``_hand_back``)."""
        for key in keys:
            if key is None:
                continue
            if queued:
                self._keys_out[key] -= 1
                if self._keys_out[key] <= 0:
                    del self._keys_out[key]
            self._keys_back[key] = self._epoch

    def _pass_done(self, began: int) -> None:
        """A claim pass begun at epoch ``began`` reached the end: what was given back
        before it began is claimed (here or elsewhere) or gone."""
        self._keys_back = {k: e for k, e in self._keys_back.items() if e > began}

    async def _acker(self) -> None:
        """XACK settled entries, a batch per wake-up; give back RETRY_LATER ones."""
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
                await self._give_back(redis, [i for i, _ in returns])
        except Exception as exc:  # left pending: claimed again later, the ledger dedupes
            log.warning(
                "redis XACK failed; entries stay pending",
                extra={"connector": self.name, "error": repr(exc), "entries": len(acks)},
            )
        finally:
            self._returned((k for _, k in returns), queued=True)

    async def _give_back(self, redis: Redis, ids: Iterable[bytes]) -> None:
        """Make pending entries claimable at once (XCLAIM to ourselves with IDLE set to
        ``claim_idle``, JUSTID so the delivery count is unchanged): Redis has no nack.
        The next claim pass starts over from the stream's start, so it finds them."""
        ids = list(ids)
        if not ids:
            return
        idle = int(self.consume.claim_idle * 1000)
        await redis.xclaim(
            self.stream, self.group, self.consumer, 0, list(ids), idle=idle, justid=True
        )
        self._epoch += 1
        self._cursor = b"0-0"
        self._claim_at = 0.0

    async def _upkeep(self) -> None:
        """Keep entries in flight here fresh (so nobody claims them), refresh the lag."""
        interval = min(self.consume.claim_interval, self.consume.claim_idle / 3)
        while True:
            await asyncio.sleep(interval)
            redis = self._redis
            if redis is None:
                return
            try:
                mine = [i.encode() for i in self._book.held]
                for start in range(0, len(mine), 1000):
                    await redis.xclaim(
                        self.stream,
                        self.group,
                        self.consumer,
                        0,
                        list(mine[start : start + 1000]),
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
        connected = self._connected and self._redis is not None and not self._closed.is_set()
        lag = {self.stream: self._lag} if self._lag is not None else {}
        return ConnectorStatus(connected, "" if connected else "redis unreachable", lag)

    # ------------------------------------------------------------------ close

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
        if redis is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(remaining):
                    await close(redis)
