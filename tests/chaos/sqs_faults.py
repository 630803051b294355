"""An HTTP proxy in front of moto's SQS server that injects delete failures and counts receives.

The bridge's SQS client talks to the proxy (``endpoint_url``); every call is forwarded
to moto unchanged except ``DeleteMessageBatch``: a share of its entries is not forwarded
and answered as failed (``SenderFault: false``, the partial failure real SQS reports
with HTTP 200), and a share of whole calls is answered HTTP 500 without forwarding.
What went through is kept in a journal (moto speaks AWS JSON 1.0 here).

Counting needs care, because moto's server handles calls on threads without a lock
around a queue: concurrent deletes rebuild the message list from one snapshot (one
can undo another, or drop a message sent meanwhile), and concurrent receives can hand
out one message twice. So the proxy forwards sends and deletes one at a time (the
calls that rebuild the list; visibility changes and receives go straight through, so
an extension never waits behind deletes), and ``redeliveries()`` sorts every repeated hand-out by cause: ``premature``
(no delete of it had gone through, and its visibility deadline from the latest receive
or extension had passed: the heartbeat failed), ``within_visibility`` (handed out
again before its deadline: moto's receive race) or ``after_delete`` (its delete had
gone through: moto lost it). Deadlines count from when a call was sent and hand-outs
from when the answer came back, so the sorting errs towards ``premature``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
from aiohttp import web

_JSON = "application/x-amz-json-1.0"
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}
_INJECTED = "injected by the chaos proxy"


class SqsFaultProxy:
    """Forwards to ``upstream``; fails ``entry_fail_rate`` of delete entries and
    ``call_fail_rate`` of delete calls (random, seeded). ``visibility``: the queue's
    visibility timeout, for receives that do not set one."""

    def __init__(
        self,
        upstream: str,
        *,
        visibility: float,
        entry_fail_rate: float,
        call_fail_rate: float,
        seed: int,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.visibility = visibility
        self.entry_fail_rate = entry_fail_rate
        self.call_fail_rate = call_fail_rate
        self.rng = random.Random(seed)
        self.received: Counter[str] = Counter()
        self.delete_calls = 0
        self.delete_entries = 0
        self.failed_entries = 0
        self.failed_calls = 0
        # (sent, answered, action, message id, visibility seconds), one per message
        self.journal: list[tuple[float, float, str, str, float]] = []
        self.outage_until = 0.0  # every delete entry fails until then (time.monotonic())
        self._ids: dict[str, str] = {}  # receipt handle -> message id
        self._lock = asyncio.Lock()  # one send or delete at a time into moto
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def fail_deletes_for(self, seconds: float) -> None:
        """Fail every delete entry (HTTP 200, ``Failed``) for the next ``seconds``."""
        self.outage_until = time.monotonic() + seconds

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def redeliveries(self) -> Counter[str]:
        """Hand-outs of a message beyond its first, by cause (see the module docstring).

        The ids of the messages handed out prematurely land in ``premature_ids``.
        """
        causes: Counter[str] = Counter()
        self.premature_ids: set[str] = set()
        deadline: dict[str, float] = {}
        deleted: set[str] = set()
        for sent, answered, action, message_id, seconds in sorted(self.journal):
            if action == "ReceiveMessage":
                if message_id in deadline:
                    if message_id in deleted:
                        causes["after_delete"] += 1
                    elif answered < deadline[message_id]:
                        causes["within_visibility"] += 1
                    else:
                        causes["premature"] += 1
                        self.premature_ids.add(message_id)
                deleted.discard(message_id)
                deadline[message_id] = sent + seconds
            elif action == "ChangeMessageVisibilityBatch":
                deadline[message_id] = sent + seconds
            elif action == "DeleteMessageBatch":
                deleted.add(message_id)
        return causes

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        failed: list[dict[str, Any]] = []
        if action == "DeleteMessageBatch":
            self.delete_calls += 1
            if self.rng.random() < self.call_fail_rate:
                self.failed_calls += 1
                error = {"__type": "InternalError", "message": _INJECTED}
                return web.Response(status=500, body=orjson.dumps(error), content_type=_JSON)
            payload = orjson.loads(body)
            keep = []
            for entry in payload["Entries"]:
                self.delete_entries += 1
                outage = time.monotonic() < self.outage_until
                if outage or self.rng.random() < self.entry_fail_rate:
                    self.failed_entries += 1
                    failed.append(
                        {
                            "Id": entry["Id"],
                            "SenderFault": False,
                            "Code": "InternalError",
                            "Message": _INJECTED,
                        }
                    )
                else:
                    keep.append(entry)
            if not keep:
                answer = {"Successful": [], "Failed": failed}
                return web.Response(body=orjson.dumps(answer), content_type=_JSON)
            body = orjson.dumps({**payload, "Entries": keep})
        sent = time.monotonic()
        if action.startswith(("Send", "Delete")):
            async with self._lock:
                status, headers, data = await self._forward(request, body)
        else:
            status, headers, data = await self._forward(request, body)
        if status == 200:
            self._book(action, orjson.loads(body), orjson.loads(data), sent, time.monotonic())
        if status == 200 and failed:
            answer = orjson.loads(data)
            answer["Failed"] = [*(answer.get("Failed") or []), *failed]
            data = orjson.dumps(answer)
        return web.Response(status=status, body=data, headers=headers)

    def _book(self, action: str, request: Any, answer: Any, sent: float, answered: float) -> None:
        if action == "ReceiveMessage":
            seconds = float(request.get("VisibilityTimeout") or self.visibility)
            for message in answer.get("Messages") or []:
                self.received[message["MessageId"]] += 1
                self._ids[message["ReceiptHandle"]] = message["MessageId"]
                self.journal.append((sent, answered, action, message["MessageId"], seconds))
            return
        if action not in ("DeleteMessageBatch", "ChangeMessageVisibilityBatch"):
            return
        done = {entry["Id"] for entry in answer.get("Successful") or []}
        for entry in request["Entries"]:
            message_id = self._ids.get(entry["ReceiptHandle"])
            if entry["Id"] in done and message_id is not None:
                seconds = float(entry.get("VisibilityTimeout") or 0)
                self.journal.append((sent, answered, action, message_id, seconds))

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            raise RuntimeError("the proxy is not started")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as resp:
            data = await resp.read()
            skip = _HOP | {"date", "server"}
            out = {k: v for k, v in resp.headers.items() if k.lower() not in skip}
            return resp.status, out, data
