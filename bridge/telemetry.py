"""Structured logs: JSON lines (production) or readable text (development).

Every record's ``extra`` fields with the names of DESIGN §7 (``correlation_id``,
``event_id``, ``event_type``, ``handler``, ``attempt``, ``trace_id``, ``span_id``)
and any other extra are written as JSON keys.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import bridge.jsonio as jsonio

# The run whose code is executing, so every log line it causes (from ctx.log, the
# handler's own loggers or libraries it calls) carries the run's fields.
CURRENT_RUN: ContextVar[Any] = ContextVar("bridge_current_run", default=None)

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_FIRST = ("correlation_id", "event_id", "event_type", "handler", "attempt", "trace_id", "span_id")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return jsonio.dumps(out, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``12:00:01 INFO  bridge.dispatch  message  key=value ...`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = _fields(record)
        ordered = [f"{k}={fields.pop(k)}" for k in _FIRST if k in fields]
        ordered += [f"{k}={v}" for k, v in fields.items()]
        line = f"{stamp} {record.levelname:<7} {record.name:<18} {record.getMessage()}"
        if ordered:
            line += "  " + " ".join(ordered)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class ContextFilter(logging.Filter):
    """Adds the current run's fields and the current span's ids to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        run = CURRENT_RUN.get()
        if run is not None:
            for key, value in run.log_fields().items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        if not hasattr(record, "trace_id"):
            from bridge.tracing import current_ids

            trace_id, span_id = current_ids()
            if trace_id is not None:
                record.trace_id = trace_id
                record.span_id = span_id
        return True


def configure_logging(
    fmt: str = "json", level: str = "INFO", levels: Mapping[str, str] | None = None
) -> None:
    """Send logs to stderr in ``fmt`` (``json`` or ``console``) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name, lvl in (levels or {}).items():
        logging.getLogger(name).setLevel(lvl)
