"""An event's identity is its (source, id); a (handler, key) never runs twice at once;
a dead letter and its ledger entry are one write (issue 17, items 5, 6 and 7a)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge import Context, Event, Fatal
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.errors import StoreError
from bridge.store import MemoryStore
from bridge.store.contracts import DeadLetter, LedgerEntry
from bridge.store.sqlite import SqliteStore
from bridge.transport import Delivery, Settlement
from tests.unit.test_dispatch import HEAD, FakeClock, make, process

RUNS: Counter[str] = Counter()
HERE = "tests.unit.test_identity"


async def counted(event: Event[Any], ctx: Context) -> str:
    RUNS[f"{ctx.handler_id}:{event.source}:{event.id}"] += 1
    await asyncio.sleep(0.05)  # long enough for a duplicate to arrive while it runs
    return "ok"


async def broken(event: Event[Any], ctx: Context) -> None:
    RUNS[f"{ctx.handler_id}:{event.source}:{event.id}"] += 1
    raise ConnectionError("downstream is down")


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()


def delivery(event_id: str, source: str) -> tuple[Delivery, list[Settlement]]:
    settled: list[Settlement] = []

    async def settle(outcome: Settlement) -> None:
        settled.append(outcome)

    body = orjson.dumps(
        {"specversion": "1.0", "id": event_id, "source": source, "type": "test/event", "data": {}}
    )
    return Delivery(body, {}, {}, settle, "test"), settled


HANDLERS = f"""
- {{id: a, on: test/event, type: python, function: '{HERE}:counted'}}
- {{id: b, on: test/event, type: python, function: '{HERE}:counted'}}
"""


async def test_same_id_from_two_sources_runs_for_each_and_a_true_duplicate_does_not() -> None:
    runtime, _, _ = make(HANDLERS)
    for source in ("producer-a", "producer-b", "producer-a"):
        assert await process(runtime, delivery("1", source)[0]) is Settlement.ACK
    assert RUNS == {
        "a:producer-a:1": 1,
        "b:producer-a:1": 1,
        "a:producer-b:1": 1,
        "b:producer-b:1": 1,
    }


async def test_a_duplicate_in_flight_waits_for_the_run_and_does_not_run_again() -> None:
    runtime, store, _ = make(HANDLERS)
    pairs = [delivery(f"e{i}", "src") for i in range(20)]
    twins = [delivery(f"e{i}", "src") for i in range(20)]
    outcomes = await asyncio.gather(*(process(runtime, d) for d, _ in [*pairs, *twins]))
    assert outcomes == [Settlement.ACK] * 40  # the duplicate still settles, once the run is final
    assert sum(RUNS.values()) == 40 and set(RUNS.values()) == {1}  # 20 events x 2 handlers
    assert len(store.ledger) == 40


async def test_a_duplicate_in_flight_of_a_dead_lettered_run_files_no_second_letter() -> None:
    runtime, store, _ = make(
        f"""
        - {{id: a, on: test/event, type: python, function: '{HERE}:broken', retry: {{attempts: 2}}}}
        """
    )
    outcomes = await asyncio.gather(*(process(runtime, delivery("x", "s")[0]) for _ in range(3)))
    assert outcomes == [Settlement.ACK] * 3
    assert RUNS == {"a:s:x": 2} and len(store.letters) == 1


GATE: dict[str, asyncio.Event] = {}


async def gated(event: Event[Any], ctx: Context) -> str:
    RUNS[f"{ctx.handler_id}:{event.source}:{event.id}"] += 1
    await GATE["slow"].wait()
    return "ok"


async def fatal(event: Event[Any], ctx: Context) -> None:
    RUNS[f"{ctx.handler_id}:{event.source}:{event.id}"] += 1
    raise Fatal("bad data")


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_branch_lets_its_duplicate_go_as_it_ends_not_when_its_slowest_sibling_does(
    store: str, tmp_path: Path
) -> None:
    """A replay of a dead-lettered branch that comes while its sibling still runs is let
    go when that branch ended, and runs at once: it does not wait for the sibling."""
    GATE["slow"] = asyncio.Event()
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 's.db'}"
    text = HEAD.replace("store: memory://", f"store: '{url}'") + (
        f"  - {{id: a, on: test/event, type: python, function: '{HERE}:fatal'}}\n"
        f"  - {{id: b, on: test/event, type: python, function: '{HERE}:gated'}}\n"
    )
    runtime = Runtime(load_config_text(text, {}), clock=FakeClock())
    runtime.build()
    await runtime.store.open()
    first = asyncio.create_task(process(runtime, delivery("x", "s")[0]))
    try:
        while RUNS["b:s:x"] == 0:  # a dead-lettered, b waits at its gate
            await asyncio.sleep(0.01)
        original, _ = delivery("x", "s")
        replay = Delivery(original.body, {}, {"replay_handler": "a"}, original.settle, "api")
        assert await asyncio.wait_for(process(runtime, replay), 5) is Settlement.ACK
        assert RUNS == {"a:s:x": 2, "b:s:x": 1} and not first.done()
        GATE["slow"].set()
        assert await first is Settlement.ACK
        assert RUNS == {"a:s:x": 2, "b:s:x": 1}
    finally:
        GATE["slow"].set()
        await asyncio.wait([first], timeout=5)
        await runtime.store.close()


async def test_a_branch_refused_by_flow_control_lets_its_duplicate_go_as_it_ends() -> None:
    """The same for a run that flow control refuses: its idempotency key ran for another
    event, so the replay of it is refused too, at once, while its sibling still runs."""
    text = HEAD + (
        f"  - {{id: a, on: test/event, type: python, function: '{HERE}:counted',"
        " idempotency: {key: \"'one'\", ttl: 1h}}\n"
        f"  - {{id: b, on: test/event, type: python, function: '{HERE}:gated'}}\n"
    )
    runtime = Runtime(load_config_text(text, {}), clock=FakeClock())
    runtime.build()
    await runtime.store.open()
    GATE["slow"] = asyncio.Event()
    GATE["slow"].set()
    assert await process(runtime, delivery("y", "s")[0]) is Settlement.ACK  # a takes 'one'
    GATE["slow"] = asyncio.Event()
    first = asyncio.create_task(process(runtime, delivery("x", "s")[0]))
    try:
        while RUNS["b:s:x"] == 0:  # a refused (skipped), b waits at its gate
            await asyncio.sleep(0.01)
        original, _ = delivery("x", "s")
        replay = Delivery(original.body, {}, {"replay_handler": "a"}, original.settle, "api")
        assert await asyncio.wait_for(process(runtime, replay), 5) is Settlement.ACK
        assert not first.done()
        GATE["slow"].set()
        assert await first is Settlement.ACK
        assert RUNS == {"a:s:y": 1, "b:s:y": 1, "b:s:x": 1}  # a never ran for x
    finally:
        GATE["slow"].set()
        await asyncio.wait([first], timeout=5)
        await runtime.store.close()


class LedgerFailsAfterLetter(MemoryStore):
    """A store whose ledger write of a dead-lettered run fails once: the fault between
    the letter and its ledger entry, when they were two writes."""

    failed = False

    async def ledger_record(self, entries: Any) -> None:
        if not self.failed and any(e.status == "dead_lettered" for e in entries):
            self.failed = True
            raise StoreError("connection lost")
        await super().ledger_record(entries)


async def test_a_store_fault_after_the_dead_letter_neither_reruns_nor_files_a_second() -> None:
    handlers = f"- {{id: a, on: test/event, type: python, function: '{HERE}:broken'}}\n"
    store = LedgerFailsAfterLetter()
    runtime = Runtime(load_config_text(HEAD + "  " + handlers, {}), store=store, clock=FakeClock())
    runtime.build()
    for _ in range(3):  # the broker redelivers what was not acked
        d, _ = delivery("x", "s")
        if await process(runtime, d) is Settlement.ACK:
            break
    assert RUNS == {"a:s:x": 3}  # three attempts, not six
    assert len(store.letters) == 1
    assert store.ledger[("a", "s\x1fx")].status == "dead_lettered"


async def test_dead_letter_final_writes_both_or_neither_on_sqlite(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'b.db'}")
    await store.open()
    try:
        letter = DeadLetter(reason="r", connector="c", handler="h", event_id="e")
        await store.dead_letter_final(letter, LedgerEntry("h", "k", "e", "dead_lettered", "r"))
        assert (await store.dead_letter_get(letter.id)) is not None
        assert await store.ledger_final([("h", "k")]) == {("h", "k"): "dead_lettered"}
    finally:
        await store.close()
    # A transaction that fails at its ledger write leaves no letter either.
    conn = sqlite3.connect(tmp_path / "b.db")
    conn.execute(
        "CREATE TRIGGER no_ledger BEFORE INSERT ON ledger BEGIN SELECT RAISE(ABORT, 'x'); END"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(f"sqlite:///{tmp_path / 'b.db'}")
    await store.open()
    try:
        other = DeadLetter(reason="r", connector="c", handler="h", event_id="e2")
        with pytest.raises(StoreError):
            await store.dead_letter_final(other, LedgerEntry("h", "k2", "e2", "dead_lettered"))
        assert await store.dead_letter_get(other.id) is None
    finally:
        await store.close()


async def test_runs_recorded_under_the_key_of_before_the_upgrade_do_not_run_again() -> None:
    runtime, store, _ = make(HANDLERS)
    # Written by the version that keyed the ledger by the event id alone.
    await store.ledger_record([LedgerEntry("a", "1", "1", "succeeded")])
    assert await process(runtime, delivery("1", "producer-a")[0]) is Settlement.ACK
    assert RUNS == {"b:producer-a:1": 1}


def _store_of_before(path: Path) -> None:
    """A SQLite store as the version before event identities left it (schema 5), with a
    run recorded under the key of then: the event id alone."""
    from bridge.store.sqlite.migrations import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:5], start=1):
        assert isinstance(script, str)
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute(
        "INSERT INTO ledger (handler, key, event_id, status, finished_at)"
        " VALUES ('a', '1', '1', 'succeeded', 0)"
    )
    conn.close()


async def test_a_sqlite_store_upgraded_keeps_its_runs_of_before(tmp_path: Path) -> None:
    """Upgraded from the schema of before, the store knows it may hold keys of before:
    the run recorded under the event id alone is not run again."""
    _store_of_before(tmp_path / "old.db")
    store = SqliteStore(f"sqlite:///{tmp_path / 'old.db'}")
    await store.open()
    try:
        assert store.legacy_keys is True
        text = HEAD.replace("memory://", f"'sqlite:///{tmp_path / 'old.db'}'")
        text += "".join(f"  {line}\n" for line in HANDLERS.strip().splitlines())
        runtime = Runtime(load_config_text(text, {}), store=store, clock=FakeClock())
        runtime.build()
        assert await process(runtime, delivery("1", "producer-a")[0]) is Settlement.ACK
        assert RUNS == {"b:producer-a:1": 1}
    finally:
        await store.close()


async def test_a_sqlite_store_created_now_has_no_keys_of_before(tmp_path: Path) -> None:
    """Created by this version: lookups skip the keys of before (half the keys read)."""
    store = SqliteStore(f"sqlite:///{tmp_path / 'new.db'}")
    await store.open()
    try:
        assert store.legacy_keys is False
        await store.ledger_record([LedgerEntry("a", "p\x1f1", "1", "succeeded")])
    finally:
        await store.close()
    store = SqliteStore(f"sqlite:///{tmp_path / 'new.db'}")
    await store.open()  # opened again: still none (only the keys of now were written)
    try:
        assert store.legacy_keys is False
    finally:
        await store.close()


async def test_a_template_of_the_users_own_is_kept_as_is() -> None:
    runtime, store, _ = make(
        f"""
        - {{id: a, on: test/event, type: python, function: '{HERE}:counted', idempotency_key: '{{id}}'}}
        """
    )
    for source in ("producer-a", "producer-b"):
        assert await process(runtime, delivery("1", source)[0]) is Settlement.ACK
    assert RUNS == {"a:producer-a:1": 1} and set(store.ledger) == {("a", "1")}


async def test_handlers_keeping_the_default_key_and_one_with_its_own_are_each_keyed_right() -> None:
    """The default key is rendered once for all the handlers of a fan-out that keep it;
    a handler with a template of its own, between them, keeps its own."""
    runtime, store, _ = make(
        f"""
        - {{id: a, on: test/event, type: python, function: '{HERE}:counted'}}
        - {{id: b, on: test/event, type: python, function: '{HERE}:counted', idempotency_key: 'k-{{id}}'}}
        - {{id: c, on: test/event, type: python, function: '{HERE}:counted'}}
        """
    )
    assert await process(runtime, delivery("1", "producer-a")[0]) is Settlement.ACK
    assert await process(runtime, delivery("1", "producer-a")[0]) is Settlement.ACK
    assert await process(runtime, delivery("1", "producer-b")[0]) is Settlement.ACK
    assert set(store.ledger) == {
        ("a", "producer-a\x1f1"),
        ("c", "producer-a\x1f1"),
        ("b", "k-1"),
        ("a", "producer-b\x1f1"),
        ("c", "producer-b\x1f1"),
    }
    # The copy from producer-a ran nothing; producer-b's ran a and c, and b's key was done.
    assert RUNS == {
        "a:producer-a:1": 1,
        "b:producer-a:1": 1,
        "c:producer-a:1": 1,
        "a:producer-b:1": 1,
        "c:producer-b:1": 1,
    }


async def test_the_event_api_takes_the_same_id_from_two_sources_and_dedupes_a_true_copy(
    tmp_path: Path,
) -> None:
    import aiohttp

    from tests.support import cloudevent, free_port, post_events, until

    port = free_port()
    text = (
        f"version: 1\nstore: 'sqlite:///{tmp_path}/state.db'\n"
        f"server: {{listen: '127.0.0.1:{port}'}}\nevents: {{'test/*': {{schema: none}}}}\n"
        f"handlers:\n  - {{id: a, on: test/event, type: python, function: '{HERE}:counted'}}\n"
    )
    runtime = Runtime(load_config_text(text, {}))
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: runtime.ready, 10, "the bridge ready")
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            sent = [cloudevent("1", "test/event", {}, source=s) for s in ("p-a", "p-b")]
            status, body = await post_events(session, url, sent)
            assert status == 202 and body["duplicates"] == [], body
            status, body = await post_events(session, url, sent[:1])
            assert status == 202 and body["duplicates"] == ["1"], body
        await until(lambda: sum(RUNS.values()) == 2, 10, "both events ran")
        await asyncio.sleep(0.2)  # the true copy would run by now if it were taken
        assert RUNS == {"a:p-a:1": 1, "a:p-b:1": 1}
    finally:
        runtime.request_stop()
        await asyncio.wait([task], timeout=10)
