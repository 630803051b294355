"""``type: join``: wait for other events, then emit one event with what was collected.

A ``start`` event opens a join; member events (``on``) that ``match`` it are
collected until ``expect`` of them arrived (or, without ``expect``, the first
one), and the ``emit`` event is sent with every member. If ``within`` passes
first, the ``on_timeout`` event is sent instead, listing what is missing.

- ``match``, ``expect``, ``member_key`` and ``collect`` are CEL expressions;
  ``match`` sees ``event`` (the member) and ``start``, ``expect`` sees ``start``.
- ``expect`` is a count, or a list whose size is the count; with a list and
  ``member_key``, the timeout event names the missing items.
- Members that arrive before their join opens are buffered for ``buffer`` and
  collected when it opens. Every store step is idempotent, so a redelivered
  event changes nothing, and each join is closed once, even across replicas:
  the close and the outcome event are one transaction.
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

import bridge.jsonio as jsonio
from bridge.context import Context
from bridge.duration import Duration
from bridge.errors import Fatal
from bridge.events import Event, now_iso
from bridge.handling import EventTypes, HandlerConfig, HandlerEnv
from bridge.routing import compile_filter
from bridge.store.contracts import InboxEntry, Join, Store

_JOIN_NAMESPACE = uuid.UUID("3d0c7c1a-8f5e-4b2d-9c6a-1e2f3a4b5c6d")


def _on_optional(schema: dict[str, Any]) -> None:
    # `start` is added to `on` before validation, so a join may leave `on` out.
    schema["required"] = [name for name in schema.get("required", []) if name != "on"]


class JoinHandlerConfig(HandlerConfig):
    """Wait for member events that match a start event; emit what was collected."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_on_optional)

    type: Literal["join"] = Field(
        "join", description="Handler kind: wait for other events, then emit one."
    )
    start: EventTypes = Field(
        description="Event type (or glob), or a list of them, that opens a join; the handler "
        "subscribes to them itself."
    )
    match: str = Field(
        description="CEL over `event` (a member) and `start`: does this member belong to "
        "this join? e.g. `event.data.batch_id == start.data.batch_id`."
    )
    expect: str | None = Field(
        None,
        description="CEL over `start`: how many members complete the join (a number, or a "
        "list whose size counts). Without it, the first member completes it.",
    )
    member_key: str | None = Field(
        None,
        description="CEL over `event`: the member's item in the `expect` list, so a timeout "
        "can name what is missing, e.g. `event.data.report_id`.",
    )
    collect: str | None = Field(
        None, description="CEL over `event`: what to keep of each member (default its data)."
    )
    within: Duration = Field(description="How long a join waits before it times out.")
    buffer: Duration = Field(
        600.0, description="How long a member that arrived before its join opened is kept."
    )
    emit: str = Field(description="Type of the event sent when a join completes.")
    on_timeout: str | None = Field(
        None, description="Type of the event sent when a join times out (default: `emit`)."
    )

    @model_validator(mode="before")
    @classmethod
    def _start_is_subscribed(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "start" in raw:
            start = raw["start"]
            start = [start] if isinstance(start, str) else list(start or [])
            members = raw.get("on") or []
            members = [members] if isinstance(members, str) else list(members)
            raw = {**raw, "start": start, "on": members + [s for s in start if s not in members]}
        return raw

    def check(self, cfg: Any) -> list[tuple[tuple[str, ...], str]]:
        problems: list[tuple[tuple[str, ...], str]] = []
        for name in ("match", "expect", "member_key", "collect"):
            text = getattr(self, name)
            if text is None:
                continue
            try:
                compile_filter(text)
            except ValueError as exc:
                problems.append(((name,), f"invalid CEL expression: {exc}"))
        return problems


def join_id(handler: str, start_id: str) -> str:
    """One join per (handler, start event): a redelivered start reopens nothing."""
    return str(uuid.uuid5(_JOIN_NAMESPACE, f"{handler}\x1f{start_id}"))


class JoinHandler:
    """Opens joins on start events, adds members, and closes each join once."""

    def __init__(self, cfg: JoinHandlerConfig, env: HandlerEnv) -> None:
        self.cfg = cfg
        self.store: Store | None = env.store
        self.match = compile_filter(cfg.match)
        self.expect = compile_filter(cfg.expect) if cfg.expect else None
        self.member_key = compile_filter(cfg.member_key) if cfg.member_key else None
        self.collect = compile_filter(cfg.collect) if cfg.collect else None
        self.wall = time.time
        self.wake: Callable[[], None] = env.wake

    def _store(self) -> Store:
        if self.store is None:
            raise Fatal("the join handler needs the bridge's store")
        return self.store

    def is_start(self, event_type: str) -> bool:
        return any(p == event_type or fnmatch.fnmatchcase(event_type, p) for p in self.cfg.start)

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        if self.is_start(event.type):
            return await self._open(event)
        return await self._member(event)

    # ------------------------------------------------------------------ start

    async def _open(self, start: Event[Any]) -> Any:
        store = self._store()
        start_doc = start.to_dict()
        expected = self._expected(start_doc)
        join = Join(
            id=join_id(self.cfg.id, start.id),
            handler=self.cfg.id,
            start=start_doc,
            expected=expected,
            deadline=self.wall() + self.cfg.within,
        )
        await store.join_open(join)
        current: Join | None = None
        # Members that came first were buffered: collect those that belong here, once.
        collected = []
        for member in await store.join_buffered(self.cfg.id, self.wall()):
            if self._matches(member, start_doc):
                current = await store.join_add(join.id, member["id"], self._kept(member))
                collected.append(member["id"])
        if collected:
            await store.join_buffer_remove(self.cfg.id, collected)
        if current is None:
            current = await store.join_get(join.id)
        if current is not None and current.status == "open":
            await self._maybe_complete(current)
        return {"join": join.id, "opened": True, "expected": expected}

    def _expected(self, start_doc: dict[str, Any]) -> int | None:
        if self.expect is None:
            return None
        value = _evaluate(self.expect, {"start": start_doc}, "expect")
        if isinstance(value, list | tuple):
            return len(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return int(value)
        raise Fatal(f"expect gave {value!r}: a count or a list was needed")

    # ------------------------------------------------------------------ member

    async def _member(self, member: Event[Any]) -> Any:
        store = self._store()
        doc = member.to_dict()
        joined = await self._add_to_open(doc)
        if joined is not None:
            return joined
        # No open join yet: keep the member for one that opens later, then look once more,
        # in case a start committed between our look and our write.
        await store.join_buffer_add(self.cfg.id, member.id, doc, self.wall() + self.cfg.buffer)
        joined = await self._add_to_open(doc)
        return joined if joined is not None else {"buffered": True}

    async def _add_to_open(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        store = self._store()
        for join in await store.join_open_list(self.cfg.id):
            if not self._matches(doc, join.start):
                continue
            current = await store.join_add(join.id, doc["id"], self._kept(doc))
            if current is None:
                continue
            await self._maybe_complete(current)
            return {"join": join.id, "members": len(current.members)}
        return None

    def _matches(self, member: dict[str, Any], start: dict[str, Any]) -> bool:
        try:
            return bool(self.match.execute({"event": member, "start": start}))
        except Exception:  # a member missing a field matches nothing
            return False

    def _kept(self, member: dict[str, Any]) -> dict[str, Any]:
        value = member.get("data")
        if self.collect is not None:
            value = _evaluate(self.collect, {"event": member}, "collect")
        kept: dict[str, Any] = {"id": member["id"], "type": member.get("type"), "data": value}
        if self.member_key is not None:
            try:
                kept["key"] = _plain(self.member_key.execute({"event": member}))
            except Exception:
                kept["key"] = None
        return kept

    # ------------------------------------------------------------------ close

    async def _maybe_complete(self, join: Join) -> None:
        needed = 1 if join.expected is None else join.expected
        if len(join.members) >= needed:
            entry = self.outcome_entry(join, "completed")
            if await self._store().join_close(join.id, "completed", entry):
                self.wake()

    def outcome_entry(self, join: Join, status: str) -> InboxEntry:
        """The inbox entry of the event that reports how ``join`` ended."""
        start = join.start
        members = list(join.members.values())
        data: dict[str, Any] = {
            "join_id": join.id,
            "status": status,
            "start": {"id": start.get("id"), "type": start.get("type"), "data": start.get("data")},
            "expected": join.expected,
            "received": len(members),
            "members": members,
        }
        if status != "completed":
            data["missing"] = self._missing(join, members)
        kind = self.cfg.emit if status == "completed" else (self.cfg.on_timeout or self.cfg.emit)
        event: Event[Any] = Event(
            id=str(uuid.uuid5(_JOIN_NAMESPACE, f"{join.id}\x1f{status}")),
            source=f"bridge://handler/{self.cfg.id}",
            type=kind,
            data=data,
            time=now_iso(),
            subject=start.get("subject"),
            correlationid=str(start.get("correlationid") or start.get("id") or join.id),
            traceparent=start.get("traceparent"),
            parentid=start.get("id"),
        )
        return InboxEntry(
            id=event.id, body=event.to_json(), source="join", event_source=event.source
        )

    def _missing(self, join: Join, members: list[dict[str, Any]]) -> Any:
        expected = join.expected or 1
        if self.expect is not None and self.member_key is not None:
            try:
                wanted = self.expect.execute({"start": join.start})
            except Exception:
                wanted = None
            if isinstance(wanted, list | tuple):
                got = {jsonio.dumps(m.get("key")) for m in members}
                return [_plain(w) for w in wanted if jsonio.dumps(_plain(w)) not in got]
        return max(expected - len(members), 0)


def _evaluate(program: Any, scope: dict[str, Any], name: str) -> Any:
    try:
        return _plain(program.execute(scope))
    except Exception as exc:
        raise Fatal(f"{name} failed: {exc}") from exc


def _plain(value: Any) -> Any:
    """CEL values as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def build(cfg: JoinHandlerConfig, env: HandlerEnv) -> JoinHandler:
    return JoinHandler(cfg, env)
