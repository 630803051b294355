"""An in-memory store: the full contract, nothing kept across restarts. For tests and examples."""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.store.contracts import (
    Cancellation,
    DeadLetter,
    DeadLetterStatus,
    EventRecord,
    InboxEntry,
    Join,
    JoinStatus,
    LedgerEntry,
    ParkedRun,
    RunRecord,
    merged_event,
)
from bridge.store.memory_flow import MemoryFlowState


class MemoryStore(MemoryFlowState):
    """The store contract in process memory."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.shared = False
        self.legacy_keys = True  # entries may be put in by hand (tests): always looked up
        self._inbox_leases: dict[int, float] = {}
        self._inbox_owners: dict[int, str] = {}
        self.ledger: dict[tuple[str, str], LedgerEntry] = {}
        self.letters: dict[str, DeadLetter] = {}
        self.inbox: dict[str, InboxEntry] = {}
        self._done: dict[str, float] = {}
        self._seq = itertools.count(1)
        self.parked: dict[str, tuple[ParkedRun, float]] = {}  # id -> (run, leased until)
        self._parked_owners: dict[str, str] = {}
        self.steps: dict[tuple[str, str, str], Any] = {}
        self.joins: dict[str, Join] = {}
        self._join_closed: dict[str, float] = {}
        self.join_buffer: list[tuple[str, str, dict[str, Any], float]] = []
        self.cron: dict[str, float] = {}
        self.history: dict[str, EventRecord] = {}
        self.runs: dict[tuple[str, str], RunRecord] = {}
        self.cancellations: dict[tuple[str, str], Cancellation] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def ledger_final(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return {k: self.ledger[k].status for k in keys if k in self.ledger}

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        for entry in entries:
            key = (entry.handler, entry.key)
            current = self.ledger.get(key)
            if current is None or current.status != "succeeded":
                self.ledger[key] = entry

    async def dead_letter_add(self, letter: DeadLetter) -> None:
        self.letters[letter.id] = letter

    async def dead_letter_final(self, letter: DeadLetter, entry: LedgerEntry | None) -> None:
        # Both written here, with no await and no other store call between them: a
        # subclass that makes one of those calls fail cannot split them.
        self.letters[letter.id] = letter
        if entry is not None:
            current = self.ledger.get((entry.handler, entry.key))
            if current is None or current.status != "succeeded":
                self.ledger[(entry.handler, entry.key)] = entry

    async def dead_letters(
        self,
        *,
        status: DeadLetterStatus | None = None,
        handler: str | None = None,
        limit: int = 100,
        offset: int = 0,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> list[DeadLetter]:
        found = [
            d
            for d in self.letters.values()
            if (status is None or d.status == status)
            and (handler is None or d.handler == handler)
            and (event_id is None or d.event_id == event_id)
            and (event_type is None or d.event_type == event_type)
        ]
        found.sort(key=lambda d: d.created_at, reverse=True)
        return found[offset : offset + limit]

    async def dead_letter_get(self, letter_id: str) -> DeadLetter | None:
        return self.letters.get(letter_id)

    async def dead_letter_set_status(self, letter_id: str, status: DeadLetterStatus) -> bool:
        letter = self.letters.get(letter_id)
        if letter is None:
            return False
        letter.status = status
        return True

    async def inbox_put(self, entries: Sequence[InboxEntry]) -> list[bool]:
        out = []
        for entry in entries:
            identity = "\x1f".join(entry.identity)
            if identity in self.inbox or identity in self._done:
                out.append(False)
                continue
            entry.seq = next(self._seq)
            self.inbox[identity] = entry
            out.append(True)
        return out

    async def inbox_pending(self, after_seq: int, limit: int) -> list[InboxEntry]:
        found = sorted((e for e in self.inbox.values() if e.seq > after_seq), key=lambda e: e.seq)
        return found[:limit]

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        wanted = set(seqs)
        now = time.time()
        for entry_id, entry in list(self.inbox.items()):
            if entry.seq in wanted:
                del self.inbox[entry_id]
                self._done[entry_id] = now

    async def inbox_claim(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[InboxEntry]:
        leases = self._inbox_leases
        found = sorted(
            (e for e in self.inbox.values() if leases.get(e.seq, 0.0) < now), key=lambda e: e.seq
        )[:limit]
        for entry in found:
            leases[entry.seq] = now + lease
            self._inbox_owners[entry.seq] = owner
        return found

    async def inbox_lease(self, seqs: Iterable[int], until: float) -> None:
        for seq in seqs:
            self._inbox_leases[seq] = until

    def _inbox_held(self, seqs: Iterable[int], owner: str) -> list[int]:
        pending = {e.seq for e in self.inbox.values()}
        return [s for s in seqs if s in pending and self._inbox_owners.get(s) == owner]

    async def inbox_renew(self, seqs: Iterable[int], until: float, owner: str) -> list[int]:
        held = self._inbox_held(seqs, owner)
        for seq in held:
            self._inbox_leases[seq] = until
        return held

    async def inbox_finish(self, seqs: Iterable[int], owner: str) -> list[int]:
        held = self._inbox_held(seqs, owner)
        await self.inbox_done(held)
        return held

    async def inbox_purge(self, older_than: float) -> int:
        old = [k for k, t in self._done.items() if t < older_than]
        for k in old:
            del self._done[k]
        return len(old)

    async def ledger_get(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], LedgerEntry]:
        return {k: self.ledger[k] for k in keys if k in self.ledger}

    # parked retries

    async def parked_put(self, runs: Sequence[ParkedRun]) -> None:
        for run in runs:
            self.parked[run.id] = (copy.deepcopy(run), 0.0)
            self._parked_owners.pop(run.id, None)

    async def parked_claim(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[ParkedRun]:
        due = sorted(
            (r for r, until in self.parked.values() if r.due_at <= now and until < now),
            key=lambda r: (-r.priority, r.due_at),
        )[:limit]
        for run in due:
            self.parked[run.id] = (run, now + lease)
            self._parked_owners[run.id] = owner
        return [copy.deepcopy(r) for r in due]

    async def parked_wake(self, ids: Iterable[str], now: float) -> list[str]:
        found = [i for i in ids if i in self.parked]
        for run_id in found:
            run = self.parked[run_id][0]
            run.due_at = min(run.due_at, now)
        return found

    async def parked_done(self, ids: Iterable[str]) -> None:
        for run_id in ids:
            self.parked.pop(run_id, None)

    async def parked_lease(self, ids: Iterable[str] | None, until: float) -> None:
        for run_id in list(self.parked) if ids is None else ids:
            if run_id in self.parked and (until == 0.0 or self.parked[run_id][1] > 0.0):
                self.parked[run_id] = (self.parked[run_id][0], until)

    async def parked_renew(self, ids: Iterable[str], until: float, owner: str) -> list[str]:
        held = [
            i
            for i in ids
            if i in self.parked and self.parked[i][1] > 0.0 and self._parked_owners.get(i) == owner
        ]
        for run_id in held:
            self.parked[run_id] = (self.parked[run_id][0], until)
        return held

    async def parked_list(self, limit: int = 100) -> list[ParkedRun]:
        runs = sorted((r for r, _ in self.parked.values()), key=_due)
        return [copy.deepcopy(r) for r in runs[:limit]]

    async def parked_of(self, handler: str) -> list[ParkedRun]:
        runs = sorted((r for r, _ in self.parked.values() if r.handler == handler), key=_due)
        return [copy.deepcopy(r) for r in runs]

    # durable steps

    async def step_get(self, event_id: str, handler: str, step: str) -> tuple[bool, Any]:
        key = (event_id, handler, step)
        if key in self.steps:
            return True, copy.deepcopy(self.steps[key])
        return False, None

    async def step_put(self, event_id: str, handler: str, step: str, result: Any) -> None:
        self.steps.setdefault((event_id, handler, step), copy.deepcopy(result))

    # joins

    async def join_open(self, join: Join) -> bool:
        if join.id in self.joins:
            return False
        self.joins[join.id] = copy.deepcopy(join)
        return True

    async def join_get(self, join_id: str) -> Join | None:
        join = self.joins.get(join_id)
        return copy.deepcopy(join) if join else None

    async def join_open_list(self, handler: str) -> list[Join]:
        found = []
        for join in self.joins.values():
            if join.handler == handler and join.status == "open":
                bare = copy.deepcopy(join)
                bare.members = {}
                found.append(bare)
        return sorted(found, key=lambda j: j.created_at)

    async def join_add(self, join_id: str, member_id: str, value: Any) -> Join | None:
        join = self.joins.get(join_id)
        if join is None:
            return None
        join.members.setdefault(member_id, copy.deepcopy(value))
        return copy.deepcopy(join)

    async def join_close(self, join_id: str, status: JoinStatus, entry: InboxEntry | None) -> bool:
        join = self.joins.get(join_id)
        if join is None or join.status != "open":
            return False
        join.status = status
        self._join_closed[join_id] = time.time()
        if entry is not None:
            await self.inbox_put([entry])
        return True

    async def join_due(self, now: float, limit: int) -> list[Join]:
        due = [j for j in self.joins.values() if j.status == "open" and j.deadline <= now]
        due.sort(key=lambda j: j.deadline)
        return [copy.deepcopy(j) for j in due[:limit]]

    async def join_buffer_add(
        self, handler: str, event_id: str, event: dict[str, Any], expires_at: float
    ) -> None:
        if not any(h == handler and i == event_id for h, i, _, _ in self.join_buffer):
            self.join_buffer.append((handler, event_id, copy.deepcopy(event), expires_at))

    async def join_buffered(self, handler: str, now: float) -> list[dict[str, Any]]:
        return [copy.deepcopy(e) for h, _, e, exp in self.join_buffer if h == handler and exp > now]

    async def join_buffer_remove(self, handler: str, event_ids: Iterable[str]) -> None:
        gone = set(event_ids)
        self.join_buffer = [b for b in self.join_buffer if not (b[0] == handler and b[1] in gone)]

    async def join_purge(self, now: float, closed_before: float) -> int:
        before = len(self.join_buffer)
        self.join_buffer = [b for b in self.join_buffer if b[3] > now]
        count = before - len(self.join_buffer)
        for join_id, closed_at in list(self._join_closed.items()):
            if closed_at < closed_before:
                del self._join_closed[join_id]
                self.joins.pop(join_id, None)
                count += 1
        return count

    # cancellations

    async def cancel_record(self, records: Sequence[Cancellation]) -> None:
        for r in records:
            old = self.cancellations.get((r.handler, r.key))
            if old is not None:
                r = Cancellation(
                    r.handler, r.key, max(r.at, old.at), max(r.expires_at, old.expires_at)
                )
            self.cancellations[(r.handler, r.key)] = r

    async def cancel_find(self, handler: str, keys: Sequence[str], now: float) -> dict[str, float]:
        found = (self.cancellations.get((handler, k)) for k in keys)
        return {c.key: c.at for c in found if c is not None and c.expires_at > now}

    async def cancel_purge(self, now: float) -> int:
        gone = [k for k, c in self.cancellations.items() if c.expires_at <= now]
        for k in gone:
            del self.cancellations[k]
        return len(gone)

    # cron

    async def cron_last(self, name: str) -> float | None:
        return self.cron.get(name)

    async def cron_advance(self, name: str, tick: float) -> bool:
        last = self.cron.get(name)
        if last is not None and last >= tick:
            return False
        self.cron[name] = tick
        return True

    # run history

    async def history_put(self, events: Sequence[EventRecord], runs: Sequence[RunRecord]) -> None:
        for run in runs:
            self.runs[(run.event_id, run.handler)] = copy.deepcopy(run)
        wanted = {e.id for e in events}
        statuses: dict[str, list[str]] = {}
        for (event_id, _), run in self.runs.items():
            if event_id in wanted:
                statuses.setdefault(event_id, []).append(run.status)
        for record in events:
            merged = merged_event(record, self.history.get(record.id), statuses.get(record.id, []))
            self.history[record.id] = copy.deepcopy(merged)

    async def history_events(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        search: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        found = [
            r
            for r in self.history.values()
            if (type is None or r.type == type)
            and (status is None or r.status == status)
            and (search is None or search in (r.id, r.correlation_id))
            and (before is None or r.received_at < before)
        ]
        found.sort(key=lambda r: (r.received_at, r.id), reverse=True)
        return [copy.deepcopy(r) for r in found[:limit]]

    async def history_event(self, event_id: str) -> EventRecord | None:
        record = self.history.get(event_id)
        return copy.deepcopy(record) if record else None

    async def history_runs(self, event_id: str) -> list[RunRecord]:
        runs = [r for (e, _), r in self.runs.items() if e == event_id]
        return [copy.deepcopy(r) for r in sorted(runs, key=lambda r: r.handler)]

    async def history_children(self, event_id: str) -> list[EventRecord]:
        kids = [r for r in self.history.values() if r.parent_id == event_id]
        return [copy.deepcopy(r) for r in sorted(kids, key=lambda r: (r.received_at, r.id))]

    async def history_children_of(self, parent_ids: Sequence[str]) -> list[EventRecord]:
        wanted = set(parent_ids)
        return [copy.deepcopy(r) for r in self.history.values() if r.parent_id in wanted]

    async def history_purge(self, older_than: float, keep: int) -> int:
        newest = sorted(self.history.values(), key=lambda r: (r.received_at, r.id), reverse=True)
        drop = {r.id for i, r in enumerate(newest) if i >= keep or r.received_at < older_than}
        for event_id in drop:
            del self.history[event_id]
        for key in [k for k in self.runs if k[0] in drop]:
            del self.runs[key]
        return len(drop)


def _due(run: ParkedRun) -> float:
    return run.due_at
