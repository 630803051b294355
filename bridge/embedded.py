"""Embedded brokers for ``bridge dev``: the processes it started, and port helpers.

A connector kind that can run its broker locally says how in its
``ConnectorKind.embedded`` hook: it starts the broker as a subprocess, waits for
its port, and records it in ``Brokers``, keyed by address so that connectors
sharing an address share one broker. Dev mode prints their addresses and stops
them all when it exits. Nothing here knows a broker or imports a broker SDK.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.errors import BridgeError


@dataclass
class Embedded:
    """A broker started by dev mode.

    Attributes:
        kind: the connector kind it serves (``kafka``).
        label: what the banner calls it (``Kafka (Tansu)``).
        address: where connectors reach it (``127.0.0.1:9092``, ``http://...``).
        process: the broker's process.
        log_path: the file its output goes to.
    """

    kind: str
    label: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """Terminate the process (killed after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Brokers:
    """The embedded brokers of one ``bridge dev``, keyed by address.

    Attributes:
        workdir: where brokers write their logs.
        running: the started brokers, by address.
    """

    workdir: Path
    running: dict[str, Embedded] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop every broker."""
        for broker in self.running.values():
            broker.stop()
        self.running.clear()


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def is_local(host: str) -> bool:
    """True for a host name or address of this machine (an empty host included)."""
    return host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    """Wait until ``proc`` accepts connections on ``port`` (30 s at most).

    Raises:
        BridgeError: the process exited or the port stayed closed; the message
            ends with the tail of ``log_path``.
    """
    deadline = time.monotonic() + 30.0
    while not reachable("127.0.0.1", port, 0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise BridgeError(f"the embedded {what} did not start on port {port}:\n{tail}")
        time.sleep(0.1)
