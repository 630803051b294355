"""``type: cron``: one event per tick of a cron schedule, fired once across replicas.

The schedule is a cron expression read by croniter: five fields (minute hour
day-of-month month day-of-week), or six with a trailing seconds field
(``* * * * * */10`` is every ten seconds), or a nickname like ``@hourly``. Ticks
are computed in ``timezone`` (an IANA name, default UTC), so ``0 9 * * *`` means
09:00 local time all year. Across a DST change the schedule does what croniter
does: a time that does not exist (02:30 on the spring-forward night) fires at the
first valid time after it (03:00); a time that happens twice (02:30 on the
fall-back night) fires both times (two ticks with different epochs).

Each tick becomes one event: ``type``, ``source`` and ``subject`` from ``event``,
CloudEvents ``time`` = the scheduled time, and ``data`` = ``event.data`` (static)
plus ``scheduled_at`` (ISO 8601 in the schedule's timezone), ``scheduled_epoch``
(seconds) and ``late`` (true when fired by ``misfire: fire_once``). The event id
is a uuid5 of the connector name and the tick, so every replica builds the same
event for the same tick and the inbox keeps only the first: one firing per tick,
however many replicas share the store. A tick counts once it is in the inbox
(durable); then the schedule's position in the store (``cron_advance``) moves.

When a tick is missed (the bridge was down, or stalled past the next tick):

* a tick fires on time if the bridge was waiting for it when it came due, or if
  it came due at most ``max_lag`` ago (so a quick restart loses nothing);
* older ticks are missed. ``misfire: skip`` drops them; ``misfire: fire_once``
  fires only the latest of them, once, with ``late: true``. Never a burst: one
  step of the schedule fires at most one event.

The store's position says what was missed across restarts; on the very first
start nothing is missed and the schedule begins at the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.duration import Duration
from bridge.errors import ConfigError, ConfigIssue, InvalidEvent
from bridge.events import Event, EventCatalog, load_schema
from bridge.transport import ConnectorConfig, IngressEnv

log = logging.getLogger("bridge.cron")

TICK_FIELDS = ("scheduled_at", "scheduled_epoch", "late")
_NAMESPACE = uuid.UUID("0b8f3c1e-5d7a-4f62-9c4e-2a61d3f0c7b5")
_LONGEST_SLEEP = 60.0  # re-read the wall clock at least this often (NTP steps, suspend)
_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class CronEventSpec(BaseModel):
    """The event each tick fires."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, description="Event type of every tick.")
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="Static data; each tick adds `scheduled_at`, `scheduled_epoch` and `late`.",
    )
    source: str | None = Field(None, description="CloudEvents source. Default: `bridge://<name>`.")
    subject: str | None = Field(None, description="CloudEvents subject.")

    @field_validator("data")
    @classmethod
    def _no_tick_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = [key for key in TICK_FIELDS if key in value]
        if taken:
            raise ValueError(f"{', '.join(taken)} is set by each tick; use another key")
        return value


class CronConfig(ConnectorConfig):
    """Fire one event per tick of a cron schedule."""

    type: Literal["cron"] = Field("cron", description="Connector kind: a cron schedule.")
    schedule: str = Field(
        description="Cron expression: 5 fields, or 6 with seconds last (`* * * * * */10`), "
        "or `@hourly`, `@daily` ...",
        examples=["0 9 * * mon-fri", "*/15 * * * *", "* * * * * */30"],
    )
    timezone: str = Field("UTC", description="IANA time zone of the schedule, e.g. Europe/Berlin.")
    event: CronEventSpec = Field(
        description="The event each tick fires: its type, static data, source and subject."
    )
    misfire: Literal["skip", "fire_once"] = Field(
        "skip",
        description="Ticks missed while the bridge was down: `skip` them, or `fire_once` "
        "(the latest missed tick fires once, late).",
    )
    max_lag: Duration = Field(
        10.0,
        description="A tick that came due at most this long ago still fires on time "
        "(e.g. across a quick restart); older ones are missed.",
    )

    def check(self, cfg: Any) -> list[tuple[tuple[str, ...], str]]:
        """Cross-checks against the whole config (``bridge validate``): the event type is
        in the catalog and a tick's data passes its schema. Paths are relative to the
        connector."""
        try:
            catalog = EventCatalog(
                {name: load_schema(spec.schema_, cfg.base_dir) for name, spec in cfg.events.items()}
            )
        except Exception:  # a schema that does not load is reported by the catalog check
            return []
        return catalog_problems(self, catalog)

    @field_validator("schedule")
    @classmethod
    def _expression(cls, value: str) -> str:
        Schedule(value, UTC).next_after(time.time())  # ValueError names what is wrong
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone_of(value)
        return value


def zone_of(name: str) -> tzinfo:
    """The ``ZoneInfo`` for an IANA name.

    Raises:
        ValueError: no such time zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name like UTC or Europe/Berlin"
        ) from None


def catalog_problems(cfg: CronConfig, catalog: Any) -> list[tuple[tuple[str, ...], str]]:
    """What the catalog has against this connector's events: an unknown type, or data
    that fails the type's schema (checked on the next tick's data)."""
    schema = catalog.resolve(cfg.event.type)
    if schema is None:
        return [(("event", "type"), f"event type {cfg.event.type!r} is not in the catalog")]
    tick = Schedule(cfg.schedule, zone_of(cfg.timezone)).next_after(time.time())
    try:
        schema.validate(tick_data(cfg, tick, zone_of(cfg.timezone), late=False))
    except InvalidEvent as exc:
        return [(("event", "data"), f"a tick's data does not match the schema: {exc.detail}")]
    return []


def tick_data(cfg: CronConfig, tick: float, zone: tzinfo, *, late: bool) -> dict[str, Any]:
    """A tick's data: the static data plus when it was scheduled."""
    epoch: float | int = int(tick) if float(tick).is_integer() else tick
    return {
        **cfg.event.data,
        "scheduled_at": datetime.fromtimestamp(tick, zone).isoformat(),
        "scheduled_epoch": epoch,
        "late": late,
    }


class Schedule:
    """A cron expression in a time zone: the ticks, as epoch seconds.

    Raises (on construction):
        ValueError: the expression is invalid, never fires, or croniter is missing.
    """

    def __init__(self, expression: str, zone: tzinfo) -> None:
        try:
            from croniter import croniter
        except ImportError:
            raise ValueError(
                "the cron connector needs croniter: install fanout-bridge[cron]"
            ) from None
        self._croniter = croniter
        self.expression = expression
        self.zone = zone
        if not croniter.is_valid(expression):
            raise ValueError(
                f"{expression!r} is not a cron expression (minute hour day month weekday"
                " [second], or @hourly, @daily ...)"
            )

    def next_after(self, epoch: float) -> float:
        """The first tick strictly after ``epoch``.

        Raises:
            ValueError: the schedule has no tick after ``epoch`` (e.g. ``0 0 30 2 *``).
        """
        start = datetime.fromtimestamp(epoch, self.zone)
        try:
            return float(self._croniter(self.expression, start).get_next(float))
        except Exception as exc:  # CroniterBadDateError: no such date (February 30th)
            raise ValueError(f"{self.expression!r} never fires ({exc})") from None

    def latest_until(self, epoch: float) -> float:
        """The last tick at or before ``epoch``."""
        start = datetime.fromtimestamp(epoch, self.zone)
        previous = float(self._croniter(self.expression, start).get_prev(float))
        following = self.next_after(previous)
        return following if following <= epoch else previous

    def local(self, tick: float) -> datetime:
        """The tick as an aware datetime in the schedule's zone."""
        return datetime.fromtimestamp(tick, self.zone)


class Clock(Protocol):
    """Wall-clock time and sleeping; tests inject their own."""

    def now(self) -> float:
        """Epoch seconds."""

    async def sleep(self, seconds: float) -> None:
        """Sleep (cancellable)."""


class SystemClock:
    """The real clock: ``time.time`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def tick_id(name: str, tick: float) -> str:
    """The event id of a connector's tick: the same in every replica and every restart."""
    stamp = datetime.fromtimestamp(tick, UTC).isoformat().replace("+00:00", "Z")
    return str(uuid.uuid5(_NAMESPACE, f"{name}\x1f{stamp}"))


class CronIngress:
    """Fires the schedule's ticks into the inbox (a ``Background`` ingress, no routes).

    Args:
        cfg: the connector's config.
        name: the connector's name (part of every tick's id and the store position).
        env: the runtime's ingress environment; ``env.store`` keeps the position.
        clock: the clock to read and sleep on (tests); default the system clock.

    Raises:
        ConfigError: the event type is not in the catalog, or the data fails its schema.
    """

    def __init__(
        self, cfg: CronConfig, name: str, env: IngressEnv, clock: Clock | None = None
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.env = env
        self.clock: Clock = clock or SystemClock()
        self.schedule = Schedule(cfg.schedule, zone_of(cfg.timezone))
        self.source = cfg.event.source or f"bridge://{name}"
        self._schema = self._check_catalog()

    def routes(self) -> list[Any]:
        return []

    def _check_catalog(self) -> Any:
        catalog = self.env.catalog
        if catalog is None:
            return None
        problems = catalog_problems(self.cfg, catalog)
        if problems:
            where = ("connectors", self.name)
            issues = [ConfigIssue(".".join((*where, *path)), text) for path, text in problems]
            raise ConfigError(issues, "the config")
        return catalog.resolve(self.cfg.event.type)

    # ------------------------------------------------------------------ events

    def data_of(self, tick: float, *, late: bool) -> dict[str, Any]:
        """A tick's data: the static data plus when it was scheduled."""
        return tick_data(self.cfg, tick, self.schedule.zone, late=late)

    def event_of(self, tick: float, *, late: bool = False) -> Event[Any]:
        """The event of one tick (deterministic id; see ``tick_id``)."""
        data: Any = self.data_of(tick, late=late)
        if self._schema is not None:
            data = self._schema.validate(data)
        event_id = tick_id(self.name, tick)
        return Event(
            id=event_id,
            source=self.source,
            type=self.cfg.event.type,
            data=data,
            time=self.schedule.local(tick).isoformat(),
            subject=self.cfg.event.subject,
            correlationid=event_id,
        )

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Fire ticks until cancelled. Store failures are logged and retried, never raised."""
        position = await self._start_position()
        awaited: float | None = None  # the tick the bridge slept until
        failures = 0
        while True:
            now = self.clock.now()
            first = self.schedule.next_after(position)
            if first > now:
                awaited = first
                await self.clock.sleep(min(first - now, _LONGEST_SLEEP))
                continue
            latest = self.schedule.latest_until(now)
            on_time = latest == first == awaited or now - latest <= self.cfg.max_lag
            if first < latest or not on_time:
                self._log_missed(first, latest, on_time)
            if on_time or self.cfg.misfire == "fire_once":
                try:
                    await self.fire(latest, late=not on_time)
                except Exception as exc:  # the store is down: try again; a later tick supersedes
                    delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
                    failures += 1
                    log.error(
                        "cron tick not stored; retrying",
                        extra={"connector": self.name, "error": str(exc), "retry_in": delay},
                    )
                    await self.clock.sleep(delay)
                    continue
            failures = 0
            position = latest

    def _log_missed(self, first: float, latest: float, on_time: bool) -> None:
        """Several ticks came due at once (downtime, a stall), or the only one is too old."""
        if on_time:
            action = "only the latest fires"
        elif self.cfg.misfire == "fire_once":
            action = "the latest fires once, late"
        else:
            action = "skipped"
        log.warning(
            "cron ticks missed: %s",
            action,
            extra={
                "connector": self.name,
                "first_due": self.schedule.local(first).isoformat(),
                "latest_due": self.schedule.local(latest).isoformat(),
                "misfire": self.cfg.misfire,
            },
        )

    async def fire(self, tick: float, *, late: bool = False) -> bool:
        """Put one tick's event in the inbox, then advance the stored position.

        Returns True if this call stored the event, False if another replica (or an
        earlier run) already had. Raises what the inbox raises (nothing was fired).
        """
        event = self.event_of(tick, late=late)
        (fresh,) = await self.env.accept([event])
        log.info(
            "cron tick fired" if fresh else "cron tick already fired",
            extra={
                "connector": self.name,
                "event_id": event.id,
                "tick": event.time,
                "late": late,
            },
        )
        try:
            await self.env.store.cron_advance(self.name, tick)
        except Exception as exc:  # the tick is in the inbox; the position catches up later
            log.warning(
                "cron position not saved", extra={"connector": self.name, "error": str(exc)}
            )
        return bool(fresh)

    async def _start_position(self) -> float:
        """Where the schedule stands: the stored position, or now on the first start."""
        failures = 0
        while True:
            try:
                last = await self.env.store.cron_last(self.name)
                if last is not None:
                    return float(last)
                now = self.clock.now()
                # Remember the first start, so ticks missed before the first firing are seen.
                await self.env.store.cron_advance(self.name, now)
                return now
            except Exception as exc:
                delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
                failures += 1
                log.error(
                    "cron position unreadable; retrying",
                    extra={"connector": self.name, "error": str(exc), "retry_in": delay},
                )
                await self.clock.sleep(delay)


def ingress(cfg: CronConfig, name: str, env: IngressEnv) -> CronIngress:
    """The ``ConnectorKind.ingress`` factory."""
    return CronIngress(cfg, name, env)


__all__ = [
    "Clock",
    "CronConfig",
    "CronIngress",
    "Schedule",
    "SystemClock",
    "ingress",
    "tick_id",
]
