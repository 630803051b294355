"""The PostgreSQL store passes the store contract against the real server on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.app.runtime import Runtime
from bridge.store.contracts import InboxEntry, LedgerEntry
from bridge.store.postgres import MIGRATIONS, PostgresStore
from bridge.store.postgres.packed import NULL, SEP
from tests.fixtures.postgres import POSTGRES_URL, drop_schema, fresh_store, schema_at
from tests.flow_contract import FlowStateContract
from tests.store_contract import StoreContract

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(postgres: str) -> AsyncIterator[PostgresStore]:
    async with fresh_store() as store:
        yield store


class TestPostgresStore(StoreContract, FlowStateContract):
    pass


async def test_two_replicas_share_state_and_migrate_once(postgres: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}"
    a, b = PostgresStore(url), PostgresStore(url)
    import asyncio

    await asyncio.gather(a.open(), b.open())
    try:
        await a.ledger_record([LedgerEntry("h", "k", "e")])
        assert await b.ledger_final([("h", "k")]) == {("h", "k"): "succeeded"}
        # Both replicas put the same event: exactly one wins.
        results = await asyncio.gather(
            a.inbox_put([InboxEntry("same", b"1")]), b.inbox_put([InboxEntry("same", b"2")])
        )
        assert sorted(r[0] for r in results) == [False, True]
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            versions = await conn.fetch(f'SELECT version FROM "{schema}".bridge_schema')
        finally:
            await conn.close()
        assert [r["version"] for r in versions] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        await a.close()
        await b.close()
        await drop_schema(schema)


async def test_a_bridge_runs_on_the_postgres_store(postgres: str) -> None:
    """Events through the API land in the Postgres inbox and every handler's run in its ledger."""
    import asyncio

    import aiohttp

    from bridge.app import load_config_text
    from bridge.app.runtime import Runtime
    from tests.support import free_port, post_events

    schema = f"t_{uuid.uuid4().hex[:12]}"
    port = free_port()
    text = (
        f"version: 1\nstore: '{POSTGRES_URL}?schema={schema}'\nserver: {{listen: '127.0.0.1:{port}'}}\n"
        "handlers:\n  - {id: a, on: t/x, type: log}\n  - {id: b, on: t/x, type: log}\n"
    )
    runtime = Runtime(load_config_text(text, {}))
    task = asyncio.create_task(runtime.run())
    try:
        while not runtime.ready:
            await asyncio.sleep(0.02)
        events = [
            {"specversion": "1.0", "id": f"e{i}", "type": "t/x", "data": {"i": i}}
            for i in range(50)
        ]
        async with aiohttp.ClientSession() as session:
            status, body = await post_events(session, f"http://127.0.0.1:{port}", events)
        assert status == 202 and len(body["accepted"]) == 50
        keys = [(h, f"bridge://api\x1fe{i}") for h in "ab" for i in range(50)]
        for _ in range(200):
            if len(await runtime.store.ledger_final(keys)) == 100:
                break
            await asyncio.sleep(0.05)
        assert len(await runtime.store.ledger_final(keys)) == 100
    finally:
        runtime.request_stop()
        await task
        await drop_schema(schema)


async def test_a_schema_of_before_event_identity_keeps_its_data(postgres: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    before = next(i for i, m in enumerate(MIGRATIONS) if "inbox_identity" in m)
    # The schema as the version before created it: every migration up to this one.
    conn = await schema_at(schema, before)
    try:
        await conn.execute(
            "INSERT INTO inbox (id, source, body, created_at) VALUES ('1', 'api', '{}', 1)"
        )
        await conn.execute(
            "INSERT INTO ledger (handler, key, event_id, status, finished_at)"
            " VALUES ('h', '1', '1', 'succeeded', 1)"
        )
    finally:
        await conn.close()
    store = PostgresStore(f"{POSTGRES_URL}?schema={schema}")
    await store.open()
    try:
        pending = await store.inbox_pending(0, 10)
        assert [(e.id, e.source, e.body) for e in pending] == [("1", "api", b"{}")]
        assert await store.ledger_final([("h", "1")]) == {("h", "1"): "succeeded"}
        assert await store.inbox_put([InboxEntry("1", b"{}")]) == [False]
        fresh = [InboxEntry("1", b"{}", event_source="s"), InboxEntry("1", b"{}", event_source="s")]
        assert await store.inbox_put(fresh) == [True, False]
    finally:
        await store.close()
        await drop_schema(schema)


async def test_two_replicas_given_the_same_event_at_once_run_it_once(postgres: str) -> None:
    """Two runtimes (two replicas: no memory shared) on one schema, each handed every
    event at the same moment: each branch runs once, and both deliveries settle."""
    import asyncio

    from bridge.app import load_config_text
    from bridge.app.runtime import Runtime
    from bridge.transport import Settlement
    from tests.unit import test_identity
    from tests.unit.test_dispatch import HEAD, FakeClock, process
    from tests.unit.test_identity import HANDLERS, delivery

    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}"
    replicas = []
    for _ in range(2):
        store = PostgresStore(url)
        await store.open()
        text = HEAD.replace("memory://", f"'{url}'") + "".join(
            f"  {line}\n" for line in HANDLERS.strip().splitlines()
        )
        runtime = Runtime(load_config_text(text, {}), store=store, clock=FakeClock())
        runtime.build()
        replicas.append((runtime, store))
    test_identity.RUNS.clear()
    try:
        n = 30
        outcomes = await asyncio.gather(
            *(process(r, delivery(f"e{i}", "src")[0]) for i in range(n) for r, _ in replicas)
        )
        assert outcomes == [Settlement.ACK] * (2 * n)
        assert sum(test_identity.RUNS.values()) == 2 * n, test_identity.RUNS
        assert set(test_identity.RUNS.values()) == {1}
        keys = [(h, f"src\x1fe{i}") for h in "ab" for i in range(n)]
        final = await replicas[0][1].ledger_final(keys)
        assert set(final.values()) == {"succeeded"} and len(final) == 2 * n
    finally:
        for _, store in replicas:
            await store.close()
        await drop_schema(schema)


@contextlib.asynccontextmanager
async def fan_out_runtime(handlers: str) -> AsyncIterator[tuple[Runtime, PostgresStore]]:
    """A runtime of ``handlers`` (YAML list items) on a PostgreSQL schema of its own, as
    one replica; the schema is dropped after."""
    from bridge.app import load_config_text
    from tests.unit.test_dispatch import HEAD, FakeClock

    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}"
    store = PostgresStore(url)
    await store.open()
    try:
        runtime = Runtime(
            load_config_text(HEAD.replace("memory://", f"'{url}'") + handlers, {}),
            store=store,
            clock=FakeClock(),
        )
        runtime.build()
        yield runtime, store
    finally:
        await store.close()
        await drop_schema(schema)


async def test_a_fan_out_on_postgres_releases_the_claim_of_a_branch_that_did_not_end(
    postgres: str,
) -> None:
    """Every branch claimed by this replica: the one that succeeds is recorded, the one
    whose retry is parked gives its claim back as it ends (another replica may take it
    now, not when its lease lapses over a minute later), and its retry is parked."""
    from bridge.transport import Settlement
    from tests.unit import test_identity
    from tests.unit.test_dispatch import process
    from tests.unit.test_identity import HERE, delivery

    handlers = (
        f"  - {{id: a, on: test/event, type: python, function: '{HERE}:counted'}}\n"
        f"  - {{id: b, on: test/event, type: python, function: '{HERE}:broken',"
        " retry: {attempts: 3, min_delay: 10m, max_delay: 10m}}\n"
    )
    test_identity.RUNS.clear()
    async with fan_out_runtime(handlers) as (runtime, store):
        n = 5
        outcomes = [await process(runtime, delivery(f"e{i}", "src")[0]) for i in range(n)]
        assert outcomes == [Settlement.ACK] * n
        assert sum(test_identity.RUNS.values()) == 2 * n
        ran = [(h, f"src\x1fe{i}") for h in "ab" for i in range(n)]
        now = time.time()  # the fan-out's claims last until now + lease (over a minute)
        found = await store.ledger_claim(ran, [], "x", "another replica", now, now + 60.0)
        assert {p: s for p, s in found.items() if p[0] == "a"} == {
            ("a", f"src\x1fe{i}"): "succeeded" for i in range(n)
        }
        assert {p: s for p, s in found.items() if p[0] == "b"} == {
            ("b", f"src\x1fe{i}"): "claimed" for i in range(n)
        }
        parked = await store.parked_list()
        assert sorted(p.handler for p in parked) == ["b"] * n


async def claimed_by_another(
    store: PostgresStore, handlers: str, event_id: str
) -> dict[tuple[str, str], str]:
    """What another replica's claim of ``event_id``'s runs (one a handler of
    ``handlers``, source ``src``) finds now: ``claimed`` where this process holds none."""
    keys = [(h, f"src\x1f{event_id}") for h in handlers]
    now = time.time()
    return await store.ledger_claim(keys, [], event_id, "another replica", now, now + 60.0)


HANGING = asyncio.Event()


async def hangs(event: object, ctx: object) -> None:
    """A handler that waits until its run is cancelled."""
    HANGING.set()
    await asyncio.sleep(3600)


async def instant(event: object, ctx: object) -> str:
    """A handler that ends without waiting."""
    return "ok"


async def test_a_fan_out_on_postgres_cancelled_mid_run_gives_back_every_claim(
    postgres: str,
) -> None:
    """Three branches claimed here: one ends at once, two hang (one in the delivery's
    task, one in a task of its own), and the delivery is cancelled (the bridge stops).
    The claims of the hanging runs are given back (another replica claims them at
    once, not a minute later), the succeeded one is recorded, and this process renews
    no claim any more."""
    from tests.unit.test_dispatch import process
    from tests.unit.test_identity import delivery

    handlers = (
        f"  - {{id: a, on: test/event, type: python, function: '{__name__}:instant'}}\n"
        f"  - {{id: b, on: test/event, type: python, function: '{__name__}:hangs'}}\n"
        f"  - {{id: c, on: test/event, type: python, function: '{__name__}:hangs'}}\n"
    )
    HANGING.clear()
    async with fan_out_runtime(handlers) as (runtime, store):
        task = asyncio.ensure_future(process(runtime, delivery("e1", "src")[0]))
        async with asyncio.timeout(10):
            await HANGING.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert runtime.dispatcher is not None
        fanout = runtime.dispatcher.fanout
        await fanout.runner.endings.recorder.idle()  # a's success, written behind it
        assert await claimed_by_another(store, "abc", "e1") == {
            ("a", "src\x1fe1"): "succeeded",
            ("b", "src\x1fe1"): "claimed",
            ("c", "src\x1fe1"): "claimed",
        }
        assert fanout.keeper._held == {}


HUNG: dict[str, asyncio.Event] = {}


async def hangs_each(event: object, ctx: Any) -> None:
    """A handler that notes its run started, then waits until it is cancelled."""
    HUNG.setdefault(ctx.handler_id, asyncio.Event()).set()
    await asyncio.sleep(3600)


async def test_only_a_run_that_may_outlast_its_claim_has_it_renewed(postgres: str) -> None:
    """A run's claim lasts its attempts, timeouts and backoffs plus a minute. The claim
    keeper renews it only for a run that may wait longer: one that waits for a
    concurrency slot (b), or that may retry inline after a ``RetryAfter`` longer than its
    policy's longest delay (c: its max_delay of 3 s is below the 30 s waited inline). A
    run that cannot (a) is not held, and its claim is given back all the same."""
    from tests.unit.test_dispatch import process
    from tests.unit.test_identity import delivery

    minute = "retry: {attempts: 3, max_delay: 1m}"
    handlers = (
        f"  - {{id: a, on: test/event, type: python, function: '{__name__}:hangs_each',"
        f" {minute}}}\n"
        f"  - {{id: b, on: test/event, type: python, function: '{__name__}:hangs_each',"
        f" concurrency: 2, {minute}}}\n"
        f"  - {{id: c, on: test/event, type: python, function: '{__name__}:hangs_each'}}\n"
    )
    HUNG.clear()
    async with fan_out_runtime(handlers) as (runtime, store):
        task = asyncio.ensure_future(process(runtime, delivery("e1", "src")[0]))
        async with asyncio.timeout(10):
            while len(HUNG) < 3:
                await asyncio.sleep(0.01)
        assert runtime.dispatcher is not None
        fanout = runtime.dispatcher.fanout
        assert sorted(fanout.keeper._held) == [("b", "src\x1fe1"), ("c", "src\x1fe1")]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fanout.keeper._held == {}
        keys = [(h, "src\x1fe1") for h in "abc"]
        # Every claim was given back.
        assert await claimed_by_another(store, "abc", "e1") == dict.fromkeys(keys, "claimed")


async def test_run_claims_hold_lapse_release_and_give_way_to_the_end(
    store: PostgresStore,
) -> None:
    k = ("h", "s\x1f1")
    assert await store.ledger_claim([k], [], "1", "A", 100.0, 200.0) == {k: "claimed"}
    assert await store.ledger_claim([k], [], "1", "B", 150.0, 250.0) == {k: "running"}
    assert await store.ledger_final([k]) == {} and await store.ledger_get([k]) == {}
    # A claim past its deadline (its replica died) is taken by another.
    assert await store.ledger_claim([k], [], "1", "B", 201.0, 300.0) == {k: "claimed"}
    await store.ledger_release([k], "A")  # not A's any more: stays
    assert await store.ledger_claim([k], [], "1", "C", 250.0, 350.0) == {k: "running"}
    await store.ledger_release([k], "B")
    assert await store.ledger_claim([k], [], "1", "C", 250.0, 350.0) == {k: "claimed"}
    await store.ledger_record([LedgerEntry("h", k[1], "1", "succeeded", {"ok": 1})])
    old = ("h", "1")  # the key of before the upgrade, read only
    await store.ledger_record([LedgerEntry("h", "1", "1", "succeeded")])
    found = await store.ledger_claim([k], [old], "1", "D", 400.0, 500.0)
    assert found == {k: "succeeded", old: "succeeded"}


async def test_a_runs_end_updates_its_claimed_row_in_place(store: PostgresStore) -> None:
    """A run's row is written twice, claimed then ended: the end is a heap-only update on
    the claim's page (no new index entry), for rows of the engine's shape filling pages."""
    import asyncpg

    source = "kafka://orders-cluster/orders"
    keys = [("notify-customer", f"{source}\x1forders-3-{i:06}") for i in range(600)]
    owner = uuid.uuid4().hex  # a process, as the fan-out names itself
    claimed = await store.ledger_claim(keys, [], "orders-3-0", owner, 100.0, 200.0)
    assert set(claimed.values()) == {"claimed"}
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": f'"{store.schema}"'})
    try:

        async def pages() -> dict[str, int]:
            rows = await conn.fetch("SELECT key, ctid::text AS at FROM ledger")
            return {r["key"]: int(r["at"].strip("()").split(",")[0]) for r in rows}

        before = await pages()
        ended = [LedgerEntry(h, k, k.rpartition("\x1f")[2], "succeeded") for h, k in keys]
        await store.ledger_record(ended)
        after = await pages()
        options = await conn.fetchval(
            "SELECT reloptions FROM pg_class WHERE oid = 'ledger'::regclass"
        )
    finally:
        await conn.close()
    assert len(set(before.values())) >= 10
    stayed = sum(after[k] == page for k, page in before.items())
    assert stayed >= 0.9 * len(keys), f"{stayed} of {len(keys)} ended rows stayed on their page"
    assert options == ["fillfactor=60"]
    assert await store.ledger_final(keys) == dict.fromkeys(keys, "succeeded")


async def _schema_of_before(schema: str) -> None:
    """A schema as the version before event identities left it (schema 5), with a run
    recorded under the key of then: the event id alone."""
    conn = await schema_at(schema, 5)
    try:
        await conn.execute(
            "INSERT INTO ledger (handler, key, event_id, status, finished_at)"
            " VALUES ('a', '1', '1', 'succeeded', 0)"
        )
    finally:
        await conn.close()


async def test_a_schema_created_now_has_no_keys_of_before(store: PostgresStore) -> None:
    """Created by this version: lookups and claims skip the keys of before."""
    assert store.legacy_keys is False


async def test_a_replica_skips_a_run_recorded_under_the_key_of_before(postgres: str) -> None:
    """After an upgrade on a shared store: the run recorded under the event id alone counts,
    and the claim taken on its new key is let go."""
    from bridge.app import load_config_text
    from bridge.app.runtime import Runtime
    from bridge.transport import Settlement
    from tests.unit import test_identity
    from tests.unit.test_dispatch import HEAD, FakeClock, process
    from tests.unit.test_identity import HANDLERS, delivery

    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}"
    await _schema_of_before(schema)
    store = PostgresStore(url)
    await store.open()
    assert store.legacy_keys is True
    text = HEAD.replace("memory://", f"'{url}'") + "".join(
        f"  {line}\n" for line in HANDLERS.strip().splitlines()
    )
    runtime = Runtime(load_config_text(text, {}), store=store, clock=FakeClock())
    runtime.build()
    test_identity.RUNS.clear()
    try:
        assert await process(runtime, delivery("1", "p")[0]) is Settlement.ACK
        assert test_identity.RUNS == {"b:p:1": 1}
        assert await store.ledger_claim([("a", "p\x1f1")], [], "1", "X", 0.0, 1.0) == {
            ("a", "p\x1f1"): "claimed"
        }
    finally:
        await store.close()
        await drop_schema(schema)


async def test_dead_letter_final_writes_both_or_neither(store: PostgresStore) -> None:
    import asyncpg

    from bridge.store import StoreError
    from bridge.store.contracts import DeadLetter

    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": store.schema})
    try:
        # A ledger that refuses every write: the letter written first must not stay.
        await conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'no ledger'; END $$;"
            " CREATE TRIGGER no_ledger BEFORE INSERT ON ledger EXECUTE FUNCTION refuse()"
        )
    finally:
        await conn.close()
    letter = DeadLetter(reason="r", connector="c", handler="h", event_id="e")
    with pytest.raises(StoreError):
        await store.dead_letter_final(letter, LedgerEntry("h", "k", "e", "dead_lettered"))
    assert await store.dead_letter_get(letter.id) is None


async def test_a_batch_of_records_is_one_statement_and_keeps_each_value(
    store: PostgresStore,
) -> None:
    """Concurrent records share one write (``unnest`` arrays); their results come back as
    recorded, a key recorded twice in one batch keeps its success, and a bad value fails
    only its own call."""
    import asyncio

    from bridge.errors import StoreError

    before = store.round_trips["ledger_write_batch"]
    results = [{"n": n, "s": "x" * n} for n in range(50)]
    outcomes = await asyncio.gather(
        *(
            store.ledger_record([LedgerEntry("h", f"k{n}", f"e{n}", "succeeded", results[n])])
            for n in range(50)
        ),
        return_exceptions=True,
    )
    one_batch = store.round_trips["ledger_write_batch"] - before
    twice = await asyncio.gather(
        store.ledger_record([LedgerEntry("h", "dup", "e1", "succeeded", 1)]),
        store.ledger_record([LedgerEntry("h", "dup", "e2", "cancelled", 2)]),
        store.ledger_record([LedgerEntry("h", "bad", "e3", "succeeded", {"x": "\ud800"})]),
        return_exceptions=True,
    )
    found = await store.ledger_get([*(("h", f"k{n}") for n in range(50)), ("h", "dup")])
    assert outcomes == [None] * 50
    assert one_batch <= 2  # the first call alone, then the 49 that queued behind it
    assert [found[("h", f"k{n}")].result for n in range(50)] == results
    assert twice[:2] == [None, None] and isinstance(twice[2], StoreError)
    assert (found[("h", "dup")].status, found[("h", "dup")].result) == ("succeeded", 1)


async def test_the_ledger_keeps_keys_that_cannot_be_packed(store: PostgresStore) -> None:
    """Claims and successes of keys holding a separator (sent as arrays, ``bridge.store.postgres.packed``) and of plain keys
    (packed), in one batch each: every key claimed, recorded and found as it was."""
    keys = [("h", "plain\x1fkey"), ("h", f"with{SEP}sep"), ("h", NULL), ("h", "ü€𝄞")]
    claims = await asyncio.gather(
        *(store.ledger_claim([k], [], f"e{n}", "me", 100.0, 200.0) for n, k in enumerate(keys)),
        store.ledger_claim([("g", "only plain")], [], "e9", "me", 100.0, 200.0),
    )
    assert claims == [{k: "claimed"} for k in keys] + [{("g", "only plain"): "claimed"}]
    entries = [LedgerEntry(h, k, f"e{n}", "succeeded", {"n": n}) for n, (h, k) in enumerate(keys)]
    await asyncio.gather(*(store.ledger_record([e]) for e in entries))
    await store.ledger_record([LedgerEntry("g", "only plain", "e9", "succeeded", None)])
    found = await store.ledger_get([*keys, ("g", "only plain")])
    assert {k: (found[k].status, found[k].result) for k in keys} == {
        k: ("succeeded", {"n": n}) for n, k in enumerate(keys)
    }
    assert (found[("g", "only plain")].status, found[("g", "only plain")].result) == (
        "succeeded",
        None,
    )
    again = await store.ledger_claim([*keys, ("g", "only plain")], [], "e0", "other", 300.0, 400.0)
    assert again == dict.fromkeys([*keys, ("g", "only plain")], "succeeded")


@pytest.mark.parametrize("suffix", ["", SEP], ids=["packed", "arrays"])
async def test_each_claim_of_a_batch_gets_its_own_keys_status(
    store: PostgresStore, suffix: str
) -> None:
    """A batch of claims answers how many keys it claimed, and what the others hold is
    read after it: in a batch mixing every status, keys out of order and a key sent
    twice, each call gets the status of its own keys (sent packed, and as arrays when a
    key holds a separator)."""
    k = {name: ("h", f"{name}{suffix}") for name in ("done", "dead", "held", "new", "gone")}
    await store.ledger_record(
        [
            LedgerEntry("h", k["done"][1], "e", "succeeded"),
            LedgerEntry("h", k["dead"][1], "e", "dead_lettered"),
            LedgerEntry("h", k["gone"][1], "e", "cancelled"),
        ]
    )
    assert await store.ledger_claim([k["held"]], [], "e", "other", 100.0, 900.0) == {
        k["held"]: "claimed"
    }
    mixed = [k["new"], k["held"], k["done"], k["new"], k["dead"], k["gone"]]
    first, second = await asyncio.gather(
        store.ledger_claim(mixed, [], "e", "me", 200.0, 300.0),
        store.ledger_claim(
            [("g", f"z{suffix}"), ("a", f"z{suffix}")], [], "e2", "me", 200.0, 300.0
        ),
    )
    assert first == {
        k["new"]: "claimed",
        k["held"]: "running",
        k["done"]: "succeeded",
        k["dead"]: "dead_lettered",
        k["gone"]: "cancelled",
    }
    assert second == {("g", f"z{suffix}"): "claimed", ("a", f"z{suffix}"): "claimed"}
