"""The durable path (issue 18): the bridge on the in-process memory connector with the
ledger off, on the memory store, on SQLite and on PostgreSQL, against the same work
without the bridge; and the store round trips each event costs.

Every variant does the same work per event (``bench.payload.work``: JSON decode,
pydantic validation, 4 no-op handlers):

* ``bare``: that work in a loop, no bridge (``bench.core.bare_loop``).
* ``ledger_off``: the bridge, memory store, ``ledger: false``.
* ``memory``: the ledger on the memory store (the ledger's own CPU, no I/O).
* ``sqlite``: the default store, a fresh file per run.
* ``postgres``: PostgreSQL on 127.0.0.1:5432, a fresh schema per run (dropped after).
* ``sqlite_random``: as ``sqlite``, but each event's id is a UUID of its producer's (a
  field of its data, mapped by ``consume.event.id``), as CloudEvents producers and
  webhook providers name events, where the others are named by offset, in order. A
  random key changes a page of the ledger's index an event; keys in order fill one page
  after another. No goal: it shows what the ``sqlite`` variant's sequential keys flatter.

A run ends when every handler ran and every delivery is settled (``bridge_in_flight``
reads 0: settled means its ledger entries are committed), so the rate counts the
ledger's writes too. Round trips per event are the store's own count
(``store.round_trips``, exported as ``bridge_store_round_trips_total``) over the
events of the run, start-up excluded.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import psutil

from bench.common import Env, Samples, goal
from bench.core import bare_loop, memory_config, run_bridge
from bench.durable import tuned_gc
from bench.payload import body
from bridge.app.runtime import Runtime
from connectors.memory import BROKER
from tests.fixtures.postgres import POSTGRES_URL, drop_schema

VARIANTS = ("bare", "ledger_off", "memory", "sqlite", "postgres", "sqlite_random")


def round_trips(runtime: Runtime) -> int:
    """The store's round trips so far (0 for the memory store, which makes none)."""
    counts = getattr(runtime.store, "round_trips", None)
    return sum(counts.values()) if counts else 0


async def settled(runtime: Runtime) -> None:
    """Until no delivery is in flight: every ledger entry of the run is committed."""
    while runtime.metrics.value("bridge_in_flight"):
        await asyncio.sleep(0.001)


async def backends_cpu() -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL backends serving this process's connections
    (found by client port in ``pg_stat_activity``: other users of the server are left
    out), by backend pid."""
    import asyncpg

    ports = [
        c.laddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == 5432
    ]
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[]) AND pid <> $2",
            ports,
            conn.get_server_pid(),
        )
    finally:
        await conn.close()
    out = {}
    for row in rows:
        try:
            times = psutil.Process(row["pid"]).cpu_times()
        except psutil.Error:
            continue
        out[row["pid"]] = times.user + times.system
    return out


async def durable_bridge(
    bodies: list[bytes], store: str, ledger: bool, width: int = 4, event_id: str = ""
) -> tuple[Any, float, float]:
    """One run of the bridge on ``store`` (its events' ids from the template ``event_id``
    if given): its tally, store round trips per event and the PostgreSQL server's CPU µs
    per event meanwhile (0 unless on PostgreSQL)."""
    on_postgres = store.startswith("postgres")
    topic, config = memory_config(width, store=store, ledger=ledger, event_id=event_id)
    box: dict[str, Any] = {}

    def setup(runtime: Runtime) -> None:
        box["runtime"] = runtime

    async def feed() -> None:
        box["before"] = round_trips(box["runtime"])
        box["pg_before"] = await backends_cpu() if on_postgres else {}
        for raw in bodies:
            BROKER.put(topic, raw)

    async def until() -> None:
        await settled(box["runtime"])
        box["after"] = round_trips(box["runtime"])

    async def after() -> None:
        # Outside the timed span: reading the server's CPU takes a connection and a
        # query (17-70 ms here), which the PostgreSQL variant's rate must not include.
        if on_postgres:
            now, before = await backends_cpu(), box["pg_before"]
            box["pg_us"] = sum(t - before.get(pid, 0.0) for pid, t in now.items())

    tally = await run_bridge(
        config, len(bodies) * width, feed=feed, setup=setup, until=until, after=after
    )
    n = len(bodies)
    return tally, (box["after"] - box["before"]) / n, box.get("pg_us", 0.0) / n * 1e6


async def one(name: str, env: Env, bodies: list[bytes]) -> tuple[Any, float, float]:
    if name == "bare":
        return await bare_loop(bodies), 0.0, 0.0
    if name == "ledger_off":
        return await durable_bridge(bodies, "memory://", ledger=False)
    if name == "memory":
        return await durable_bridge(bodies, "memory://", ledger=True)
    if name in ("sqlite", "sqlite_random"):
        return await durable_bridge(
            bodies,
            f"sqlite:///{env.workdir}/ledger-{time.time_ns()}.db",
            ledger=True,
            event_id="{data.uid}" if name == "sqlite_random" else "",
        )
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        return await durable_bridge(bodies, f"{POSTGRES_URL}?schema={schema}", ledger=True)
    finally:
        await drop_schema(schema)


@tuned_gc
async def durable(env: Env) -> dict[str, Any]:
    """Events/s, CPU per event and store round trips per event, each variant interleaved."""
    events = env.size(4000, 300)
    bodies = [body(n) for n in range(events)]
    random_ids = [body(n, uid=uuid.uuid4().hex) for n in range(events)]
    await durable_bridge(bodies[:200], "memory://", ledger=False)  # warm up imports
    samples = Samples(list(VARIANTS))
    trips: dict[str, list[float]] = {"sqlite": [], "postgres": [], "sqlite_random": []}
    server_cpu: list[float] = []
    for run in range(env.rounds()):  # interleaved, so drift in machine load hits all alike
        for name in VARIANTS:
            sent = random_ids if name == "sqlite_random" else bodies
            tally, per_event, pg_us = await one(name, env, sent)
            samples.add(name, tally)
            if name in trips:
                trips[name].append(per_event)
            if name == "postgres":
                server_cpu.append(pg_us)
        samples.progress("ledger", run)
    result = samples.result(
        "events/s",
        [
            ("ledger_off", "bare"),
            ("memory", "ledger_off"),
            ("sqlite", "ledger_off"),
            ("postgres", "ledger_off"),
            ("sqlite_random", "ledger_off"),
        ],
        events_per_run=events,
        handlers=4,
        connector="memory (in-process), max_in_flight 1000",
        round_trips_per_event={k: max(v) for k, v in trips.items() if v},
        postgres_server_cpu_us_per_event=statistics.median(server_cpu) if server_cpu else None,
    )
    r = result["ratios"]
    rt = result["round_trips_per_event"]
    result["goals"] = [
        goal("ledger off / same work without the bridge", r["ledger_off/bare"], ">=", 0.5,
             "ledger_off/bare"),
        goal("SQLite ledger / ledger off", r["sqlite/ledger_off"], ">=", 0.6,
             "sqlite/ledger_off"),
        goal("PostgreSQL ledger / ledger off", r["postgres/ledger_off"], ">=", 0.5,
             "postgres/ledger_off"),
        goal("store round trips per event, SQLite", rt["sqlite"], "<=", 0.1,
             rounds=trips["sqlite"]),
        goal("store round trips per event, PostgreSQL", rt["postgres"], "<=", 0.1,
             rounds=trips["postgres"]),
    ]  # fmt: skip
    return result
