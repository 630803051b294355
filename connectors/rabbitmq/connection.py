"""The connection of a RabbitMQ connector: TLS, and one robust aio-pika connection."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from bridge.errors import ConnectorError
from connectors.rabbitmq.config import RabbitMQConfig, TLSConfig

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection


def ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """The client TLS context: the CA to trust, the client certificate, verification."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def connect(cfg: RabbitMQConfig, name: str, role: str) -> AbstractRobustConnection:
    """A robust connection, connected once.

    Raises:
        ConnectorError: the first attempt failed (retriable unless credentials were refused).
    """
    import aio_pika
    from aio_pika.exceptions import ProbableAuthenticationError

    try:
        context = ssl_context(cfg.tls) if cfg.tls is not None else None
        return await aio_pika.connect_robust(
            cfg.url,
            timeout=cfg.connect_timeout,
            ssl_context=context,
            heartbeat=cfg.heartbeat,
            reconnect_interval=cfg.reconnect_interval,
            client_properties={"connection_name": f"bridge:{name}:{role}"},
        )
    except ProbableAuthenticationError as exc:
        raise ConnectorError(f"rabbitmq {name}: login refused: {exc}", retriable=False) from exc
    except (OSError, ssl.SSLError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise ConnectorError(f"rabbitmq {name}: TLS files: {exc}", retriable=False) from exc
        raise ConnectorError(f"rabbitmq {name}: cannot connect: {exc}") from exc
    except Exception as exc:  # aiormq raises a variety of AMQP and transport errors
        raise ConnectorError(f"rabbitmq {name}: cannot connect: {exc!r}") from exc
