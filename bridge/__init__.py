"""A fan-out message bridge: every event to every subscribed handler, each on its own.

The public API for handler authors::

    from bridge import Event, Context, handler, Fatal

    @handler
    async def send_welcome_email(event: Event[SubscriberCreated], ctx: Context) -> dict:
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from bridge import errors
from bridge.context import Context
from bridge.errors import BridgeError, ConfigError, ConnectorError, Fatal, RetryAfter
from bridge.events import Event

__all__ = [
    "BridgeError",
    "ConfigError",
    "ConnectorError",
    "Context",
    "Event",
    "Fatal",
    "RetryAfter",
    "errors",
    "handler",
]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def handler(func: F) -> F: ...


@overload
def handler(*, data: type[Any]) -> Callable[[F], F]: ...


def handler(func: Any = None, *, data: type[Any] | None = None) -> Any:
    """Mark a function as a bridge handler, optionally naming its data model.

    ``@handler`` alone documents intent; ``@handler(data=Model)`` makes the
    ``python`` handler kind validate ``event.data`` as ``Model`` (the same as
    annotating the parameter ``Event[Model]``).
    """

    def mark(target: F) -> F:
        target.__bridge_handler__ = True  # type: ignore[attr-defined]
        if data is not None:
            target.__bridge_data__ = data  # type: ignore[attr-defined]
        return target

    return mark(func) if func is not None else mark
