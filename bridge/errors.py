"""Errors raised by the bridge.

The tree::

    BridgeError                  root of everything the bridge raises on purpose
    ├── ConfigError              the YAML (or settings) is wrong; carries every issue with path and line
    ├── ConnectorError           a transport failed; ``retriable`` says whether trying again may help
    ├── StoreError               the state store failed
    ├── InvalidEvent             a message could not become an event (bad JSON, schema, size, ...)
    ├── Skipped                  a message that is on purpose no event (a dropped tombstone)
    └── Fatal                    raised by a handler: do not retry, dead-letter this run now

    Suspended (a BaseException)  a durable sleep or wait parks the run; no failure

A handler may raise anything; only ``Fatal`` (and, for HTTP handlers, a 4xx other
than 408/429, unless the handler's ``retry_on`` adds it) skips the retry policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


class BridgeError(Exception):
    """Root of the bridge's own errors."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake in a config file: where it is and what is wrong."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.path or '<root>'}: {self.message}"


class ConfigError(BridgeError):
    """The configuration is invalid. ``issues`` lists every mistake found."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(i) for i in self.issues))


class ConnectorError(BridgeError):
    """A transport operation failed.

    Args:
        message: what failed.
        retriable: True when the same operation may succeed later (a dropped
            connection), False when it cannot (bad credentials, unknown queue).
    """

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class StoreError(BridgeError):
    """The state store could not complete an operation."""


class InvalidEvent(BridgeError):
    """A delivery could not be turned into a valid event.

    Attributes:
        reason: a short machine-readable cause (``malformed_json``, ``schema``, ...).
        detail: a readable explanation; for schema failures, pydantic's errors.
    """

    def __init__(self, reason: str, detail: Any = None) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail is not None else reason)


class Skipped(BridgeError):
    """A message that is, on purpose, no event (a tombstone under ``tombstones: drop``):
    the source settles it ACK, with no dead letter. ``reason`` says what it was."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Fatal(BridgeError):
    """Raised by a handler to dead-letter the run at once, skipping retries."""


class RetryAfter(BridgeError):
    """Raised by a handler to ask for a retry no sooner than ``delay`` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Suspended(BaseException):
    """Raised by ``ctx.sleep`` / ``ctx.wait_for_event``: park the run until ``until``.

    Not a failure: the attempt ends without counting, the run is parked in the store
    (due at ``until``, epoch seconds) and re-runs from the start when due, its finished
    steps replayed. A ``BaseException`` so that a handler's ``except Exception`` does not
    swallow it. ``kind`` is ``sleeping`` or ``waiting``; ``reason`` says what for.
    ``after_park``, when set, is awaited once the run is parked (a wait looks again
    whether its event came while the run was being parked).
    """

    def __init__(
        self,
        until: float,
        kind: str,
        reason: str,
        after_park: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(reason)
        self.until = until
        self.kind = kind
        self.reason = reason
        self.after_park = after_park
