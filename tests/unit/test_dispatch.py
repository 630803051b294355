"""The fan-out engine: retries on a controlled clock, isolation, dead letters, ledger, emits."""

from __future__ import annotations

import asyncio
import random
import textwrap
from collections import Counter
from typing import Any

import orjson
import pytest

from bridge import Context, Event, Fatal, RetryAfter
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.normalize import Normalizer
from bridge.retry import RetryPolicy
from bridge.store import MemoryStore
from bridge.transport import Delivery, EventMapping, Settlement

CALLS: Counter[str] = Counter()
FAIL_FIRST: dict[str, int] = {}


async def ok(event: Event[Any], ctx: Context) -> str:
    CALLS[f"{ctx.handler_id}:{event.id}"] += 1
    return f"done {event.id}"


async def flaky(event: Event[Any], ctx: Context) -> str:
    CALLS[f"{ctx.handler_id}:{event.id}"] += 1
    if ctx.attempt <= FAIL_FIRST.get(ctx.handler_id, 0):
        raise RuntimeError(f"boom {ctx.attempt}")
    return "recovered"


async def always_fails(event: Event[Any], ctx: Context) -> None:
    CALLS[f"{ctx.handler_id}:{event.id}"] += 1
    raise ConnectionError("downstream is down")


async def fatal(event: Event[Any], ctx: Context) -> None:
    CALLS[f"{ctx.handler_id}:{event.id}"] += 1
    raise Fatal("bad data, do not retry")


async def throttled(event: Event[Any], ctx: Context) -> str:
    CALLS[f"{ctx.handler_id}:{event.id}"] += 1
    if ctx.attempt == 1:
        raise RetryAfter("429", delay=7.0)
    return "ok"


async def sleepy(event: Event[Any], ctx: Context) -> None:
    await asyncio.sleep(10)


def sync_handler(event: Event[Any], ctx: Context) -> dict[str, Any]:
    return {"sum": sum(event.data["values"])}


async def splitter(event: Event[Any], ctx: Context) -> None:
    for item in event.data["items"]:
        ctx.emit("item/created", {"item": item})
    if ctx.attempt == 1:
        raise RuntimeError("fail after emitting: nothing may be sent")


class FakeClock:
    """A clock whose sleeps return at once (recorded), or block until released."""

    def __init__(self, block: bool = False) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.block = block
        self.release = asyncio.Event()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.block:
            await self.release.wait()
        self.now += seconds
        await asyncio.sleep(0)


HEAD = """\
version: 1
store: memory://
server: {enabled: false}
defaults:
  retry: {attempts: 3, backoff: exponential, min_delay: 1s, max_delay: 3s, jitter: 0}
  timeout: 5s
handlers:
"""


def make(
    handlers: str, clock: FakeClock | None = None, **top: Any
) -> tuple[Runtime, MemoryStore, list[Event[Any]]]:
    extra = "".join(f"{k}: {v}\n" for k, v in top.items())
    cfg = load_config_text(extra + HEAD + textwrap.indent(textwrap.dedent(handlers), "  "), {})
    store = MemoryStore()
    runtime = Runtime(cfg, store=store, clock=clock or FakeClock())
    runtime.build()
    emitted: list[Event[Any]] = []

    async def emitter(events: Any) -> None:
        emitted.extend(events)

    assert runtime.dispatcher is not None
    runtime.dispatcher.emitter = emitter
    return runtime, store, emitted


NORMALIZER_MAPPING = EventMapping(type="test/event")


def delivery(
    event_id: str, data: Any = None, event_type: str = "test/event"
) -> tuple[Delivery, list[Settlement]]:
    settled: list[Settlement] = []

    async def settle(outcome: Settlement) -> None:
        settled.append(outcome)

    body = orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "t",
            "type": event_type,
            "data": data or {},
        }
    )
    return Delivery(body, {}, {}, settle, "test"), settled


async def process(runtime: Runtime, d: Delivery) -> Settlement:
    norm = Normalizer("test", "memory", NORMALIZER_MAPPING, runtime.catalog, 10_000)
    assert runtime.dispatcher is not None
    return await runtime.dispatcher.process(d, norm)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAIL_FIRST.clear()


def test_exponential_backoff_is_capped_and_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(attempts=6, min_delay=1, max_delay=5, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert RetryPolicy(backoff="fixed", min_delay=2, jitter=0).delay(4) == 2
    jittered = RetryPolicy(min_delay=10, max_delay=10, jitter=0.5)
    rng = random.Random(1)
    delays = [jittered.delay(1, rng) for _ in range(200)]
    assert min(delays) >= 5 and max(delays) <= 10 and len(set(delays)) > 100


async def test_retries_follow_the_policy_on_the_clock_then_succeed() -> None:
    clock = FakeClock()
    FAIL_FIRST["h"] = 2
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:flaky'}", clock
    )
    d, _ = delivery("e1")
    assert await process(runtime, d) is Settlement.ACK
    assert clock.sleeps == [1.0, 2.0]
    assert CALLS["h:e1"] == 3
    assert store.ledger[("h", "t\x1fe1")].status == "succeeded"
    assert store.ledger[("h", "t\x1fe1")].result == "recovered"
    assert runtime.metrics.value("bridge_retries_total", handler="h") == 2


async def test_retry_after_is_honoured() -> None:
    clock = FakeClock()
    runtime, _, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:throttled'}",
        clock,
    )
    d, _ = delivery("e1")
    assert await process(runtime, d) is Settlement.ACK
    assert clock.sleeps == [7.0]


async def test_exhausted_attempts_become_a_dead_letter_with_every_attempt() -> None:
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:always_fails'}"
    )
    d, _ = delivery("e1")
    assert await process(runtime, d) is Settlement.ACK
    (letter,) = store.letters.values()
    assert (letter.handler, letter.event_id, letter.connector) == ("h", "e1", "test")
    assert [a.number for a in letter.attempts] == [1, 2, 3]
    assert all(a.error == "ConnectionError: downstream is down" for a in letter.attempts)
    assert letter.event is not None and letter.event["id"] == "e1"
    assert runtime.metrics.value("bridge_dead_letters_total", handler="h") == 1


async def test_fatal_dead_letters_at_once() -> None:
    clock = FakeClock()
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:fatal'}", clock
    )
    d, _ = delivery("e1")
    await process(runtime, d)
    assert CALLS["h:e1"] == 1 and clock.sleeps == []
    (letter,) = store.letters.values()
    assert letter.reason == "Fatal: bad data, do not retry"


async def test_timeout_is_per_attempt() -> None:
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:sleepy', timeout: 10ms, retry: {attempts: 2, min_delay: 0, jitter: 0}}"
    )
    d, _ = delivery("e1")
    await process(runtime, d)
    (letter,) = store.letters.values()
    assert [a.error for a in letter.attempts] == ["TimeoutError: attempt timed out after 0.01s"] * 2


async def test_a_failing_handler_never_holds_up_its_siblings() -> None:
    """The failing branch is stuck in backoff; the others finish every event meanwhile,
    and no delivery is settled until the failing branch is final too."""
    clock = FakeClock(block=True)
    runtime, store, _ = make(
        """\
        - {id: failing, on: test/event, type: python, function: 'tests.unit.test_dispatch:always_fails'}
        - {id: b, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}
        - {id: c, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}
        """,
        clock,
    )
    n = 200
    pairs = [delivery(f"e{i}") for i in range(n)]
    tasks = [asyncio.create_task(process(runtime, d)) for d, _ in pairs]
    for _ in range(50):
        await asyncio.sleep(0)
    assert sum(1 for k in CALLS if k.startswith("b:")) == n
    assert sum(1 for k in CALLS if k.startswith("c:")) == n
    assert sum(CALLS[f"failing:e{i}"] for i in range(n)) == n  # first attempts only, now in backoff
    assert not any(settled for _, settled in pairs)  # nothing acked while a branch is open
    assert len(store.ledger) == 2 * n
    clock.release.set()
    results = await asyncio.gather(*tasks)
    assert results == [Settlement.ACK] * n
    assert len(store.letters) == n
    assert all(store.ledger[("failing", f"t\x1fe{i}")].status == "dead_lettered" for i in range(n))


async def test_redelivery_reruns_only_the_branches_that_did_not_succeed() -> None:
    FAIL_FIRST["flaky"] = 1
    runtime, store, _ = make(
        """\
        - {id: good, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}
        - {id: flaky, on: test/event, type: python, function: 'tests.unit.test_dispatch:flaky', retry: {attempts: 1}}
        """
    )
    first, _ = delivery("e1")
    await process(runtime, first)
    assert store.ledger[("flaky", "t\x1fe1")].status == "dead_lettered"
    again, _ = delivery("e1")
    await process(runtime, again)
    assert (CALLS["good:e1"], CALLS["flaky:e1"]) == (1, 1)  # neither branch runs twice
    # The downstream is fixed; a replay to that handler reruns just that branch, which now succeeds.
    FAIL_FIRST["flaky"] = 0
    replay, _ = delivery("e1")
    replay = Delivery(replay.body, {}, {"replay_handler": "flaky"}, replay.settle, "api")
    await process(runtime, replay)
    assert (CALLS["good:e1"], CALLS["flaky:e1"]) == (1, 2)
    assert store.ledger[("flaky", "t\x1fe1")].status == "succeeded"


async def test_idempotency_key_template_dedupes_across_event_ids() -> None:
    runtime, _, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok', idempotency_key: '{data.email}'}"
    )
    for i in range(3):
        d, _ = delivery(f"e{i}", {"email": "same@x.io"})
        await process(runtime, d)
    assert sum(CALLS.values()) == 1


async def test_ledger_off_runs_every_delivery() -> None:
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}",
        ledger="false",
    )
    for _ in range(3):
        d, _ = delivery("e1")
        await process(runtime, d)
    assert CALLS["h:e1"] == 3 and store.ledger == {}


async def test_ledger_off_dead_letters_still_name_each_runs_key() -> None:
    """Without the ledger a run's key is rendered only when it is needed: a dead letter
    still carries it, the default (source and id) or the handler's own template."""
    runtime, store, _ = make(
        """
        - {id: plain, on: test/event, type: python, function: 'tests.unit.test_dispatch:fatal'}
        - {id: keyed, on: test/event, type: python, function: 'tests.unit.test_dispatch:fatal',
           idempotency_key: '{data.email}'}
        - {id: fine, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}
        """,
        ledger="false",
    )
    d, _ = delivery("e7", {"email": "a@x.io"})
    assert await process(runtime, d) is Settlement.ACK
    keys = {letter.handler: letter.key for letter in store.letters.values()}
    assert keys == {"plain": "t\x1fe7", "keyed": "a@x.io"}
    assert CALLS["fine:e7"] == 1 and store.ledger == {}


async def test_concurrency_limit_per_handler() -> None:
    running = 0
    peak = 0

    async def tracked(event: Event[Any], ctx: Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1

    runtime, _, _ = make("- {id: h, on: test/event, type: log, concurrency: 2}")
    runtime.handlers["h"].handler.invoke = tracked  # type: ignore[method-assign]
    await asyncio.gather(*(process(runtime, delivery(f"e{i}")[0]) for i in range(20)))
    assert peak == 2


async def test_sync_function_runs_and_result_is_kept() -> None:
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:sync_handler'}"
    )
    await process(runtime, delivery("e1", {"values": [1, 2, 3]})[0])
    assert store.ledger[("h", "t\x1fe1")].result == {"sum": 6}


async def test_emits_are_sent_only_when_the_attempt_succeeds_with_stable_ids() -> None:
    runtime, _, emitted = make(
        "- {id: split, on: test/event, type: python, function: 'tests.unit.test_dispatch:splitter', retry: {attempts: 2, min_delay: 0, jitter: 0}}"
    )
    await process(
        runtime,
        delivery(
            "parent",
            {"items": ["a", "b"]},
        )[0],
    )
    assert [e.data for e in emitted] == [
        {"item": "a"},
        {"item": "b"},
    ]  # attempt 1's emits were dropped
    assert all(e.parentid == "parent" and e.correlationid == "parent" for e in emitted)
    from bridge.context import child_event_id

    assert [e.id for e in emitted] == [
        child_event_id("parent", "split", 1),
        child_event_id("parent", "split", 2),
    ]


async def test_emit_handler_splits_a_list_and_guards_fanout() -> None:
    runtime, store, emitted = make(
        """\
        - id: split
          on: test/event
          type: emit
          emit: report/generate
          items: data.report_ids
          data: {report_id: "{item}", position: "{index}"}
          max_fanout: 3
        """
    )
    await process(runtime, delivery("p1", {"report_ids": [10, 11, 12]})[0])
    assert [e.data for e in emitted] == [
        {"report_id": 10, "position": 0},
        {"report_id": 11, "position": 1},
        {"report_id": 12, "position": 2},
    ]
    await process(runtime, delivery("p2", {"report_ids": [1, 2, 3, 4]})[0])
    assert len(emitted) == 3  # over max_fanout: nothing emitted, dead letter instead
    (letter,) = store.letters.values()
    assert "more than max_fanout 3" in letter.reason


async def test_emit_handler_chunks() -> None:
    runtime, _, emitted = make(
        "- {id: split, on: test/event, type: emit, emit: batch/part, items: data.ids, chunk_size: 2, data: {ids: '{item}'}}"
    )
    await process(runtime, delivery("p", {"ids": [1, 2, 3, 4, 5]})[0])
    assert [e.data for e in emitted] == [{"ids": [1, 2]}, {"ids": [3, 4]}, {"ids": [5]}]


@pytest.mark.parametrize("policy", ["dead_letter", "drop"])
async def test_unrouted_policy(policy: str) -> None:
    runtime, store, _ = make("- {id: h, on: other/type, type: log}", unrouted=policy)
    assert await process(runtime, delivery("e1")[0]) is Settlement.ACK
    assert len(store.letters) == (1 if policy == "dead_letter" else 0)
    if store.letters:
        assert (
            next(iter(store.letters.values())).reason
            == "unrouted: no handler subscribes to 'test/event'"
        )


async def test_a_store_failure_leaves_the_message_for_redelivery() -> None:
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}"
    )

    async def broken(entries: Any) -> None:
        from bridge.errors import StoreError

        raise StoreError("disk full")

    store.ledger_record = broken  # type: ignore[method-assign]
    assert await process(runtime, delivery("e1")[0]) is Settlement.RETRY_LATER


async def test_bad_input_is_dead_lettered_and_acked() -> None:
    runtime, store, _ = make("- {id: h, on: test/event, type: log}")
    settled: list[Settlement] = []
    bad = Delivery(b"\xff{nope", {}, {"offset": 1}, lambda s: settled.append(s), "test")  # type: ignore[arg-type,return-value]
    assert await process(runtime, bad) is Settlement.ACK
    (letter,) = store.letters.values()
    assert letter.reason.startswith("invalid_utf8")
    assert letter.body is not None and letter.body.startswith("base64:")
    assert letter.handler is None and letter.meta == {"offset": 1}
