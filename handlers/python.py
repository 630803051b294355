"""``type: python``: call a function by import path.

The function takes ``(event, ctx)`` and may be async or sync. A sync function runs in
a thread pool of the handler's own (``workers`` threads, default ``min(32, cpus + 4)``),
so a sync handler that blocks holds up only its own calls, never other handlers or
the event loop.

What a timeout can and cannot stop: at the timeout the attempt ends as timed out
and the run goes on (retry, park or dead letter) at once. An async function is
cancelled there. A sync function cannot be: Python cannot stop a thread, so the
call keeps running to its end and its result is thrown away. Its retry never
overlaps it: the next attempt of the same run (same event and handler) waits for
that thread to return before it calls the function again, for at most one more
``timeout`` (the wait does not eat into the attempt's own time); if the thread is
still running then, the attempt fails (``StillRunning``, retried like any failure)
without calling. A call still
queued for a thread when its attempt times out is never started.

An async function may also sleep and wait for events durably (``ctx.sleep``,
``ctx.wait_for_event``; see ``bridge.waits``): the types it waits for are declared
under ``waits``.

When the event type has no schema in the catalog and the function's
``event`` parameter is annotated ``Event[Model]``, the data is validated as
``Model`` before the call; a failure there is a ``Fatal`` error (retrying
cannot fix the data).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import typing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bridge.context import Context
from bridge.deadlines import current_deadline
from bridge.duration import Duration
from bridge.errors import Fatal
from bridge.events import Event, import_object, validation_errors
from bridge.handling import Companion, HandlerConfig, HandlerEnv
from bridge.threads import nudge
from bridge.waits import WaitCollector


class WaitFor(BaseModel):
    """An event type the handler's ``ctx.wait_for_event`` may wait for."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(
        description="The event type (exact, no glob) that `ctx.wait_for_event` waits for.",
        examples=["payment/received"],
    )
    buffer: Duration = Field(
        600.0,
        description="How long an event of this type that no open wait took is kept, so a "
        "wait that opens just after it came still gets it.",
    )


class PythonHandlerConfig(HandlerConfig):
    """Run a Python function for each event."""

    type: Literal["python"] = Field("python", description="Handler kind: call a Python function.")
    function: str = Field(
        description="Import path `package.module:function`.",
        examples=["newsletter:send_welcome_email"],
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Threads for a sync function: most calls at once (a timed-out call "
        "keeps its thread until it returns). Default min(32, CPUs + 4). Unused for async.",
    )
    waits: list[WaitFor] = Field(
        default_factory=list,
        description="Event types that `ctx.wait_for_event` waits for (async functions). "
        "The bridge subscribes a companion, `<id>/waits`, to them: it hands each such event "
        "to the waits it matches, or keeps it for `buffer`.",
    )

    def check(self, cfg: Any) -> list[tuple[tuple[str, ...], str]]:
        try:
            target = import_object(self.function)
        except Exception as exc:  # user code may raise anything at import time
            return [(("function",), str(exc))]
        if not callable(target):
            return [(("function",), f"{self.function!r} is not callable")]
        problems: list[tuple[tuple[str, ...], str]] = []
        if self.waits and not inspect.iscoroutinefunction(target):
            problems.append(
                (("waits",), f"{self.function!r} is sync: ctx.wait_for_event needs `async def`")
            )
        for index, wait in enumerate(self.waits):
            if any(ch in wait.event for ch in "*?["):
                problems.append((("waits", str(index), "event"), "an exact event type, no glob"))
        return problems


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
        self.can_suspend = self.is_async  # ctx.sleep / ctx.wait_for_event are awaited
        # A sync function's call waits for its previous attempt's thread (``_outwait``)
        # with the attempt's deadline moved aside: it reads it before it first waits.
        self.reads_deadline = not self.is_async
        self.workers = cfg.workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool: ThreadPoolExecutor | None = None  # made on the first sync call
        # The call in a thread per run (event source, id, handler): a retry waits for it.
        self._calls: dict[tuple[str, str, str], Future[Any]] = {}
        model = data_model(self.func)
        self._adapter: TypeAdapter[Any] | None = None
        self._model = model
        if model is not None:
            self._adapter = TypeAdapter(model)
        self.waits = {w.event: w.buffer for w in cfg.waits}
        self.companions: tuple[Companion, ...] = ()
        if self.waits and env.store is not None:
            collector = WaitCollector(cfg.id, self.waits, env.store)
            self.companions = (Companion(collector.id, collector.on, collector),)

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
        ctx.waits = self.waits
        if self.is_async:
            return await self.func(event, ctx)
        return await self._call_in_thread(event, ctx, event)

    async def invoke_batch(self, events: Sequence[Event[Any]], ctx: Context) -> Any:
        """Call the function with the list of events (``batch``); ``ctx.event`` is the first.

        The events' data is passed as it is (no ``Event[Model]`` validation)."""
        ctx.waits = self.waits
        batch = list(events)
        if self.is_async:
            return await self.func(batch, ctx)
        return await self._call_in_thread(batch[0], ctx, batch)

    async def _call_in_thread(self, event: Event[Any], ctx: Context, arg: Any) -> Any:
        key = (event.source, event.id, ctx.handler_id)
        previous = self._calls.get(key)
        if previous is not None and not previous.done():
            await _outwait(previous)
        pool = self._pool
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(
                self.workers, thread_name_prefix=f"bridge-{ctx.handler_id}"
            )
        loop = asyncio.get_running_loop()
        call = pool.submit(contextvars.copy_context().run, _boxed, self.func, arg, ctx)
        nudge()  # the pool's thread starts the call now, not when the loop next idles
        self._calls[key] = call

        def forget(done: Future[Any]) -> None:
            if self._calls.get(key) is done:
                del self._calls[key]

        call.add_done_callback(lambda done: loop.call_soon_threadsafe(forget, done))
        # Cancelled at the timeout: a call still queued is withdrawn; a running one goes on.
        result = await asyncio.wrap_future(call)
        if type(result) is _Raised:
            raise result.error  # raised here, in the attempt's own frame
        return result

    async def close(self) -> None:
        """Start no more calls; running ones end on their own (a thread cannot be stopped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class _Raised:
    """A ``BaseException`` that is not an ``Exception``, raised by a sync function in its
    thread, carried back as the call's result (see ``_boxed``)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _boxed(func: Callable[..., Any], arg: Any, ctx: Context) -> Any:
    """Call ``func`` in its thread; a ``BaseException`` that is not an ``Exception``
    (``GeneratorExit``, ``KeyboardInterrupt``, ``SystemExit``, one of the function's own)
    comes back as a ``_Raised`` result rather than the future's exception.

    A future that ends with ``GeneratorExit`` wakes the task awaiting it by throwing
    ``GeneratorExit`` into it, and Python treats that as closing every coroutine of the
    task: the engine's retry wait in the attempt loop then ends the task with "coroutine
    ignored GeneratorExit" and the run is lost. Raised from the attempt's frame, it is
    the attempt's failure like any other."""
    try:
        return func(arg, ctx)
    except Exception:
        raise
    except BaseException as exc:
        return _Raised(exc)


async def _outwait(previous: Future[Any]) -> None:
    """Wait for the thread of a timed-out attempt before the run's next call.

    The attempt's deadline moves out of the way while it waits (at most one timeout),
    then back: the call gets its full time.

    Raises:
        StillRunning: the previous call is still running after one more timeout.
    """
    deadline = current_deadline()
    loop = asyncio.get_running_loop()
    began = loop.time()
    budget = max(deadline.at - began, 0.0) if deadline is not None else None
    if deadline is not None and budget is not None:
        deadline.shift(budget)
    waited = asyncio.shield(asyncio.wrap_future(previous))
    done, _ = await asyncio.wait((waited,), timeout=budget)
    if deadline is not None and budget is not None:
        deadline.shift(-(budget - (loop.time() - began)))
    if not done:
        waited.cancel()
        raise StillRunning(
            f"the previous attempt's call is still running in its thread after {budget:g}s more"
        )


class StillRunning(Exception):
    """The previous attempt's sync call still runs: this attempt did not call the function."""


def _is_instance(value: Any, model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, BaseModel) and isinstance(value, model)


def build(cfg: PythonHandlerConfig, env: HandlerEnv) -> PythonHandler:
    return PythonHandler(cfg, env)
