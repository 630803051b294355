"""An in-memory store: the full contract, nothing kept across restarts. For tests and examples."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence

from bridge.store.base import DeadLetter, DeadLetterStatus, InboxEntry, LedgerEntry


class MemoryStore:
    """The store contract in process memory."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.ledger: dict[tuple[str, str], LedgerEntry] = {}
        self.letters: dict[str, DeadLetter] = {}
        self.inbox: dict[str, InboxEntry] = {}
        self._done: dict[str, float] = {}
        self._seq = itertools.count(1)

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

    async def dead_letters(
        self,
        *,
        status: DeadLetterStatus | None = None,
        handler: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeadLetter]:
        found = [
            d
            for d in self.letters.values()
            if (status is None or d.status == status) and (handler is None or d.handler == handler)
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
            if entry.id in self.inbox or entry.id in self._done:
                out.append(False)
                continue
            entry.seq = next(self._seq)
            self.inbox[entry.id] = entry
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

    async def inbox_purge(self, older_than: float) -> int:
        old = [k for k, t in self._done.items() if t < older_than]
        for k in old:
            del self._done[k]
        return len(old)
