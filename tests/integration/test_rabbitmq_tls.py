"""``amqps://`` with a CA, a client certificate and its key.

The local broker listens in plain AMQP only, so the test puts a TLS terminator in
front of it: a real TLS server (this test's CA, ``CERT_REQUIRED`` for client
certificates) that pipes the decrypted bytes to 127.0.0.1:5672. The connector's
TLS handshake, server verification and client certificate are all real.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.errors import ConnectorError
from bridge.transport import Settlement
from connectors.rabbitmq import RabbitMQConfig
from connectors.rabbitmq.consume import RabbitMQSource
from connectors.rabbitmq.publish import RabbitMQPublisher
from tests.contract import running, take
from tests.fixtures.rabbitmq import HOST, PORT, RabbitAdmin

pytestmark = pytest.mark.integration


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write(directory: Path, stem: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("bridge test CA", ca_key, None, ca=True)
    ca_path, _ = _write(directory, "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue("localhost", server_key, (ca.subject, ca_key), server=True)
    server_cert, server_key_path = _write(directory, "server", server, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("bridge-client", client_key, (ca.subject, ca_key))
    client_cert, client_key_path = _write(directory, "client", client, client_key)
    return Pki(ca_path, server_cert, server_key_path, client_cert, client_key_path)


@dataclass
class TlsTerminator:
    port: int = 0
    clients: list[str] = field(default_factory=list)  # CN of each verified client certificate


@pytest.fixture
async def tls_broker(pki: Pki, rabbitmq_url: str) -> AsyncIterator[TlsTerminator]:
    """A TLS server that requires a client certificate and forwards to the plain broker."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    state = TlsTerminator()
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        subject = dict(pair[0] for pair in peer.get("subject", ()))
        state.clients.append(str(subject.get("commonName")))
        up_reader, up_writer = await asyncio.open_connection(HOST, PORT)
        tasks = [
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ]
        pipes.update(tasks)
        await asyncio.gather(*tasks)
        pipes.difference_update(tasks)

    server = await asyncio.start_server(serve, HOST, 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await server.wait_closed()


def tls_config(port: int, queue: str | None, tls: dict[str, Any]) -> RabbitMQConfig:
    data: dict[str, Any] = {
        "type": "rabbitmq",
        "url": f"amqps://guest:guest@{HOST}:{port}/",
        "tls": tls,
        "connect_timeout": 5,
    }
    if queue is not None:
        data["consume"] = {"queue": queue}
    return RabbitMQConfig.model_validate(data)


async def test_amqps_with_ca_and_client_certificate(
    rabbit: RabbitAdmin, tls_broker: TlsTerminator, pki: Pki
) -> None:
    queue = await rabbit.queue()
    tls = {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
    }
    publisher = RabbitMQPublisher(tls_config(tls_broker.port, None, tls), "secure")
    await publisher.start()
    try:
        for i in range(5):
            await publisher.publish(queue, f'{{"i": {i}}}'.encode(), {"traceparent": f"t{i}"}, None)
    finally:
        await publisher.close()
    async with running(RabbitMQSource(tls_config(tls_broker.port, queue, tls), "secure")) as source:
        got = await take(source, 5)
        for d in got:
            await d.settle(Settlement.ACK)
    assert sorted(d.headers["traceparent"] for d in got) == [f"t{i}" for i in range(5)]
    assert tls_broker.clients == ["bridge-client", "bridge-client"]  # publisher and source
    assert await rabbit.depth(queue) == (0, 0)


async def test_amqps_refuses_an_unknown_server_and_a_missing_client_certificate(
    rabbit: RabbitAdmin, tls_broker: TlsTerminator, pki: Pki
) -> None:
    queue = await rabbit.queue()
    no_ca = {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    source = RabbitMQSource(tls_config(tls_broker.port, queue, no_ca), "secure")
    with pytest.raises(ConnectorError):  # the broker's certificate is not trusted
        await source.start()
    await source.stop(asyncio.get_running_loop().time() + 5)
    no_client_cert = {"ca_file": str(pki.ca)}
    source = RabbitMQSource(tls_config(tls_broker.port, queue, no_client_cert), "secure")
    with pytest.raises(ConnectorError):  # the terminator requires a client certificate
        await source.start()
    await source.stop(asyncio.get_running_loop().time() + 5)
    assert tls_broker.clients == []
