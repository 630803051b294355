"""The Kafka source's bookkeeping, without I/O: what was fetched, what is out, what to commit.

``Intake`` keeps a ``PartitionState`` per assigned partition. Fetched records go in
with ``accept``; ``take`` hands them out in the configured order (``key``: one message
per key at a time; ``partition``: one per partition; ``none``) and never more than
``max_in_flight`` at once; ``settle`` finishes them. ``commit_offsets`` gives, per
partition, the end of the contiguous prefix of finished offsets. Backpressure is
decided here and carried out through the ``pause``/``resume`` callables (the consumer's):
all partitions pause when fetched-but-unsettled records reach ``max_in_flight`` and
resume at half of it; one partition pauses when ``max_uncommitted`` of its offsets wait
behind its oldest unfinished one, and resumes at half of that.

A partition being revoked is *draining* (nothing more of it is handed out; its
in-flight records may still finish) and then *released* (nothing of it is settled
or committed any more). States are never reused: a reassigned partition gets a new one.

A partition whose next batch cannot be decoded (``connectors.kafka.fetch``) is
*blocked*: paused and never resumed by backpressure, its commit point held before
that batch, until the partition is assigned afresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.transport import Settlement

_PARTITION = object()  # the single lane of a partition under ``ordering: partition``


@dataclass(eq=False, slots=True)
class PartitionState:
    """What this member knows of one assigned partition, from assignment to release.

    ``fetched`` holds, in offset order, the offsets not yet committable: the oldest
    unfinished one and everything fetched after it. ``lanes`` maps an ordering lane
    (a key, or the partition) that has a message out to the records waiting behind it.
    """

    tp: Any
    fetched: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    next_offset: int | None = None
    committed: int | None = None
    end: int = 0
    lanes: dict[Hashable, deque[Any]] = field(default_factory=dict)
    buffered: int = 0
    in_flight: int = 0
    draining: bool = False
    released: bool = False
    window_paused: bool = False
    stepping: bool = False  # fetched one record per call: a batch of it failed to decode
    blocked: str | None = None  # why fetching stopped (a batch that cannot be decoded)

    @property
    def label(self) -> str:
        """``topic/partition``."""
        return f"{self.tp.topic}/{self.tp.partition}"

    def track(self, offset: int) -> None:
        """Record a fetched offset (offsets arrive in increasing order, gaps allowed)."""
        self.fetched.append(offset)
        self.next_offset = offset + 1

    def finish(self, offset: int) -> None:
        """Mark ``offset`` finished; the committable prefix grows past it if it can."""
        fetched = self.fetched
        if fetched and fetched[0] == offset:
            fetched.popleft()
            finished = self.finished
            while fetched and fetched[0] in finished:
                finished.remove(fetched.popleft())
        else:
            self.finished.add(offset)

    def commit_point(self) -> int | None:
        """The offset to commit: the oldest unfinished one, else the next to fetch."""
        if self.fetched:
            return self.fetched[0]
        return self.next_offset

    def lag(self) -> float:
        """End offset minus committed offset (or where consumption started, before a commit)."""
        base = self.committed
        if base is None:
            base = self.fetched[0] if self.fetched else self.next_offset
        if base is None:
            return 0.0
        return float(max(self.end - base, 0))


def _key_lane(record: Any) -> Hashable | None:
    key: Hashable | None = record.key  # no key: no order to keep
    return key


def _partition_lane(record: Any) -> Hashable | None:
    return _PARTITION


def _no_lane(record: Any) -> Hashable | None:
    return None


LANES: dict[str, Callable[[Any], Hashable | None]] = {
    "key": _key_lane,
    "partition": _partition_lane,
    "none": _no_lane,
}

PartitionsFn = Callable[[list[Any]], None]


class Intake:
    """Fetched records of the assigned partitions, on their way out and back.

    Args:
        ordering: ``key``, ``partition`` or ``none``.
        max_in_flight: most records handed out and not settled; also the pause threshold.
        max_uncommitted: per-partition pause threshold of the uncommitted window.
        pause: pauses fetching from the given partitions.
        resume: resumes fetching from the given partitions.
    """

    def __init__(
        self,
        *,
        ordering: Literal["key", "partition", "none"],
        max_in_flight: int,
        max_uncommitted: int,
        pause: PartitionsFn,
        resume: PartitionsFn,
    ) -> None:
        self.lane = LANES[ordering]
        self.limit = max_in_flight
        self.window = max_uncommitted
        self.pause = pause
        self.resume = resume
        self.partitions: dict[Any, PartitionState] = {}
        self.ready: deque[tuple[PartitionState, Any]] = deque()
        self.buffered = 0  # fetched, not handed out (lane queues and pending retries included)
        self.in_flight = 0  # handed out, not settled
        self.paused_all = False
        self.closing = False  # shutting down: RETRY_LATER leaves a record to redelivery

    # ------------------------------------------------------------------ ownership

    def assign(self, tps: Iterable[Any]) -> None:
        """The full new assignment: partitions not in it are released without a commit."""
        assigned = set(tps)
        lost = [s for tp, s in self.partitions.items() if tp not in assigned]
        self.drain(lost)
        self.release(lost)
        fresh = [tp for tp in assigned if tp not in self.partitions]
        for tp in fresh:
            self.partitions[tp] = PartitionState(tp)
        if self.paused_all:
            self.pause(fresh)
        # kept across the assignment: the consumer may have forgotten the pause
        self.pause([s.tp for s in self.partitions.values() if s.blocked is not None])

    def drain(self, states: Iterable[PartitionState]) -> None:
        """Hand out nothing more of ``states``; drop what they had buffered."""
        for state in states:
            state.draining = True
            self.buffered -= state.buffered
            state.buffered = 0
            state.lanes.clear()

    def release(self, states: Iterable[PartitionState]) -> None:
        """Forget ``states``: later settles of their records are ignored, never committed."""
        for state in states:
            state.draining = state.released = True
            if self.partitions.get(state.tp) is state:
                del self.partitions[state.tp]
        self._flow(None)

    def release_all(self) -> None:
        """Release every partition and forget every buffered record (shutdown)."""
        states = list(self.partitions.values())
        self.drain(states)
        self.release(states)
        self.ready.clear()
        self.paused_all = False

    def live(self) -> list[PartitionState]:
        """States of the owned partitions that are not being revoked."""
        return [s for s in self.partitions.values() if not s.draining]

    def fetchable(self) -> list[PartitionState]:
        """States of the live partitions that are not paused (nor blocked)."""
        if self.paused_all:
            return []
        return [s for s in self.live() if not s.window_paused and s.blocked is None]

    def block(self, state: PartitionState, reason: str) -> None:
        """Stop fetching ``state`` for good (until it is assigned afresh), saying why."""
        state.blocked = reason
        self.pause([state.tp])

    def blocked(self) -> list[PartitionState]:
        """The live partitions that are blocked."""
        return [s for s in self.live() if s.blocked is not None]

    # ------------------------------------------------------------------ flow

    def accept(self, batch: Mapping[Any, list[Any]], end_of: Callable[[Any], int | None]) -> None:
        """Take in fetched records (``end_of(tp)``: the partition's end offset, if known)."""
        lane_of = self.lane
        ready = self.ready
        for tp, records in batch.items():
            state = self.partitions.get(tp)
            if state is None:
                state = self.partitions[tp] = PartitionState(tp)
            elif state.draining:
                continue
            for record in records:
                state.track(record.offset)
                lane = lane_of(record)
                if lane is None:
                    ready.append((state, record))
                    continue
                waiting = state.lanes.get(lane)
                if waiting is None:
                    state.lanes[lane] = deque()
                    ready.append((state, record))
                else:
                    waiting.append(record)
            state.buffered += len(records)
            self.buffered += len(records)
            state.end = max(state.end, end_of(tp) or 0)
            if len(state.fetched) >= self.window and not state.window_paused:
                state.window_paused = True
                self.pause([tp])
        if not self.paused_all and self.buffered + self.in_flight >= self.limit:
            self.paused_all = True
            self.pause([s.tp for s in self.live()])

    def take(self) -> tuple[PartitionState, Any] | None:
        """The next record to hand out, or None (nothing ready, or ``max_in_flight`` out)."""
        ready = self.ready
        while ready and self.in_flight < self.limit:
            state, record = ready.popleft()
            if state.draining:
                continue  # revoked: its next owner starts from the committed offset
            state.buffered -= 1
            self.buffered -= 1
            state.in_flight += 1
            self.in_flight += 1
            return state, record
        return None

    def settle(self, state: PartitionState, record: Any, outcome: Settlement) -> bool:
        """Finish a handed-out record. True: hand it out again later (call ``requeue``)."""
        state.in_flight -= 1
        self.in_flight -= 1
        if state.released:
            self._flow(None)  # its runs still counted towards the pause threshold
            return False
        again = False
        if outcome is Settlement.ACK:
            state.finish(record.offset)
            self._next_in_lane(state, record)
        elif not (self.closing or state.draining):
            # Back in the buffer, its lane still held (so order holds), never committed past.
            state.buffered += 1
            self.buffered += 1
            again = True
        self._flow(state)
        return again

    def requeue(self, state: PartitionState, record: Any) -> None:
        """Put a record that was settled RETRY_LATER first in line again."""
        if not state.draining:
            self.ready.appendleft((state, record))

    def _next_in_lane(self, state: PartitionState, record: Any) -> None:
        lane = self.lane(record)
        if lane is None:
            return
        waiting = state.lanes.get(lane)
        if waiting is None:
            return
        if waiting:
            self.ready.append((state, waiting.popleft()))
        else:
            del state.lanes[lane]

    def _flow(self, state: PartitionState | None) -> None:
        if self.paused_all and self.buffered + self.in_flight <= self.limit // 2:
            self.paused_all = False
            self.resume([s.tp for s in self.live() if not s.window_paused and s.blocked is None])
        if state is not None and state.window_paused and len(state.fetched) <= self.window // 2:
            state.window_paused = False
            if not self.paused_all and not state.draining and state.blocked is None:
                self.resume([state.tp])

    # ------------------------------------------------------------------ commits

    def commit_offsets(
        self, states: Iterable[PartitionState] | None = None
    ) -> dict[PartitionState, int]:
        """Offsets to commit: each owned partition's finished prefix, where it moved on."""
        offsets: dict[PartitionState, int] = {}
        for state in self.partitions.values() if states is None else states:
            point = state.commit_point()
            if state.released or point is None:
                continue
            if state.committed is None or point > state.committed:
                offsets[state] = point
        return offsets
