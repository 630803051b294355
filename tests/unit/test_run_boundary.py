"""The run boundary is total: a value the store cannot hold, a BaseException, a handler's
own CancelledError and an error in the engine itself all end recorded, never looping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.dispatch.storable import TRACEBACK_BYTES, check_result
from bridge.errors import Fatal, StoreError
from bridge.store import MemoryStore
from bridge.store.contracts import DeadLetter, LedgerEntry
from tests.support import until

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


async def int_keys(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    return {"ok": 1, "nested": [0, {1: "x"}]}


async def a_set(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    return {1, 2}


async def big_int(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    return {"n": 2**70}


async def lone_surrogate(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    return {"n": "\ud800"}


async def decimal_child(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    ctx.emit("child/made", {"price": Decimal("9.99")})
    return "emitted"


async def fine(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    return {"price": Decimal("1.50"), "when": "now"}


class DetailedError(Fatal):
    """Carries a detail the store cannot write."""

    def __init__(self) -> None:
        super().__init__("bad \ud800 input")
        self.detail = {1: {2, 3}}


async def bad_detail(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    raise DetailedError


def sync_interrupt(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    if ctx.attempt == 1:
        raise KeyboardInterrupt
    raise SystemExit(3)


def sync_generator_exit(event: Event[Any], ctx: Context) -> Any:
    """GeneratorExit from a thread: the future it ends would close the awaiting task."""
    CALLS[ctx.handler_id] += 1
    if ctx.attempt < 3:
        raise GeneratorExit
    return "third time lucky"


async def own_cancel(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1
    if ctx.attempt == 1:
        raise asyncio.CancelledError
    return "second time lucky"


def _deep(n: int) -> Any:
    out: Any = "x"
    for _ in range(n):
        out = {"k": out}
    return out


async def deep_frames(event: Event[Any], ctx: Context) -> Any:
    CALLS[ctx.handler_id] += 1

    def recurse(n: int) -> None:
        if n == 0:
            raise KeyError("id")
        recurse(n - 1)

    recurse(200)


CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{enabled: false}}
defaults: {{retry: {{attempts: 3, min_delay: 10ms, max_delay: 10ms}}, timeout: 5s}}
events: {{"t/*": {{schema: none}}, "child/*": {{schema: none}}}}
handlers:
{handlers}
"""


def handler(hid: str, fn: str, on: str = "t/e") -> str:
    return f'  - {{id: {hid}, on: "{on}", type: python, function: "tests.unit.test_run_boundary:{fn}"}}'


@contextlib.asynccontextmanager
async def run_bridge(
    tmp_path: Path, handlers: list[str], events: int, *, want_letters: int, want_calls: int
) -> AsyncIterator[tuple[Runtime, list[DeadLetter]]]:
    """A bridge that ran ``events`` events through ``handlers`` until they all settled."""
    text = CONFIG.format(db=tmp_path / "s.db", handlers="\n".join(handlers))
    runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: _ready(runtime, task), 60, "bridge ready")
        await runtime.inbox.put_events(
            [Event(id=f"e{i}", source="test", type="t/e", data={"i": i}) for i in range(events)],
            source="api",
        )

        async def settled() -> bool:
            letters = await runtime.store.dead_letters(limit=10_000)
            pending = await runtime.store.inbox_pending(0, 1)
            return (
                len(letters) >= want_letters
                and sum(CALLS.values()) >= want_calls
                and not (pending or any(s.tasks for s in runtime.slots))
            )

        await until(settled, 60, "every event settled")
        await asyncio.sleep(0.3)  # a looping delivery would call its handlers again by now
        yield runtime, await runtime.store.dead_letters(limit=10_000)
    finally:
        runtime.request_stop()
        runtime.request_stop()
        await task


async def _ready(runtime: Runtime, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
    return runtime.ready


async def test_poison_results_and_children_dead_letter_once_and_siblings_succeed(
    tmp_path: Path,
) -> None:
    """The issue's loop: before, these handlers were called ~10,000 times for 30 events."""
    handlers = [
        handler("int-keys", "int_keys"),
        handler("a-set", "a_set"),
        handler("big-int", "big_int"),
        handler("surrogate", "lone_surrogate"),
        handler("decimal-child", "decimal_child"),
        handler("fine", "fine"),
    ]
    async with run_bridge(tmp_path, handlers, 30, want_letters=90, want_calls=180) as (
        runtime,
        letters,
    ):
        key = "test\x1fe0"  # the default idempotency key: the event's source and id
        ledger = await runtime.store.ledger_get([("a-set", key), ("fine", key), ("big-int", key)])
    assert CALLS == {
        "int-keys": 30,
        "a-set": 30,
        "big-int": 30,
        "surrogate": 30,
        "decimal-child": 30,
        "fine": 30,
    }
    by_handler = Counter(letter.handler for letter in letters)
    assert by_handler == {"int-keys": 30, "surrogate": 30, "decimal-child": 30}
    reasons = {letter.handler: letter.reason for letter in letters}
    assert reasons["int-keys"].startswith('unserializable_result: result["nested"][1] key 1: int')
    assert reasons["surrogate"].startswith('unserializable_result: result["n"]: str')
    assert reasons["decimal-child"].startswith(
        'unserializable_child: child[0] (child/made)["data"]["price"]: decimal.Decimal'
    )
    assert all(len(letter.attempts) == 1 for letter in letters)
    # What the store could write before is still accepted: a set and a Decimal as their str.
    assert ledger[("a-set", key)].result == "{1, 2}"
    assert ledger[("fine", key)].result == {"price": "1.50", "when": "now"}
    # An integer beyond 64 bits is JSON like any other, kept exact (it was refused before).
    assert ledger[("big-int", key)].result == {"n": 2**70}
    assert runtime.metrics.value("bridge_runs_total", outcome="succeeded") == 90


async def test_unstorable_detail_and_text_fall_back_and_base_exceptions_are_failed_attempts(
    tmp_path: Path,
) -> None:
    handlers = [
        handler("bad-detail", "bad_detail"),
        handler("interrupt", "sync_interrupt"),
        handler("own-cancel", "own_cancel"),
        handler("thread-exit", "sync_generator_exit"),
    ]
    async with run_bridge(tmp_path, handlers, 2, want_letters=4, want_calls=18) as (
        runtime,
        letters,
    ):
        pass
    assert CALLS == {"bad-detail": 2, "interrupt": 6, "own-cancel": 4, "thread-exit": 6}
    # GeneratorExit raised in a sync handler's thread failed two attempts; the third ran.
    assert runtime.metrics.value("bridge_runs_total", outcome="succeeded") == 4
    by_handler = {letter.handler: letter for letter in letters}
    assert set(by_handler) == {"bad-detail", "interrupt"}
    detailed = by_handler["bad-detail"]
    assert detailed.reason == "DetailedError: bad \\ud800 input"
    assert detailed.detail == "{1: {2, 3}}"
    interrupted = by_handler["interrupt"]
    assert [a.error for a in interrupted.attempts] == [
        "KeyboardInterrupt",
        "SystemExit: 3",
        "SystemExit: 3",
    ]


class Kept(logging.Handler):
    """Keeps the records of one logger (other tests may stop bridge's logs propagating)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_handler_traceback_is_kept_in_the_dead_letter_limited_in_size(
    tmp_path: Path,
) -> None:
    kept = Kept()
    logger = logging.getLogger("bridge.dispatch")
    logger.addHandler(kept)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        await _traceback_kept(tmp_path, kept)
    finally:
        logger.removeHandler(kept)
        logger.setLevel(previous)


async def _traceback_kept(tmp_path: Path, caplog: Kept) -> None:
    async with run_bridge(
        tmp_path, [handler("deep", "deep_frames")], 1, want_letters=1, want_calls=3
    ) as (_, letters):
        pass
    (letter,) = letters
    assert letter.reason == "KeyError: 'id'"
    for attempt in letter.attempts:
        trace = attempt.traceback
        assert trace is not None
        assert trace.rstrip().endswith("KeyError: 'id'")
        assert 'in recurse\n    raise KeyError("id")' in trace
        assert len(trace.encode()) <= TRACEBACK_BYTES + 4
        assert trace.count("in recurse") <= 50
    logged = [r for r in caplog.records if r.getMessage() == "run dead-lettered"]
    assert logged and "KeyError: 'id'" in logged[0].traceback


@dataclass
class Point:
    x: int
    y: Any


@pytest.mark.parametrize(
    "value",
    [None, 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30, 1.5, float("nan"), "é", [1, (2, 3)], {"a": {"b": [None]}},
     {1, 2}, frozenset(), Decimal("1.1"), b"bytes", Point(1, Decimal(2)), _deep(200), object()],
)  # fmt: skip
def test_what_the_store_wrote_before_is_still_a_storable_result(value: Any) -> None:
    check_result(value)


@pytest.mark.parametrize(
    ("value", "where"),
    [({1: "x"}, "result key 1: int"),
     ({"a": ["\ud800"]}, 'result["a"][0]: str'), ([Point(1, {None: 1})], "result[0].y key None"),
     (_deep(300), "result"), ({"k": {(1, 2): 0}}, 'result["k"] key (1, 2): tuple')],
)  # fmt: skip
def test_unstorable_results_are_named_by_path_and_type(value: Any, where: str) -> None:
    with pytest.raises(Fatal) as caught:
        check_result(value)
    assert str(caught.value).startswith(where), str(caught.value)


def _failing(entry: LedgerEntry, times: int) -> bool:
    """Whether the write of ``entry`` fails: one of handler ``broken``'s first ``times``
    runs of its event (however many store calls the engine makes to write it)."""
    return entry.handler == "broken" and CALLS[f"broken:{entry.event_id}"] <= times


class LedgerBug(MemoryStore):
    """A store whose ledger write fails with an unexpected error (not ``StoreError``) for
    handler ``broken``, its first ``times`` runs of an event: an engine fault the run
    cannot own."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        if any(_failing(e, self.times) for e in entries):
            raise ZeroDivisionError("a bug in the ledger write")
        await super().ledger_record(entries)


async def counted(event: Event[Any], ctx: Context) -> Any:
    CALLS[f"{ctx.handler_id}:{event.id}"] += 1
    return "ok"


POISON = """\
version: 1
store: memory://
server: {enabled: false}
limits: {poison_limit: 3}
events: {"t/*": {schema: none}}
handlers:
  - {id: broken, on: "t/e", type: python, function: "tests.unit.test_run_boundary:counted"}
  - {id: sibling, on: "t/e", type: python, function: "tests.unit.test_run_boundary:counted"}
"""


class LedgerOutage(MemoryStore):
    """A store whose ledger write fails with ``StoreError`` (an outage) for handler
    ``broken``, its first ``times`` runs of an event: the delivery is held and tried
    again."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        if any(_failing(e, self.times) for e in entries):
            raise StoreError("the store is down")
        await super().ledger_record(entries)


async def _poisoned(
    times: int, events: int, store: MemoryStore | None = None
) -> tuple[Runtime, list[DeadLetter]]:
    store = store or LedgerBug(times)
    runtime = Runtime(load_config_text(POISON, {}), store=store)
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: _ready(runtime, task), 60, "bridge ready")
        await runtime.inbox.put_events(
            [Event(id=f"p{i}", source="test", type="t/e", data={}) for i in range(events)], "api"
        )

        async def settled() -> bool:
            pending = await store.inbox_pending(0, 1)
            return not pending and not any(s.tasks for s in runtime.slots)

        # poison_limit 3: tries 0.5 s then 1 s apart, all events side by side
        await until(settled, 60, "every event settled")
        await asyncio.sleep(0.3)
        return runtime, list(store.letters.values())
    finally:
        runtime.request_stop()
        runtime.request_stop()
        await task


async def test_an_engine_fault_is_retried_up_to_the_poison_limit_then_dead_lettered_and_acked() -> (
    None
):
    """Before: the delivery was handed back RETRY_LATER without end (a hot loop)."""
    runtime, letters = await _poisoned(times=1_000, events=2)
    assert CALLS == {"broken:p0": 3, "broken:p1": 3, "sibling:p0": 1, "sibling:p1": 1}
    assert len(letters) == 2
    for letter in letters:
        assert letter.reason == "internal_error: ZeroDivisionError: a bug in the ledger write"
        assert letter.event is not None and letter.event_id in ("p0", "p1")
        assert [a.number for a in letter.attempts] == [1, 2, 3]
        assert all("in ledger_record" in (a.traceback or "") for a in letter.attempts)
    assert runtime.metrics.value("bridge_internal_errors_total") == 6
    assert runtime.metrics.value("bridge_dead_letters_total") == 2


async def test_an_engine_fault_that_passes_is_retried_without_a_dead_letter() -> None:
    runtime, letters = await _poisoned(times=2, events=1)
    assert letters == []
    assert CALLS == {"broken:p0": 3, "sibling:p0": 1}
    assert runtime.metrics.value("bridge_internal_errors_total") == 2


async def test_a_delivery_held_through_a_store_outage_is_tried_again_then_settled() -> None:
    """RETRY_LATER from the store: held (its first try inline, then the retry loop), no
    internal error, no dead letter; the sibling's recorded success is not run again."""
    runtime, letters = await _poisoned(times=2, events=1, store=LedgerOutage(2))
    assert letters == []
    assert CALLS == {"broken:p0": 3, "sibling:p0": 1}
    assert runtime.metrics.value("bridge_internal_errors_total") == 0
