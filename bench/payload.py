"""The event every benchmark sends, the no-op handlers it fans out to, and the work a
baseline does for it.

Every comparison does the same work per message: JSON decode, pydantic validation
of ``SubscriberCreated``, fan-out to ``width`` (4) no-op handlers, then the
transport's ack/commit. The handlers count into ``TALLY``, for the bridge and the
baselines alike, so "done" and "how fast" are measured the same way on both sides.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import orjson
from pydantic import BaseModel, Field


class SubscriberCreated(BaseModel):
    """The same shape as the newsletter example's event, plus the producer's send time."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str
    preferences: list[str] = Field(default_factory=list)
    source: str = "web"
    sent_ns: int = 0


def body(n: int, sent_ns: int = 0, uid: str = "") -> bytes:
    """Subscriber ``n``'s event; with ``uid``, which the model ignores, as a producer's own
    id for the event (``bench.ledger``'s random ids)."""
    data: dict[str, object] = {
        "email": f"user{n}@example.com",
        "name": f"User {n}",
        "preferences": ["python", "rust"],
        "source": "web",
        "sent_ns": sent_ns,
    }
    if uid:
        data["uid"] = uid
    return orjson.dumps(data)


class Tally:
    """Handler runs of one measurement: first and last run, and produce-to-handler latency.

    ``done`` is set once ``target`` runs happened. Latency is taken by the first
    handler only (one sample per event), from ``sent_ns`` in the data.
    """

    def __init__(self, target: int = 0, latency: bool = False) -> None:
        self.target = target
        self.latency = latency
        self.runs = 0
        self.first = 0.0
        self.last = 0.0
        self.cpu_first = 0.0  # process CPU time: the bridge (or baseline) and its threads
        self.cpu_last = 0.0
        self.latencies_ns: list[int] = []
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.runs += 1
        if not self.target:
            # Nothing to time: a bridge in a process of its own (the webhook, the soak),
            # measured from outside. Its handlers do no work of their own, as the
            # baselines' (timing every run read the process's CPU time, a system call).
            return
        if self.runs == 1:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()
        if self.runs >= self.target:
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            self.done.set()

    def rate(self, per: int) -> float:
        """Events per second between the first and the last run (``per`` runs an event)."""
        return (self.target / per) / max(self.last - self.first, 1e-9)

    def cpu_us(self, per: int) -> float:
        """CPU microseconds this process spent per event over the same span: unlike the
        rate, barely moved by other work on the machine."""
        return (self.cpu_last - self.cpu_first) / (self.target / per) * 1e6


TALLY = Tally()


def reset(target: int, latency: bool = False) -> Tally:
    """A fresh ``TALLY`` expecting ``target`` handler runs, the young generation empty.

    Every run of every variant starts here, before anything it times, and first moves
    what the runs before it left out of the collector's way (``gc.freeze``, as ``bridge
    run`` does as it starts: ``tune_gc``). Each bridge's teardown leaves its tasks,
    connections and store in cycles, which a process running one bridge never has. Left
    in the young generation, they filled it run after run, and the variant whose
    deliveries in flight crossed its threshold paid for the benchmark's leftovers: on the
    ``ledger`` scenario, 4 of 7 PostgreSQL runs paused 36-105 ms (9-19 % of the run) to
    walk 92,000-100,000 objects, 37,000-73,000 of them the other variants' garbage; no
    other variant paid once. Frozen, not collected: freeing them would hand their
    scattered blocks to the next run's allocations, which a fresh process does not have
    either. ``tuned_gc`` unfreezes them when its scenario ends; in the scenarios it does
    not tune they stay frozen, held until the suite's process ends.
    """
    global TALLY
    gc.freeze()
    TALLY = Tally(target, latency)
    return TALLY


def _data(event: Any) -> Any:
    return getattr(event, "data", event)  # the bridge passes an Event, baselines the model


async def noop_1(event: Any, ctx: Any) -> None:
    tally = TALLY
    if tally.latency:
        sent = _data(event).sent_ns
        if sent:
            tally.latencies_ns.append(time.time_ns() - sent)
    tally.hit()


async def noop(event: Any, ctx: Any) -> None:
    TALLY.hit()


noop_2 = noop_3 = noop_4 = noop
HANDLERS = (noop_1, noop_2, noop_3, noop_4)


async def slow(event: Any, ctx: Any) -> None:
    """A handler slower than any producer: for the overload (memory) scenario."""
    await asyncio.sleep(0.02)


def handlers_for(width: int) -> tuple[Any, ...]:
    """The first handler takes latency samples; the others only count."""
    return (noop_1, *([noop] * (width - 1)))


async def work(raw: bytes, width: int = 4) -> SubscriberCreated:
    """What a baseline does per message: decode, validate, fan out to ``width`` handlers."""
    data = SubscriberCreated.model_validate(orjson.loads(raw))
    await asyncio.gather(*(h(data, None) for h in handlers_for(width)))
    return data


def bridge_config(
    connector: str,
    *,
    store: str = "memory://",
    ledger: bool | None = None,
    width: int = 4,
    function: str = "",
    schema: str = "bench.payload:SubscriberCreated",
    extra: str = "",
) -> str:
    """A bridge config: one connector ``signups`` (its YAML body, indented four spaces)
    and ``width`` handlers on ``subscriber/created`` (by default ``noop_1`` then ``noop``).

    The ledger is on with a real store, off with ``memory://`` unless told.
    """
    if ledger is None:
        ledger = store != "memory://"
    handlers = "".join(
        f'  - {{id: h{n}, on: subscriber/created, type: python, function: "'
        f'{function or ("bench.payload:noop_1" if n == 1 else "bench.payload:noop")}"}}\n'
        for n in range(1, width + 1)
    )
    return (
        f"version: 1\nstore: {store}\nledger: {str(ledger).lower()}\n"
        "server: {enabled: false}\ntelemetry: {logs: {level: ERROR}}\n"
        f'events:\n  subscriber/created: {{schema: "{schema}"}}\n'
        f"connectors:\n  signups:\n{connector.rstrip()}\n"
        f"handlers:\n{handlers}{extra}"
    )
