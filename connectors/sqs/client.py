"""The aiobotocore SQS client of a connector, and the queue look-ups both sides share.

Credentials come from the standard AWS chain; aiobotocore is imported inside
``open_client``, so the config schema needs no AWS SDK.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlparse

from bridge.errors import ConnectorError
from connectors.sqs.config import SqsConfig
from connectors.sqs.errors import wrap_error


def queue_name(queue: str) -> str:
    """The queue name of a queue name or URL."""
    if queue.startswith(("http://", "https://")):
        return urlparse(queue).path.rstrip("/").rsplit("/", 1)[-1]
    return queue


def _region_of(url: str | None) -> str | None:
    """``us-east-1`` from ``https://sqs.us-east-1.amazonaws.com/...``, else None."""
    if not url:
        return None
    parts = (urlparse(url).hostname or "").split(".")
    if len(parts) >= 4 and parts[0] == "sqs" and parts[2] == "amazonaws":
        return parts[1]
    return None


async def open_client(
    cfg: SqsConfig, stack: contextlib.AsyncExitStack, pool: int, wait_seconds: int = 0
) -> Any:
    """An aiobotocore SQS client entered into ``stack`` (credentials: the standard AWS chain).

    Raises:
        ConnectorError: aiobotocore is missing, or no region is configured anywhere.
    """
    try:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import AioSession
    except ImportError as exc:
        raise ConnectorError(
            "type: sqs needs aiobotocore (install the `sqs` extra)", retriable=False
        ) from exc
    queue = cfg.consume.queue if cfg.consume is not None else None
    region = cfg.region or _region_of(queue)
    config = AioConfig(
        max_pool_connections=pool,
        # The long poll must end before the read timeout does.
        read_timeout=max(60, wait_seconds + 30),
        connect_timeout=10,
        retries={"mode": "standard", "max_attempts": 3},
    )
    session = AioSession(profile=cfg.profile)
    try:
        creator = session.create_client(
            "sqs", region_name=region, endpoint_url=cfg.endpoint_url, config=config
        )
        return await stack.enter_async_context(creator)
    except Exception as exc:  # wrapped at the boundary
        raise wrap_error(exc, "create client") from exc


async def resolve_url(client: Any, queue: str) -> str:
    """The URL of a queue name or URL (``GetQueueUrl`` for a name).

    Raises:
        ConnectorError: the queue does not exist (not retriable) or SQS is unreachable.
    """
    if queue.startswith(("http://", "https://")):
        return queue
    try:
        response = await client.get_queue_url(QueueName=queue)
    except Exception as exc:  # wrapped at the boundary
        raise wrap_error(exc, f"GetQueueUrl {queue!r}") from exc
    return str(response["QueueUrl"])


async def queue_visibility(client: Any, url: str) -> int:
    """The queue's ``VisibilityTimeout`` attribute, in seconds.

    Raises:
        ConnectorError: SQS refused or could not be reached.
    """
    try:
        response = await client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["VisibilityTimeout"]
        )
    except Exception as exc:  # wrapped at the boundary
        raise wrap_error(exc, "GetQueueAttributes") from exc
    return max(1, int((response.get("Attributes") or {}).get("VisibilityTimeout", 30)))
