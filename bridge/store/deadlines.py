"""Deadlines on store calls, read from the store URL's query.

Every store call (SQLite and PostgreSQL) either answers or raises ``StoreError``
within its deadline, so a store that hangs (a black-holed network, a held lock, a
stalled disk) looks like a store that is down: the deliveries that need it are held
and retried with backoff, ``/readyz`` turns false, and work resumes by itself.

Query parameters (seconds, decimals allowed), removed from the URL before it reaches
the driver:

* ``timeout`` (default 5): each call, from asking for a connection to its answer.
  On PostgreSQL it also sets asyncpg's ``command_timeout``, the pool's acquire
  timeout, and the server's ``statement_timeout`` and ``lock_timeout`` (80% of it);
  on SQLite also ``busy_timeout``.
* ``ping_timeout`` (default 2): the ``/readyz`` ping.

For example ``postgresql://db/bridge?schema=bridge&timeout=10&ping_timeout=1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bridge.errors import StoreError

PARAMETERS = ("timeout", "ping_timeout")


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds a store call (``call``) and the readiness ping (``ping``) may take."""

    call: float = 5.0
    ping: float = 2.0


def take_deadlines(query: dict[str, str]) -> Deadlines:
    """The deadlines named in ``query`` (parsed URL query), removing them from it.

    Raises:
        StoreError: a value is not a positive number of seconds.
    """
    values: dict[str, float] = {}
    for name, field in (("timeout", "call"), ("ping_timeout", "ping")):
        raw = query.pop(name, None)
        if raw is None:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not (seconds > 0 and math.isfinite(seconds)):
            raise StoreError(f"store URL: {name} must be a positive number of seconds, not {raw!r}")
        values[field] = seconds
    return Deadlines(**values)
