"""Subscriptions: which handlers an event goes to. Pure; no I/O.

A handler subscribes with ``on`` (types or globs) and an optional CEL ``filter``
over ``event``. The candidates for a type are computed once and cached; the
filter runs per event. A filter that fails at run time (a missing field, a type
error) counts as no match; the failure is logged and counted.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bridge.celexpr import cel
from bridge.events import Event

log = logging.getLogger("bridge.routing")
H = TypeVar("H")


def compile_filter(expression: str) -> Any:
    """Compile a CEL expression once.

    Raises:
        ValueError: the expression does not parse.
    """
    try:
        return cel.compile(expression)
    except Exception as exc:  # the CEL binding raises ValueError and RuntimeError
        raise ValueError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class Subscription(Generic[H]):
    """One handler's subscription: its patterns, compiled filter, and the handler itself."""

    handler_id: str
    patterns: tuple[str, ...]
    target: H
    filter_source: str | None = None
    program: Any = None

    def accepts_type(self, event_type: str) -> bool:
        return any(p == event_type or fnmatch.fnmatchcase(event_type, p) for p in self.patterns)


class Router(Generic[H]):
    """Matches events to subscriptions.

    Args:
        subscriptions: every handler's subscription.
        on_filter_error: called with (handler id, exception) when a filter fails.
    """

    def __init__(
        self,
        subscriptions: Sequence[Subscription[H]],
        on_filter_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self._subs = list(subscriptions)
        self._by_handler = {s.handler_id: s for s in self._subs}
        self._by_type: dict[str, list[Subscription[H]]] = {}
        # Without a filter anywhere a match is its type's candidates (frozen subscriptions).
        self._filtered = any(s.program is not None for s in self._subs)
        self._on_filter_error = on_filter_error

    def subscription(self, handler_id: str) -> Subscription[H] | None:
        """The subscription of the handler ``handler_id``, or None when there is none."""
        return self._by_handler.get(handler_id)

    def candidates(self, event_type: str) -> list[Subscription[H]]:
        """Subscriptions whose ``on`` matches the type (filters not applied)."""
        found = self._by_type.get(event_type)
        if found is None:
            found = [s for s in self._subs if s.accepts_type(event_type)]
            if len(self._by_type) < 10_000:
                self._by_type[event_type] = found
        return found

    def match(self, event: Event[Any]) -> list[Subscription[H]]:
        """Subscriptions that accept ``event``, filters applied."""
        found = self.candidates(event.type)
        if not self._filtered or not any(s.program is not None for s in found):
            return found
        env: dict[str, Any] | None = None
        out = []
        for sub in found:
            if sub.program is None:
                out.append(sub)
                continue
            if env is None:
                env = {"event": event.as_filter_input()}
            try:
                if sub.program.execute(env) is True:
                    out.append(sub)
            except Exception as exc:  # a failing filter is "no match", by contract
                log.warning(
                    "filter failed; treated as no match",
                    extra={"handler": sub.handler_id, "event_id": event.id, "error": str(exc)},
                )
                if self._on_filter_error is not None:
                    self._on_filter_error(sub.handler_id, exc)
        return out
