"""String templates over events and deliveries, compiled once.

Syntax: literal text with ``{path}`` fields. A path starts with a root name
(``data``, ``header``, ``meta``, ``id``, ``type``, ``item`` ...) followed by
dotted keys or list indexes: ``{data.items.0.id}``. Header names may contain
dashes: ``{header.x-tenant}``. A field may end in a filter: ``|lower``,
``|upper``, ``|default:TEXT``. A template that is exactly one field returns the
value itself (a list stays a list); otherwise the result is a string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_FIELD = re.compile(r"\{([^{}]+)\}")
_MISSING = object()


class TemplateError(ValueError):
    """A template is malformed, or a field it needs is missing at render time."""


def lookup(scope: Mapping[str, Any], path: str) -> Any:
    """Resolve a dotted path in ``scope``; raises ``KeyError`` when a part is missing."""
    return _resolve(scope, _compile(path))


_Path = tuple[str, str, list[str]]
"""A path split once: its root, the rest whole (a header's name) and the rest's steps."""


def _compile(path: str) -> _Path:
    root, _, rest = path.partition(".")
    return root, rest, rest.split(".") if rest else []


def _resolve(scope: Mapping[str, Any], path: _Path) -> Any:
    root, rest, steps = path
    value = scope[root]
    if not rest:
        return value
    if root in ("header", "headers"):
        # Header names contain dots rarely and dashes often; take the rest whole.
        return _header(value, rest)
    for part in steps:
        # A dict (what JSON decodes to) is stepped into at once; anything else as a
        # Mapping, a sequence or an object.
        value = value[part] if type(value) is dict else _step(value, part)
    return value


def _header(headers: Any, name: str) -> Any:
    if name in headers:
        return headers[name]
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    raise KeyError(name)


def _step(value: Any, part: str) -> Any:
    if isinstance(value, Mapping):
        return value[part]
    if isinstance(value, list | tuple):
        try:
            return value[int(part)]
        except (ValueError, IndexError):
            raise KeyError(part) from None
    attr = getattr(value, part, _MISSING)
    if attr is _MISSING:
        raise KeyError(part)
    return attr


def _filter(spec: str) -> Callable[[Any], Any]:
    name, _, arg = spec.partition(":")
    name = name.strip()
    if name == "lower":
        return lambda v: str(v).lower()
    if name == "upper":
        return lambda v: str(v).upper()
    if name == "default":
        return lambda v: arg if v is _MISSING or v is None or v == "" else v
    raise TemplateError(f"unknown template filter {name!r} (lower, upper, default:TEXT)")


class Template:
    """A compiled template. ``render(scope)`` fills it; raises ``TemplateError`` on a missing field."""

    __slots__ = ("_parts", "_single", "_static", "fields", "source")

    def __init__(self, source: str, roots: frozenset[str] | None = None) -> None:
        self.source = source
        self._parts: list[str | tuple[_Path, list[Callable[[Any], Any]], bool]] = []
        self.fields: list[str] = []
        pos = 0
        for match in _FIELD.finditer(source):
            if match.start() > pos:
                self._parts.append(source[pos : match.start()])
            expr, *filters = match.group(1).split("|")
            path = expr.strip()
            if not path:
                raise TemplateError(f"empty field in template {source!r}")
            root = path.partition(".")[0]
            if roots is not None and root not in roots:
                allowed = ", ".join(sorted(roots))
                raise TemplateError(
                    f"unknown field {root!r} in template {source!r} (use {allowed})"
                )
            funcs = [_filter(f) for f in filters]
            has_default = any(f.strip().startswith("default") for f in filters)
            self._parts.append((_compile(path), funcs, has_default))
            self.fields.append(path)
            pos = match.end()
        if pos < len(source):
            self._parts.append(source[pos:])
        if "{" in "".join(p for p in self._parts if isinstance(p, str)):
            raise TemplateError(f"unbalanced '{{' in template {source!r}")
        self._single = len(self._parts) == 1 and not isinstance(self._parts[0], str)
        # A template without fields renders to itself: no list, no join, per message.
        self._static: str | None = None if self.fields else "".join(self._parts)  # type: ignore[arg-type]

    @property
    def is_static(self) -> bool:
        """True when the template has no fields."""
        return not self.fields

    def render(self, scope: Mapping[str, Any]) -> Any:
        """Fill the template from ``scope``.

        Raises:
            TemplateError: a field is missing and has no ``default`` filter.
        """
        if self._static is not None:
            return self._static
        if self._single:
            return self._value(self._parts[0], scope)  # type: ignore[arg-type]
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(str(self._value(part, scope)))
        return "".join(out)

    def render_str(self, scope: Mapping[str, Any]) -> str:
        """Like ``render`` but always a string."""
        if self._static is not None:
            return self._static
        value = self.render(scope)
        return value if isinstance(value, str) else str(value)

    def _value(
        self, part: tuple[_Path, list[Callable[[Any], Any]], bool], scope: Mapping[str, Any]
    ) -> Any:
        path, funcs, has_default = part
        try:
            value = _resolve(scope, path)
        except (KeyError, TypeError):
            if not has_default:
                name = f"{path[0]}.{path[1]}" if path[1] else path[0]
                raise TemplateError(f"field {name!r} is missing") from None
            value = _MISSING
        for func in funcs:
            value = func(value)
        return value


def event_scope(event: Any, **extra: Any) -> dict[str, Any]:
    """The template scope of an event: its attributes, ``data`` and ``transport``."""
    scope = {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "correlationid": event.correlationid,
        "data": event.data,
        "transport": event.transport,
        "event": event,
    }
    scope.update(extra)
    return scope


EVENT_ROOTS = frozenset(
    {
        "id",
        "type",
        "source",
        "subject",
        "correlationid",
        "data",
        "transport",
        "event",
        "item",
        "index",
    }
)
DELIVERY_ROOTS = frozenset({"data", "header", "headers", "meta", "connector", "body"})
