"""Batch calls to SQS, made of single entries; the source and the publisher use them.

``Batcher`` turns single entries into SQS batch calls (``DeleteMessageBatch``,
``ChangeMessageVisibilityBatch``, ``SendMessageBatch``): at most 10 entries and
``max_bytes`` per call. A batch call may answer 200 with some entries failed;
only those entries are sent again (with backoff), never the whole batch. An
entry that failed with ``SenderFault`` (a bad receipt handle, an invalid
message) cannot succeed later and fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import ConnectorError
from connectors.sqs.errors import wrap_error

log = logging.getLogger("bridge.connectors.sqs")

BatchCaller = Callable[[list[dict[str, Any]]], Awaitable[Mapping[str, Any]]]

MAX_BATCH = 10


def batch_call(client: Any, method: str, url: str) -> BatchCaller:
    """A ``BatchCaller`` for one batch API of ``client`` (``delete_message_batch`` ...) on ``url``."""
    bound = getattr(client, method)

    async def call(entries: list[dict[str, Any]]) -> Mapping[str, Any]:
        response: Mapping[str, Any] = await bound(QueueUrl=url, Entries=entries)
        return response

    return call


@dataclass(eq=False, slots=True)
class _Entry:
    body: dict[str, Any]
    future: asyncio.Future[None]
    size: int


class Batcher:
    """Sends entries in batch calls; each entry's future resolves when SQS took it.

    Args:
        call: sends one batch (entries carry ``Id``) and returns the response.
        action: the API name, for errors and logs.
        workers: batch calls in flight at once (1 keeps calls in submission order).
        linger: how long a batch waits for more entries before it is sent.
        max_bytes: most payload bytes per call (entries give their size).
        attempts: tries per entry before its future fails.
    """

    def __init__(
        self,
        call: BatchCaller,
        action: str,
        workers: int,
        linger: float,
        *,
        max_bytes: int | None = None,
        attempts: int = 8,
    ) -> None:
        self.call = call
        self.action = action
        self.workers = workers
        self.linger = linger
        self.max_bytes = max_bytes
        self.attempts = attempts
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def start(self) -> None:
        """Start the workers."""
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"{self.action}:{i}"))

    def submit(self, body: dict[str, Any], size: int = 0) -> asyncio.Future[None]:
        """Queue one entry (without ``Id``) now; await the future for its outcome.

        The future fails with ``ConnectorError`` when the entry failed for good.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ConnectorError(f"SQS {self.action}: the connector is closed"))
            return future
        self._outstanding += 1
        self._idle.clear()
        future.add_done_callback(self._entry_done)
        self._queue.put_nowait(_Entry(body, future, size))
        return future

    def _entry_done(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            future.exception()  # a caller that gave up waiting must not leave it "never retrieved"
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    async def close(self, deadline: float) -> None:
        """Send what is queued (until ``deadline``), then stop; what is left fails."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._idle.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        while not self._queue.empty():
            _settle(self._queue.get_nowait(), ConnectorError(f"SQS {self.action}: closed"))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Entry] = []
        carry: list[_Entry] = []  # taken from the queue, did not fit the last batch
        try:
            while True:
                batch = carry or [await self._queue.get()]
                carry = []
                size = sum(e.size for e in batch)
                deadline = loop.time() + self.linger
                while len(batch) < MAX_BATCH:
                    entry = await self._next_entry(deadline)
                    if entry is None:
                        break
                    if self.max_bytes is not None and size + entry.size > self.max_bytes:
                        carry = [entry]
                        break
                    batch.append(entry)
                    size += entry.size
                await self._send(batch)
                batch = []
        except asyncio.CancelledError:
            for entry in (*batch, *carry):
                _settle(entry, ConnectorError(f"SQS {self.action}: cancelled"))
            raise

    async def _next_entry(self, deadline: float) -> _Entry | None:
        """The next queued entry, waiting until ``deadline`` at most."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), remaining)
        except TimeoutError:
            return None

    async def _send(self, batch: list[_Entry]) -> None:
        attempt = 0
        while batch:
            attempt += 1
            batch = await self._call_once(batch)
            if not batch:
                return
            if attempt >= self.attempts:
                for entry in batch:
                    _settle(
                        entry, ConnectorError(f"SQS {self.action}: gave up after {attempt} tries")
                    )
                return
            delay = min(0.05 * 2**attempt, 5.0) * (0.5 + random.random())
            log.warning(
                "sqs batch entries failed; retrying them",
                extra={"action": self.action, "count": len(batch), "retry_in": round(delay, 3)},
            )
            await asyncio.sleep(delay)

    async def _call_once(self, batch: list[_Entry]) -> list[_Entry]:
        """One call; resolves what succeeded or failed for good, returns what to retry."""
        pending = [e for e in batch if not e.future.done()]
        if not pending:
            return []
        entries = [{"Id": str(i), **e.body} for i, e in enumerate(pending)]
        try:
            response = await self.call(entries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # wrapped: SDK, HTTP and socket errors alike
            error = wrap_error(exc, self.action)
            if not error.retriable:
                for entry in pending:
                    _settle(entry, error)
                return []
            log.warning("sqs batch call failed", extra={"action": self.action, "error": str(error)})
            return pending
        by_id = dict(enumerate(pending))
        for ok in response.get("Successful") or []:
            done = by_id.pop(int(ok["Id"]), None)
            if done is not None:
                _settle(done, None)
        retry: list[_Entry] = []
        for failed in response.get("Failed") or []:
            bad = by_id.pop(int(failed["Id"]), None)
            if bad is None:
                continue
            if failed.get("SenderFault"):
                text = f"SQS {self.action}: {failed.get('Code')}: {failed.get('Message', '')}"
                _settle(bad, ConnectorError(text, retriable=False))
            else:
                retry.append(bad)
        retry.extend(by_id.values())  # no answer for these: try again
        return retry


def _settle(entry: _Entry, error: ConnectorError | None) -> None:
    if entry.future.done():
        return
    if error is None:
        entry.future.set_result(None)
    else:
        entry.future.set_exception(error)
