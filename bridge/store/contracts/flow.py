"""Flow-control state: what handlers' admission controls share between runs and replicas.

Per (handler, key): the GCRA row of a throttle, the sliding log of a rate limit,
the slices of a retry budget, the latest event of a debounce, the idempotency keys taken for a ttl, and
the leased slots of singletons and concurrency keys. On a store that replicas
share (PostgreSQL) each method is one statement or transaction, so the controls
hold across replicas; callers batch (``count``) so that a busy key costs a
fraction of a round trip per run. Times are wall-clock epoch seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

DebounceState = Literal["superseded", "wait", "fire"]


class FlowState(Protocol):
    """Admission state by (handler, key)."""

    async def flow_once(
        self, handler: str, keys: Sequence[str], now: float, ttl: float
    ) -> list[bool]:
        """Take each key until ``now + ttl`` unless it is taken and unexpired.

        Returns, per key, True when this call took it (the run may start).
        """

    async def flow_gcra(
        self,
        handler: str,
        key: str,
        now: float,
        interval: float,
        tolerance: float,
        count: int,
    ) -> list[float]:
        """Reserve ``count`` start times on the key's GCRA, in order; each is >= ``now``.

        ``interval`` is the period per run, ``tolerance`` the burst allowance
        (``burst * interval``). The key's theoretical arrival time advances by
        ``count * interval``; a start time given out is never given out again.
        """

    async def flow_window(
        self, handler: str, key: str, now: float, per: float, limit: int, count: int
    ) -> int:
        """Admit up to ``count`` starts now, so that no window of ``per`` holds more than
        ``limit``; return how many were admitted (the first ones of the caller's)."""

    async def flow_budget(
        self,
        name: str,
        now: float,
        window: float,
        ratio: float,
        reserve: float,
        firsts: int,
        retries: int,
    ) -> int:
        """Count ``firsts`` first attempts in the retry budget ``name``, then admit up to
        ``retries`` retries (``bridge.store.flow_rules.budget_admit``); how many were."""

    async def flow_debounce(
        self,
        handler: str,
        key: str,
        event_id: str,
        at: float,
        now: float,
        period: float,
        timeout: float | None,
    ) -> tuple[str, float]:
        """Make ``event_id`` (the event's time: ``at``) the key's latest event unless the
        latest has a later time; return the latest event's id and when it is due: ``now +
        period`` when this event became the latest, capped at the key's first event +
        ``timeout``."""

    async def flow_debounce_fire(
        self, handler: str, key: str, event_id: str, now: float
    ) -> tuple[DebounceState, float]:
        """Whether ``event_id``'s run starts: ``superseded`` (another event is the latest,
        or none is), ``wait`` with the due time, or ``fire`` (due now). Once fired, the
        key answers ``fire`` again for that event (its run, killed after the fire, resumes)
        and ``superseded`` for others, until a later event opens a new window."""

    async def flow_slot_take(
        self, handler: str, key: str, owner: str, limit: int, now: float, until: float
    ) -> list[str]:
        """Take one of ``limit`` slots of the key for ``owner`` until ``until``; slots whose
        lease ended before ``now`` are free. Returns [] when taken, else the holders."""

    async def flow_slot_release(self, handler: str, key: str, owner: str) -> None:
        """Give the slot back (nothing when ``owner`` does not hold it)."""

    async def flow_slot_cancel(self, handler: str, key: str, owners: Sequence[str]) -> None:
        """Ask the holders ``owners`` to cancel their runs (``flow_slot_renew`` tells them)."""

    async def flow_slot_renew(
        self, handler: str, held: Sequence[tuple[str, str]], until: float
    ) -> list[tuple[str, str]]:
        """Extend the leases of ``held`` (key, owner); return those no longer held or asked
        to cancel: their runs must stop."""

    async def flow_claims_extend(
        self, pairs: Sequence[tuple[str, str]], owner: str, untils: Sequence[float]
    ) -> list[tuple[str, str]]:
        """Extend ``owner``'s ledger claims (``LedgerClaims``) on ``pairs`` (handler, key)
        to ``untils``, in one statement, while their runs wait or run; return the pairs
        still claimed by ``owner``. A store that replicas do not share has no claims: []."""
