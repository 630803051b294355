"""The bridge's own spans, started without the SDK tracer's per-span overhead.

A delivery costs five spans at 100 % sampling (the delivery and one per handler
attempt). ``Tracer.start_span`` asks the sampler, counts its own metrics, builds the
trace flags and then ``Span.__init__`` cleans every attribute through
``BoundedAttributes`` and builds bounded lists, and ``end()`` copies the span into a
second ``ReadableSpan``: together about as much CPU as the untraced delivery.

``SpanStarter.start`` makes the same SDK ``Span`` (a subclass: every method the
span has, ``set_attribute``, ``record_exception``, ``set_status``, ``add_event``,
keeps the SDK's behaviour, limits and locks) with the bridge's attributes put in
as they are (they are strings and ints the bridge builds), the events and links
lists made on first use, and hands the span itself to the processors on ``end``
(it is read-only once ended). The sampling decision is the caller's (see
``Tracing.start_delivery``): a span started here is recorded and sampled.

While the provider's only processor is one with ``enqueue`` (the bridge's batch
processor, ``bridge.tracing``), a span goes to it straight: the provider's
composite processor would loop over it for ``on_start`` and ``_on_ending`` (no-ops
for a batch processor) and ``on_end``, which checks again that the span is sampled.
A processor added later (``add_span_processor``, by handler code through the global
provider) makes every span take the composite's path again.
"""

from __future__ import annotations

import random
import threading
from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

_bits = random.getrandbits
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)


class _LazyList:
    """Stands in for an empty ``BoundedList`` until something is appended (rarely)."""

    __slots__ = ()
    dropped = 0

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


_EMPTY = _LazyList()


class _Direct:
    """The processor spans go to straight, and the provider's processors it is alone in."""

    __slots__ = ("alone", "enqueue")

    def __init__(self, alone: tuple[Any, ...]) -> None:
        self.alone = alone
        self.enqueue = alone[0].enqueue


class BridgeSpan(SdkSpan):
    """An SDK span, built cheaply by ``SpanStarter`` (see the module's doc)."""

    def __init__(self) -> None:  # built by SpanStarter.start, never by callers
        raise TypeError("BridgeSpan is made by SpanStarter.start")

    def _add_event(self, event: Any) -> None:
        me: Any = self
        if me._events is _EMPTY:
            me._events = BoundedList(self._limits.max_events)
        super()._add_event(event)

    def _add_link(self, link: Any) -> None:
        me: Any = self
        if me._links is _EMPTY:
            me._links = BoundedList(self._limits.max_links)
        super()._add_link(link)

    def end(self, end_time: int | None = None) -> None:
        # acquire / release, not ``with``: a lock's context manager costs twice as much.
        lock = self._lock
        lock.acquire()
        try:
            if self._end_time is not None:
                ended = True
            else:
                ended = False
                self._end_time = end_time if end_time is not None else time_ns()
                attributes: Any = self._attributes
                attributes._immutable = True
        finally:
            lock.release()
        if ended:
            SdkSpan.end(self, end_time)  # the SDK's warning
            return
        processor: Any = self._span_processor
        direct: Any = self._direct  # type: ignore[attr-defined]
        if direct is not None and processor._span_processors is direct.alone:
            direct.enqueue(self)
            return
        processor._on_ending(self)
        processor.on_end(self)  # ended: read-only from here, so no copy


class SpanStarter:
    """Starts ``BridgeSpan``s for one tracer provider (its resource, processors, limits)."""

    def __init__(self, provider: TracerProvider, scope_name: str) -> None:
        tracer: Any = provider.get_tracer(scope_name)
        self.resource = tracer.resource
        self.processor = tracer.span_processor
        self.scope = tracer.instrumentation_info
        self.instrumentation_scope = tracer._instrumentation_scope
        self.limits: SpanLimits = tracer._span_limits
        self.ids = tracer.id_generator
        self.random_ids = bool(self.ids.is_trace_id_random())
        # The provider's processors as they are now, if one that takes spans straight
        # is alone among them (a processor added later changes the tuple: see the doc).
        alone = self.processor._span_processors
        self.direct = _Direct(alone) if len(alone) == 1 and hasattr(alone[0], "enqueue") else None
        # The fields every span of this provider starts with, as class attributes of a
        # subclass of its own: a span's dict holds only what differs (a write, such as
        # set_status or end, puts the span's own value in front of the class's).
        self.span_type: type[BridgeSpan] = type(
            "BridgeSpan",
            (BridgeSpan,),
            {
                "_resource": self.resource,
                "_instrumentation_info": self.scope,
                "_instrumentation_scope": self.instrumentation_scope,
                "_status": _UNSET,
                "_sampler": None,
                "_trace_config": None,
                "_record_exception": True,
                "_set_status_on_exception": True,
                "_span_processor": self.processor,
                "_limits": self.limits,
                "_events": _EMPTY,
                "_links": _EMPTY,
                "_record_end_metrics": None,
                "_end_time": None,
                "_direct": self.direct,
            },
        )
        # BoundedAttributes' fields the same way: its limits, nothing dropped, not frozen.
        self.attributes_type: type[BoundedAttributes] = type(
            "BridgeAttributes",
            (BoundedAttributes,),
            {
                "maxlen": self.limits.max_span_attributes,
                "max_value_len": self.limits.max_span_attribute_length,
                "dropped": 0,
                "_immutable": False,
            },
        )
        self.span_id = (
            self._random_span_id
            if type(self.ids) is RandomIdGenerator
            else self.ids.generate_span_id
        )

    @staticmethod
    def _random_span_id() -> int:
        """``RandomIdGenerator.generate_span_id`` without the method dispatch."""
        span_id = _bits(64)
        while span_id == 0:
            span_id = _bits(64)
        return span_id

    def start(
        self,
        name: str,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        kind: SpanKind = SpanKind.INTERNAL,
        context: Any = None,
    ) -> BridgeSpan:
        """A started, sampled span; ``parent`` is the parent's span context (None or
        invalid: a new trace), ``context`` the OTel context it was started in.
        ``attributes`` becomes the span's own (it is not copied; None values are left out)."""
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.ids.generate_trace_id()
            flags = _SAMPLED_RANDOM if self.random_ids else _SAMPLED
        else:
            trace_id = parent.trace_id
            flags = _SAMPLED_RANDOM if parent.trace_flags & TraceFlags.RANDOM_TRACE_ID else _SAMPLED
        span: Any = object.__new__(self.span_type)
        span._name = name
        span_id = self.span_id()
        # SpanContext.__new__'s own steps (defaults, validity: both ids are valid here).
        span._context = tuple.__new__(
            SpanContext,
            (
                trace_id,
                span_id,
                False,
                flags,
                parent.trace_state if parent is not None else DEFAULT_TRACE_STATE,
                True,
            ),
        )
        span._kind = kind
        span._parent = parent
        span._lock = threading.Lock()
        # BoundedAttributes.__init__'s fields, with the bridge's own str / int values put in
        # as they are: nothing to clean (None means "not known": left out).
        bounded = object.__new__(self.attributes_type)
        if None in attributes.values():
            attributes = {k: v for k, v in attributes.items() if v is not None}
        bounded._dict = attributes
        bounded._lock = threading.Lock()
        span._attributes = bounded
        span._start_time = time_ns()
        processor = self.processor
        direct = self.direct
        if direct is None or processor._span_processors is not direct.alone:
            processor.on_start(span, parent_context=context)
        started: BridgeSpan = span
        return started
