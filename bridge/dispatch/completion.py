"""Completion events: ``on_complete`` lists every branch's outcome once all runs of an event are final.

The completion event's id derives from the event's id, so whichever delivery
finds the event complete first emits it, and the inbox drops the copies.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from bridge.dispatch.env import DispatchConfig, DispatchEnv
from bridge.dispatch.runs import BoundHandler, Run, jsonable_result
from bridge.events import Event, now_iso
from bridge.routing import Router

_COMPLETE_NAMESPACE = uuid.UUID("9a3e4b2c-1d5f-4e6a-8b7c-2d3e4f5a6b7c")
COMPLETION_SOURCE = "bridge://on_complete"
COMPLETION_CACHE_SIZE = 10_000  # event types whose completion type is remembered (as the Router)


def completion_event_id(event_id: str) -> str:
    """The id of an event's ``on_complete`` event: emitted once, whoever emits it."""
    return str(uuid.uuid5(_COMPLETE_NAMESPACE, event_id))


class Completions:
    """Emits the ``on_complete`` event of event types that ask for one.

    Args:
        config: event type (or glob) -> completion type, and whether the ledger is kept.
        router: the subscriptions, to know every branch of an event.
        env: the store (ledger) and the emitter.
    """

    def __init__(
        self, config: DispatchConfig, router: Router[BoundHandler], env: DispatchEnv
    ) -> None:
        self.config = config
        self.router = router
        self.env = env
        self._types: OrderedDict[str, str | None] = OrderedDict()  # LRU, at most the cap

    def completion_type(self, event_type: str) -> str | None:
        """The type of the completion event of ``event_type``, or None when it has none."""
        cache = self._types
        if event_type in cache:
            cache.move_to_end(event_type)
            return cache[event_type]
        completions = self.config.completions
        found = completions.get(event_type)
        if found is None:
            for pattern, target in completions.items():
                if fnmatch.fnmatchcase(event_type, pattern):
                    found = target
                    break
        cache[event_type] = found
        if len(cache) > COMPLETION_CACHE_SIZE:
            cache.popitem(last=False)  # types made from data must not grow it without end
        return found

    async def complete(self, event: Event[Any], runs: Sequence[Run]) -> None:
        """Emit the ``on_complete`` event once every run of ``event`` is final.

        Branches not in ``runs`` (skipped, parked) count once the ledger has their
        end; while one has none, nothing is emitted here.

        Raises:
            StoreError: the ledger could not be read, or the event not emitted.
        """
        if event.source == COMPLETION_SOURCE:
            return  # a completion event never gets a completion of its own (no loop)
        target = self.completion_type(event.type)
        if target is None:
            return
        subs = self.router.match(event)
        outcomes: dict[str, dict[str, Any]] = {}
        for r in runs:
            if r.status == "succeeded":
                outcomes[r.handler] = {"status": "succeeded", "result": jsonable_result(r.result)}
            elif r.status in ("dead_lettered", "cancelled"):
                outcomes[r.handler] = {"status": r.status, "error": r.error}
        missing = [(s.target.id, s.target.key(event)) for s in subs if s.target.id not in outcomes]
        if missing:
            if not self.config.ledger:
                return
            # Skipped and parked branches: the ledger knows whether they are final now
            # (a parked retry may have finished while a sibling was still running).
            found = await self.env.store.ledger_get(missing)
            if len(found) < len(missing):
                return  # a branch is parked, or still running elsewhere: not complete yet
            for (handler, _), entry in found.items():
                if entry.status == "succeeded":
                    outcomes[handler] = {"status": "succeeded", "result": entry.result}
                else:
                    outcomes[handler] = {"status": entry.status, "error": entry.result}
        if not outcomes:
            return
        ordered = {h: outcomes[h] for h in sorted(outcomes)}
        failed = [h for h, o in ordered.items() if o["status"] != "succeeded"]
        done: Event[Any] = Event(
            id=completion_event_id(event.id),
            source=COMPLETION_SOURCE,
            type=target,
            data={
                "event": {
                    "id": event.id,
                    "type": event.type,
                    "subject": event.subject,
                    "data": event.data_json(),
                },
                "status": "partial"
                if failed and len(failed) < len(ordered)
                else ("dead_lettered" if failed else "succeeded"),
                "succeeded": len(ordered) - len(failed),
                "dead_lettered": len(failed),
                "failed": failed,
                "runs": ordered,
            },
            time=now_iso(),
            subject=event.subject,
            correlationid=event.correlationid or event.id,
            traceparent=event.traceparent,
            tracestate=event.tracestate,
            parentid=event.id,
        )
        emitter = self.env.emitter
        if emitter is not None:
            await emitter([done])
