"""How aiokafka's clients connect (TLS, SASL, OAUTHBEARER tokens), and which errors last.

Shared by the consumer, the producer and dev mode's admin client. aiokafka is
imported inside the functions.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

from bridge.errors import ConnectorError
from connectors.kafka.config import KafkaConfig, KafkaSASL


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection keyword arguments shared by aiokafka's consumer, producer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers,
        "client_id": cfg.client_id,
    }
    protocol = "PLAINTEXT"
    if cfg.tls is not None:
        from aiokafka.helpers import create_ssl_context

        tls = cfg.tls
        context = create_ssl_context(
            cafile=tls.ca_file,
            certfile=tls.cert_file,
            keyfile=tls.key_file,
            password=tls.key_password.get_secret_value() if tls.key_password else None,
        )
        context.check_hostname = tls.check_hostname
        options["ssl_context"] = context
        protocol = "SSL"
    if cfg.sasl is not None:
        sasl = cfg.sasl
        protocol = "SASL_SSL" if cfg.tls is not None else "SASL_PLAINTEXT"
        options["sasl_mechanism"] = sasl.mechanism
        if sasl.mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = token_provider(sasl)
        else:
            options["sasl_plain_username"] = sasl.username
            options["sasl_plain_password"] = (
                sasl.password.get_secret_value() if sasl.password else None
            )
    options["security_protocol"] = protocol
    return options


def token_provider(sasl: KafkaSASL) -> Any:
    """The aiokafka ``AbstractTokenProvider`` for an OAUTHBEARER config."""
    from aiokafka.abc import AbstractTokenProvider

    from bridge.events import import_object

    if sasl.token_file is not None:
        path = Path(sasl.token_file)

        class FileToken(AbstractTokenProvider):  # type: ignore[misc]
            async def token(self) -> str:
                return (await asyncio.to_thread(path.read_text)).strip()

        return FileToken()
    target = import_object(str(sasl.token_provider))
    if isinstance(target, type):
        target = target()
    if isinstance(target, AbstractTokenProvider):
        return target
    if not callable(target):
        raise ConnectorError(
            f"token_provider {sasl.token_provider!r} is not callable", retriable=False
        )
    function = target

    class CallableToken(AbstractTokenProvider):  # type: ignore[misc]
        async def token(self) -> str:
            value = function()
            if inspect.isawaitable(value):
                value = await value
            return str(value)

    return CallableToken()


def milliseconds(seconds: float) -> int:
    """A duration for aiokafka (whole milliseconds, at least 1)."""
    return max(int(seconds * 1000), 1)


def connection_options(cfg: KafkaConfig) -> dict[str, Any]:
    """``client_options``, with any failure (unreadable certificate, bad token provider)
    raised as a non-retriable ``ConnectorError``."""
    try:
        return client_options(cfg)
    except ConnectorError:
        raise
    except Exception as exc:
        raise ConnectorError(f"kafka connection settings: {exc}", retriable=False) from exc


def retriable(exc: BaseException) -> bool:
    """False for errors that retrying cannot fix (authorization, authentication, bad topic)."""
    from aiokafka import errors

    fatal = (
        errors.TopicAuthorizationFailedError,
        errors.GroupAuthorizationFailedError,
        errors.ClusterAuthorizationFailedError,
        errors.SaslAuthenticationFailed,
        errors.UnsupportedSaslMechanismError,
        errors.AuthenticationFailedError,
        errors.AuthenticationMethodNotSupported,
        errors.InvalidTopicError,
    )
    return not isinstance(exc, fatal)
