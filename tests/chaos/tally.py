"""Counting what the handlers did, from the record files the bridges append to.

A record line is ``<generation> <handler> <event id> <attempt> <seq>`` (see
``tests.chaos.handlers`` and ``tests.apps.recorder``). Every scenario sends messages
``{"seq": n}`` for ``n`` in ``range(sent)``; these helpers turn the lines into the
figures of a ``ChaosReport``. Waiting, and cheap line counts, are in ``tests.support``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import read_lines


@dataclass
class Tally:
    """Executions per handler and seq, over one or more record files."""

    runs: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    order: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, *paths: Path) -> Tally:
        tally = cls()
        for path in paths:
            for line in read_lines(path):
                _gen, handler, event_id, _attempt, seq = line.split(" ", 4)
                tally.runs[handler][seq] += 1
                tally.order[handler].append((event_id, seq))
        return tally

    def missing(self, handlers: Iterable[str], sent: int) -> int:
        """(handler, seq) pairs of ``range(sent)`` that never ran."""
        return sum(1 for h in handlers for n in range(sent) if self.runs[h].get(str(n), 0) == 0)

    def delivered(self, handlers: Iterable[str], sent: int) -> int:
        """Messages that reached every handler."""
        handlers = list(handlers)
        return sum(1 for n in range(sent) if all(self.runs[h].get(str(n), 0) for h in handlers))

    def duplicates(self, handler: str) -> int:
        """Executions beyond the first of each seq."""
        return sum(count - 1 for count in self.runs[handler].values())

    def order_violations(
        self,
        handler: str,
        key_of: Callable[[int], str],
        position: Callable[[str, str], int] | None = None,
    ) -> int:
        """Per key, first executions whose position is below an earlier one's.

        The position is ``position(event_id, seq)``; by default the Kafka offset, from
        event ids ``<topic>-<partition>-<offset>``. Repeats (after a crash) are dropped
        first, keeping each message's first execution.
        """
        seen: set[str] = set()
        last: dict[str, int] = {}
        bad = 0
        for event_id, seq in self.order[handler]:
            if seq in seen:
                continue
            seen.add(seq)
            offset = (
                int(event_id.rsplit("-", 1)[1]) if position is None else position(event_id, seq)
            )
            key = key_of(int(seq))
            if offset < last.get(key, -1):
                bad += 1
            last[key] = offset
        return bad
