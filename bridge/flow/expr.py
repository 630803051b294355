"""Key and priority expressions: CEL over ``event``, compiled once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.celexpr import cel

if TYPE_CHECKING:
    from bridge.events import Event


class KeyExpr:
    """A CEL expression over ``event``, compiled once; its value names a key.

    A missing field or a type error gives the key ``None`` (the caller decides what
    that means), never an exception.
    """

    def __init__(self, source: str | None) -> None:
        self.source = source
        self._program = cel.compile(source) if source else None

    def value(self, event: Event[Any], scope: dict[str, Any] | None = None) -> Any:
        """The expression's value for ``event``; None when it fails."""
        if self._program is None:
            return None
        try:
            return self._program.execute(scope or {"event": event.as_filter_input()})
        except Exception:  # a missing field is "no key", by contract
            return None

    def key(self, event: Event[Any], scope: dict[str, Any] | None = None) -> str:
        """The key for ``event``: the value as text; ``""`` without an expression."""
        if self._program is None:
            return ""
        value = self.value(event, scope)
        return "" if value is None else str(value)

    def integer(self, event: Event[Any], scope: dict[str, Any] | None = None) -> int:
        """The value as an integer; 0 when it is not one."""
        value = self.value(event, scope)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return 0
        return int(value)
