"""Two ``bridge run`` replicas on one PostgreSQL store: parked retries run once, joins close once.

Both replicas take events over their own event API (half of the events go to each) and
share the store's inbox, parked runs and joins. Handlers append one line per execution to
a shared file (``tests.apps.orchestration``); the tests count executions per event and per
join. (Cron across replicas: tests/integration/test_cron_replicas.py.)

Members of one join added at the same moment on the two replicas is the case that
once left joins open (each add missed the other's member; fixed in 3242fc3 by locking
the join row), so the members are sent split across replicas, several at once.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.apps.orchestration import Line, parse
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.support import BridgeProcess, cloudevent, post_events, read_lines, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARKED = 50
BATCHES = 30
ITEMS = 3
SHORT_BATCHES = 3

CONFIG = """\
version: 1
store: ${BRIDGE_STORE}
telemetry: {logs: {format: json, level: WARNING}}
drain_timeout: 5s
defaults:
  inline_retry_limit: 1s
  retry: {attempts: 3, backoff: fixed, min_delay: 100ms, max_delay: 100ms}
events:
  job/requested: {schema: none}
  job/slow: {schema: none}
  batch/*: {schema: none}
  short/*: {schema: none}
handlers:
  - {id: worker, on: job/requested, type: python, function: "tests.apps.orchestration:park_once"}
  - {id: slowpoke, on: job/slow, type: python, function: "tests.apps.orchestration:slow"}
  - id: gather
    type: join
    start: batch/start
    on: batch/item
    match: "event.data.batch == start.data.batch"
    expect: start.data.items
    member_key: event.data.item
    within: 120s
    emit: batch/done
    on_timeout: batch/timed-out
  - id: short
    type: join
    start: short/start
    on: short/item
    match: "event.data.batch == start.data.batch"
    expect: start.data.items
    member_key: event.data.item
    within: 2s
    emit: short/done
    on_timeout: short/timed-out
  - id: outcome
    on: [batch/done, batch/timed-out, short/done, short/timed-out]
    type: python
    function: "tests.apps.orchestration:record"
"""


@dataclass
class Replicas:
    a: BridgeProcess
    b: BridgeProcess
    record: Path
    schema: str
    joins: dict[str, set[str]] = field(default_factory=dict)  # handler -> join ids seen

    def runs(self) -> list[Line]:
        return parse(read_lines(self.record))

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": self.schema})
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def count(self, sql: str, *args: Any) -> int:
        return int((await self.query(sql, *args))[0][0])


@pytest.fixture(scope="module")
def replicas(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two replicas of one config on one per-module schema, started once for the module."""
    root = tmp_path_factory.mktemp("replicas")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    config = root / "bridge.yaml"
    config.write_text(CONFIG)
    record = root / "runs.txt"
    env = {
        "BRIDGE_STORE": f"{POSTGRES_URL}?schema={schema}",
        "BRIDGE_TEST_RECORD": str(record),
        "ORCH_RETRY_AFTER": "2",
    }
    procs = []
    for name in ("a", "b"):
        (root / name).mkdir()
        procs.append(BridgeProcess(config, root / name, env=env))
    for proc in procs:
        proc.start()
    try:
        asyncio.run(_ready(procs))
        yield Replicas(procs[0], procs[1], record, schema)
        codes = asyncio.run(_stop(procs))
        assert codes == [0, 0], procs[0].log_tail() + procs[1].log_tail()
    finally:
        for proc in procs:
            proc.kill()
        asyncio.run(drop_schema(schema))


async def _ready(procs: list[BridgeProcess]) -> None:
    await asyncio.gather(*(p.wait_ready(60) for p in procs))


async def _stop(procs: list[BridgeProcess]) -> list[int]:
    return list(await asyncio.gather(*(p.stop() for p in procs)))


async def post_to(url: str, events: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await post_events(session, url, events)
    assert status == 202, body


async def test_parked_retries_run_once_across_replicas(replicas: Replicas) -> None:
    ids = [f"park-{n:03d}" for n in range(PARKED)]
    # Due times spread over 3 s, so both replicas' schedulers (each polling every second)
    # find due runs, rather than the first poll taking them all.
    events = [
        cloudevent(i, "job/requested", {"retry_after": 2 + (n % 10) * 0.3})
        for n, i in enumerate(ids)
    ]
    await asyncio.gather(
        post_to(replicas.a.url, events[: PARKED // 2]),
        post_to(replicas.b.url, events[PARKED // 2 :]),
    )

    async def all_succeeded() -> bool:
        sql = "SELECT COUNT(*) FROM ledger WHERE handler = 'worker' AND status = 'succeeded'"
        return await replicas.count(sql) == PARKED

    await until(all_succeeded, 60, f"{PARKED} parked retries succeeded")
    await asyncio.sleep(2.5)  # two more scheduler rounds on each replica: nothing runs again

    runs = [r for r in replicas.runs() if r.handler == "worker"]
    retries = [r for r in runs if r.attempt > 1]
    # Each parked retry ran once across both replicas, as attempt 2, and succeeded.
    assert Counter(r.event_id for r in retries) == dict.fromkeys(ids, 1)
    assert {(r.attempt, r.what) for r in retries} == {(2, "ok")}
    assert await replicas.count("SELECT COUNT(*) FROM parked") == 0
    assert await replicas.count("SELECT COUNT(*) FROM dead_letters") == 0
    print(  # figures for the report
        "retries by replica:",
        Counter(r.pid for r in retries),
        "first attempts:",
        Counter(Counter(r.event_id for r in runs if r.attempt == 1).values()),
    )


async def test_each_event_runs_once_across_replicas(replicas: Replicas) -> None:
    """An event accepted by one replica's event API runs on one replica, not on both."""
    ids = [f"slow-{n:03d}" for n in range(20)]
    events = [cloudevent(i, "job/slow", {}) for i in ids]
    await asyncio.gather(post_to(replicas.a.url, events[:10]), post_to(replicas.b.url, events[10:]))

    async def all_succeeded() -> bool:
        sql = "SELECT COUNT(*) FROM ledger WHERE handler = 'slowpoke' AND status = 'succeeded'"
        return await replicas.count(sql) == len(ids)

    await until(all_succeeded, 60, f"{len(ids)} events succeeded")
    await asyncio.sleep(1.5)
    print("slow pids", Counter(r.pid for r in replicas.runs() if r.handler == "slowpoke"))
    runs = Counter(r.event_id for r in replicas.runs() if r.handler == "slowpoke")
    assert runs == dict.fromkeys(ids, 1), (
        f"ran twice: {sorted(i for i, n in runs.items() if n > 1)}"
    )


async def send_split(replicas: Replicas, sends: list[tuple[int, dict[str, Any]]]) -> None:
    """Post (replica index, event) pairs in order, in chunks of 4, 4 chunks at a time."""
    urls = (replicas.a.url, replicas.b.url)
    chunks = [sends[i : i + 4] for i in range(0, len(sends), 4)]

    async def send(chunk: list[tuple[int, dict[str, Any]]]) -> None:
        await asyncio.gather(
            *(
                post_to(url, [e for r, e in chunk if r == index])
                for index, url in enumerate(urls)
                if any(r == index for r, _ in chunk)
            )
        )

    for i in range(0, len(chunks), 4):
        await asyncio.gather(*(send(c) for c in chunks[i : i + 4]))


def outcomes(replicas: Replicas, kind: str) -> list[tuple[str, str]]:
    """(join id, status) of every handled outcome event of the ``kind`` join handler."""
    out = []
    for r in replicas.runs():
        if r.handler == "outcome" and r.what.startswith("done:"):
            _, join_id, status = r.what.split(":")
            out.append((join_id, status))
    return [(j, s) for j, s in out if j in replicas.joins.get(kind, set())]


async def joins_of(replicas: Replicas, handler: str) -> dict[str, tuple[str, int]]:
    """join id -> (status, members) of the handler's joins."""
    rows = await replicas.query(
        "SELECT j.id, j.status, COUNT(m.member_id) AS n FROM joins j"
        " LEFT JOIN join_members m ON m.join_id = j.id WHERE j.handler = $1"
        " GROUP BY j.id, j.status",
        handler,
    )
    found = {r["id"]: (r["status"], int(r["n"])) for r in rows}
    replicas.joins.setdefault(handler, set()).update(found)
    return found


async def test_join_timeouts_fire_once_across_replicas(replicas: Replicas) -> None:
    """Joins missing a member time out once: one outcome event each, handled once."""
    sends: list[tuple[int, dict[str, Any]]] = []
    for n in range(SHORT_BATCHES):  # one member never comes
        batch = f"s{n:03d}"
        items = [f"{batch}-i{k}" for k in range(ITEMS)]
        start = cloudevent(f"{batch}-start", "short/start", {"batch": batch, "items": items})
        sends.append((n % 2, start))
        sends += [
            ((n + k) % 2, cloudevent(item, "short/item", {"batch": batch, "item": item}))
            for k, item in enumerate(items[:-1])
        ]
    await send_split(replicas, sends)

    async def all_timed_out() -> bool:
        joins = await joins_of(replicas, "short")
        return (
            len(joins) == SHORT_BATCHES
            and all(status == "timed_out" for status, _ in joins.values())
            and len(set(outcomes(replicas, "short"))) == SHORT_BATCHES
        )

    await until(all_timed_out, 30, f"{SHORT_BATCHES} joins timed out and their outcomes handled")
    await asyncio.sleep(2.5)  # more sweeper rounds on each replica: none fires again

    joins = await joins_of(replicas, "short")
    assert sorted(joins.values()) == [("timed_out", ITEMS - 1)] * SHORT_BATCHES
    handled = Counter(outcomes(replicas, "short"))
    assert sorted(handled.values()) == [1] * SHORT_BATCHES
    assert {s for _, s in handled} == {"timed_out"}


async def test_joins_complete_once_across_replicas(replicas: Replicas) -> None:
    """Start and member events split across both replicas (some members before their
    start): every join completes, once, and its outcome event is handled once."""
    rng = random.Random(8)
    sends: list[tuple[int, dict[str, Any]]] = []
    for n in range(BATCHES):
        batch = f"b{n:03d}"
        items = [f"{batch}-i{k}" for k in range(ITEMS)]
        group = [cloudevent(f"{batch}-start", "batch/start", {"batch": batch, "items": items})]
        group += [cloudevent(item, "batch/item", {"batch": batch, "item": item}) for item in items]
        rng.shuffle(group)  # some members arrive before their join opens
        sends += [(rng.randrange(2), e) for e in group]
    await send_split(replicas, sends)

    async def all_closed() -> bool:
        joins = await joins_of(replicas, "gather")
        return (
            len(joins) == BATCHES
            and all(status != "open" for status, _ in joins.values())
            and len(set(outcomes(replicas, "gather"))) == BATCHES
        )

    try:
        await until(all_closed, 10, f"{BATCHES} joins closed and their outcomes handled")
    except AssertionError as exc:
        state = Counter((await joins_of(replicas, "gather")).values())
        raise AssertionError(f"{exc}: (status, members) of the joins: {state}") from None
    await asyncio.sleep(2.5)  # more inbox and sweeper rounds on each replica

    joins = await joins_of(replicas, "gather")
    assert sorted(joins.values()) == [("completed", ITEMS)] * BATCHES
    handled = Counter(outcomes(replicas, "gather"))
    assert sorted(handled.values()) == [1] * BATCHES
    assert {s for _, s in handled} == {"completed"}
    assert await replicas.count("SELECT COUNT(*) FROM dead_letters") == 0
