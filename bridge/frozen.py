"""A cheaper ``__init__`` for the frozen, slotted dataclasses made for every message.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__(self, "name", value)`` (its own ``__setattr__`` refuses): a
global lookup, an attribute lookup and a call that looks the name up again, for
every field. An ``Event`` (15 fields) took 1.37 µs to make and a ``Delivery`` (6)
0.67 µs, and both are made for every message. ``fast_init`` gives such a class an
``__init__`` with the same parameters and defaults that sets each field through its
slot's own descriptor (``Event``: 0.71 µs). Nothing else changes: the class stays
frozen (assigning a field still raises ``FrozenInstanceError``), and equality,
``repr``, ``replace`` and pickling are the dataclass's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


def fast_init(cls: T) -> T:
    """Give ``cls`` (``@dataclass(frozen=True, slots=True)``, applied first) the
    ``__init__`` described above.

    Raises:
        TypeError: ``cls`` is not a frozen, slotted dataclass whose fields are all
            plain ``__init__`` parameters (no ``init=False``, ``kw_only`` or
            ``__post_init__``), which is all this ``__init__`` knows how to make.
    """
    params = dataclasses.fields(cls)
    if (
        not cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        or "__slots__" not in cls.__dict__
        or hasattr(cls, "__post_init__")
        or any(not f.init or f.kw_only for f in params)
    ):
        raise TypeError(f"fast_init: {cls.__name__} is not a plain frozen, slotted dataclass")
    scope: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    args: list[str] = []
    lines: list[str] = []
    for f in params:
        name = f.name
        scope[f"_set_{name}"] = cls.__dict__[name].__set__
        value = name
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{name}"] = f.default
            args.append(f"{name}=_default_{name}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory_{name}"] = f.default_factory
            args.append(f"{name}=_MISSING")
            value = f"_factory_{name}() if {name} is _MISSING else {name}"
        else:
            args.append(name)
        lines.append(f"    _set_{name}(self, {value})\n")
    source = f"def __init__(self, {', '.join(args)}):\n{''.join(lines)}"
    exec(source, scope)  # as dataclasses makes the __init__ it replaces
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    generated: Any = cls.__dict__["__init__"]  # the dataclass's
    init.__annotations__ = dict(generated.__annotations__)
    init.__doc__ = generated.__doc__
    cls.__init__ = init  # type: ignore[misc]
    return cls
