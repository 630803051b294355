"""Redis connections the shared server cannot show: mutual TLS (``rediss://``) and
Sentinel, each against a ``redis-server`` this test starts on free ports. Entries are
published and consumed back through the connector, so the whole path is exercised."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bridge.errors import ConnectorError
from bridge.transport import Settlement
from connectors.redis import RedisConfig
from connectors.redis.consume import RedisSource
from connectors.redis.publish import RedisPublisher
from tests.contract import running, take
from tests.integration.test_kafka_tls import pki  # noqa: F401 (a fixture: CA, server, client)
from tests.support import free_port, listening, server_process

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def server(*args: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``redis-server`` (no persistence) stopped afterwards."""
    with server_process("redis-server", *args, cwd=cwd) as proc:
        yield proc


def consume_config(base: dict[str, object], stream: str) -> RedisConfig:
    consume = {"stream": stream, "group": "bridge", "declare": True, "block": "200ms"}
    return RedisConfig.model_validate({**base, "consume": consume})


async def round_trip(base: dict[str, object]) -> bytes:
    """Publish one entry through the connector and consume it back; its body."""
    publisher = RedisPublisher(RedisConfig.model_validate(base), "redis")
    await publisher.start()
    async with running(RedisSource(consume_config(base, "s"), "redis")) as source:
        await publisher.publish("s", b'{"over": "the wire"}', {"x-test": "yes"}, None)
        (got,) = await take(source, 1, within=15)
        await got.settle(Settlement.ACK)
    await publisher.close()
    assert got.headers["x-test"] == "yes"
    return bytes(got.body)


async def test_mutual_tls(pki: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    # redis-py takes no key password here: write the client key unencrypted.
    key = serialization.load_pem_private_key(pki["client_key"].read_bytes(), b"key-secret")
    plain_key = tmp_path / "client-plain.key"
    plain_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = free_port()
    tls_args = [
        "--port", "0", "--tls-port", str(port), "--save", "", "--appendonly", "no",
        "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"]),
        "--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "yes",
    ]  # fmt: skip
    with server(*tls_args, cwd=tmp_path):
        listening(port)
        url = f"rediss://127.0.0.1:{port}/0"
        tls = {"ca_file": str(pki["ca"]), "cert_file": str(pki["client"])}
        base: dict[str, object] = {"url": url, "tls": {**tls, "key_file": str(plain_key)}}
        assert await round_trip(base) == b'{"over": "the wire"}'
        # Without a client certificate the server refuses the handshake.
        refused = consume_config({"url": url, "tls": {"ca_file": str(pki["ca"])}}, "s")
        with pytest.raises(ConnectorError, match="cannot consume"):
            await RedisSource(refused, "redis").start()
        # A server certificate from another CA is refused by the bridge.
        wrong_ca = consume_config({"url": url, "tls": {**tls, "ca_file": str(pki["client"])}}, "s")
        with pytest.raises(ConnectorError):
            await RedisSource(wrong_ca, "redis").start()


async def test_sentinel_finds_the_master(tmp_path: Path) -> None:
    data_port, sentinel_port = free_port(), free_port()
    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its config file: it must be writable
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor testmaster 127.0.0.1 {data_port} 1\n"
    )
    data_args = ["--port", str(data_port), "--bind", "127.0.0.1", "--save", ""]
    with (
        server(*data_args, "--appendonly", "no", cwd=tmp_path),
        server(str(conf), "--sentinel", cwd=tmp_path),
    ):
        listening(data_port)
        listening(sentinel_port)
        base: dict[str, object] = {
            # The URL's host is not used with Sentinel: the master comes from the sentinels.
            "url": "redis://unused.invalid:6379/0",
            "sentinel": {"hosts": [f"127.0.0.1:{sentinel_port}"], "service": "testmaster"},
        }
        assert await round_trip(base) == b'{"over": "the wire"}'
        missing = {**base, "sentinel": {"hosts": [f"127.0.0.1:{sentinel_port}"], "service": "no"}}
        with pytest.raises(ConnectorError, match="cannot consume"):
            await RedisSource(consume_config(missing, "s"), "redis").start()
