"""The inbox: events accepted over HTTP, emitted by handlers, or replayed, kept in the store.

``Inbox.put`` returns once the events are committed; the ``InboxSource`` then
yields them as deliveries like any broker would, and marks each done once it is
settled (behind the settlement, in groups, as Kafka commits its finished prefix).
Entries still pending after a crash are delivered again on start. The source is
woken at once by puts in this process and polls for entries written by other
processes (``bridge dlq replay``, other replicas).

On a store that several replicas share (PostgreSQL), each replica claims the
entries it processes, no more than its free in-flight slots, with a lease that it
renews while it holds them (``bridge.leases``); an entry whose holder died is
claimed by another replica once the lease runs out, and a holder that lost its
lease does not settle the entry over the new holder. On a store of one process
(SQLite), a cursor over pending entries is enough.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any

from bridge.events import Event
from bridge.leases import LeasedClaims
from bridge.metrics import Metrics
from bridge.store.contracts import InboxEntry, InboxStore
from bridge.transport import ConnectorStatus, Delivery, Settlement

log = logging.getLogger("bridge.inbox")
_CE_JSON = {"content-type": "application/cloudevents+json"}
HANDOVER = 1024  # most stored events kept in memory for the source (``Inbox.built``)


class Inbox:
    """Writes to the inbox and wakes its source.

    The events that ``put_events(..., handover=True)`` stored as new (a webhook's,
    validated by the catalog) are also kept in memory (at most
    ``HANDOVER`` of them, the oldest forgotten first) until the source reads their
    entries, so this process delivers them without decoding and validating the bodies
    it has just written (``Delivery.event``). Entries read again (a redelivery),
    written by another process, or forgotten are decoded from the store as before.
    """

    def __init__(self, store: InboxStore) -> None:
        self.store = store
        self.wakeup = asyncio.Event()
        # (entry source, id) -> (stored body, event); insertion order: oldest first
        self._built: dict[tuple[str, str], tuple[bytes, Event[Any]]] = {}

    async def put(self, entries: Sequence[InboxEntry]) -> list[bool]:
        """Store entries durably; True for each that was new (False: a duplicate, with the
        event ``source`` and ``id`` of one already there)."""
        fresh = await self.store.inbox_put(entries)
        if any(fresh):
            self.wakeup.set()
        return fresh

    async def put_events(
        self, events: Sequence[Event[Any]], source: str, *, handover: bool = False
    ) -> list[bool]:
        """Store events as structured CloudEvents; with ``handover`` (events whose data the
        catalog has validated, as a webhook's), keep the new ones for the source."""
        entries = [
            InboxEntry(id=e.id, body=e.to_json(), source=source, event_source=e.source)
            for e in events
        ]
        fresh = await self.put(entries)
        if not handover:
            return fresh
        built = self._built
        for entry, event, new in zip(entries, events, fresh, strict=True):
            if new:
                if len(built) >= HANDOVER:
                    del built[next(iter(built))]
                built[(source, entry.id)] = (entry.body, event)
        return fresh

    def built(self, entry: InboxEntry) -> Event[Any] | None:
        """The event ``put_events`` stored as ``entry``, once; None: decode the body. Only
        for the very body it was built from (two events of one id from different sources
        share a key here, not a body)."""
        if not self._built or entry.handler:
            return None
        found = self._built.pop((entry.source, entry.id), None)
        if found is None or found[0] != entry.body:
            return None
        return found[1]

    @property
    def held(self) -> int:
        """How many stored events wait in memory to be handed to the source."""
        return len(self._built)


class InboxSource:
    """Yields pending inbox entries as deliveries.

    Args:
        inbox: the inbox to read.
        name: the source's name (metrics, logs).
        poll_interval: seconds between looks for entries written by other processes.
        batch: most entries read or claimed at once.
        lease: seconds a claimed entry stays reserved for this process (shared store).
        capacity: most entries claimed and not yet settled (shared store): the
            consumer's ``max_in_flight``. Default: ``batch``.
        metrics: where lost leases and failed renewals are counted.
        wall: wall-clock time (epoch seconds), for claims and renewals.
    """

    def __init__(
        self,
        inbox: Inbox,
        *,
        name: str = "api",
        poll_interval: float = 1.0,
        batch: int = 256,
        lease: float = 30.0,
        capacity: int | None = None,
        metrics: Metrics | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.inbox = inbox
        self.name = name
        self.poll_interval = poll_interval
        self.batch = batch
        self._cursor = 0
        self._rewind: int | None = None
        self._in_flight: set[int] = set()
        self._marks: list[int] = []  # acked entries whose done marks are still to write
        self._marker: asyncio.Task[None] | None = None  # writes them, one group at a time
        self._stopped = asyncio.Event()
        self._connected = True
        self.lease = lease
        self.shared = bool(getattr(inbox.store, "shared", False))
        self._claims = LeasedClaims(
            _InboxClaims(inbox.store),
            name=name,
            batch=batch,
            capacity=capacity,
            lease=lease,
            poll_interval=poll_interval,
            wall=wall,
            log=log,
            failure="cannot claim inbox entries",
            metrics=metrics,
        )

    async def start(self) -> None:
        self._stopped.clear()

    def deliveries(self) -> AsyncIterator[Delivery]:
        return self._claimed() if self.shared else self._pending()

    async def _claimed(self) -> AsyncIterator[Delivery]:
        async for entry, ticket in self._claims.claimed(self._stopped, self.inbox.wakeup):
            yield self._delivery(entry, ticket)

    def _delivery(self, entry: InboxEntry, ticket: int = 0) -> Delivery:
        meta: dict[str, Any] = {"message_id": entry.id, "seq": entry.seq, "source": entry.source}
        if entry.handler:
            meta["replay_handler"] = entry.handler
        settle = partial(self._settle, entry, ticket)
        return Delivery(entry.body, _CE_JSON, meta, settle, self.name, self.inbox.built(entry))

    async def _pending(self) -> AsyncIterator[Delivery]:
        store = self.inbox.store
        wakeup = self.inbox.wakeup
        while not self._stopped.is_set():
            wakeup.clear()
            if self._rewind is not None:
                self._cursor = min(self._cursor, self._rewind)
                self._rewind = None
            try:
                entries = await store.inbox_pending(self._cursor, self.batch)
                self._connected = True
            except Exception as exc:  # the store may be down; keep trying, report not ready
                self._connected = False
                log.error("cannot read the inbox", extra={"error": str(exc)})
                entries = []
            for entry in entries:
                if self._rewind is not None:
                    break  # an entry must be read again: start over from it
                self._cursor = max(self._cursor, entry.seq)
                if entry.seq in self._in_flight:
                    continue
                self._in_flight.add(entry.seq)
                yield self._delivery(entry)
            if len(entries) < self.batch and self._rewind is None:
                await self._wait(wakeup)

    async def _wait(self, wakeup: asyncio.Event) -> None:
        waiter = asyncio.ensure_future(wakeup.wait())
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait(
                (waiter, stopper), timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            stopper.cancel()

    async def _settle(self, entry: InboxEntry, ticket: int, outcome: Settlement) -> None:
        if self.shared:
            await self._claims.settle(entry, ticket, outcome)
            return
        seq = entry.seq
        if outcome is Settlement.ACK:
            # Marked done behind the settlement (``_mark_done``), as Kafka commits its
            # finished prefix: the delivery is over once its runs are recorded, and a mark
            # lost in a crash only redelivers an entry whose runs the ledger skips.
            self._marks.append(seq)
            if self._marker is None:
                self._marker = asyncio.get_running_loop().create_task(
                    self._mark_done(), name=f"inbox done marks {self.name}"
                )
            return
        self._in_flight.discard(seq)
        self._read_again(seq)

    async def _mark_done(self) -> None:
        """Mark the acked entries done, in groups: those settled in one loop iteration, or
        while the group before was written, in one store call. Until its mark is stored an
        entry stays in flight (not read again); if the mark fails, it is read again (and
        its delivery's runs, recorded, are skipped)."""
        try:
            while self._marks:
                await asyncio.sleep(0)  # one loop iteration: settlements under way join
                seqs, self._marks = self._marks, []
                try:
                    await self.inbox.store.inbox_done(seqs)
                except Exception as exc:
                    log.warning(
                        "inbox entries not marked done: they are delivered again",
                        extra={"connector": self.name, "count": len(seqs), "error": str(exc)},
                    )
                    for seq in seqs:
                        self._read_again(seq)
                finally:
                    self._in_flight.difference_update(seqs)
        finally:
            self._marker = None

    def _read_again(self, seq: int) -> None:
        """Make the generator read from ``seq`` again (the entry is still pending)."""
        self._rewind = seq - 1 if self._rewind is None else min(self._rewind, seq - 1)
        self.inbox.wakeup.set()

    async def stop(self, deadline: float) -> None:
        """Stop reading; write the done marks still owed, until ``deadline`` (the loop's
        clock): one not written by then leaves its entry to be delivered again."""
        self._stopped.set()
        self._claims.stop()
        marker = self._marker
        if marker is not None:
            await asyncio.wait(
                {marker}, timeout=max(deadline - asyncio.get_running_loop().time(), 0.1)
            )

    def status(self) -> ConnectorStatus:
        if self.shared:
            connected, in_flight = self._claims.connected, len(self._claims.held)
        else:
            connected, in_flight = self._connected, len(self._in_flight)
        return ConnectorStatus(connected, lag={"pending_in_flight": float(in_flight)})

    async def purge(self, older_than_seconds: float = 86_400.0) -> int:
        """Forget finished entries older than the deduplication window."""
        return await self.inbox.store.inbox_purge(time.time() - older_than_seconds)


class _InboxClaims:
    """The inbox's store calls for ``LeasedClaims``: entries by ``seq``."""

    exclusive = True  # only its holder changes an entry's lease

    def __init__(self, store: InboxStore) -> None:
        self.store = store

    def key(self, item: InboxEntry) -> int:
        return item.seq

    async def claim(self, now: float, limit: int, lease: float, owner: str) -> list[InboxEntry]:
        return await self.store.inbox_claim(now, limit, lease, owner)

    async def renew(self, keys: list[int], until: float, owner: str) -> list[int]:
        return await self.store.inbox_renew(keys, until, owner)

    async def finish(self, item: InboxEntry, owner: str) -> bool:
        return bool(await self.store.inbox_finish([item.seq], owner))
