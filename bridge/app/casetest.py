"""Runs the cases of ``bridge test`` (``bridge.app.cases``) against a config: each
message through the connector's normalizer, the router and, when runs are
expected, the real ``Dispatcher`` with a memory store and a clock that does not
wait; the verdict is every difference from what the case expects.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bridge.jsonio as jsonio
from bridge.app.cases import UNSET, Case, ExpectEmitted, ExpectEvent, ExpectRun, Message, Stub
from bridge.clock import ManualClock
from bridge.config import BridgeConfig
from bridge.context import Context
from bridge.errors import Fatal, InvalidEvent
from bridge.events import Event
from bridge.normalize import Normalizer
from bridge.store.memory import MemoryStore


@dataclass(slots=True)
class Outcome:
    """One case's verdict: its differences from what was expected (none: it passed)."""

    name: str
    diffs: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.diffs


class _StubHandler:
    def __init__(self, stub: Stub, clock: Any) -> None:
        self.stub = stub
        self.clock = clock

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        stub = self.stub
        if stub.takes > 0:
            await self.clock.sleep(stub.takes)
        failing = stub.error is not None and (
            stub.fail_attempts is None or ctx.attempt <= stub.fail_attempts
        )
        if failing:
            raise _recorded_error(stub.error or "", stub.fatal)
        return stub.result

    async def invoke_batch(self, events: Sequence[Event[Any]], ctx: Context) -> Any:
        return await self.invoke(events[0], ctx)


def _recorded_error(text: str, fatal: bool) -> Exception:
    """``"TimeoutError: slow"`` -> ``TimeoutError("slow")`` for a built-in exception name,
    else ``RuntimeError(text)``; ``Fatal`` when ``fatal``."""
    import builtins

    name, sep, message = text.partition(": ")
    kind = getattr(builtins, name if sep else text, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return Fatal(text) if fatal else kind(message) if sep else kind()
    return Fatal(text) if fatal else RuntimeError(text)


class _NoWait:
    """A clock whose sleeps return at once: retry delays pass instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class CaseRunner:
    """Runs cases against one config, each with a fresh runtime and memory store."""

    def __init__(self, cfg: BridgeConfig) -> None:
        self.cfg = cfg
        _never_park(cfg)

    async def run(self, case: Case) -> Outcome:
        from bridge.app.runtime import Runtime

        outcome = Outcome(case.name)
        clock = ManualClock() if case.messages is not None else _NoWait()
        runtime = Runtime(self.cfg, store=MemoryStore(), clock=clock)
        runtime.build()
        if isinstance(clock, ManualClock) and runtime.dispatcher is not None:
            runtime.dispatcher.wall = clock.time  # flow state reads the same clock
            for bound in runtime.handlers.values():  # and so do cancellations
                if bound.cancel is not None:
                    bound.cancel.wall = clock.time
            # A timeline's batches wait for their timeout on its clock.
            runtime.dispatcher.runner.batches.call_later = _on_clock(clock)
        else:
            _batches_at_once(runtime)
        convert = _converter(runtime, case.connector)
        if convert is None:
            names = sorted({"api", *(n for n, c in self.cfg.connectors.items() if _takes(c))})
            outcome.diffs.append(
                f"connector: no consuming connector {case.connector!r} (known: {', '.join(names)})"
            )
            return outcome
        unknown = sorted(set(case.stubs) - set(runtime.handlers))
        if unknown:
            outcome.diffs.append(f"stubs: no handler {', '.join(map(repr, unknown))}")
            return outcome
        for handler_id, stub in case.stubs.items():
            runtime.handlers[handler_id].handler = _StubHandler(stub, clock)
        await runtime.store.open()
        try:
            if case.messages is not None:
                await _timeline(case, runtime, convert, outcome, clock)
            else:
                await self._check(case, runtime, convert, outcome)
        finally:
            if runtime.dispatcher is not None:
                await runtime.dispatcher.close()
            await runtime.store.close()
        return outcome

    async def _check(self, case: Case, runtime: Any, convert: Converter, outcome: Outcome) -> None:
        expect = case.expect
        diffs = outcome.diffs
        if case.message is None:  # pragma: no cover - a timeline runs elsewhere
            return
        try:
            events = convert(case.message)
        except InvalidEvent as exc:
            if expect.invalid is None:
                diffs.append(f"message: rejected as {exc.reason}: {_show(exc.detail)}")
            elif expect.invalid != exc.reason:
                diffs.append(f"invalid: expected {expect.invalid!r}, got {exc.reason!r}")
            return
        if expect.count is not None and expect.count != len(events):
            diffs.append(f"count: expected {expect.count} events, got {len(events)}")
        if expect.invalid is not None:
            became = ", ".join(e.type for e in events) or "nothing"
            diffs.append(f"invalid: expected {expect.invalid!r}, but it became event {became}")
        if not events:
            if expect.count != 0:
                diffs.append("message: it became no event (the webhook ignored it)")
            return
        event = events[0]
        if expect.event is not None:
            diffs.extend(_event_diffs(expect.event, event))
        dispatcher = runtime.dispatcher
        subs = dispatcher.router.match(event)
        matched = [s.handler_id for s in subs]
        if expect.handlers is not None and sorted(expect.handlers) != sorted(matched):
            missing = sorted(set(expect.handlers) - set(matched))
            extra = sorted(set(matched) - set(expect.handlers))
            parts = [
                f"missing {missing}" if missing else "",
                f"unexpected {extra}" if extra else "",
            ]
            diffs.append(
                f"handlers: expected {sorted(expect.handlers)}, got {sorted(matched)} "
                f"({'; '.join(p for p in parts if p)})"
            )
        should_run = case.run if case.run is not None else bool(expect.runs or expect.emitted)
        if not should_run:
            return
        finished = await dispatcher.dispatch(event, subs, connector=case.connector)
        runs = {r.handler: r for r in finished}
        for handler_id, want in expect.runs.items():
            spec = want if isinstance(want, ExpectRun) else ExpectRun(status=want)
            diffs.extend(run_diffs(handler_id, spec, runs.get(handler_id)))
        if expect.emitted is not None:
            pending = await runtime.store.inbox_pending(0, 10_000)
            emitted = [jsonio.loads(e.body) for e in pending]
            diffs.extend(_emitted_diffs(expect.emitted, emitted))


Converter = Callable[[Message], list[Event[Any]]]
_TIMELINE_LIMIT = 7 * 86400.0  # the longest a timeline's runs may take, on its clock


async def _timeline(
    case: Case, runtime: Any, convert: Converter, outcome: Outcome, clock: Any
) -> None:
    """Hand each message over at its ``at``, run everything until final on the hand-moved
    clock, and compare each (event, handler) run with ``expect.timeline``."""
    dispatcher = runtime.dispatcher
    started: dict[tuple[str, str], float] = {}
    ended: dict[tuple[str, str], float] = {}
    for bound in runtime.handlers.values():
        bound.handler = _Timed(bound.handler, bound.id, clock, started, ended)
    messages = sorted(case.messages or (), key=lambda m: m.at)
    tasks: list[tuple[str, asyncio.Future[Any]]] = []
    for message in messages:
        await clock.advance(max(0.0, message.at - clock.time()))
        try:
            events = convert(message)
        except InvalidEvent as exc:
            outcome.diffs.append(f"messages (at {message.at:g}s): rejected as {exc.reason}")
            continue
        for event in events:
            subs = dispatcher.router.match(event)
            run = dispatcher.dispatch(event, subs, connector=case.connector)
            tasks.append((event.id, asyncio.ensure_future(run)))
    while not all(t.done() for _, t in tasks) and clock.time() < _TIMELINE_LIMIT:
        due = clock.next_due()
        await clock.advance(1.0 if due is None else max(due - clock.time(), 0.0))
    runs: dict[str, dict[str, Any]] = {}
    for event_id, task in tasks:
        if not task.done():
            task.cancel()
            outcome.diffs.append(f"timeline.{event_id}: runs not final after {_TIMELINE_LIMIT:g}s")
            continue
        for r in task.result():
            runs.setdefault(event_id, {})[r.handler] = r
    for event_id, handlers in case.expect.timeline.items():
        for handler_id, want in handlers.items():
            spec = want if isinstance(want, ExpectRun) else ExpectRun(status=want)
            where = f"timeline.{event_id}.{handler_id}"
            run = runs.get(event_id, {}).get(handler_id)
            outcome.diffs.extend(
                d.replace(f"runs.{handler_id}", where, 1) for d in run_diffs(handler_id, spec, run)
            )
            for name, when, verb in (
                ("started_at", started, "started"),
                ("ended_at", ended, "ended"),
            ):
                want_at = getattr(spec, name)
                at = when.get((event_id, handler_id))
                if want_at is not None and at != want_at:
                    got = "never" if at is None else f"at {at:g}s"
                    outcome.diffs.append(f"{where}.{name}: expected {want_at:g}s, {verb} {got}")


class _Timed:
    """A handler that notes when its first attempt for each event started, and when its
    last one ended (a batch's: for each of its events)."""

    def __init__(
        self,
        inner: Any,
        handler_id: str,
        clock: Any,
        started: dict[tuple[str, str], float],
        ended: dict[tuple[str, str], float],
    ) -> None:
        self.inner = inner
        self.handler_id = handler_id
        self.clock = clock
        self.started = started
        self.ended = ended

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        return await self.invoke_batch([event], ctx, one=True)

    async def invoke_batch(
        self, events: Sequence[Event[Any]], ctx: Context, one: bool = False
    ) -> Any:
        keys = [(event.id, self.handler_id) for event in events]
        for key in keys:
            self.started.setdefault(key, self.clock.time())
        try:
            if one:
                return await self.inner.invoke(events[0], ctx)
            return await self.inner.invoke_batch(events, ctx)
        finally:
            for key in keys:
                self.ended[key] = self.clock.time()


def _takes(conn: Any) -> bool:
    return conn.consume is not None or conn.type == "webhook"


def _converter(runtime: Any, connector: str) -> Converter | None:
    """Message -> events the way ``connector`` does it: its normalizer, or its webhook parser."""
    inbox = connector in ("api", "inbox")
    slot = next(
        (s for s in runtime.slots if s.name == connector or (inbox and s.name in ("api", "inbox"))),
        None,
    )
    if slot is not None:
        normalizer: Normalizer = slot.normalizer

        def normalize(message: Message) -> list[Event[Any]]:
            return [normalizer(message.delivery(normalizer.connector))]

        return normalize
    ingress = runtime.ingresses.get(connector)
    if ingress is None or not hasattr(ingress, "parse") or not hasattr(ingress, "events"):
        return None

    def webhook(message: Message) -> list[Event[Any]]:
        delivery = message.delivery(connector)
        headers = dict(delivery.headers)
        parsed = ingress.parse(delivery.body, headers)
        return list(ingress.events(parsed.candidates, headers))

    return webhook


def _never_park(cfg: BridgeConfig) -> None:
    """Every retry waits inline (on the instant clock), so a run ends final, never parked."""
    if hasattr(cfg.defaults, "inline_retry_limit"):
        cfg.defaults.inline_retry_limit = math.inf
    for conn in cfg.connectors.values():
        if (
            conn.consume is not None
            and getattr(conn.consume, "inline_retry_limit", None) is not None
        ):
            conn.consume.inline_retry_limit = math.inf


def _batches_at_once(runtime: Any) -> None:
    """A case of one message: a batching handler runs it as a batch of one, at once."""
    for bound in runtime.handlers.values():
        if bound.batch is not None:
            bound.batch = bound.batch.model_copy(update={"timeout": 0.0})


class _ClockTimer:
    """``callback(*args)`` once ``seconds`` have passed on ``clock`` (a batch's timeout)."""

    def __init__(self, clock: ManualClock, seconds: float, callback: Any, args: Any) -> None:
        self._fired = False
        self._task = asyncio.ensure_future(self._wait(clock, seconds, callback, args))

    async def _wait(self, clock: ManualClock, seconds: float, callback: Any, args: Any) -> None:
        await clock.sleep(seconds)
        self._fired = True
        callback(*args)

    def cancel(self) -> None:
        if not self._fired:
            self._task.cancel()


def _on_clock(clock: ManualClock) -> Callable[..., _ClockTimer]:
    def call_later(seconds: float, callback: Any, *args: Any) -> _ClockTimer:
        return _ClockTimer(clock, seconds, callback, args)

    return call_later


def _event_diffs(want: ExpectEvent, event: Event[Any]) -> Iterator[str]:
    got = {
        "type": event.type,
        "id": event.id,
        "source": event.source,
        "subject": event.subject,
        "correlation_id": event.correlationid,
        "parent_id": event.parentid,
    }
    for name, value in got.items():
        expected = getattr(want, name)
        if expected is not None and expected != value:
            yield f"event.{name}: expected {expected!r}, got {value!r}"
    if want.data is not UNSET:
        yield from subset_diffs(want.data, event.data_json(), "event.data")


def run_diffs(handler_id: str, want: ExpectRun, run: Any) -> Iterator[str]:
    """Where ``run`` (a ``Run``, or None: it did not run) differs from ``want``."""
    where = f"runs.{handler_id}"
    if run is None:
        yield f"{where}: expected {want.status}, but the handler did not run"
        return
    if run.status != want.status:
        why = f" ({run.error})" if run.error else ""
        yield f"{where}.status: expected {want.status}, got {run.status}{why}"
    if want.attempts is not None and len(run.attempts) != want.attempts:
        yield f"{where}.attempts: expected {want.attempts} failed, got {len(run.attempts)}"
    if want.error is not None and want.error not in (run.error or ""):
        yield f"{where}.error: expected to contain {want.error!r}, got {run.error!r}"
    if want.result is not UNSET:
        from bridge.events import jsonable

        yield from subset_diffs(want.result, jsonable(run.result), f"{where}.result")


def _emitted_diffs(want: Sequence[ExpectEmitted], emitted: list[dict[str, Any]]) -> Iterator[str]:
    got_types = [e.get("type") for e in emitted]
    want_types = [w.type for w in want]
    if sorted(got_types, key=str) != sorted(want_types):
        yield f"emitted: expected types {sorted(want_types)}, got {sorted(got_types, key=str)}"
        return
    remaining = list(emitted)
    for item in want:
        if item.data is UNSET:
            continue
        candidates = [e for e in remaining if e.get("type") == item.type]
        match = next(
            (e for e in candidates if not list(subset_diffs(item.data, e.get("data"), ""))), None
        )
        if match is None:
            yield f"emitted: no {item.type} event has data matching {jsonio.dumps(item.data).decode()}"
        else:
            remaining.remove(match)


def subset_diffs(want: Any, got: Any, path: str) -> Iterator[str]:
    """Where ``got`` differs from ``want``: mappings as subsets (key by key), the rest whole."""
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            yield f"{path}: expected an object, got {_show(got)}"
            return
        for key, value in want.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in got:
                yield f"{sub}: missing (expected {_show(value)})"
            else:
                yield from subset_diffs(value, got[key], sub)
        return
    if want != got:
        yield f"{path}: expected {_show(want)}, got {_show(got)}"


def _show(value: Any) -> str:
    return jsonio.dumps(value, default=str).decode()


def report(outcomes: Sequence[Outcome]) -> str:
    """The readable report: PASS/FAIL per case, each difference indented, a summary line."""
    lines = []
    for o in outcomes:
        lines.append(f"{'PASS' if o.passed else 'FAIL'}  {o.name}")
        lines.extend(f"      - {d}" for d in o.diffs)
    failed = sum(1 for o in outcomes if not o.passed)
    lines.append(f"{len(outcomes) - failed} passed, {failed} failed")
    return "\n".join(lines)


async def run_cases(cfg: BridgeConfig, cases: Sequence[Case]) -> list[Outcome]:
    """Run every case in order; never raises for a failing case."""
    runner = CaseRunner(cfg)
    return [await runner.run(case) for case in cases]
