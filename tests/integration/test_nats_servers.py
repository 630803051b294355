"""NATS connections the shared server cannot show: token, user and password, NKey and
mutual TLS, each against a ``nats-server -js`` this test starts on a free port with
that authentication. A message is published and consumed back through the connector,
and wrong credentials are a non-retriable ``ConnectorError``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nkeys
import pytest

from bridge.errors import ConnectorError
from bridge.transport import Settlement
from connectors.nats import NatsConfig
from connectors.nats.consume import NatsSource
from connectors.nats.publish import NatsPublisher
from tests.contract import running, take
from tests.integration.test_kafka_tls import pki  # noqa: F401 (a fixture: CA, server, client)
from tests.support import free_port, listening, server_process

pytestmark = pytest.mark.integration


def nats_server(tmp_path: Path, port: int, conf: str) -> Any:
    """``nats-server -js`` on ``port`` with the config text ``conf`` (auth, TLS)."""
    path = tmp_path / "nats.conf"
    store = tmp_path / "js"
    path.write_text(f'listen: "127.0.0.1:{port}"\njetstream {{store_dir: "{store}"}}\n{conf}\n')
    return server_process("nats-server", "-c", str(path), cwd=tmp_path)


def config(url: str, **auth: Any) -> NatsConfig:
    return NatsConfig.model_validate(
        {
            "servers": [url],
            "connect_timeout": 2,
            "reconnect_wait": 0.2,
            **auth,
            "consume": {
                "stream": "AUTH",
                "durable": "d",
                "subjects": ["auth.>"],
                "declare": {"storage": "memory"},
                "fetch_wait": 0.2,
            },
        }
    )


async def round_trip(cfg: NatsConfig) -> bytes:
    """Consume (declaring the stream), publish one message, take it back; its body."""
    async with running(NatsSource(cfg, "nats")) as source:
        publisher = NatsPublisher(cfg, "nats")
        await publisher.start()
        try:
            await publisher.publish("auth.x", b'{"over": "the wire"}', {"x-test": "yes"}, None)
        finally:
            await publisher.close()
        (got,) = await take(source, 1, within=15)
        await got.settle(Settlement.ACK)
    assert got.headers["x-test"] == "yes"
    return bytes(got.body)


async def refused(cfg: NatsConfig) -> ConnectorError:
    with pytest.raises(ConnectorError) as caught:
        await NatsSource(cfg, "nats").start()
    return caught.value


async def login_refused(cfg: NatsConfig) -> None:
    error = await refused(cfg)
    assert not error.retriable
    assert "refused the login" in str(error)


async def test_token(tmp_path: Path) -> None:
    port = free_port()
    with nats_server(tmp_path, port, 'authorization {token: "s3cret"}'):
        listening(port)
        url = f"nats://127.0.0.1:{port}"
        assert await round_trip(config(url, token="s3cret")) == b'{"over": "the wire"}'
        await login_refused(config(url, token="wrong"))


async def test_user_and_password(tmp_path: Path) -> None:
    port = free_port()
    with nats_server(tmp_path, port, 'authorization {user: bridge, password: "pw"}'):
        listening(port)
        url = f"nats://127.0.0.1:{port}"
        good = config(url, user="bridge", password="pw")
        assert await round_trip(good) == b'{"over": "the wire"}'
        await login_refused(config(url, user="bridge", password="no"))


async def test_nkey_seed_file(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    port = free_port()
    with nats_server(tmp_path, port, f'authorization {{users: [{{nkey: "{public}"}}]}}'):
        listening(port)
        url = f"nats://127.0.0.1:{port}"
        good = config(url, nkey_seed_file=str(seed_file))
        assert await round_trip(good) == b'{"over": "the wire"}'
        other = tmp_path / "other.nk"
        other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
        await login_refused(config(url, nkey_seed_file=str(other)))


async def test_mutual_tls(pki: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    port = free_port()
    tls = (
        f'tls {{cert_file: "{pki["server"]}", key_file: "{pki["server_key"]}", '
        f'ca_file: "{pki["ca"]}", verify: true}}'
    )
    with nats_server(tmp_path, port, tls):
        listening(port)
        url = f"tls://127.0.0.1:{port}"
        plain_key = tmp_path / "client.key"
        plain_key.write_bytes(decrypted(pki["client_key"]))
        files = {"ca_file": str(pki["ca"]), "cert_file": str(pki["client"])}
        good = config(url, tls={**files, "key_file": str(plain_key)})
        assert await round_trip(good) == b'{"over": "the wire"}'
        await refused(config(url, tls={"ca_file": str(pki["ca"])}))  # no client certificate


def decrypted(key_file: Path) -> bytes:
    """The test PKI's client key without its passphrase (the TLS context takes none)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_file.read_bytes(), b"key-secret")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
