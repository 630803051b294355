"""A fan-out's branches run concurrently: inline in the delivery's task until one waits.

A branch whose handler never waits (it computes, or answers from a cache) ends in its
first step. Such branches need no task of their own: each runs in turn, in the
delivery's task, in a copy of its context (a context variable one sets is not seen by
the next, as if each were a task). The first branch that waits stays with the
delivery's task, which awaits it next (``asyncio.current_task()`` inside it is that
task, so its timeout or a ``cancel`` of its singleton slot cancels the right one, as
for a first branch before); every branch after it is started as a task of its own
at once, so none waits for another. This is what Python 3.12's eager tasks do, for
the branches of one delivery: the delivery waits once for the branches that wait,
and not at all when none does.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Coroutine, Generator, Sequence
from typing import Any, TypeVar, cast

T = TypeVar("T")


async def gather(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Await every branch concurrently, each to its end, results in order; a failure is
    raised once all ended (the first one, in order), a cancellation of this task cancels
    them all."""
    count = len(coros)
    if count == 1:
        return [await coros[0]]
    results: list[Any] = [None] * count
    failure: BaseException | None = None
    waiting: tuple[int, Coroutine[Any, Any, T], Any, contextvars.Context] | None = None
    start = count
    for index, coro in enumerate(coros):
        context = contextvars.copy_context()
        try:
            step = context.run(coro.send, None)
        except StopIteration as ended:
            results[index] = ended.value
            continue
        except asyncio.CancelledError as exc:
            if _cancelling():
                for rest in coros[index + 1 :]:
                    rest.close()
                raise
            failure = failure or exc
            continue
        except BaseException as exc:  # the siblings still run; then it is raised
            failure = failure or exc
            continue
        waiting = (index, coro, step, context)
        start = index + 1
        break
    others = []
    if start < count:
        loop = asyncio.get_running_loop()
        others = [loop.create_task(c) for c in coros[start:]]
    if waiting is not None:
        index, coro, step, context = waiting
        try:
            results[index] = await resumed(coro, step, context)
        except asyncio.CancelledError:
            await _cancel_all(others)
            raise
        except BaseException as exc:
            failure = failure or exc
    # Awaiting each sibling in turn is cheaper than gather(): no aggregate future.
    for offset, task in enumerate(others):
        try:
            results[start + offset] = await task
        except asyncio.CancelledError:
            if _cancelling():
                await _cancel_all(others[offset + 1 :])
                raise
            failure = failure or asyncio.CancelledError(f"run of {task.get_name()} cancelled")
        except BaseException as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


def _cancelling() -> bool:
    """Whether this task is being cancelled (not a branch that raised CancelledError)."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


@types.coroutine
def resumed(
    call: Coroutine[Any, Any, T], waiting: Any, context: contextvars.Context | None = None
) -> Generator[Any, Any, T]:
    """The rest of ``call``, a coroutine stepped once that yielded ``waiting`` (what it
    waits for): hands that to the task, then delegates to ``call`` as ``await`` does;
    with ``context``, each further step runs in it (a branch's own context)."""
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:  # cancelled (or closed) while it waited: its business
            try:
                waiting = call.throw(exc) if context is None else context.run(call.throw, exc)
            except StopIteration as ended:
                return ended.value  # type: ignore[no-any-return]
            continue
        if context is None:
            return (yield from cast(Generator[Any, Any, T], call))
        try:
            waiting = context.run(call.send, sent)
        except StopIteration as ended:
            return ended.value  # type: ignore[no-any-return]


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel sibling runs (the delivery itself was cancelled) and wait for them to end."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
