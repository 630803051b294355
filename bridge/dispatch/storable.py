"""What a run may hand to the store, checked inside the attempt, and failures made storable.

A handler's result is written to the ledger as the store writes it
(``orjson`` with ``default=str``, through ``bridge.jsonio``: a value orjson does
not know natively, such as a ``Decimal``, a ``set`` or an object, is kept as its
``str``; an int beyond 64 bits as its digits). What even that cannot write (a dict
key that is not a string, a string with lone surrogates, nesting past orjson's
depth limit, an object whose ``str`` raises) would fail in the store every time the run is tried:
``Unstorable`` dead-letters it at once instead, naming the path and type.

An emitted child is queued as its CloudEvent JSON (``Event.to_json``: orjson
with no fallback), so its ``data`` and extensions must be plain JSON values
(str, int, float, bool, None, list, tuple, dict with str keys, and what orjson
writes natively: datetime, date, time, UUID, dataclass, enum).

Failure texts and dead-letter details are made storable the other way round:
they never fail a write (lone surrogates are escaped, a detail that cannot be
written is kept as its ``repr``).
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import bridge.jsonio as jsonio
from bridge.errors import Fatal
from bridge.events import Event

TRACEBACK_FRAMES = 50
TRACEBACK_BYTES = 8192
_DETAIL_REPR = 4096


class Unstorable(Fatal):
    """A run's result or emitted child cannot be stored; retrying gives the same value.

    Attributes:
        reason: ``unserializable_result`` or ``unserializable_child``.
        path: where in the value, e.g. ``result["a"][3]``.
    """

    def __init__(self, reason: str, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.reason = reason
        self.path = path


def _ledger_dumps(value: Any) -> bytes:
    return jsonio.dumps(value, default=str)


def _event_dumps(value: Any) -> bytes:
    return jsonio.dumps(value)


def check_result(result: Any) -> None:
    """Raise ``Unstorable`` when the ledger cannot write ``result``."""
    try:
        _ledger_dumps(result)
    except (TypeError, ValueError, RecursionError):
        raise _unstorable("unserializable_result", "result", result, _ledger_dumps) from None


def check_children(children: Sequence[Event[Any]]) -> None:
    """Raise ``Unstorable`` naming the first emitted child that cannot be queued."""
    for index, child in enumerate(children):
        try:
            body = child.to_dict()
            _event_dumps(body)
        except (TypeError, ValueError, RecursionError):
            where = f"child[{index}] ({child.type})"
            raise _unstorable(
                "unserializable_child", where, child.to_dict(), _event_dumps
            ) from None


def _unstorable(reason: str, root: str, value: Any, dumps: Callable[[Any], bytes]) -> Unstorable:
    path, node, message = _deepest_failure(root, value, dumps)
    return Unstorable(reason, path, f"{_type_name(node)} cannot be stored as JSON ({message})")


def _deepest_failure(
    path: str, value: Any, dumps: Callable[[Any], bytes], depth: int = 0
) -> tuple[str, Any, str]:
    """The path, value and orjson message of the innermost part of ``value`` that fails."""
    try:
        dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        message = _safe_str(exc)
    else:
        return path, value, ""
    if depth > 300:  # past orjson's own depth limit: the message says so
        return path, value, message
    for sub, item in _parts(path, value):
        if isinstance(item, _Key):
            try:
                dumps({item.key: None})
            except (TypeError, ValueError, RecursionError) as exc:
                return sub, item.key, f"dict key: {_safe_str(exc)}"
            continue
        try:
            dumps(item)
        except (TypeError, ValueError, RecursionError):
            return _deepest_failure(sub, item, dumps, depth + 1)
    return path, value, message


@dataclasses.dataclass(slots=True)
class _Key:
    key: Any


def _parts(path: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key, item in value.items():
            sub = f"{path}[{_key_text(key)}]"
            out.append((f"{path} key {_key_text(key)}", _Key(key)))
            out.append((sub, item))
        return out
    if isinstance(value, list | tuple):
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            (f"{path}.{f.name}", getattr(value, f.name, None)) for f in dataclasses.fields(value)
        ]
    return []


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return '"' + escape_surrogates(key)[:60] + '"'
    return _safe_repr(key)[:60]


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _safe_str(value: Any) -> str:
    try:
        return escape_surrogates(str(value))
    except Exception:  # a value's own __str__ may raise anything
        return _safe_repr(value)


def _safe_repr(value: Any) -> str:
    try:
        return escape_surrogates(repr(value))
    except Exception:  # a value's own __repr__ may raise anything
        return f"<{_type_name(value)}>"


def escape_surrogates(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot hold) as ``\\udXXX`` escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def describe(error: BaseException) -> str:
    """``Type: message`` of a failure, never raising, always storable as JSON."""
    name = type(error).__name__
    if isinstance(error, Unstorable):
        return f"{error.reason}: {_safe_str(error)}"
    text = _safe_str(error)
    return f"{name}: {text}" if text else name


def format_traceback(error: BaseException) -> str | None:
    """The stack trace of ``error`` (chained causes included), its last
    ``TRACEBACK_FRAMES`` frames and ``TRACEBACK_BYTES`` bytes; None when it has none."""
    if error.__traceback__ is None:
        return None
    try:
        lines = traceback.format_exception(error, limit=-TRACEBACK_FRAMES)
    except Exception:  # formatting calls the exception's __str__, which may raise
        lines = traceback.format_tb(error.__traceback__, limit=-TRACEBACK_FRAMES)
        lines.append(describe(error) + "\n")
    text = escape_surrogates("".join(lines))
    raw = text.encode("utf-8")
    if len(raw) > TRACEBACK_BYTES:
        text = "...\n" + raw[-TRACEBACK_BYTES:].decode("utf-8", "ignore")
    return text


def storable_detail(detail: Any) -> Any:
    """``detail`` if the store can write it, else its ``repr`` (at most 4 KB)."""
    if detail is None:
        return None
    try:
        _ledger_dumps(detail)
    except (TypeError, ValueError, RecursionError):
        return _safe_repr(detail)[:_DETAIL_REPR]
    return detail
