"""The arithmetic of flow-control state that every store shares (``FlowState``)."""

from __future__ import annotations


def gcra_reserve(
    row: tuple[float, float] | None, now: float, interval: float, tolerance: float, count: int
) -> tuple[tuple[float, float], list[float]]:
    """``count`` start times from the key's ``row`` (theoretical arrival time, latest
    ``now`` seen; None for a new key), and the key's new row.

    GCRA: with ``now`` never earlier than the latest seen (callers on several replicas
    may arrive out of order), the i-th start is ``max(now, base + i * interval -
    tolerance)`` where ``base = max(tat, now)``, and ``tat`` becomes ``base + count *
    interval`` (the PostgreSQL store computes this in its upsert).
    """
    tat, seen = row if row is not None else (now, now)
    now = max(now, seen)
    base = max(tat, now)
    return (base + count * interval, now), gcra_times(base, now, interval, tolerance, count)


def gcra_times(
    base: float, now: float, interval: float, tolerance: float, count: int
) -> list[float]:
    """The start times of ``gcra_reserve`` from its ``base``."""
    return [max(now, base + i * interval - tolerance) for i in range(count)]


def window_admit(log: list[float], now: float, per: float, limit: int, count: int) -> int:
    """Admit up to ``count`` into the sliding ``log`` of admission times (sorted, at most
    ``limit`` long, pruned and extended in place); return how many were admitted."""
    while log and log[0] <= now - per:
        log.pop(0)
    admitted = max(0, min(count, limit - len(log)))
    log.extend([now] * admitted)
    return admitted


def debounce_due(first: float, now: float, period: float, timeout: float | None) -> float:
    """When a debounced key fires: ``period`` after its latest event, and no later than
    ``timeout`` after its first."""
    due = now + period
    return due if timeout is None else min(due, first + timeout)


BUDGET_SLICES = 10


def budget_admit(
    slices: list[list[float]],
    now: float,
    window: float,
    ratio: float,
    reserve: float,
    firsts: int,
    retries: int,
) -> int:
    """Count ``firsts`` first attempts, then admit up to ``retries`` retries into a retry
    budget's ``slices`` (``[slice index, first attempts, retries]``, oldest first, pruned
    and extended in place); return how many retries were admitted.

    The rule of ``bridge.flow.RetryBudget``: a retry fits while the window's retries are
    none, or one more stays within ``ratio * first attempts + reserve``.
    """
    width = window / BUDGET_SLICES
    while slices and (slices[0][0] + 1) * width + window <= now:
        slices.pop(0)
    index = float(int(now // width))
    if not slices or slices[-1][0] != index:
        slices.append([index, 0.0, 0.0])
    current = slices[-1]
    current[1] += firsts
    total_firsts = sum(s[1] for s in slices)
    total_retries = sum(s[2] for s in slices)
    admitted = 0
    while admitted < retries and (
        total_retries == 0 or total_retries + 1 <= ratio * total_firsts + reserve
    ):
        admitted += 1
        total_retries += 1
    current[2] += admitted
    return admitted


FIRED = -1.0
"""The due time a debounced key's row keeps once its latest event fired: firing again for
that event answers ``fire`` again (a run killed after its fire still runs when it
resumes), any other event is superseded until a later one opens a new window."""


def debounce_step(
    row: tuple[str, float, float, float] | None,
    event_id: str,
    at: float,
    now: float,
    period: float,
    timeout: float | None,
) -> tuple[str, float, float, float]:
    """A debounced key's new row (latest event id, its time, first event's arrival, due)
    after the event ``event_id`` of time ``at`` arrives ``now``: it becomes the latest
    unless the latest is of a later time (events that reach replicas out of order).

    A row whose due time is ``FIRED`` (negative) is a key whose latest event fired: a
    later event opens a new window (its own first event); an earlier one is superseded.
    """
    if row is not None and row[1] > at:
        return row
    if row is not None and row[3] == FIRED:
        row = None
    first = row[2] if row is not None else now
    return event_id, at, first, debounce_due(first, now, period, timeout)
