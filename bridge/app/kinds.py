"""The kinds this process knows: the built-ins plus the entry-point plug-ins.

Built-in kinds are the explicit registries ``connectors.KINDS`` and
``handlers.KINDS``; third-party kinds come in through the entry-point groups
``bridge.connectors`` and ``bridge.handlers`` (each names a ``ConnectorKind`` or
``HandlerKind``). A plug-in of the same name replaces a built-in.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

import connectors
import handlers
from bridge.config.kinds import Kinds


@functools.cache
def default_kinds() -> Kinds:
    """Built-in kinds plus the plug-ins' ones; looked up once per process."""
    return Kinds(
        connectors={**connectors.KINDS, **_plugins("bridge.connectors")},
        handlers={**handlers.KINDS, **_plugins("bridge.handlers")},
    )


def _plugins(group: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        found[ep.name] = ep.load()
    return found
