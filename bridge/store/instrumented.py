"""Time every store call and count its failures, on the store object itself.

The store's public coroutine methods are replaced on the instance by timed ones, so
every holder of the store (inbox, scheduler, dispatcher, server) is measured without
knowing; ``open`` and ``close`` are left alone. ``ping`` also sets ``bridge_store_up``.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.errors import StoreError
from bridge.metrics import Metrics

_UNTIMED = frozenset({"open", "close"})
_MARK = "_bridge_instrumented"
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def operations(store: Any) -> list[str]:
    """The names of the store's calls that are timed."""
    return sorted(
        name
        for name, fn in inspect.getmembers(type(store), inspect.iscoroutinefunction)
        if not name.startswith("_") and name not in _UNTIMED
    )


def instrument_store(store: Any, metrics: Metrics) -> list[str]:
    """Time ``store``'s calls into ``bridge_store_seconds{operation}`` and count
    ``StoreError`` in ``bridge_store_errors_total{operation}``; the operations timed.

    A store instrumented already (one store shared by two runtimes in tests) is left
    as it is.
    """
    names = operations(store)
    if getattr(store, _MARK, False):
        return names
    for name in names:
        setattr(store, name, _timed(getattr(store, name), name, metrics))
    setattr(store, _MARK, True)
    return names


def _timed(
    call: Callable[..., Awaitable[Any]], name: str, metrics: Metrics
) -> Callable[..., Awaitable[Any]]:
    labels = (("operation", name),)
    clock = time.perf_counter

    @functools.wraps(call)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            result = await call(*args, **kwargs)
        except StoreError:
            metrics.inc("bridge_store_errors_total", labels)
            raise
        finally:
            metrics.observe("bridge_store_seconds", labels, clock() - started, STORE_BUCKETS)
        if name == "ping":
            metrics.set("bridge_store_up", (), 1.0 if result else 0.0)
        return result

    return timed
