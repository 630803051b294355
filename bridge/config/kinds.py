"""The registries of kinds and the config model they make.

The engine knows no connector or handler kind by name: the wiring hands it a
``Kinds`` value (built-ins plus entry-point plug-ins, see ``bridge.app.kinds``),
and the config model is one discriminated union per registry over the kinds'
config models, built once per ``Kinds`` value (its JSON Schema: ``bridge.config.schema``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, create_model

from bridge.config.models import CONNECTORS_DESCRIPTION, HANDLERS_DESCRIPTION, BridgeConfig
from bridge.handling import HandlerKind
from bridge.transport import ConnectorKind


@dataclass(frozen=True, eq=False)
class Kinds:
    """The connector and handler kinds a config may use, by their ``type`` name.

    Compared and hashed by identity: the config model is cached per value.
    """

    connectors: Mapping[str, ConnectorKind]
    handlers: Mapping[str, HandlerKind]

    def __post_init__(self) -> None:
        object.__setattr__(self, "connectors", MappingProxyType(dict(self.connectors)))
        object.__setattr__(self, "handlers", MappingProxyType(dict(self.handlers)))


_models: weakref.WeakKeyDictionary[Kinds, type[BridgeConfig]] = weakref.WeakKeyDictionary()


def _union(models: Sequence[type[BaseModel]]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


def config_model(kinds: Kinds) -> type[BridgeConfig]:
    """The config model with every kind of ``kinds``; built on first use, then reused."""
    model = _models.get(kinds)
    if model is None:
        conn_models = [k.config for k in kinds.connectors.values()]
        handler_models = [k.config for k in kinds.handlers.values()]
        connectors: Any = dict[str, _union(conn_models)]  # type: ignore[misc]
        handlers: Any = list[_union(handler_models)]  # type: ignore[misc]
        model = create_model(
            "BridgeConfig",
            __base__=BridgeConfig,
            connectors=(
                connectors,
                Field(default_factory=dict, description=CONNECTORS_DESCRIPTION),
            ),
            handlers=(handlers, Field(default_factory=list, description=HANDLERS_DESCRIPTION)),
        )
        _models[kinds] = model
    return model
