"""The cron connector on an injected clock: ticks, time zones and DST, misfires, ids, replicas.

Every test runs ``CronIngress.run()`` for real against the memory store and the
real inbox; only the clock is simulated, so hours of schedule take milliseconds.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import BaseModel

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.errors import ConfigError, StoreError
from bridge.events import Event, EventCatalog, load_schema
from bridge.inbox import Inbox
from bridge.store.memory import MemoryStore
from bridge.transport import Background, IngressEnv
from connectors import KINDS
from connectors.cron import CronConfig, CronIngress, Schedule, tick_id
from tests.support import until

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # a tick of every schedule below


class FakeClock:
    """Simulated time: ``sleep`` moves time forward at once; past ``until`` it blocks."""

    def __init__(self, start: float, until: float) -> None:
        self.time = start
        self.until = until
        self.sleeps: list[float] = []
        self.stall: dict[int, float] = {}  # sleep number -> extra seconds (a stalled process)
        self.reached = asyncio.Event()

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.time + seconds > self.until:
            self.reached.set()
            await asyncio.Event().wait()  # until cancelled
        self.time += seconds + self.stall.get(len(self.sleeps), 0.0)
        await asyncio.sleep(0)


class Accepted:
    """``IngressEnv.accept`` over a real inbox, remembering every event stored."""

    def __init__(self, store: MemoryStore) -> None:
        self.inbox = Inbox(store)
        self.events: list[Event[Any]] = []
        self.calls = 0
        self.fail_next = 0

    async def __call__(self, events: Sequence[Event[Any]]) -> list[bool]:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise StoreError("the store is down")
        fresh = await self.inbox.put_events(list(events), source="cron")
        self.events.extend(e for e, new in zip(events, fresh, strict=True) if new)
        return fresh


def cron(**fields: Any) -> CronConfig:
    raw = {"type": "cron", "schedule": "* * * * * */5", "event": {"type": "digest/due"}}
    return CronConfig.model_validate({**raw, **fields})


def ingress(
    cfg: CronConfig,
    clock: FakeClock,
    store: MemoryStore,
    accept: Accepted | None = None,
    catalog: EventCatalog | None = None,
    name: str = "digest",
) -> tuple[CronIngress, Accepted]:
    accept = accept or Accepted(store)
    env = IngressEnv(accept=accept, catalog=catalog, max_body_bytes=1 << 20, store=store)
    return CronIngress(cfg, name, env, clock=clock), accept


async def run_until_idle(*ingresses: CronIngress) -> None:
    """Run the ingresses until each one's clock wants to sleep past its end."""
    tasks = [asyncio.create_task(i.run()) for i in ingresses]
    clocks = [i.clock for i in ingresses]
    await asyncio.wait_for(
        asyncio.gather(*(c.reached.wait() for c in clocks if isinstance(c, FakeClock))), 5
    )
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


def ticks(accept: Accepted) -> list[float]:
    return [e.data["scheduled_epoch"] for e in accept.events]


def fired(accept: Accepted) -> list[tuple[float, bool]]:
    """(seconds after T0, late) of every tick stored."""
    return [(e.data["scheduled_epoch"] - T0, e.data["late"]) for e in accept.events]


# ---------------------------------------------------------------------- schedule


def test_six_fields_mean_seconds_last_and_ticks_are_strictly_after() -> None:
    every_5s = Schedule("* * * * * */5", UTC)
    assert every_5s.next_after(T0) == T0 + 5
    assert every_5s.next_after(T0 + 0.5) == T0 + 5
    assert every_5s.latest_until(T0 + 5) == T0 + 5  # a tick exactly now is due
    assert every_5s.latest_until(T0 + 4.9) == T0
    minutely = Schedule("*/15 * * * *", UTC)
    assert minutely.next_after(T0) == T0 + 900
    assert Schedule("@hourly", UTC).next_after(T0 + 1) == T0 + 3600


def test_a_local_schedule_keeps_local_time_and_follows_croniter_across_dst() -> None:
    nine = Schedule("0 9 * * *", BERLIN)
    winter = nine.next_after(datetime(2026, 1, 10, tzinfo=UTC).timestamp())
    summer = nine.next_after(datetime(2026, 7, 10, tzinfo=UTC).timestamp())
    assert nine.local(winter).isoformat() == "2026-01-10T09:00:00+01:00"
    assert nine.local(summer).isoformat() == "2026-07-10T09:00:00+02:00"
    # Spring forward (2026-03-29 02:00 -> 03:00): 02:30 does not exist, it fires at 03:00.
    night = Schedule("30 2 * * *", BERLIN)
    tick = night.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp())
    assert night.local(tick).isoformat() == "2026-03-29T03:00:00+02:00"


async def test_fall_back_fires_the_repeated_hour_twice_with_distinct_ids() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice.
    start = datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN).timestamp()
    end = datetime(2026, 10, 25, 4, 0, tzinfo=BERLIN).timestamp()
    store = MemoryStore()
    await store.cron_advance("digest", start)
    clock = FakeClock(start, end)
    cron_ingress, accept = ingress(
        cron(schedule="30 * * * *", timezone="Europe/Berlin"), clock, store
    )
    await run_until_idle(cron_ingress)
    assert [e.data["scheduled_at"] for e in accept.events] == [
        "2026-10-25T00:30:00+02:00",
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    assert [e.time for e in accept.events] == [e.data["scheduled_at"] for e in accept.events]
    assert len({e.id for e in accept.events}) == 5
    assert ticks(accept) == [start + 1800 + 3600 * i for i in range(5)]


# ---------------------------------------------------------------------- running


async def test_one_event_per_tick_with_the_scheduled_time_and_static_data() -> None:
    store = MemoryStore()
    clock = FakeClock(T0 + 2.5, T0 + 60)  # first start between ticks
    cfg = cron(event={"type": "digest/due", "data": {"list": "weekly"}, "subject": "s"})
    cron_ingress, accept = ingress(cfg, clock, store)
    assert isinstance(cron_ingress, Background) and cron_ingress.routes() == []
    await run_until_idle(cron_ingress)
    # Nothing before the first start is missed: the schedule begins with the next tick.
    assert ticks(accept) == [T0 + 5 * i for i in range(1, 13)]
    first = accept.events[0]
    assert first.data == {
        "list": "weekly",
        "scheduled_at": "2026-01-01T00:00:05+00:00",
        "scheduled_epoch": int(T0 + 5),
        "late": False,
    }
    assert first.time == "2026-01-01T00:00:05+00:00"
    assert first.type == "digest/due" and first.source == "bridge://digest"
    assert first.subject == "s" and first.correlationid == first.id
    assert await store.cron_last("digest") == T0 + 60
    # One sleep per tick (plus the one that ends the test): no polling.
    assert len(clock.sleeps) == 13
    # The inbox holds exactly these events, as structured CloudEvents.
    pending = await store.inbox_pending(0, 100)
    assert [orjson.loads(p.body)["id"] for p in pending] == [e.id for e in accept.events]


async def test_long_waits_are_slept_in_bounded_steps() -> None:
    store = MemoryStore()
    clock = FakeClock(T0 + 1, T0 + 86_400)
    cron_ingress, accept = ingress(cron(schedule="0 0 * * *"), clock, store)
    await run_until_idle(cron_ingress)
    assert ticks(accept) == [T0 + 86_400]
    assert max(clock.sleeps) <= 60.0 and len(clock.sleeps) == 1441


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [
        ("skip", [(50.0, False), (55.0, False)]),
        ("fire_once", [(45.0, True), (50.0, False), (55.0, False)]),
    ],
)
async def test_ticks_missed_while_down_are_skipped_or_the_latest_fires_once(
    misfire: str, expected: list[tuple[float, bool]]
) -> None:
    store = MemoryStore()
    await store.cron_advance("digest", T0)  # the last tick fired before the bridge went down
    clock = FakeClock(T0 + 47, T0 + 55)  # ticks 5 .. 45 came due while it was down
    cron_ingress, accept = ingress(cron(misfire=misfire, max_lag=0), clock, store)
    await run_until_idle(cron_ingress)
    assert fired(accept) == expected


async def test_a_tick_within_max_lag_fires_on_time_after_a_quick_restart() -> None:
    store = MemoryStore()
    await store.cron_advance("digest", T0)
    clock = FakeClock(T0 + 43, T0 + 50)  # down for ticks 5 .. 40; tick 40 is 3 s old
    cron_ingress, accept = ingress(cron(max_lag=10), clock, store)
    await run_until_idle(cron_ingress)
    assert fired(accept) == [
        (40.0, False),
        (45.0, False),
        (50.0, False),
    ]


@pytest.mark.parametrize(("misfire", "late_fired"), [("skip", []), ("fire_once", [25.0])])
async def test_a_stall_past_the_next_tick_is_a_misfire_not_a_burst(
    misfire: str, late_fired: list[float]
) -> None:
    store = MemoryStore()
    clock = FakeClock(T0 + 1, T0 + 40)
    clock.stall = {3: 13.0}  # the sleep towards tick 15 wakes at 28: ticks 15, 20, 25 are due
    cron_ingress, accept = ingress(cron(misfire=misfire, max_lag=0), clock, store)
    await run_until_idle(cron_ingress)
    assert [t for t, _ in fired(accept)] == sorted([5.0, 10.0, *late_fired, 30.0, 35.0, 40.0])
    assert [t for t, late in fired(accept) if late] == late_fired


async def test_a_store_outage_delays_a_tick_but_does_not_lose_or_repeat_it() -> None:
    store = MemoryStore()
    clock = FakeClock(T0 + 1, T0 + 10)
    cron_ingress, accept = ingress(cron(misfire="skip", max_lag=0), clock, store)
    accept.fail_next = 2  # tick 5 fails twice, then is stored (1.5 s late, before tick 10)
    await run_until_idle(cron_ingress)
    assert ticks(accept) == [T0 + 5, T0 + 10]
    assert accept.calls == 4
    assert [e.data["late"] for e in accept.events] == [False, False]


async def test_an_unreadable_position_is_retried_not_raised() -> None:
    class FlakyStore(MemoryStore):
        failures = 2

        async def cron_last(self, name: str) -> float | None:
            if self.failures:
                self.failures -= 1
                raise StoreError("connection refused")
            return await super().cron_last(name)

    store = FlakyStore()
    clock = FakeClock(T0 + 1, T0 + 10)
    cron_ingress, accept = ingress(cron(), clock, store)
    await run_until_idle(cron_ingress)
    assert ticks(accept) == [T0 + 5, T0 + 10]


# ---------------------------------------------------------------------- ids and replicas


def test_the_event_id_depends_only_on_the_connector_and_the_tick() -> None:
    assert tick_id("digest", T0) == tick_id("digest", T0)
    assert tick_id("digest", T0) != tick_id("digest", T0 + 5)
    assert tick_id("digest", T0) != tick_id("other", T0)
    store = MemoryStore()
    a, _ = ingress(cron(), FakeClock(T0, T0), store)
    b, _ = ingress(cron(event={"type": "digest/due", "data": {"x": 1}}), FakeClock(0, 0), store)
    assert a.event_of(T0).id == b.event_of(T0).id == tick_id("digest", T0)


async def test_replicas_sharing_a_store_fire_each_tick_once() -> None:
    store = MemoryStore()
    shared = Accepted(store)
    replicas = [
        ingress(cron(), FakeClock(T0 + 1 + skew, T0 + 100), store, accept=shared)[0]
        for skew in (0.0, 0.3, 2.0)
    ]
    await run_until_idle(*replicas)
    assert ticks(shared) == [T0 + 5 * i for i in range(1, 21)]
    assert shared.calls == 60  # every replica tried every tick; the inbox kept one of each
    assert len(await store.inbox_pending(0, 1000)) == 20


# ---------------------------------------------------------------------- through the runtime

HANDLED: list[Event[Any]] = []


async def collect(event: Event[Any], ctx: Any) -> None:
    HANDLED.append(event)


async def test_the_runtime_runs_the_schedule_and_its_ticks_reach_the_handlers() -> None:
    text = f"""\
version: 1
store: memory://
server: {{enabled: false}}
connectors:
  digest: {{type: cron, schedule: "* * * * * */5", event: {{type: digest/due}}}}
handlers:
  - {{id: collect, on: digest/due, type: python, function: "{__name__}:collect"}}
"""
    runtime = Runtime(load_config_text(text, {}, check=False))
    runtime.build()
    cron_ingress = runtime.ingresses["digest"]
    assert isinstance(cron_ingress, CronIngress)
    cron_ingress.clock = clock = FakeClock(T0 + 1, T0 + 30)
    HANDLED.clear()
    task = asyncio.create_task(runtime.run())
    await until(lambda: len(HANDLED) == 6, 10, "six ticks handled")
    assert clock.reached.is_set()
    runtime.request_stop()
    await asyncio.wait_for(task, 10)
    assert sorted(e.data["scheduled_epoch"] for e in HANDLED) == [T0 + 5 * i for i in range(1, 7)]
    assert {e.source for e in HANDLED} == {"bridge://digest"}


# ---------------------------------------------------------------------- config and catalog


class Digest(BaseModel):
    mailing_list: str
    scheduled_at: datetime
    scheduled_epoch: int
    late: bool


def test_the_data_is_validated_by_the_catalog_schema() -> None:
    store = MemoryStore()
    schema = load_schema(f"{__name__}:Digest")
    catalog = EventCatalog({"digest/due": schema})
    cfg = cron(event={"type": "digest/due", "data": {"mailing_list": "weekly"}})
    cron_ingress, _ = ingress(cfg, FakeClock(T0, T0), store, catalog=catalog)
    event = cron_ingress.event_of(T0 + 5)
    assert isinstance(event.data, Digest) and event.data.scheduled_epoch == T0 + 5
    with pytest.raises(ConfigError) as info:
        ingress(cron(), FakeClock(T0, T0), store, catalog=catalog)  # no `mailing_list`
    assert info.value.issues[0].path == "connectors.digest.event.data"
    with pytest.raises(ConfigError) as info:
        ingress(cron(event={"type": "other/x"}), FakeClock(T0, T0), store, catalog=catalog)
    assert info.value.issues[0].path == "connectors.digest.event.type"


def test_the_config_check_reports_catalog_problems_relative_to_the_connector() -> None:
    text = config_text("type: cron\nschedule: '@daily'\nevent: {type: digest/due}\n")
    events = (
        f"events:\n  digest/due: {{schema: '{__name__}:Digest'}}\n  other/x: {{schema: none}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text + events, {})
    (issue,) = caught.value.issues
    assert issue.path == "connectors.digest.event.data" and "mailing_list" in issue.message
    assert issue.line == 7
    with pytest.raises(ConfigError) as caught:
        load_config_text(text.replace("digest/due", "digest/late") + events, {})
    (issue,) = caught.value.issues
    assert issue.path == "connectors.digest.event.type" and "not in the catalog" in issue.message


def config_text(connector: str) -> str:
    head = "version: 1\nstore: memory://\nconnectors:\n  digest:\n"
    return head + textwrap.indent(textwrap.dedent(connector), "    ")


@pytest.mark.parametrize(
    ("connector", "path", "line", "message"),
    [
        (
            "type: cron\nschedule: '61 * * * *'\nevent: {type: a/b}\n",
            "connectors.digest.schedule",
            6,
            "is not a cron expression",
        ),
        (
            "type: cron\nschedule: '0 0 30 2 *'\nevent: {type: a/b}\n",
            "connectors.digest.schedule",
            6,
            "never fires",
        ),
        (
            "type: cron\nschedule: '@daily'\ntimezone: Mars/Olympus\nevent: {type: a/b}\n",
            "connectors.digest.timezone",
            7,
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            "type: cron\nschedule: '@daily'\nevent: {type: a/b, data: {late: 1}}\n",
            "connectors.digest.event.data",
            7,
            "late is set by each tick",
        ),
        (
            "type: cron\nschedule: '@daily'\nmisfire: catch_up\nevent: {type: a/b}\n",
            "connectors.digest.misfire",
            7,
            "'skip' or 'fire_once'",
        ),
    ],
)
def test_config_mistakes_name_the_path_and_line(
    connector: str, path: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(config_text(connector), {})
    (issue,) = info.value.issues
    assert (issue.path, issue.line) == (path, line)
    assert message in issue.message


def test_a_cron_connector_is_a_registered_kind_that_loads() -> None:
    assert KINDS["cron"].config is CronConfig and KINDS["cron"].ingress is not None
    cfg = load_config_text(
        config_text(
            "type: cron\nschedule: '0 9 * * mon-fri'\ntimezone: Europe/Berlin\n"
            "misfire: fire_once\nmax_lag: 1m\nevent: {type: a/b, data: {k: v}}\n"
        ),
        {},
    )
    conn = cfg.connectors["digest"]
    assert isinstance(conn, CronConfig)
    assert (conn.misfire, conn.max_lag, conn.event.data) == ("fire_once", 60.0, {"k": "v"})
