"""``type: python``: call a function by import path.

The function takes ``(event, ctx)`` and may be async or sync (a sync function
runs in a worker thread; a timeout stops waiting for it but cannot stop the
thread). When the event type has no schema in the catalog and the function's
``event`` parameter is annotated ``Event[Model]``, the data is validated as
``Model`` before the call; a failure there is a ``Fatal`` error (retrying
cannot fix the data).
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from bridge.context import Context
from bridge.errors import Fatal
from bridge.events import Event, import_object, validation_errors
from bridge.handling import HandlerConfig, HandlerEnv


class PythonHandlerConfig(HandlerConfig):
    """Run a Python function for each event."""

    type: Literal["python"] = "python"
    function: str = Field(description="Import path `package.module:function`.")

    def check(self, cfg: Any) -> list[tuple[tuple[str, ...], str]]:
        try:
            target = import_object(self.function)
        except Exception as exc:  # user code may raise anything at import time
            return [(("function",), str(exc))]
        if not callable(target):
            return [(("function",), f"{self.function!r} is not callable")]
        return []


def data_model(func: Callable[..., Any]) -> type[Any] | None:
    """The ``T`` of an ``Event[T]`` annotation on the function's first parameter, if any."""
    explicit = getattr(func, "__bridge_data__", None)
    if explicit is not None:
        return typing.cast(type[Any], explicit)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations just mean "no model"
        return None
    params = list(inspect.signature(func).parameters)
    if not params:
        return None
    hint = hints.get(params[0])
    if typing.get_origin(hint) is Event:
        (arg,) = typing.get_args(hint)
        if arg is not Any:
            return typing.cast(type[Any], arg)
    return None


class PythonHandler:
    """Calls the configured function."""

    def __init__(self, cfg: PythonHandlerConfig, env: HandlerEnv) -> None:
        self.cfg = cfg
        self.func: Callable[..., Any] = import_object(cfg.function)
        self.is_async = inspect.iscoroutinefunction(self.func)
        model = data_model(self.func)
        self._adapter: TypeAdapter[Any] | None = None
        self._model = model
        if model is not None:
            self._adapter = TypeAdapter(model)

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        if self._adapter is not None and not _is_instance(event.data, self._model):
            try:
                event = event.replace(data=self._adapter.validate_python(event.data))
            except ValidationError as exc:
                error = Fatal(
                    f"data does not match {getattr(self._model, '__name__', self._model)}"
                )
                error.detail = validation_errors(exc)  # type: ignore[attr-defined]
                raise error from exc
        if self.is_async:
            return await self.func(event, ctx)
        return await asyncio.to_thread(self.func, event, ctx)


def _is_instance(value: Any, model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, BaseModel) and isinstance(value, model)


def build(cfg: PythonHandlerConfig, env: HandlerEnv) -> PythonHandler:
    return PythonHandler(cfg, env)
