"""The client of a Redis connector: one redis-py asyncio client (a connection pool).

redis-py reconnects by itself: a command on a dropped connection opens a new one
(with retries and backoff), so a server restart costs the commands in flight, not
the source. Errors become ``ConnectorError``.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from bridge.errors import ConnectorError
from connectors.redis.config import RedisConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis


def _tls_options(cfg: RedisConfig) -> dict[str, Any]:
    tls = cfg.tls
    if tls is None:
        return {}
    if not cfg.url.startswith("rediss://"):
        raise ConnectorError("redis: `tls` needs a rediss:// URL", retriable=False)
    return {
        "ssl_ca_certs": tls.ca_file,
        "ssl_certfile": tls.cert_file,
        "ssl_keyfile": tls.key_file,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE,
        "ssl_check_hostname": tls.verify,
    }


def client(cfg: RedisConfig, name: str, *, blocking: float = 0.0) -> Redis:
    """A client for ``cfg`` (not connected yet). ``blocking`` is the longest server-side
    block a command will ask for (XREADGROUP BLOCK), added to the socket timeout.

    Raises:
        ConnectorError: the URL or the TLS settings are unusable.
    """
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import Sentinel

    options: dict[str, Any] = {
        "socket_connect_timeout": cfg.connect_timeout,
        "socket_timeout": cfg.command_timeout + blocking,
        "client_name": f"bridge-{name}",
        **_tls_options(cfg),
    }
    if cfg.username is not None:
        options["username"] = cfg.username
    if cfg.password is not None:
        options["password"] = cfg.password
    try:
        if cfg.cluster:
            options.pop("client_name")
            return RedisCluster.from_url(cfg.url, **options)  # type: ignore[return-value]
        if cfg.sentinel is not None:
            hosts = [_host_port(h) for h in cfg.sentinel.hosts]
            base = Redis.from_url(cfg.url, **options)  # the URL's db and credentials
            kwargs = base.connection_pool.connection_kwargs
            sentinel_kwargs = {
                k: v
                for k, v in (
                    ("username", cfg.sentinel.username),
                    ("password", cfg.sentinel.password),
                    ("socket_connect_timeout", cfg.connect_timeout),
                )
                if v is not None
            }
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                hosts, sentinel_kwargs=sentinel_kwargs, **_pool_options(kwargs)
            )
            master: Redis = sentinel.master_for(cfg.sentinel.service)
            return master
        # Blocking: concurrent publishes wait for a free connection instead of failing.
        pool = BlockingConnectionPool.from_url(
            cfg.url, max_connections=cfg.max_connections, timeout=cfg.command_timeout, **options
        )
        redis = Redis(connection_pool=pool)
        redis.auto_close_connection_pool = True  # aclose() closes the pool too, as from_url's
        return redis
    except (ValueError, TypeError) as exc:
        raise ConnectorError(
            f"redis {name}: bad connection settings: {exc}", retriable=False
        ) from exc


async def close(redis: Redis) -> None:
    """Close a client from ``client()``: its pool, and for Sentinel the connections to
    the sentinels too (the master's client does not own those)."""
    manager = getattr(redis.connection_pool, "sentinel_manager", None)
    try:
        await redis.aclose()
    finally:
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def _pool_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    keep = ("db", "username", "password", "socket_timeout", "socket_connect_timeout", "ssl")
    return {k: kwargs[k] for k in keep if k in kwargs}


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"sentinel host {text!r} is not host:port")
    return host, int(port)


def connector_error(name: str, what: str, exc: BaseException) -> ConnectorError:
    """A redis-py error as a ``ConnectorError`` (refused credentials are not retriable)."""
    from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError

    if isinstance(exc, AuthenticationError | AuthorizationError):
        return ConnectorError(f"redis {name}: login refused: {exc}", retriable=False)
    if isinstance(exc, ResponseError) and str(exc).startswith(("NOPERM", "WRONGPASS", "NOAUTH")):
        return ConnectorError(f"redis {name}: {what}: {exc}", retriable=False)
    return ConnectorError(f"redis {name}: {what}: {exc}")
