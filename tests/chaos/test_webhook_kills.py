"""Chaos 7: signed webhooks pour in while ``bridge run`` is SIGKILLed three times.

Two signed connectors: Debezium changes under Standard Webhooks signatures and
structured CloudEvents under an HMAC-SHA256 signature. 32 senders post
10,000 requests (1,500 in ``make test``) and behave like real webhook senders:
a request that gets no answer (the process died) or a 503 is sent again, freshly
signed, until it is answered. The bridge is SIGKILLed three times during the
stream, each time restarted at once.

Proves: every event answered 2xx (202 stored, or 200 already stored) runs on
every handler; nothing is dead-lettered. Repeats of handler executions (runs in
flight at a kill) are counted in the report.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import sqlite3
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.chaos.report import ChaosReport
from tests.conftest import CHAOS_FULL
from tests.support import (
    BridgeProcess,
    inbox_pending,
    recording_bridge,
    runs_by_event,
    signed_debezium,
    until,
)

TOTAL = 10_000 if CHAOS_FULL else 800
KILLS = 3
SENDERS = 32
RESEND_AFTER = 0.5  # seconds a sender waits before sending an unanswered request again
HANDLERS = ("fast", "slow")
SW_KEY = "whsec_" + base64.b64encode(b"chaos-webhook-signing-key").decode()
HMAC_SECRET = "chaos-hmac-secret"

CONFIG = """\
version: 1
store: sqlite:///{db}
telemetry: {{logs: {{format: json, level: ERROR}}}}
server: {{api: {{max_in_flight: 100}}}}
drain_timeout: 5s
events:
  db/*: {{schema: none}}
  shop/*: {{schema: none}}
connectors:
  dbz:
    type: webhook
    provider: debezium
    auth: {{scheme: standard_webhooks, secret: "${{SW_KEY}}"}}
  ce:
    type: webhook
    provider: cloudevents
    auth: {{scheme: hmac, header: x-signature, secret: "${{HMAC_SECRET}}"}}
handlers:
  - {{id: fast, on: ["db/*", "shop/*"], type: python, function: "tests.apps.recorder:record"}}
  - {{id: slow, on: ["db/*", "shop/*"], type: python, function: "tests.apps.recorder:slow"}}
"""


def debezium(n: int) -> tuple[str, bytes, dict[str, str]]:
    """A Debezium change, signed with Standard Webhooks (a fresh timestamp each call)."""
    body, signature = signed_debezium(n, SW_KEY, 5000)
    return "/hooks/dbz", body, {"content-type": "application/json", **signature}


def cloudevent(n: int) -> tuple[str, bytes, dict[str, str]]:
    """A structured CloudEvent, signed with an HMAC-SHA256 of the body (hex)."""
    body = orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"ce-{n:06d}",
            "source": "chaos/shop",
            "type": "shop/order.placed",
            "data": {"n": n},
        }
    )
    signature = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/cloudevents+json", "x-signature": signature}
    return "/hooks/ce", body, headers


class Senders:
    """Posts every request until it is answered 2xx; counts what happened on the way."""

    def __init__(self, proc: BridgeProcess) -> None:
        self.proc = proc
        self.answered: set[str] = set()  # event ids answered 2xx
        self.requests_answered = 0
        self.resends = 0
        self.statuses: Counter[int] = Counter()
        self.wrong: list[tuple[int, str]] = []

    async def send(self, session: aiohttp.ClientSession, n: int) -> None:
        while True:
            path, body, headers = debezium(n) if n % 2 else cloudevent(n)
            try:
                async with session.post(f"{self.proc.url}{path}", data=body, headers=headers) as r:
                    status = r.status
                    answer = await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                self.resends += 1
                await asyncio.sleep(RESEND_AFTER)
                continue
            self.statuses[status] += 1
            if status in (200, 202):
                self.answered.update(answer["ids"])
                self.requests_answered += 1
                return
            if status != 503:
                self.wrong.append((status, str(answer)[:300]))
                return
            self.resends += 1
            await asyncio.sleep(RESEND_AFTER)

    async def run(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(TOTAL):
            queue.put_nowait(n)

        async def worker(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                await self.send(session, queue.get_nowait())

        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=SENDERS, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(SENDERS)))


@pytest.mark.chaos
@pytest.mark.timeout(900 if CHAOS_FULL else 180)
async def test_every_webhook_answered_2xx_reaches_every_handler_across_sigkills(
    tmp_path: Path,
) -> None:
    report = ChaosReport("webhook_sigkills", sent=TOTAL)
    db = tmp_path / "state.db"
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=db))
    proc, record = recording_bridge(
        config, tmp_path, BRIDGE_TEST_SLOW_SECONDS="0.05", SW_KEY=SW_KEY, HMAC_SECRET=HMAC_SECRET
    )
    senders = Senders(proc)

    async def killer() -> None:
        for k in range(1, KILLS + 1):
            target = TOTAL * k // (KILLS + 1)
            await until(lambda t=target: senders.requests_answered >= t, 300, f"{target} answered")
            proc.kill()
            report.faults.append(f"SIGKILL after {senders.requests_answered} requests answered")
            killed_at = time.monotonic()
            proc.start()
            await proc.wait_ready()
            report.recovery_seconds.append(round(time.monotonic() - killed_at, 2))

    proc.start()
    try:
        await proc.wait_ready()
        await asyncio.gather(senders.run(), killer())
        answered = senders.answered

        def complete() -> bool:
            done = runs_by_event(record)
            return all(done[(h, e)] for e in answered for h in HANDLERS) and inbox_pending(db) == 0

        await until(complete, 300, "every answered event run on every handler")
        assert await proc.stop() == 0, proc.log_tail()
    finally:
        proc.kill()

    done = runs_by_event(record)
    lost = [(h, e) for e in answered for h in HANDLERS if done[(h, e)] == 0]
    never_answered = {e for _, e in done} - answered
    with sqlite3.connect(db) as conn:
        dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        inbox = conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]

    report.delivered = sum(1 for e in answered if all(done[(h, e)] for h in HANDLERS))
    report.lost = len(lost)
    report.duplicates = sum(n - 1 for n in done.values() if n > 1)
    report.dead_lettered = dead
    report.extra = {
        "answered_2xx": len(answered),
        "statuses": {str(k): v for k, v in sorted(senders.statuses.items())},
        "resends": senders.resends,
        "kills": KILLS,
        "senders": SENDERS,
        "inbox_rows": inbox,
        "ran_but_never_answered": len(never_answered),
        "duplicates_by_handler": {
            h: sum(n - 1 for (hh, _), n in done.items() if hh == h and n > 1) for h in HANDLERS
        },
    }
    report.write()

    assert senders.wrong == []
    assert len(report.faults) == KILLS
    assert len(answered) == TOTAL  # each request carries one event with a stable id
    assert lost == []
    assert never_answered == set()
    assert dead == 0
