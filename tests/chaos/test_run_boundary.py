"""Property test of the run boundary: whatever a handler returns, raises or does, every
branch ends recorded, in a bounded time, and the next message flows.

Hypothesis draws, per message, what each of three handlers (two async, one sync) does on
each attempt (tests/chaos/boundary.py): return a value (nasty ones included), emit a child
(one the store cannot hold included), raise (``Fatal``, ``RetryAfter``, any ``Exception``,
``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, another ``BaseException``),
sleep past its timeout (the sync one blocks its thread). The message goes through the real
engine (``Runtime`` from a config, SQLite store) from (a) the inbox and (b) a real Kafka
(Tansu), then a well-behaved message on the same key. Per message:

* every branch ends succeeded or dead-lettered, as the plan says, a dead letter with a reason;
* it settles within ``attempts x (timeout + max delay) + slack``;
* no branch runs more than its attempts (exactly as many as the plan needs);
* the next message on the same key flows;
* nothing is lost: per handler, messages sent = succeeded + dead-lettered.

Small in ``make test`` (a few examples); ``BRIDGE_CHAOS_FULL=1`` runs hundreds.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import example, given

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.events import Event
from tests.chaos import boundary
from tests.chaos.boundary import ATTEMPTS, HANDLERS, MAX_DELAY, PLANS, TIMEOUT, Act, Plan
from tests.chaos.fuzz_inputs import LoopThread, fuzz_settings
from tests.conftest import CHAOS_FULL
from tests.fixtures.kafka import KafkaAdmin
from tests.support import kafka_connector, until

# Worst case of one branch by its retry policy; the slack covers store writes, thread
# hand-offs and Kafka's fetch and commit intervals on a loaded machine (not a speed figure).
BOUND = ATTEMPTS * (TIMEOUT + MAX_DELAY) + 20.0
# Each example takes about a second (timeouts and retries really happen): a handful in make
# test, a few hundred in make chaos; BRIDGE_FUZZ_EXAMPLES sets both.
_OVERRIDE = os.environ.get("BRIDGE_FUZZ_EXAMPLES")
INBOX_EXAMPLES = int(_OVERRIDE) if _OVERRIDE else 300 if CHAOS_FULL else 6
KAFKA_EXAMPLES = int(_OVERRIDE) if _OVERRIDE else 150 if CHAOS_FULL else 3
# The issue's cases, run every time: a poison result, an interrupt then a poison child,
# a sync handler blocking past its timeout twice then succeeding.
ISSUE_CASES = {
    "a1": [Act("return", {1: "x"}, storable=False)],
    "a2": [Act("raise", raises="KeyboardInterrupt"), Act("emit", {"p": Decimal("1.5")}, False)],
    "s1": [Act("sleep"), Act("sleep"), Act("return", {2, 3})],
}
WELL_BEHAVED = {h: [Act("return", "fine")] for h in HANDLERS}


def config(db: Path, connectors: dict[str, Any] | None = None) -> str:
    function = "tests.chaos.boundary:{}"
    return yaml.safe_dump(
        {
            "version": 1,
            "store": f"sqlite:///{db}",
            "server": {"enabled": False},
            "unrouted": "drop",  # the children nobody subscribes to
            "defaults": {
                "retry": {
                    "attempts": ATTEMPTS,
                    "backoff": "fixed",
                    "min_delay": f"{int(MAX_DELAY * 1000)}ms",
                    "max_delay": f"{int(MAX_DELAY * 1000)}ms",
                    "jitter": 0,
                },
                "timeout": f"{int(TIMEOUT * 1000)}ms",
            },
            "events": {"boundary/*": {"schema": "none"}, "child/*": {"schema": "none"}},
            "connectors": connectors or {},
            "handlers": [
                {
                    "id": h,
                    "on": "boundary/msg",
                    "type": "python",
                    "function": function.format("act_sync" if h == "s1" else "act"),
                }
                for h in HANDLERS
            ],
        }
    )


class Harness:
    """A running bridge in a loop thread, and what was sent through it."""

    def __init__(self, text: str, send: Callable[[Runtime, str], Awaitable[None]]) -> None:
        self.loop = LoopThread()
        self.send = send
        self.sent = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.settle_times: list[float] = []
        self.runtime, self.task = self.loop.run(self._start(text))

    async def _start(self, text: str) -> tuple[Runtime, asyncio.Task[None]]:
        runtime = Runtime(load_config_text(text, {}))
        task = asyncio.create_task(runtime.run())

        async def ready() -> bool:
            if task.done():
                task.result()
            return runtime.ready

        await until(ready, 120, "bridge ready")
        return runtime, task

    def message(self, acts: dict[str, list[Act]]) -> None:
        """Send one message with this plan; check how each branch ended."""
        plan_id = uuid.uuid4().hex
        plan = PLANS[plan_id] = Plan(acts)
        started = time.monotonic()
        self.loop.run(self.send(self.runtime, plan_id))
        self.sent += 1
        ends = self.loop.run(self._settled(plan), timeout=BOUND + 30)
        self.settle_times.append(time.monotonic() - started)
        for handler, (status, reason) in ends.items():
            want_status, want_calls, want_reason = boundary.expected(acts[handler])
            self.outcomes[(handler, status)] += 1
            where = (handler, acts[handler], status, reason)
            assert status == want_status, where
            assert plan.calls[handler] == want_calls <= ATTEMPTS, (where, plan.calls)
            if status == "dead_lettered":
                assert reason and reason.startswith(want_reason), where
        # A timed-out sync call keeps its thread; let it end so the next plan finds free ones.
        self.loop.run(until(lambda: boundary.sync_active() == 0, 30, "sync calls ended"))

    async def _settled(self, plan: Plan) -> dict[str, tuple[str, str]]:
        store = self.runtime.store
        ends: dict[str, tuple[str, str]] = {}

        async def final() -> bool:
            if not plan.event_id:
                return False
            key = f"{plan.event_source}\x1f{plan.event_id}"  # the default idempotency key
            ledger = await store.ledger_get([(h, key) for h in HANDLERS])
            if len(ledger) < len(HANDLERS):
                return False
            letters = {
                d.handler: d.reason for d in await store.dead_letters(event_id=plan.event_id)
            }
            for (handler, _), entry in ledger.items():
                if entry.status == "dead_lettered" and handler not in letters:
                    return False
                ends[handler] = (entry.status, letters.get(handler, ""))
            busy = any(s.tasks for s in self.runtime.slots)
            return not busy

        await until(final, BOUND, f"every branch of {plan.event_id or 'the message'} recorded")
        return ends

    def close(self) -> None:
        async def stop() -> None:
            self.runtime.request_stop()
            self.runtime.request_stop()
            await self.task

        self.loop.run(stop())
        self.loop.close()


def check_boundary(harness: Harness, examples: int) -> None:
    @fuzz_settings(examples)
    @given(acts=boundary.plans)
    @example(acts=ISSUE_CASES)
    def each(acts: dict[str, list[Act]]) -> None:
        harness.message(acts)
        harness.message(WELL_BEHAVED)  # the next message (same key on Kafka) flows

    each()
    # Nothing lost: every message sent ended, per branch, succeeded or dead-lettered.
    for handler in HANDLERS:
        ended = (
            harness.outcomes[(handler, "succeeded")] + harness.outcomes[(handler, "dead_lettered")]
        )
        assert ended == harness.sent, (handler, harness.outcomes, harness.sent)
    assert max(harness.settle_times) <= BOUND


@pytest.mark.timeout(7200 if CHAOS_FULL or _OVERRIDE else 300)
def test_boundary_through_the_inbox(tmp_path: Path) -> None:
    async def send(runtime: Runtime, plan_id: str) -> None:
        event = Event(id=plan_id, source="boundary", type="boundary/msg", data={"plan": plan_id})
        await runtime.inbox.put_events([event], source="api")

    harness = Harness(config(tmp_path / "s.db"), send)
    try:
        check_boundary(harness, INBOX_EXAMPLES)
        pending = harness.loop.run(harness.runtime.store.inbox_pending(0, 10))
        assert [e for e in pending if e.source == "api"] == []
    finally:
        harness.close()


@pytest.mark.timeout(7200 if CHAOS_FULL or _OVERRIDE else 300)
def test_boundary_through_kafka(tmp_path: Path, kafka: KafkaAdmin) -> None:
    holder = LoopThread()
    topic = holder.run(kafka.new_topic(1))
    holder.close()
    group = kafka.name("g")

    async def send(runtime: Runtime, plan_id: str) -> None:
        body = orjson.dumps({"plan": plan_id})
        await kafka.produce(topic, [("one-key", body, {})])

    connectors = {
        "in": kafka_connector(kafka.bootstrap, topic, group, event={"type": "boundary/msg"})
    }
    harness = Harness(config(tmp_path / "s.db", connectors), send)
    try:
        check_boundary(harness, KAFKA_EXAMPLES)

        async def committed() -> bool:
            offsets = await kafka.committed(group, topic, 1)
            return offsets[0] == harness.sent

        # The partition did not stall: everything sent is committed.
        harness.loop.run(until(committed, BOUND, "every message committed"))
    finally:
        harness.close()
