"""Dev mode and Redis: nothing is started (a Redis server is usually local already);
``bridge dev`` only says clearly when the configured one cannot be reached."""

from __future__ import annotations

from urllib.parse import urlsplit

from bridge.embedded import Brokers, reachable
from bridge.errors import BridgeError
from connectors.redis.config import RedisConfig


def check_reachable(name: str, conn: RedisConfig, brokers: Brokers) -> None:
    """The ``ConnectorKind.embedded`` hook: raise when no Redis answers at the URL (or
    at any sentinel). A ``unix://`` URL is not checked.

    Raises:
        BridgeError: nothing listens there; the message says where and how to start one.
    """
    del brokers  # nothing to start
    if conn.sentinel is not None:
        addresses = [h.rpartition(":") for h in conn.sentinel.hosts]
        targets = [(host, int(port)) for host, _, port in addresses if port.isdigit()]
    else:
        url = urlsplit(conn.url)
        if url.scheme not in ("redis", "rediss"):
            return
        targets = [(url.hostname or "127.0.0.1", url.port or 6379)]
    if any(reachable(host, port) for host, port in targets):
        return
    where = ", ".join(f"{host}:{port}" for host, port in targets)
    raise BridgeError(
        f"redis connector {name!r}: no Redis server answers at {where}; bridge dev starts "
        "none for Redis. Start one (e.g. `redis-server` or `docker run -p 6379:6379 redis:7`) "
        "or fix the connector's url."
    )
