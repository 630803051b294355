"""``SqsPublisher``: batched ``SendMessageBatch`` to SQS queues.

The destination is a queue URL, or a queue name resolved once with
``GetQueueUrl``. ``publish()`` returns once SQS accepted the message; calls made
together share ``SendMessageBatch`` calls (up to 10 entries and
``max_batch_bytes``, after at most ``linger``); only the failed entries of a
batch are sent again.

Headers become String message attributes (see ``connectors.sqs.attributes``:
CloudEvents prefix ``ce-``, at most 10 attributes, else structured mode).

FIFO queues (URL ending ``.fifo``): ``MessageGroupId`` is the ``group_id``
template (default: the publish handler's key, else ``default``);
``MessageDeduplicationId`` is the ``deduplication_id`` template, else the
``ce-id`` header (so a republished event is deduplicated by SQS), else a SHA-256
of the group, body and headers. Templates see ``{key}`` and ``{header.NAME}``.
Ids longer than 128 characters or with characters SQS refuses are replaced by
their SHA-256. One batch call at a time goes to a FIFO queue, to keep the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from bridge.errors import ConnectorError
from bridge.templates import Template, TemplateError
from connectors.sqs.attributes import message_attributes
from connectors.sqs.batch import Batcher, batch_call
from connectors.sqs.client import open_client, resolve_url
from connectors.sqs.config import TEMPLATE_ROOTS, SqsConfig

_ID_OK = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, as SQS allows for group/dedup ids


class SqsPublisher:
    """Publishes to SQS queues; see the module docstring for the wire format.

    Args:
        cfg: the connector config.
        name: the connector's name.
        client: an SQS client to use instead of opening one (tests); not closed here.
    """

    ce_prefix = "ce-"

    def __init__(self, cfg: SqsConfig, name: str, *, client: Any = None) -> None:
        self.cfg = cfg
        self.name = name
        self.options = cfg.publish
        self._given_client = client
        self._client: Any = client
        self._stack: contextlib.AsyncExitStack | None = None
        self._urls: dict[str, str] = {}
        self._senders: dict[str, Batcher] = {}
        self._lock = asyncio.Lock()
        self._group = Template(self.options.group_id, TEMPLATE_ROOTS)
        dedup = self.options.deduplication_id
        self._dedup = Template(dedup, TEMPLATE_ROOTS) if dedup else None

    async def start(self) -> None:
        """Open the client (the first ``publish`` does it too).

        Raises:
            ConnectorError: aiobotocore is missing or no region is configured.
        """
        async with self._lock:
            if self._client is None:
                stack = contextlib.AsyncExitStack()
                self._client = await open_client(self.cfg, stack, self.options.concurrency * 4 + 4)
                self._stack = stack

    async def publish(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None
    ) -> None:
        """Send one message; returns once SQS accepted it.

        Raises:
            ConnectorError: SQS refused the message or could not be reached.
        """
        if self._client is None:
            await self.start()
        url = await self._url(destination)
        entry, size = self.entry(url, body, headers, key)
        await self._sender(url).submit(entry, size)

    async def close(self) -> None:
        """Send what is queued (10 s at most), then close the client."""
        deadline = asyncio.get_running_loop().time() + 10.0
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            await sender.close(deadline)
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        self._client = self._given_client

    async def _url(self, destination: str) -> str:
        if destination.startswith(("http://", "https://")):
            return destination
        url = self._urls.get(destination)
        if url is None:
            url = self._urls[destination] = await resolve_url(self._client, destination)
        return url

    def _sender(self, url: str) -> Batcher:
        sender = self._senders.get(url)
        if sender is None:
            workers = 1 if url.endswith(".fifo") else self.options.concurrency
            sender = Batcher(
                batch_call(self._client, "send_message_batch", url),
                "SendMessageBatch",
                workers,
                self.options.linger,
                max_bytes=self.options.max_batch_bytes,
            )
            sender.start()
            self._senders[url] = sender
        return sender

    def entry(
        self, url: str, body: bytes, headers: Mapping[str, str], key: str | None
    ) -> tuple[dict[str, Any], int]:
        """The ``SendMessageBatch`` entry (without ``Id``) for one message, and its size.

        Raises:
            ConnectorError: (not retriable) the message cannot be sent to SQS as it is.
        """
        attrs, body = message_attributes(headers, body, self.ce_prefix)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ConnectorError(
                "SQS message bodies are text; this body is not UTF-8", retriable=False
            ) from None
        entry: dict[str, Any] = {"MessageBody": text}
        if attrs:
            entry["MessageAttributes"] = {
                k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()
            }
        size = len(body) + sum(len(k.encode()) + len(v.encode()) + 6 for k, v in attrs.items())
        if size > self.options.max_batch_bytes:
            raise ConnectorError(
                f"SQS message of {size} bytes exceeds max_batch_bytes {self.options.max_batch_bytes}",
                retriable=False,
            )
        if url.endswith(".fifo"):
            entry.update(self._fifo_ids(body, headers, key))
        return entry, size

    def _fifo_ids(self, body: bytes, headers: Mapping[str, str], key: str | None) -> dict[str, str]:
        scope = {"key": key, "header": headers, "headers": headers}
        try:
            group = self._group.render_str(scope) or "default"
            dedup = self._dedup.render_str(scope) if self._dedup else None
        except TemplateError as exc:
            raise ConnectorError(f"SQS FIFO id template: {exc}", retriable=False) from None
        if not dedup:
            dedup = headers.get(f"{self.ce_prefix}id") or _digest(group, body, headers)
        return {"MessageGroupId": _fifo_id(group), "MessageDeduplicationId": _fifo_id(dedup)}


def _fifo_id(value: str) -> str:
    return value if _ID_OK.match(value) else hashlib.sha256(value.encode()).hexdigest()


def _digest(group: str, body: bytes, headers: Mapping[str, str]) -> str:
    digest = hashlib.sha256(group.encode())
    digest.update(body)
    for name in sorted(headers):
        digest.update(f"\0{name}\0{headers[name]}".encode())
    return digest.hexdigest()
