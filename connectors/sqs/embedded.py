"""Dev mode's SQS: moto's server (``moto[server]``), when the connector would reach nothing.

That is when ``endpoint_url`` is local and nothing answers there, or when it is
unset and no AWS credentials are configured. Dummy credentials and the region
``us-east-1`` are set for the process (unless given), the connector is pointed at
the server and the queue it consumes is created. The server lives until
``bridge dev`` exits, across reloads.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

from bridge.embedded import Brokers, Embedded, free_port, is_local, reachable, wait_port
from bridge.errors import BridgeError
from connectors.sqs.config import SqsConfig

log = logging.getLogger("bridge.dev")
_DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "dev",
    "AWS_SECRET_ACCESS_KEY": "dev",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def embedded_broker(name: str, conn: SqsConfig, brokers: Brokers) -> None:
    """The ``ConnectorKind.embedded`` hook: start moto's server when SQS is out of reach.

    Raises:
        BridgeError: moto's server could not be started.
    """
    endpoint = conn.endpoint_url
    if endpoint:
        parsed = urllib.parse.urlsplit(endpoint)
        host, port = parsed.hostname or "", parsed.port or 80
        if not is_local(host) or reachable(host, port):
            return
    elif _aws_configured():
        return
    else:
        port = free_port()
    address = f"http://127.0.0.1:{port}"
    if address not in brokers.running:
        brokers.running[address] = _start_moto(port, brokers.workdir)
    for key, value in _DUMMY_AWS.items():
        os.environ.setdefault(key, value)
    conn.endpoint_url = address
    if conn.region is None:
        conn.region = "us-east-1"
    for queue in _queues_of(conn):
        _create_queue(address, queue, conn.region)
    log.info("sqs connector uses the embedded server", extra={"connector": name})


def _aws_configured() -> bool:
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    return Path("~/.aws/credentials").expanduser().exists()


def _queues_of(conn: SqsConfig) -> list[str]:
    names = []
    consume = conn.consume
    if consume is not None and consume.queue:
        names.append(consume.queue)
    return [q.rstrip("/").rsplit("/", 1)[-1] for q in names]


def _start_moto(port: int, workdir: Path) -> Embedded:
    log_path = workdir / "moto.log"
    with log_path.open("ab") as out:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise BridgeError(f"cannot start moto's server for SQS: {exc}") from exc
    wait_port(port, proc, log_path, "SQS server (moto)")
    if proc.poll() is not None:
        raise BridgeError("moto's server exited; is moto[server] installed?")
    return Embedded("sqs", "SQS (moto)", f"http://127.0.0.1:{port}", proc, log_path)


def _create_queue(endpoint: str, name: str, region: str) -> None:
    import botocore.session  # comes with aiobotocore, which the sqs connector needs

    client = botocore.session.get_session().create_client(
        "sqs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
    try:
        client.create_queue(QueueName=name, Attributes=attributes)
    finally:
        client.close()
