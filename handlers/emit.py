"""``type: emit``: turn one event into new events (hierarchical fan-out).

With ``items``, one child per element of a list in the event (``data.report_ids``),
or one child per ``chunk_size`` elements when set; without it, one child. Child
data comes from the ``data`` template mapping (``{item}``, ``{index}``, any event
field) or is the item itself. Children keep the correlation id, name their parent
and have deterministic ids, so a retried parent never emits twice. More items
than ``max_fanout`` dead-letter the run with nothing emitted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bridge.context import Context
from bridge.errors import Fatal
from bridge.events import Event
from bridge.handling import HandlerConfig, HandlerEnv
from bridge.templates import EVENT_ROOTS, Template, TemplateError, event_scope


class EmitHandlerConfig(HandlerConfig):
    """Emit child events from an event."""

    type: Literal["emit"] = Field(
        "emit", description="Handler kind: emit new events from the event."
    )
    emit: str = Field(description="Type of the child events (a template).")
    items: str | None = Field(
        None, description="Path of a list in the event, e.g. `data.report_ids`."
    )
    data: Any = Field(
        None,
        description="Child data: a mapping whose string values are templates (`{item}`, "
        "`{index}`, `{data.x}`); default the item (or the parent's data without `items`).",
    )
    subject: str | None = Field(None, description="Child subject template.")
    max_fanout: int = Field(1000, ge=1, description="More items than this dead-letter the run.")
    chunk_size: int | None = Field(
        None,
        ge=1,
        description="Emit one child per chunk of this many items (`{item}` is the chunk).",
    )

    def check(self, cfg: Any) -> list[tuple[tuple[str, ...], str]]:
        problems: list[tuple[tuple[str, ...], str]] = []
        for name, text in (
            ("emit", self.emit),
            ("items", _wrap(self.items)),
            ("subject", self.subject),
        ):
            if text is None:
                continue
            try:
                Template(text, EVENT_ROOTS)
            except TemplateError as exc:
                problems.append(((name,), str(exc)))
        return problems


def _wrap(path: str | None) -> str | None:
    if path is None:
        return None
    return path if path.startswith("{") else "{" + path + "}"


class EmitHandler:
    """Emits children through ``ctx.emit``."""

    def __init__(self, cfg: EmitHandlerConfig, env: HandlerEnv) -> None:
        self.cfg = cfg
        self.type = Template(cfg.emit, EVENT_ROOTS)
        self.items = Template(_wrap(cfg.items) or "", EVENT_ROOTS) if cfg.items else None
        self.subject = Template(cfg.subject, EVENT_ROOTS) if cfg.subject else None
        self.data = _compile(cfg.data)

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        scope = event_scope(event)
        try:
            if self.items is None:
                groups: list[Any] = [event.data_json()]
            else:
                items = self.items.render(scope)
                if not isinstance(items, list | tuple):
                    raise Fatal(f"{self.cfg.items} is not a list ({type(items).__name__})")
                items = [_plain(i) for i in items]
                if len(items) > self.cfg.max_fanout:
                    raise Fatal(
                        f"{len(items)} items is more than max_fanout {self.cfg.max_fanout};"
                        " nothing was emitted"
                    )
                size = self.cfg.chunk_size
                groups = (
                    [items[i : i + size] for i in range(0, len(items), size)] if size else items
                )
            ids = []
            for index, item in enumerate(groups):
                item_scope = {**scope, "item": item, "index": index}
                data = item if self.data is None else _render(self.data, item_scope)
                subject = self.subject.render_str(item_scope) if self.subject else None
                child = ctx.emit(self.type.render_str(item_scope), data, subject=subject)
                ids.append(child.id)
        except TemplateError as exc:
            raise Fatal(f"emit template failed: {exc}") from exc
        return {"emitted": len(ids)}


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump is not None else value


def _compile(spec: Any) -> Any:
    if isinstance(spec, str):
        return Template(spec, EVENT_ROOTS)
    if isinstance(spec, dict):
        return {k: _compile(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_compile(v) for v in spec]
    return spec


def _render(spec: Any, scope: dict[str, Any]) -> Any:
    if isinstance(spec, Template):
        return _plain(spec.render(scope))
    if isinstance(spec, dict):
        return {k: _render(v, scope) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_render(v, scope) for v in spec]
    return spec


def build(cfg: EmitHandlerConfig, env: HandlerEnv) -> EmitHandler:
    return EmitHandler(cfg, env)
