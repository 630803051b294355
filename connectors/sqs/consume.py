"""``SqsSource``: long polls, a visibility heartbeat, batched deletes (see ``connectors.sqs``).

The book of held messages (slots, FIFO chains, re-received messages) is
``connectors.sqs.inflight``; batch calls are in ``connectors.sqs.batch``, the
client and error wrapping in ``connectors.sqs.client`` and ``connectors.sqs.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ConnectorError
from bridge.transport import ConnectorStatus, Delivery, Settlement
from connectors.sqs.batch import Batcher, batch_call
from connectors.sqs.client import open_client, queue_name, queue_visibility, resolve_url
from connectors.sqs.config import SqsConfig, SqsConsumeConfig
from connectors.sqs.errors import wrap_error
from connectors.sqs.inflight import Held, InFlight
from connectors.sqs.message import message_body, message_headers, message_meta

log = logging.getLogger("bridge.connectors.sqs")

_RECEIVE_GRACE = 0.5  # how long stop() lets a receive call finish before cancelling it
_DELETE_LINGER = 0.01  # how long a delete batch waits for more entries
_CHANGE_LINGER = 0.005


@dataclass(eq=False)
class _Run:
    """What one start() owns; stop() tears it down."""

    client: Any
    stack: contextlib.AsyncExitStack
    url: str
    visibility: int
    deleter: Batcher
    changer: Batcher
    receivers: list[asyncio.Task[None]] = field(default_factory=list)
    chores: list[asyncio.Task[None]] = field(default_factory=list)


class SqsSource:
    """Consumes one SQS queue.

    Args:
        cfg: the connector config (``consume`` must be set).
        name: the connector's name.
        client: an SQS client to use instead of opening one (tests); the source
            does not close it.
    """

    def __init__(self, cfg: SqsConfig, name: str, *, client: Any = None) -> None:
        if cfg.consume is None:
            raise ValueError(f"connector {name!r} has no consume section")
        self.cfg = cfg
        self.consume: SqsConsumeConfig = cfg.consume
        self.name = name
        self.queue = queue_name(self.consume.queue)
        self.fifo = self.queue.endswith(".fifo")
        self._ordered = self.fifo and self.consume.ordering != "none"
        # Ordered FIFO: one receive at a time, so messages are admitted in the order
        # SQS hands them out. Real SQS locks a group while it is in flight, but
        # emulators (moto) can split a group across concurrent long polls.
        self._turn: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self._ordered else contextlib.nullcontext()
        )
        self._given_client = client
        self._run: _Run | None = None
        self._book = InFlight(self.consume.max_in_flight, self._ordered)
        self._stopping = asyncio.Event()
        self._intake_stopped = asyncio.Event()  # receivers stop; the heartbeat goes on
        self._closed = asyncio.Event()
        self._failure: ConnectorError | None = None
        self._problem = ""
        self._depth: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resolve the queue, then start receivers, the heartbeat and the depth poll.

        Raises:
            ConnectorError: the queue cannot be resolved (``retriable`` False when it
                does not exist or access is denied).
        """
        if self._run is not None:
            if self._failure is None:
                return
            await self.stop(asyncio.get_running_loop().time() + 10.0)
        self._reset()
        stack = contextlib.AsyncExitStack()
        try:
            client = self._given_client
            if client is None:
                pool = self.consume.receivers * 2 + 4
                client = await open_client(self.cfg, stack, pool, self.consume.wait_time_seconds)
            url = await resolve_url(client, self.consume.queue)
            visibility = self.consume.visibility_timeout or await queue_visibility(client, url)
        except BaseException:
            await stack.aclose()
            raise
        run = _Run(
            client,
            stack,
            url,
            visibility,
            Batcher(
                batch_call(client, "delete_message_batch", url),
                "DeleteMessageBatch",
                self.consume.receivers,
                _DELETE_LINGER,
            ),
            # One worker: the visibility changes of a message must reach SQS in order.
            Batcher(
                batch_call(client, "change_message_visibility_batch", url),
                "ChangeMessageVisibilityBatch",
                1,
                _CHANGE_LINGER,
            ),
        )
        run.deleter.start()
        run.changer.start()
        for i in range(self.consume.receivers):
            run.receivers.append(self._task(self._receive(run), f"sqs-receive:{self.name}:{i}"))
        run.chores.append(self._task(self._heartbeat(run), f"sqs-heartbeat:{self.name}"))
        run.chores.append(self._task(self._poll_depth(run), f"sqs-depth:{self.name}"))
        self._run = run

    def _reset(self) -> None:
        self._book = InFlight(self.consume.max_in_flight, self._ordered)
        self._stopping = asyncio.Event()
        self._intake_stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._failure = None
        self._problem = ""

    def _task(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_ended)
        return task

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("sqs task failed", extra={"connector": self.name, "error": repr(exc)})
        self._fail(ConnectorError(f"SQS {task.get_name()} failed: {exc!r}"))

    def _fail(self, error: ConnectorError) -> None:
        if self._failure is None:
            self._failure = error
        self._closed.set()

    async def stop_intake(self) -> None:
        """Stop receiving and make what was received but not handed out visible again.

        Held deliveries keep their visibility heartbeat and can still be settled until
        ``stop()``. Idempotent.
        """
        run = self._run
        if run is None or self._intake_stopped.is_set():
            return
        # A long poll in progress is let finish: cancelled, what SQS hands it anyway would
        # stay hidden for the visibility timeout. What it returns is made visible below.
        within = self.consume.wait_time_seconds + 5.0
        await self._stop_receiving(run, asyncio.get_running_loop().time() + within, within)

    async def _stop_receiving(self, run: _Run, deadline: float, grace: float) -> None:
        loop = asyncio.get_running_loop()
        self._intake_stopped.set()
        grace = max(0.0, min(grace, deadline - loop.time()))
        _, pending = await asyncio.wait(run.receivers, timeout=grace)
        await _cancel(pending)
        undelivered = self._book.take_undelivered()
        if not undelivered:
            return
        try:
            async with asyncio.timeout_at(deadline):
                await self._make_visible(run, undelivered)
        except (TimeoutError, ConnectorError) as exc:  # they come back after their timeout
            log.warning(
                "could not make received messages visible again",
                extra={"connector": self.name, "count": len(undelivered), "error": str(exc)},
            )

    async def stop(self, deadline: float) -> None:
        """Stop intake, release undelivered messages, flush deletes, close. Idempotent."""
        run, self._run = self._run, None
        if run is None:
            return
        self._stopping.set()
        # Again after stop_intake: a FIFO message may have become ready behind one settled since.
        await self._stop_receiving(run, deadline, _RECEIVE_GRACE)
        self._closed.set()
        await run.deleter.close(deadline)
        await run.changer.close(deadline)
        await _cancel(run.chores)
        await run.stack.aclose()

    # ------------------------------------------------------------------ intake

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Yield deliveries until ``stop()``.

        Raises:
            ConnectorError: a receiver hit an error that retrying cannot fix.
        """
        handed = self._book.handed_out(self._closed, lambda: self._failure)
        async with contextlib.aclosing(handed):
            async for delivery in handed:
                yield delivery

    async def _receive(self, run: _Run) -> None:
        backoff = 0.5
        while not self._intake_stopped.is_set():
            try:
                async with self._turn:
                    await self._receive_once(run, await self._book.reserve(self.consume.batch_size))
            except ConnectorError as error:
                if not error.retriable:
                    self._fail(error)
                    return
                self._problem = str(error)
                log.warning(
                    "sqs receive failed; retrying",
                    extra={"connector": self.name, "error": str(error), "retry_in": backoff},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._intake_stopped.wait(), backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            self._problem = ""

    async def _receive_once(self, run: _Run, want: int) -> None:
        """One ReceiveMessage for ``want`` reserved slots; admits what came, frees the rest."""
        sent_at = asyncio.get_running_loop().time()
        try:
            response = await run.client.receive_message(
                QueueUrl=run.url,
                MaxNumberOfMessages=want,
                WaitTimeSeconds=self.consume.wait_time_seconds,
                VisibilityTimeout=run.visibility,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
        except BaseException as exc:
            self._book.release(want)
            if isinstance(exc, Exception):  # wrapped: SDK, HTTP and socket errors alike
                raise wrap_error(exc, "ReceiveMessage") from exc
            raise
        messages = response.get("Messages") or []
        self._book.release(want - len(messages))
        for message in messages:
            attrs = message.get("Attributes") or {}
            self._book.admit(
                str(message["MessageId"]),
                str(message["ReceiptHandle"]),
                attrs.get("MessageGroupId"),
                sent_at + run.visibility,
                functools.partial(self._delivery, message=message, attrs=attrs),
            )

    def _delivery(
        self, held: Held, message: Mapping[str, Any], attrs: Mapping[str, str]
    ) -> Delivery:
        return Delivery(
            message_body(message),
            message_headers(message.get("MessageAttributes") or {}),
            message_meta(self.queue, held.message_id, attrs),
            self._settler(held),
            self.name,
        )

    # ------------------------------------------------------------------ settle

    def _settler(self, held: Held) -> Any:
        async def settle(outcome: Settlement) -> None:
            if held.done:
                return
            run = self._run
            if outcome is Settlement.ACK and run is not None:
                # Still held (so the heartbeat keeps it hidden) until the delete went
                # through: a delete that is retried must not let it be received again.
                held.done = True
                try:
                    await run.deleter.submit({"ReceiptHandle": held.receipt})
                finally:
                    self._book.finish(held, outcome)
                return
            released = self._book.finish(held, outcome)
            if run is None:
                raise ConnectorError(
                    f"SQS source {self.name!r} is stopped; message {held.message_id} "
                    "comes back after its visibility timeout"
                )
            # Messages held behind it in its group go back too, to keep their order.
            await self._make_visible(run, [held, *released], quiet=released)

        return settle

    async def _make_visible(
        self, run: _Run, messages: list[Held], quiet: list[Held] | None = None
    ) -> None:
        """Set the visibility of ``messages`` to 0.

        Raises:
            ConnectorError: a message not in ``quiet`` could not be reset (it comes
                back after its visibility timeout anyway). ``quiet`` failures are logged.
        """
        futures = [
            run.changer.submit({"ReceiptHandle": h.receipt, "VisibilityTimeout": 0})
            for h in messages
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        silent = {id(h) for h in (messages if quiet is None else quiet)}
        for held, result in zip(messages, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if id(held) not in silent:
                raise result
            log.warning(
                "could not make a message visible again",
                extra={"connector": self.name, "message_id": held.message_id, "error": str(result)},
            )

    # ------------------------------------------------------------------ chores

    async def _heartbeat(self, run: _Run) -> None:
        """Extend the visibility of held messages before it runs out (one task for all)."""
        loop = asyncio.get_running_loop()
        visibility = run.visibility
        tick = max(0.2, visibility / 4)
        margin = visibility / 2
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), tick)
            now = loop.time()
            due = self._book.expiring(now + margin)
            if not due:
                continue
            # Submitted at once, so a settle that follows is applied after the extension.
            futures = [
                run.changer.submit({"ReceiptHandle": h.receipt, "VisibilityTimeout": visibility})
                for h in due
            ]
            receipts = [h.receipt for h in due]
            results = await asyncio.gather(*futures, return_exceptions=True)
            errors = []
            for held, receipt, result in zip(due, receipts, results, strict=True):
                if isinstance(result, BaseException):
                    errors.append(str(result))
                elif held.receipt == receipt:
                    held.expires = now + visibility
            if errors:
                log.warning(
                    "visibility extension failed for some messages; they may be redelivered",
                    extra={"connector": self.name, "count": len(errors), "error": errors[0]},
                )

    async def _poll_depth(self, run: _Run) -> None:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        while not self._stopping.is_set():
            try:
                response = await run.client.get_queue_attributes(
                    QueueUrl=run.url, AttributeNames=names
                )
                attrs = response.get("Attributes") or {}
                self._depth = {
                    self.queue: float(attrs.get(names[0], 0)),
                    f"{self.queue}:not_visible": float(attrs.get(names[1], 0)),
                }
            except Exception as exc:  # depth is advisory; the receivers report real trouble
                log.debug(
                    "sqs depth poll failed", extra={"connector": self.name, "error": str(exc)}
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.consume.depth_interval)

    def status(self) -> ConnectorStatus:
        """Connected unless receives are failing; lag is the queue depth."""
        connected = self._run is not None and not self._problem and self._failure is None
        detail = self._problem or (str(self._failure) if self._failure else "")
        return ConnectorStatus(connected, detail, dict(self._depth))


async def _cancel(tasks: Any) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
