"""Mutual TLS to a Kafka broker: Tansu behind a TLS-terminating proxy that requires a client
certificate signed by the test CA (Tansu advertises the proxy, so every connection goes
through it). Proves the ``tls`` options (CA, client certificate, encrypted key) work over a
real wire, and that a client without a certificate is refused."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.errors import ConnectorError
from bridge.transport import Settlement
from connectors.kafka import KafkaConfig, KafkaPublisher
from connectors.kafka.consume import KafkaSource
from tests.contract import running, take
from tests.fixtures.kafka import KafkaBroker, start_tansu, stop_tansu
from tests.support import free_port

pytestmark = pytest.mark.integration


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool = False, ip: str | None = None
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (key encrypted)."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    files = {
        "ca": _issue("test-ca", ca_key, "test-ca", ca_key, ca=True),
        "server": _issue("127.0.0.1", server_key, "test-ca", ca_key, ip="127.0.0.1"),
        "client": _issue("bridge-client", client_key, "test-ca", ca_key),
    }
    out = {}
    for name, cert in files.items():
        out[name] = tmp_path / f"{name}.pem"
        out[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out["server_key"] = tmp_path / "server.key"
    out["server_key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out["client_key"] = tmp_path / "client.key"
    out["client_key"].write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-secret"),
        )
    )
    return out


@pytest.fixture
def tls_ports(tmp_path: Path) -> Iterator[tuple[KafkaBroker, int]]:
    """A Tansu of its own that advertises the proxy port; yields (broker, its plain port)."""
    plain, proxy = free_port(), free_port()
    broker = start_tansu(tmp_path / "tansu-tls.log", plain, advertised_port=proxy)
    try:
        yield broker, plain
    finally:
        stop_tansu(broker)


@contextlib.asynccontextmanager
async def tls_proxy(
    pki: dict[str, Path], listen: int, upstream: int, peers: list[str]
) -> AsyncIterator[None]:
    """Terminate mutual TLS on ``listen`` and pipe plaintext to ``upstream``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    context.load_cert_chain(pki["server"], pki["server_key"])
    context.verify_mode = ssl.CERT_REQUIRED

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    connections: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            connections.add(task)
        cert = writer.get_extra_info("peercert") or {}
        peers.append(dict(x[0] for x in cert.get("subject", ()))["commonName"])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", listen, ssl=context)
    try:
        yield
    finally:
        server.close()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()


def tls_config(
    broker: KafkaBroker, pki: dict[str, Path], topic: str | None, **tls: Any
) -> KafkaConfig:
    data: dict[str, Any] = {
        "type": "kafka",
        "bootstrap_servers": broker.bootstrap,
        "tls": {
            "ca_file": str(pki["ca"]),
            "cert_file": str(pki["client"]),
            "key_file": str(pki["client_key"]),
            "key_password": "key-secret",
            **tls,
        },
    }
    if topic is not None:
        data["consume"] = {
            "topics": [topic],
            "group_id": f"group-{topic}",
            "start_from": "earliest",
            "session_timeout": "2s",
            "heartbeat_interval": "500ms",
            "ordering": "none",
        }
    return KafkaConfig.model_validate(data)


@pytest.mark.timeout(60)
async def test_publish_and_consume_over_mutual_tls(
    pki: dict[str, Path], tls_ports: tuple[KafkaBroker, int]
) -> None:
    broker, plain_port = tls_ports
    proxy_port = int(broker.bootstrap.rpartition(":")[2])
    peers: list[str] = []
    topic = "tls-topic"
    async with tls_proxy(pki, proxy_port, plain_port, peers):
        publisher = KafkaPublisher(tls_config(broker, pki, None), "out")
        await publisher.start()
        try:
            for i in range(5):
                await publisher.publish(topic, f"secret-{i}".encode(), {"h": "v"}, None)
        finally:
            await publisher.close()
        async with running(KafkaSource(tls_config(broker, pki, topic), "in")) as source:
            got = await take(source, 5)
            for delivery in got:
                await delivery.settle(Settlement.ACK)
    assert sorted(d.body for d in got) == [f"secret-{i}".encode() for i in range(5)]
    assert peers
    assert set(peers) == {"bridge-client"}


@pytest.mark.timeout(60)
async def test_a_client_without_certificate_is_refused(
    pki: dict[str, Path], tls_ports: tuple[KafkaBroker, int]
) -> None:
    broker, plain_port = tls_ports
    proxy_port = int(broker.bootstrap.rpartition(":")[2])
    config = KafkaConfig.model_validate(
        {
            "type": "kafka",
            "bootstrap_servers": broker.bootstrap,
            "tls": {"ca_file": str(pki["ca"])},
            "publish": {"request_timeout": "3s"},
        }
    )
    async with tls_proxy(pki, proxy_port, plain_port, []):
        publisher = KafkaPublisher(config, "out")
        with pytest.raises(ConnectorError):
            await publisher.start()
        await publisher.close()
