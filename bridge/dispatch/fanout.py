"""The fan-out of one event: every matched handler's run, concurrently, until all are final.

The ledger is read first: a branch that already succeeded (or was dead-lettered,
unless this is a replay) is skipped, so a redelivered message re-runs only the
branches that had not finished. A failure of one run never cancels its
siblings; it is raised once they have all ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.dispatch.attempts import Runner
from bridge.dispatch.env import DispatchConfig, DispatchEnv
from bridge.dispatch.runs import BoundHandler, Resume, Run, parked_run_id
from bridge.events import Event
from bridge.routing import Subscription


class FanOut:
    """Runs an event through its subscriptions.

    Args:
        config: whether the ledger is kept.
        env: its store holds the ledger.
        runner: runs one handler for one event.
    """

    def __init__(self, config: DispatchConfig, env: DispatchEnv, runner: Runner) -> None:
        self.config = config
        self.env = env
        self.runner = runner

    async def dispatch(
        self,
        event: Event[Any],
        subs: Sequence[Subscription[BoundHandler]],
        *,
        connector: str = "",
        replay: bool = False,
        resume: Resume | None = None,
    ) -> list[Run]:
        """Run ``event`` through each subscription concurrently; return when every run is final.

        Raises:
            StoreError: a result could not be recorded (the message must not be acked).
        """
        store = self.env.store
        bound = [s.target for s in subs]
        keys = [(b.id, b.key(event)) for b in bound]
        final: Mapping[tuple[str, str], str] = {}
        if self.config.ledger:
            final = await store.ledger_final(keys)
        coros = []
        runs: list[Run] = []
        run = self.runner.run
        for b, pair in zip(bound, keys, strict=True):
            status = final.get(pair)
            if resume is not None and status is not None and await self._ended(pair, resume):
                # The run became final but the process died before forgetting it as parked.
                await store.parked_done([parked_run_id(event.id, b.id)])
                runs.append(Run(b.id, "skipped"))
                continue
            if status == "succeeded" or (status == "dead_lettered" and not replay):
                runs.append(Run(b.id, "skipped"))
                continue
            coros.append(run(event, b, pair[1], connector, resume))
        if not coros:
            return runs
        # The first run goes inline in this task; only its siblings need tasks of their own.
        if len(coros) == 1:
            runs.append(await coros[0])
            return runs
        loop = asyncio.get_running_loop()
        others = [loop.create_task(c) for c in coros[1:]]
        failure: BaseException | None = None
        try:
            runs.append(await coros[0])
        except asyncio.CancelledError:
            await _cancel_all(others)
            raise
        except BaseException as exc:  # the siblings still finish; then it is raised
            failure = exc
        # Awaiting each sibling in turn is cheaper than gather(): no aggregate future.
        for index, task in enumerate(others):
            try:
                runs.append(await task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    await _cancel_all(others[index + 1 :])
                    raise
                failure = failure or asyncio.CancelledError(f"run of {task.get_name()} cancelled")
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return runs

    async def _ended(self, pair: tuple[str, str], resume: Resume) -> bool:
        """Whether a parked run's ledger entry records its end, not an earlier one (a dead
        letter that was replayed, and whose replay was parked, is not this run's end)."""
        entry = (await self.env.store.ledger_get([pair])).get(pair)
        if entry is None:
            return False
        if entry.status == "succeeded":
            return True
        last = max((a.started_at for a in resume.attempts), default=0.0)
        return entry.finished_at >= last


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel sibling runs (the delivery itself was cancelled) and wait for them to end."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
