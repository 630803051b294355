"""Handler kinds. ``KINDS`` is the explicit registry; plugins add kinds through the
``bridge.handlers`` entry-point group (each entry point names a ``HandlerKind``)."""

from __future__ import annotations

from bridge.handling import Handler, HandlerConfig, HandlerEnv, HandlerKind
from handlers import emit, http, join, log, publish, python

KINDS: dict[str, HandlerKind] = {
    "python": HandlerKind(python.PythonHandlerConfig, python.build),
    "emit": HandlerKind(emit.EmitHandlerConfig, emit.build),
    "log": HandlerKind(log.LogHandlerConfig, log.build),
    "publish": HandlerKind(publish.PublishHandlerConfig, publish.build),
    "http": HandlerKind(http.HttpHandlerConfig, http.build),
    "join": HandlerKind(join.JoinHandlerConfig, join.build, background=join.background),
}

__all__ = ["KINDS", "Handler", "HandlerConfig", "HandlerEnv", "HandlerKind"]
