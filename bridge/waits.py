"""Durable sleeps and waits for events inside a handler: ``ctx.sleep`` and ``ctx.wait_for_event``.

Both are steps: each has an id of its own, unique in the handler (the same rule as
``ctx.step``), under which its outcome is kept in the store. A sleep or wait that is
not over raises ``Suspended``: the attempt ends without counting as a failure, the
run is parked in the store (``ParkedRuns``, due when the sleep ends or the wait times
out) and its source message is settled, as a parked retry's is. When due, any replica
claims it under a lease and runs the handler again from the start: finished
``ctx.step`` calls return their kept results, and a sleep or wait that is over
returns at once (a wait returns its kept event, or None after a timeout).

A wait is a join (the joins store contract) of one member: its id derives from the
run's event, handler and step id; its ``start`` says what it waits for. The
handler's companion ``WaitCollector`` (subscribed to the types the handler declares
under ``waits``) offers each such event to the open waits: it goes to every wait it
matches (each records it, wakes its parked run, and closes); an event that matched
none is kept in the join buffer for ``buffer``, and the first wait that opens later
and matches it takes it. So an event that comes just before the wait opens is not
missed. Every spurious wake is harmless: a sleep or wait that is not over parks the
run again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from bridge.errors import Fatal, Suspended
from bridge.events import Event, event_from_dict
from bridge.routing import compile_filter
from bridge.store.contracts import Join, parked_run_id

if TYPE_CHECKING:
    from bridge.store.contracts import Store

_WAIT_NAMESPACE = uuid.UUID("5e1b7a3c-2f4d-4c6b-9e8a-7d1c3b5a9f20")
_PROGRAMS: dict[str, Any] = {}
_PROGRAMS_CAP = 1_000
_PURGE_EVERY = 60.0
_KEEP_CLOSED = 7 * 86_400.0  # as the join sweeper keeps closed joins


class Steps(Protocol):
    """What a sleep or wait needs of the run's ``Context``."""

    event: Event[Any]
    handler_id: str
    waits: Mapping[str, float] | None

    def wall(self) -> float: ...

    def claim_step(self, step_id: str) -> Store: ...


def wait_id(event_id: str, handler: str, step_id: str) -> str:
    """The join that is the wait ``step_id`` of ``handler``'s run of ``event_id``."""
    return str(uuid.uuid5(_WAIT_NAMESPACE, f"{event_id}\x1f{handler}\x1f{step_id}"))


def collector_id(handler: str) -> str:
    """The id of ``handler``'s companion that offers awaited events to its waits."""
    return f"{handler}/waits"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _program(expression: str) -> Any:
    program = _PROGRAMS.get(expression)
    if program is None:
        if len(_PROGRAMS) >= _PROGRAMS_CAP:
            _PROGRAMS.clear()
        program = _PROGRAMS[expression] = compile_filter(expression)
    return program


def matches(start: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
    """Whether event ``doc`` is what the wait ``start`` waits for: its type, and its
    ``match`` (CEL over ``event``, the waiting run's event, and ``async``, this one)."""
    if doc.get("type") != start.get("type"):
        return False
    expression = start.get("match")
    if not expression:
        return True
    try:
        return bool(_program(expression).execute({"event": start["event"], "async": doc}))
    except Exception:  # an event missing a field matches nothing
        return False


async def sleep_until(ctx: Steps, step_id: str, until: float) -> None:
    """Return once wall-clock time ``until`` has passed; until then park the run.

    Raises:
        Suspended: the sleep is not over (the run parks until it is).
    """
    store = ctx.claim_step(step_id)
    found, kept = await store.step_get(ctx.event.id, ctx.handler_id, step_id)
    if found and isinstance(kept, dict) and "sleep_until" in kept:
        until = float(kept["sleep_until"])
    elif found:
        raise Fatal(f"step id {step_id!r} of {ctx.handler_id} is not a sleep")
    else:
        # Kept before parking: a re-run (crash, early wake) sleeps to the same time.
        await store.step_put(ctx.event.id, ctx.handler_id, step_id, {"sleep_until": until})
    if ctx.wall() >= until:
        return
    raise Suspended(until, "sleeping", f"sleeping until {_iso(until)} (step {step_id!r})")


async def wait_for_event(
    ctx: Steps, step_id: str, event_type: str, match: str | None, timeout: float
) -> Event[Any] | None:
    """The first event of ``event_type`` that ``match`` accepts, or None after ``timeout``.

    Raises:
        Suspended: nothing came yet and the wait has time left (the run parks).
        Fatal: ``event_type`` is not declared under the handler's ``waits``, or
            ``match`` does not compile.
    """
    store = ctx.claim_step(step_id)
    event, handler = ctx.event, ctx.handler_id
    found, kept = await store.step_get(event.id, handler, step_id)
    if found:
        return _kept_event(kept, step_id, handler)
    buffers = ctx.waits or {}
    if event_type not in buffers:
        raise Fatal(f"{handler} waits for {event_type!r}, which is not declared under its `waits`")
    if match:
        try:
            _program(match)
        except ValueError as exc:
            raise Fatal(f"wait {step_id!r}: invalid match expression: {exc}") from exc
    join_key = wait_id(event.id, handler, step_id)
    join = await store.join_get(join_key)
    now = ctx.wall()
    if join is None:
        start = {
            "type": event_type,
            "match": match,
            "event": event.to_dict(),
            "run_event": event.id,
            "handler": handler,
            "step": step_id,
        }
        await store.join_open(Join(join_key, collector_id(handler), start, 1, now + timeout))
        join = await store.join_get(join_key)
        if join is None:
            raise Fatal(f"wait {step_id!r} of {handler} could not be opened")
        taken = await _from_buffer(store, join, now)
        if taken is not None:
            return await _record(store, join, step_id, handler, taken)
    if join.status != "open":  # closed, but its outcome was not kept (a crash between)
        first = sorted(join.members)[0] if join.members else None
        member = join.members[first] if first is not None else None
        return await _record(store, join, step_id, handler, member)
    if now >= join.deadline:
        return await _record(store, join, step_id, handler, None)

    async def look_again() -> None:
        # The event may have come while the run was being parked: its wake found no run.
        if (await store.step_get(event.id, handler, step_id))[0]:
            await store.parked_wake([parked_run_id(event.id, handler)], ctx.wall())

    raise Suspended(
        join.deadline,
        "waiting",
        f"waiting for {event_type} until {_iso(join.deadline)} (step {step_id!r})",
        look_again,
    )


async def _from_buffer(store: Store, join: Join, now: float) -> dict[str, Any] | None:
    """An event that came before the wait opened, still buffered, that it waits for."""
    for doc in await store.join_buffered(join.handler, now):
        if matches(join.start, doc):
            await store.join_buffer_remove(join.handler, [doc["id"]])
            return doc
    return None


async def _record(
    store: Store, join: Join, step_id: str, handler: str, doc: dict[str, Any] | None
) -> Event[Any] | None:
    """Keep the wait's outcome (the first one kept wins), close it, return what was kept."""
    run_event = join.start["run_event"]
    await store.step_put(run_event, handler, step_id, {"event": doc})
    await store.join_close(join.id, "completed" if doc is not None else "timed_out", None)
    _, kept = await store.step_get(run_event, handler, step_id)
    return _kept_event(kept, step_id, handler)


def _kept_event(kept: Any, step_id: str, handler: str) -> Event[Any] | None:
    if not isinstance(kept, dict) or "event" not in kept:
        raise Fatal(f"step id {step_id!r} of {handler} is not a wait")
    doc = kept["event"]
    return None if doc is None else event_from_dict(doc)


class WaitCollector:
    """A handler's companion: offers the events its waits wait for to the open waits.

    Args:
        handler: the id of the handler whose waits these are.
        buffers: event type -> seconds an event no wait took is kept for a later wait.
        store: where waits, their buffer, steps and parked runs live.
        wall: wall-clock time (epoch seconds).
    """

    def __init__(
        self,
        handler: str,
        buffers: Mapping[str, float],
        store: Store,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.id = collector_id(handler)
        self.on = tuple(buffers)
        self.buffers = dict(buffers)
        self.store = store
        self.wall = wall
        self._purged = 0.0

    async def invoke(self, event: Event[Any], ctx: Any) -> Any:
        store = self.store
        now = self.wall()
        if now - self._purged > _PURGE_EVERY:  # expired buffered events, long-closed waits
            self._purged = now
            await store.join_purge(now, now - _KEEP_CLOSED)
        doc = event.to_dict()
        woke = await self._offer(doc)
        if woke:
            return {"woke": woke}
        # No open wait takes it: keep it for one that opens soon, then look once more, in
        # case a wait opened (and looked at the buffer) between our look and our write.
        buffer = self.buffers.get(event.type, 0.0)
        await store.join_buffer_add(self.id, event.id, doc, self.wall() + buffer)
        woke = await self._offer(doc)
        if woke:
            await store.join_buffer_remove(self.id, [event.id])
            return {"woke": woke}
        return {"buffered": True}

    async def _offer(self, doc: dict[str, Any]) -> list[str]:
        """Give ``doc`` to every open wait it matches; the events whose runs it woke."""
        store = self.store
        woke = []
        for join in await store.join_open_list(self.id):
            start = join.start
            if not matches(start, doc):
                continue
            run_event, handler = start["run_event"], start["handler"]
            await store.join_add(join.id, doc["id"], doc)
            await store.step_put(run_event, handler, start["step"], {"event": doc})
            # Woken before the join closes: a crash between leaves it open, so the
            # redelivered event wakes the run again rather than being buffered.
            await store.parked_wake([parked_run_id(run_event, handler)], self.wall())
            await store.join_close(join.id, "completed", None)
            woke.append(run_event)
        return woke
