"""From a delivery to its settlement: normalize, route, fan out, settle.

Bad input (``InvalidEvent``) becomes a dead letter holding the raw message; an
event no handler subscribes to is dead-lettered or dropped (``unrouted``). Both
are settled ACK, so bad input never blocks a source. A store failure is
RETRY_LATER: the message is redelivered rather than lost.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.trace import Status, StatusCode

import bridge.jsonio as jsonio
from bridge.deadletters import replay_ran_nothing, replayed_letter_id
from bridge.dispatch.attempts import Runner
from bridge.dispatch.completion import Completions
from bridge.dispatch.env import DispatchConfig, DispatchEnv
from bridge.dispatch.fanout import FanOut
from bridge.dispatch.runs import BoundHandler, Emitter, Resume, Run, trace_id
from bridge.dispatch.storable import escape_surrogates
from bridge.errors import InvalidEvent, Skipped, StoreError
from bridge.events import Event
from bridge.normalize import Normalizer
from bridge.routing import Router, Subscription
from bridge.store.contracts import Attempt, DeadLetter
from bridge.transport import Delivery, Settlement

log = logging.getLogger("bridge.dispatch")
_WIDTH_BUCKETS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
_KEPT_BODY = 65_536


class Dispatcher:
    """Runs deliveries through their handlers and says how to settle each.

    Args:
        config: ledger, unrouted events, fan-out limit, inline retry limits, completions.
        router: matches events to ``BoundHandler`` subscriptions.
        env: store, metrics, clock, tracing, history, emitter, publishers, wall clock.
    """

    def __init__(
        self, config: DispatchConfig, router: Router[BoundHandler], env: DispatchEnv
    ) -> None:
        self.config = config
        self.router = router
        self.env = env
        self.runner = Runner(config, env)
        self.fanout = FanOut(config, env, self.runner)
        self.completions = Completions(config, router, env)

    @property
    def emitter(self) -> Emitter | None:
        """Sends events emitted by handlers and completion events; settable."""
        return self.env.emitter

    @emitter.setter
    def emitter(self, emitter: Emitter | None) -> None:
        self.env.emitter = emitter

    @property
    def wall(self) -> Callable[[], float]:
        """Wall-clock time (epoch seconds) for parked retries' due times; settable."""
        return self.env.wall

    @wall.setter
    def wall(self, wall: Callable[[], float]) -> None:
        self.env.wall = wall

    async def close(self) -> None:
        """Disarm the timeout watchdog; stop renewing run claims."""
        await self.runner.close()
        await self.fanout.keeper.close()

    async def dispatch(
        self,
        event: Event[Any],
        subs: Sequence[Subscription[BoundHandler]],
        *,
        connector: str = "",
        replay: bool = False,
        resume: Resume | None = None,
    ) -> list[Run]:
        """Run ``event`` through each subscription concurrently; return when every run is final.

        Raises:
            StoreError: a result could not be recorded (the message must not be acked).
        """
        return await self.fanout.dispatch(
            event, subs, connector=connector, replay=replay, resume=resume
        )

    async def process(self, delivery: Delivery, normalizer: Normalizer) -> Settlement:
        """Normalize, route and run one delivery; the caller settles it with the result."""
        env = self.env
        metrics = env.metrics
        connector = delivery.connector or normalizer.connector
        metrics.inc("bridge_events_received_total", (("connector", connector),))
        try:
            event = normalizer(delivery)
        except Skipped as skipped:  # a dropped tombstone: nothing to run, nothing wrong
            metrics.inc(
                "bridge_messages_skipped_total",
                (("connector", connector), ("reason", skipped.reason)),
            )
            return Settlement.ACK
        except InvalidEvent as exc:
            if env.tracing is not None:
                env.tracing.rejected(
                    connector, normalizer.transport, delivery.meta, delivery.headers, exc.reason
                )
            outcome = await self._reject(delivery, connector, exc)
            parked = delivery.meta.get("parked_id") if delivery.meta else None
            if parked and outcome is Settlement.ACK:  # dead-lettered: nothing left to retry
                await env.store.parked_done([parked])
            return outcome
        meta = delivery.meta
        replay = meta.get("replay_handler") if meta else None
        letter = (
            replayed_letter_id(str(meta.get("message_id") or ""))
            if meta and meta.get("source") == "replay"
            else None
        )
        resume: Resume | None = None
        if replay and "resume_attempt" in meta:
            connector = meta.get("connector") or connector
            resume = Resume(
                int(meta["resume_attempt"]),
                tuple(Attempt(**a) for a in meta.get("resume_attempts") or ()),
                meta.get("resume_created"),
                meta.get("resume_admission"),
            )
        if replay:
            sub = self.router.subscription(replay)
            subs = [sub] if sub is not None else []
        else:
            subs = self.router.match(event)
        metrics.observe("bridge_fanout_width", (), float(len(subs)), _WIDTH_BUCKETS)
        if not subs and resume is not None:
            # A parked run whose handler is gone: dead-letter it once, then forget it.
            outcome = await self._settle_runs(event, subs, connector, replay, resume, letter)
            if outcome is Settlement.ACK:
                await env.store.parked_done([meta["parked_id"]])
            return outcome
        tracing = env.tracing
        if tracing is None:
            return await self._settle_runs(event, subs, connector, replay, resume, letter)
        started = tracing.start_delivery(
            event, delivery.headers, delivery.meta, connector, normalizer.transport
        )
        if started is None:
            return await self._settle_runs(event, subs, connector, replay, resume, letter)
        span, token = started
        try:
            outcome = await self._settle_runs(event, subs, connector, replay, resume, letter)
            if outcome is not Settlement.ACK and span is not None:
                span.set_status(Status(StatusCode.ERROR, "left for redelivery"))
            return outcome
        finally:
            tracing.end(span, token)

    async def internal_error(
        self, delivery: Delivery, normalizer: Normalizer, attempts: Sequence[Attempt]
    ) -> Settlement:
        """Dead-letter a delivery that ``process`` failed on unexpectedly, every time.

        The letter's reason is ``internal_error: <the last failure>``; its attempts hold
        each failure with its traceback; it holds the event when the message still
        normalizes (replaying it routes it again; the ledger skips finished branches),
        else the raw message. ACK once stored; RETRY_LATER when the store fails.
        """
        env = self.env
        connector = delivery.connector or normalizer.connector
        meta = delivery.meta or {}
        event: Event[Any] | None = None
        try:
            event = normalizer(delivery)
        except Exception:  # the message may not normalize at all: keep its raw body
            event = None
        last = attempts[-1].error if attempts else None
        letter = DeadLetter(
            reason=f"internal_error: {last}" if last else "internal_error",
            connector=connector,
            handler=meta.get("replay_handler"),
            event=event.to_dict() if event is not None else None,
            body=None if event is not None else _kept_body(delivery.body),
            headers={k: _plain(v) for k, v in delivery.headers.items()},
            meta={k: _plain(v) for k, v in meta.items()},
            attempts=list(attempts),
            event_id=event.id if event is not None else None,
            event_type=event.type if event is not None else None,
            correlation_id=event.correlationid if event is not None else None,
            trace_id=trace_id(event.traceparent) if event is not None else None,
        )
        try:
            try:
                await env.store.dead_letter_add(letter)
            except (TypeError, ValueError):  # the message itself cannot be written: keep less
                letter.event, letter.headers, letter.meta = None, {}, {}
                letter.body = _kept_body(delivery.body)
                await env.store.dead_letter_add(letter)
            parked = meta.get("parked_id")
            if parked:
                await env.store.parked_done([parked])
        except StoreError:
            return Settlement.RETRY_LATER
        env.metrics.inc("bridge_dead_letters_total", (("handler", ""),))
        log.error(
            "delivery dead-lettered after repeated internal errors",
            extra={
                "connector": connector,
                "event_id": letter.event_id,
                "correlation_id": letter.correlation_id,
                "dead_letter_id": letter.id,
                "attempt": len(attempts),
                "error": letter.reason,
            },
        )
        return Settlement.ACK

    async def _settle_runs(
        self,
        event: Event[Any],
        subs: Sequence[Subscription[BoundHandler]],
        connector: str,
        replay: str | None,
        resume: Resume | None = None,
        letter: str | None = None,
    ) -> Settlement:
        history = self.env.history
        if history is not None:
            history.event_started(event, connector, trace_id(event.traceparent))
        if not subs:
            if history is not None:
                history.event_finished(event, ())
            return await self._unrouted(event, connector, replay)
        try:
            runs = await self.fanout.dispatch(
                event, subs, connector=connector, replay=bool(replay), resume=resume
            )
            if letter is not None and all(r.status == "skipped" for r in runs):
                # The handler succeeded since the replay was queued: nothing ran for it.
                pairs = [(s.target.id, s.target.key(event)) for s in subs]
                await replay_ran_nothing(self.env.store, letter, pairs)
            if history is not None:
                if resume is not None:
                    history.refresh(event.id)
                else:
                    history.event_finished(event, [r.status for r in runs])
            if self.config.completions and self.env.emitter is not None:
                await self.completions.complete(event, runs)
        except StoreError as exc:
            log.error(
                "store failed; message left for redelivery",
                extra={
                    "event_id": event.id,
                    "correlation_id": event.correlationid,
                    "error": str(exc),
                },
            )
            return Settlement.RETRY_LATER
        return Settlement.ACK

    async def _reject(self, delivery: Delivery, connector: str, exc: InvalidEvent) -> Settlement:
        metrics = self.env.metrics
        metrics.inc(
            "bridge_events_invalid_total", (("connector", connector), ("reason", exc.reason))
        )
        if exc.reason == "unknown_type" and self.config.unrouted == "drop":
            log.info(
                "dropped event of unknown type", extra={"connector": connector, "error": str(exc)}
            )
            return Settlement.ACK
        letter = DeadLetter(
            reason=f"{exc.reason}: {_short(exc.detail)}" if exc.detail is not None else exc.reason,
            connector=connector,
            body=_kept_body(delivery.body),
            headers=dict(delivery.headers),
            meta={k: _plain(v) for k, v in delivery.meta.items()},
            detail=exc.detail,
        )
        try:
            await self.env.store.dead_letter_add(letter)
        except StoreError:
            return Settlement.RETRY_LATER
        # Counted in bridge_events_invalid_total above, not as a handler's dead letter.
        log.warning(
            "invalid message dead-lettered",
            extra={"connector": connector, "dead_letter_id": letter.id, "error": letter.reason},
        )
        return Settlement.ACK

    async def _unrouted(self, event: Event[Any], connector: str, replay: str | None) -> Settlement:
        metrics = self.env.metrics
        metrics.inc("bridge_events_unrouted_total", (("connector", connector),))
        if self.config.unrouted == "drop":
            return Settlement.ACK
        reason = (
            f"unrouted: handler {replay!r} does not exist"
            if replay
            else f"unrouted: no handler subscribes to {event.type!r}"
        )
        letter = DeadLetter(
            reason=reason,
            connector=connector,
            event=event.to_dict(),
            event_id=event.id,
            event_type=event.type,
            correlation_id=event.correlationid,
            trace_id=trace_id(event.traceparent),
        )
        try:
            await self.env.store.dead_letter_add(letter)
        except StoreError:
            return Settlement.RETRY_LATER
        metrics.inc("bridge_dead_letters_total", (("handler", ""),))
        return Settlement.ACK


def _short(detail: Any) -> str:
    text = detail if isinstance(detail, str) else jsonio.dumps(detail, default=str).decode()
    return text if len(text) <= 500 else text[:500] + "..."


def _kept_body(body: bytes) -> str:
    kept = body[:_KEPT_BODY]
    try:
        text = kept.decode("utf-8")
    except UnicodeDecodeError:
        text = "base64:" + base64.b64encode(kept).decode()
    if len(body) > _KEPT_BODY:
        text += f"... [truncated, {len(body)} bytes in all]"
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return escape_surrogates(str(value))
