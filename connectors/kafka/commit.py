"""The Kafka source's offset commits: the finished prefix, one commit request at a time.

``Commits`` commits what ``Intake.commit_offsets`` gives, under one lock; the
source releases revoked partitions under the same lock, so no commit can follow
a release. A failed commit is logged, never raised: the next one (or the next
owner of the partition) covers it. ``refresh_ends`` reads the partitions' end
offsets, for lag.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from connectors.kafka.intake import Intake, PartitionState

log = logging.getLogger("connectors.kafka")


class Commits:
    """The commits of one source, across its restarts.

    Attributes:
        lock: held by every commit; hold it to release partitions.
        count: successful commit requests.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = asyncio.Lock()
        self.count = 0

    async def commit(
        self,
        consumer: Any,
        intake: Intake,
        states: Iterable[PartitionState] | None,
        reason: str,
        timeout: float,
    ) -> None:
        """``commit_locked`` under the lock."""
        async with self.lock:
            await self.commit_locked(consumer, intake, states, reason, timeout)

    async def commit_locked(
        self,
        consumer: Any,
        intake: Intake,
        states: Iterable[PartitionState] | None,
        reason: str,
        timeout: float,
    ) -> None:
        """Commit the finished prefix of ``states`` (default: every owned partition).

        Released partitions are skipped, and releasing happens under the same lock.
        A failed commit is logged: the next one (or the next owner) covers it.
        """
        from aiokafka.structs import OffsetAndMetadata

        offsets = intake.commit_offsets(states)
        if not offsets:
            return
        try:
            await asyncio.wait_for(
                consumer.commit({s.tp: OffsetAndMetadata(o, "") for s, o in offsets.items()}),
                timeout,
            )
        except Exception as exc:
            log.warning(
                "kafka commit failed",
                extra={"connector": self.name, "reason": reason, "error": repr(exc)},
            )
            return
        for state, offset in offsets.items():
            state.committed = offset
        self.count += 1
        log.debug(
            "kafka commit",
            extra={
                "connector": self.name,
                "reason": reason,
                "generation": generation(consumer),
                "offsets": {s.label: o for s, o in offsets.items()},
            },
        )

    async def refresh_ends(self, consumer: Any, intake: Intake) -> None:
        """Read the end offsets of the live partitions (lag); a failure waits for the next."""
        # The fetch high watermark goes stale while a partition is paused.
        states = intake.live()
        if not states:
            return
        try:
            ends = await asyncio.wait_for(consumer.end_offsets([s.tp for s in states]), 10.0)
        except Exception as exc:  # lag is informational; the next round retries
            log.debug(
                "kafka end offsets failed", extra={"connector": self.name, "error": repr(exc)}
            )
            return
        for state in states:
            state.end = max(state.end, ends.get(state.tp) or 0, consumer.highwater(state.tp) or 0)


def generation(consumer: Any) -> int | None:
    """The consumer's group generation, for logs (None before it joined)."""
    coordinator = getattr(consumer, "_coordinator", None)
    value = getattr(coordinator, "generation", None)
    return value if isinstance(value, int) else None
