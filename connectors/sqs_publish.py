"""``SqsPublisher``: batched ``SendMessageBatch`` to SQS queues.

The destination is a queue URL, or a queue name resolved once with
``GetQueueUrl``. ``publish()`` returns once SQS accepted the message; calls made
together share ``SendMessageBatch`` calls (up to 10 entries and
``max_batch_bytes``, after at most ``linger``); only the failed entries of a
batch are sent again.

Headers become String message attributes, by name:

* CloudEvents binary mode uses the prefix ``ce-`` (``ce-id``, ``ce-type`` ...):
  SQS attribute names allow letters, digits, ``_``, ``-`` and ``.``, and the
  bridge's normalizer reads ``ce-``/``ce_`` alike. Other invalid characters in a
  header name become ``_``; headers with an empty value are left out (SQS
  refuses empty attributes).
* SQS allows 10 attributes per message. When there are more, copies go first:
  ``ce-traceparent``/``ce-tracestate`` equal to ``traceparent``/``tracestate``,
  ``ce-correlationid`` equal to ``x-correlation-id`` (the SQS source reads that
  attribute as the correlation id), and ``content-type: application/json`` of a
  binary CloudEvent (JSON is the default). If that is not enough, the message
  falls back to CloudEvents structured mode: the envelope in the body with
  ``content-type: application/cloudevents+json``, the other headers kept. If the
  non-CloudEvents headers alone are more than 10, ``publish`` fails
  (non-retriable ``ConnectorError``).

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
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.duration import Duration
from bridge.errors import ConnectorError
from bridge.templates import Template, TemplateError
from connectors.sqs_client import Batcher, batch_call, open_client, resolve_url

if TYPE_CHECKING:
    from connectors.sqs import SqsConfig

MAX_ATTRIBUTES = 10
TEMPLATE_ROOTS = frozenset({"key", "header", "headers"})
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_ID_OK = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, as SQS allows for group/dedup ids
_CE_COPIES = (("traceparent", "traceparent"), ("tracestate", "tracestate"))


class SqsPublishConfig(BaseModel):
    """How messages are sent (see ``connectors.sqs_publish``)."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(
        "{key|default:default}",
        description="FIFO MessageGroupId template over `{key}` (the publish handler's key) "
        "and `{header.NAME}`.",
    )
    deduplication_id: str | None = Field(
        None,
        description="FIFO MessageDeduplicationId template. Default: the `ce-id` header, "
        "else a SHA-256 of group, body and headers.",
    )
    concurrency: int = Field(
        4, ge=1, le=64, description="SendMessageBatch calls in flight per standard queue."
    )
    linger: Duration = Field(
        0.005, le=1.0, description="How long a batch waits for more messages before it is sent."
    )
    max_batch_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=1_048_576,
        description="Most payload bytes per SendMessageBatch call (and per message).",
    )

    @field_validator("group_id", "deduplication_id")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            Template(value, TEMPLATE_ROOTS)  # raises a ValueError naming the problem
        return value


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


def message_attributes(
    headers: Mapping[str, str], body: bytes, prefix: str = "ce-"
) -> tuple[dict[str, str], bytes]:
    """Message attributes for ``headers`` (at most 10), and the body to send with them.

    Raises:
        ConnectorError: (not retriable) more than 10 headers that are not CloudEvents attributes.
    """
    attrs = {attribute_name(k): v for k, v in headers.items() if v != ""}
    if len(attrs) <= MAX_ATTRIBUTES:
        return attrs, body
    compact = dict(attrs)
    for attr, header in (*_CE_COPIES, ("correlationid", "x-correlation-id")):
        if compact.get(prefix + attr) is not None and compact.get(prefix + attr) == compact.get(
            header
        ):
            del compact[prefix + attr]
    binary = prefix + "specversion" in compact
    if (
        binary
        and compact.get("content-type") == "application/json"
        and len(compact) > MAX_ATTRIBUTES
    ):
        del compact["content-type"]
    if len(compact) <= MAX_ATTRIBUTES:
        return compact, body
    if not binary:
        raise ConnectorError(
            f"{len(attrs)} headers, but SQS allows {MAX_ATTRIBUTES} message attributes",
            retriable=False,
        )
    return _structured(attrs, body, prefix)


def _structured(attrs: dict[str, str], body: bytes, prefix: str) -> tuple[dict[str, str], bytes]:
    """CloudEvents structured mode: the envelope goes in the body, other headers stay."""
    envelope: dict[str, Any] = {}
    rest: dict[str, str] = {}
    for name, value in attrs.items():
        if name.startswith(prefix):
            envelope[name[len(prefix) :]] = value
        else:
            rest[name] = value
    content_type = rest.pop("content-type", "") or "application/json"
    envelope["datacontenttype"] = content_type
    if body:
        base = content_type.split(";")[0].strip()
        try:
            if base.endswith("json"):
                envelope["data"] = orjson.loads(body)
            else:
                envelope["data"] = body.decode("utf-8")
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            import base64

            envelope["data_base64"] = base64.b64encode(body).decode("ascii")
    rest["content-type"] = "application/cloudevents+json"
    if len(rest) > MAX_ATTRIBUTES:
        raise ConnectorError(
            f"{len(rest)} headers besides the CloudEvents attributes, but SQS allows "
            f"{MAX_ATTRIBUTES} message attributes",
            retriable=False,
        )
    return rest, orjson.dumps(envelope)


def attribute_name(name: str) -> str:
    """A valid SQS message attribute name for a header name."""
    cleaned = _BAD_NAME_CHARS.sub("_", name)
    while ".." in cleaned:
        cleaned = cleaned.replace("..", "._")
    cleaned = cleaned.strip(".") or "_"
    if cleaned.lower().startswith(("aws.", "amazon.")):
        cleaned = "_" + cleaned  # reserved prefixes
    return cleaned[:256]


def _fifo_id(value: str) -> str:
    return value if _ID_OK.match(value) else hashlib.sha256(value.encode()).hexdigest()


def _digest(group: str, body: bytes, headers: Mapping[str, str]) -> str:
    digest = hashlib.sha256(group.encode())
    digest.update(body)
    for name in sorted(headers):
        digest.update(f"\0{name}\0{headers[name]}".encode())
    return digest.hexdigest()
