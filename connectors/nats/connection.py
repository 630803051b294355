"""Connecting to NATS: TLS, credentials, reconnects, and dev mode's reachability check."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

from bridge.embedded import Brokers, reachable
from bridge.errors import BridgeError, ConnectorError
from connectors.nats.config import NatsConfig

log = logging.getLogger("bridge.connectors.nats")


def tls_context(cfg: NatsConfig) -> ssl.SSLContext | None:
    """The client TLS context of ``cfg.tls`` (None without it)."""
    tls = cfg.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect_options(cfg: NatsConfig, name: str) -> dict[str, Any]:
    """Keyword arguments of ``nats.connect``: reconnect for ever, credentials, TLS."""
    options: dict[str, Any] = {
        "servers": list(cfg.servers),
        "name": f"bridge:{name}",
        "connect_timeout": cfg.connect_timeout,
        "reconnect_time_wait": cfg.reconnect_wait,
        "max_reconnect_attempts": -1,  # a source outlives any outage; status() shows it
        "allow_reconnect": True,
    }
    if cfg.user is not None:
        options["user"] = cfg.user
        options["password"] = cfg.password
    if cfg.token is not None:
        options["token"] = cfg.token
    if cfg.credentials_file is not None:
        options["user_credentials"] = cfg.credentials_file
    if cfg.nkey_seed_file is not None:
        options["nkeys_seed"] = cfg.nkey_seed_file
    context = tls_context(cfg)
    if context is not None:
        options["tls"] = context
        if cfg.tls is not None and cfg.tls.hostname:
            options["tls_hostname"] = cfg.tls.hostname
    return options


async def open_connection(cfg: NatsConfig, name: str) -> Any:
    """A connected ``nats.aio.client.Client``.

    Raises:
        ConnectorError: no server could be reached (retriable) or authentication failed.
    """
    import nats
    from nats.errors import Error as NatsError

    errors: list[Exception] = []

    async def _error(exc: Exception) -> None:
        errors.append(exc)
        log.warning("nats connection error", extra={"connector": name, "error": repr(exc)})

    client: list[Any] = []

    async def _disconnected() -> None:
        if client and client[0].is_closed:
            return  # closed by us (stop, close): not worth a warning
        log.warning("nats disconnected", extra={"connector": name})

    async def _reconnected() -> None:
        log.info("nats reconnected", extra={"connector": name})

    options = connect_options(cfg, name)
    # The first connect tries each server once; reconnects go on for ever afterwards.
    # (nats-py retries an unreachable first server for ever under max_reconnect_attempts
    # -1, so the first connect is bounded here.)
    try:
        async with asyncio.timeout(cfg.connect_timeout * 2 + cfg.reconnect_wait):
            nc = await nats.connect(
                **options,
                error_cb=_error,
                disconnected_cb=_disconnected,
                reconnected_cb=_reconnected,
            )
    except (NatsError, OSError, TimeoutError) as exc:
        # A refused login makes nats-py retry until the timeout above: its error_cb saw why.
        cause = next((e for e in reversed(errors) if _refused(e)), exc)
        where = ", ".join(cfg.servers)
        if _refused(cause):
            raise ConnectorError(
                f"NATS {where} refused the login (check token, user/password, NKey or "
                f"credentials file): {cause!r}",
                retriable=False,
            ) from exc
        raise ConnectorError(f"NATS {where} could not be reached: {exc!r}") from exc
    client.append(nc)
    return nc


def _refused(exc: BaseException) -> bool:
    """The server refused the credentials (``-ERR 'Authorization Violation'``)."""
    text = str(exc).lower()
    return "authorization" in text or "authentication" in text


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return parts.hostname or "127.0.0.1", parts.port or 4222


def check_reachable(name: str, cfg: NatsConfig, brokers: Brokers) -> None:
    """The ``ConnectorKind.embedded`` hook: ``bridge dev`` starts no NATS server (one is
    usually running locally) but stops with a clear message when none answers.

    Raises:
        BridgeError: no server of ``cfg.servers`` accepts a connection.
    """
    if any(reachable(*_address(s)) for s in cfg.servers):
        return
    raise BridgeError(
        f"connector {name!r}: no NATS server answers at {', '.join(cfg.servers)}. "
        "bridge dev does not start NATS: run `nats-server -js` (JetStream on), "
        "or point `servers` at a running one."
    )
