"""The fan-out of one event: every matched handler's run, concurrently, until all are final.

The ledger is read first: a branch that already succeeded (or was dead-lettered,
unless this is a replay) is skipped, so a redelivered message re-runs only the
branches that had not finished. A failure of one run never cancels its
siblings; it is raised once they have all ended.

With the ledger on, the same (handler, key) never runs twice at once in this
process: a duplicate that arrives while the first is in flight waits for that
fan-out to end, then skips the branch if it ended (succeeded, dead-lettered or
parked), and otherwise reads the ledger and runs it. This costs no store call:
a single-flight map, taken before the ledger is read (a duplicate waits on a future
made when it comes: a branch that has none costs no future).

A success is written behind its run, in a batch with others
(``bridge.dispatch.recorder``): the fan-out returns once the writes of its runs are
done, and a branch stays in the single-flight map until its run's write is done, so a
duplicate either follows it (and skips it once written) or reads the ledger after
the write and finds it there. Neither settles a message before its runs are recorded.

On a store that replicas share (PostgreSQL), the ledger read also claims the
branches it finds unfinished, in the same statement (``LedgerClaims``): a branch
another replica holds is not run here; this fan-out polls the ledger until that
run is final (then skips it) or its claim lapses or is released (then claims and
runs it), so the duplicate's delivery settles once the run is final. A claim
lasts the handler's longest run in process (attempts x timeout + backoffs, plus
a minute), renewed while the run waits at admission or runs if it may outlast that
(``ClaimKeeper``, ``_waits``); a run that is parked for a later retry (or queued)
releases its claim.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from typing import Any, cast

from bridge.dispatch.attempts import Runner
from bridge.dispatch.branches import gather
from bridge.dispatch.claims import ClaimKeeper
from bridge.dispatch.env import DispatchConfig, DispatchEnv
from bridge.dispatch.recorder import unwritten, writes_of, written_error
from bridge.dispatch.runs import BoundHandler, Resume, Run, ledger_keys
from bridge.events import Event
from bridge.routing import Subscription
from bridge.store.contracts import LedgerClaims, parked_run_id

log = logging.getLogger("bridge.dispatch")
Pair = tuple[str, str]
_FINAL = ("succeeded", "dead_lettered", "cancelled")
_DONE = ("succeeded", "cancelled")  # never run again, even by a replay


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
        # (handler, key) -> the lead of the fan-out running it, until its run ends
        self._flight: dict[Pair, _Lead] = {}
        store = env.store
        self._claims = cast(LedgerClaims, store) if getattr(store, "shared", False) else None
        self._owner = uuid.uuid4().hex  # this process, as the owner of its claims
        self.keeper = ClaimKeeper(store, self._owner, lambda: env.wall())
        if config.ledger and self._claims is None:
            # A run that ends without being written behind lets its duplicates go as it
            # ends (the branches of the common case need no wrapper coroutine for it). Not
            # on a shared store: there a claimed run's duplicates wait for its release.
            runner.endings.let_go = self._let_go

    def dispatch(
        self,
        event: Event[Any],
        subs: Sequence[Subscription[BoundHandler]],
        *,
        connector: str = "",
        replay: bool = False,
        resume: Resume | None = None,
    ) -> Coroutine[Any, Any, list[Run]]:
        """Run ``event`` through each subscription concurrently; return when every run is final
        (a coroutine to await).

        Raises:
            StoreError: a result could not be recorded (the message must not be acked).
        """
        if not self.config.ledger:
            # Nothing to read first and no branch to skip: every branch runs (its key is
            # rendered only if the run needs it: a dead letter, a parked retry).
            run = self.runner.run
            return gather([run(event, s.target, None, connector, resume) for s in subs])
        return self._ledgered(event, subs, connector, replay, resume)

    async def _ledgered(
        self,
        event: Event[Any],
        subs: Sequence[Subscription[BoundHandler]],
        connector: str,
        replay: bool,
        resume: Resume | None,
    ) -> list[Run]:
        bound = [s.target for s in subs]
        keys = ledger_keys(event, bound)
        flight = self._flight
        lead = _Lead()
        leaders: dict[Pair, asyncio.Future[Run | None]] = {}
        for pair in keys:
            other = flight.setdefault(pair, lead)
            if other is not lead:
                leaders[pair] = other.follow(pair)
        try:
            final = await self._final(event, bound, keys)
            if final or leaders or resume is not None:
                runs = await self._dispatch(
                    event, bound, keys, final, leaders, lead, connector, replay, resume
                )
            else:
                # The common case: no branch is in the ledger or in flight, none resumed.
                # Every branch runs, and this fan-out leads each: a run written behind
                # lets its duplicates go below, once written; any other, as it ends
                # (``_let_go``), and one that raised, when the fan-out ends.
                run = self.runner.run
                runs = await gather(
                    [
                        run(event, b, pair[1], connector, None)
                        for b, pair in zip(bound, keys, strict=True)
                    ]
                )
            # Settled only once the successes written behind the runs are written.
            error = await writes_of(runs)
            if error is not None:
                raise error
        finally:
            # Those whose branch never started (a store fault), and those whose success
            # was written behind the run: their duplicates read the ledger, now written.
            self._resolve(lead, keys, None)
        return runs

    def _resolve(self, lead: _Lead, pairs: Sequence[Pair], run: Run | None) -> None:
        """End ``lead``'s hold of each of ``pairs`` it still holds: its duplicates waiting
        get its ``run`` (one call for every branch of a fan-out at its end)."""
        flight = self._flight
        waiting = lead.waiting
        for pair in pairs:
            if flight.get(pair) is lead:
                del flight[pair]
                if waiting is not None and (future := waiting.pop(pair, None)) is not None:
                    future.set_result(run)

    def _let_go(self, pair: Pair, run: Run) -> None:
        """A run of ``pair`` ended without being written behind: the fan-out that leads
        ``pair`` lets its duplicates go (they get ``run``)."""
        lead = self._flight.get(pair)
        if lead is not None:
            self._resolve(lead, (pair,), run)

    async def _led(self, lead: _Lead, pair: Pair, coro: Coroutine[Any, Any, Run]) -> Run:
        """Run a branch this fan-out leads; its duplicates are let go as soon as it ends,
        not when its slowest sibling does (a parked retry of it may be due before then);
        a success written behind the run holds them until the fan-out's writes are done."""
        ended = None
        try:
            ended = await coro
            return ended
        finally:
            if ended is None or ended.written is None or ended.written.done():
                self._resolve(lead, (pair,), ended)

    def _final(
        self, event: Event[Any], bound: Sequence[BoundHandler], keys: Sequence[tuple[str, str]]
    ) -> Awaitable[dict[tuple[str, str], str]]:
        """The ledger's final statuses of ``keys``, in one store call; a run recorded under
        the default key of before (the event id alone, see ``BoundHandler.legacy_key``)
        counts for its handler, so an upgrade runs nothing twice (an awaitable: the
        store's own call, without a coroutine around it, on a store that neither holds
        keys of before nor is shared)."""
        store = self.env.store
        if self._claims is None and not getattr(store, "legacy_keys", True):
            return store.ledger_final(keys)
        return self._final_of(event, bound, keys)

    async def _final_of(
        self, event: Event[Any], bound: Sequence[BoundHandler], keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        legacy = {}
        if getattr(self.env.store, "legacy_keys", True):  # else: a store with none
            for b, pair in zip(bound, keys, strict=True):
                old = b.legacy_key(event)
                if old is not None:
                    legacy[pair] = (b.id, old)
        claims = self._claims
        if claims is None:
            found = await self.env.store.ledger_final([*keys, *legacy.values()])
        else:
            now = self.env.wall()
            lease = max(b.longest_run for b in bound)
            found = await claims.ledger_claim(
                keys, list(legacy.values()), event.id, self._owner, now, now + lease
            )
            done = [p for p, o in legacy.items() if found.get(p) == "claimed" and o in found]
            if done:  # ran before the upgrade: not to run, so not to hold
                await claims.ledger_release(done, self._owner)
        for pair, old_pair in legacy.items():
            if found.get(pair) in (None, "claimed") and old_pair in found:
                found[pair] = found[old_pair]
        return found

    async def _follow(
        self,
        event: Event[Any],
        b: BoundHandler,
        pair: tuple[str, str],
        leader: asyncio.Future[Run | None],
        connector: str,
        replay: bool,
        resume: Resume | None,
    ) -> Run:
        """A duplicate's branch: wait for the run in flight, then skip it if it ended, else
        read the ledger and run it (leading it in turn)."""
        flight = self._flight
        while True:
            led = await asyncio.shield(leader)
            # A run written behind is let go once written: if that failed, it is not final.
            status = led.status if led is not None and written_error(led) is None else None
            if status in _DONE or (status == "dead_lettered" and not replay):
                return Run(b.id, "skipped")
            if status == "parked" and resume is None:
                return Run(b.id, "skipped")  # its parked retry will run it, not this copy
            current = flight.get(pair)
            if current is None:
                break
            leader = current.follow(pair)
        mine = flight[pair] = _Lead()
        ended: Run | None = None
        try:
            found = (await self._final(event, [b], [pair])).get(pair)
            ended = await self._one(event, b, pair, found, connector, replay, resume)
            # Held until written, as the fan-out holds its own.
            if (written := unwritten([ended])) is not None:
                await written
            return ended
        finally:
            self._resolve(mine, (pair,), ended)

    async def _one(
        self,
        event: Event[Any],
        b: BoundHandler,
        pair: tuple[str, str],
        status: str | None,
        connector: str,
        replay: bool,
        resume: Resume | None,
        lead: _Lead | None = None,
    ) -> Run:
        """Run one branch given its ledger status: skip it if final; run it if unclaimed
        or claimed here (releasing a claim its run did not end); if another replica
        holds it, poll until it is final or the claim can be taken. With ``lead``, the
        fan-out's hold of the branch, it lets the branch's duplicates go as ``_led``
        does, once a claim its run did not end is released (no wrapper coroutine)."""
        run: Run | None = None
        try:
            delay = 0.05
            while status == "running":
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                status = (await self._final(event, [b], [pair])).get(pair)
            if status in _DONE or (status == "dead_lettered" and not replay):
                run = Run(b.id, "skipped")
                return run
            if status != "claimed":
                run = await self.runner.run(event, b, pair[1], connector, resume)
                return run
            claims = self._claims
            assert claims is not None  # only a shared store answers "claimed"
            try:
                if not self._waits(b, connector):
                    run = await self.runner.run(event, b, pair[1], connector, resume)
                    return run
                # The claim is renewed while the run waits at admission and runs.
                keeper = self.keeper
                lease = b.longest_run
                keeper.hold(pair, lease)
                try:
                    run = await self.runner.run(event, b, pair[1], connector, resume)
                finally:
                    keeper.drop(pair, lease)
                return run
            finally:
                if run is None or run.status not in _FINAL:
                    try:
                        await claims.ledger_release([pair], self._owner)
                    except Exception as exc:  # it lapses at its deadline instead
                        log.warning(
                            "could not release a run claim",
                            extra={"handler": b.id, "event_id": event.id, "error": str(exc)},
                        )
        finally:
            if lead is not None and (run is None or run.written is None or run.written.done()):
                self._resolve(lead, (pair,), run)

    def _waits(self, b: BoundHandler, connector: str) -> bool:
        """Whether a run of ``b`` may outlast its claim (``longest_run``), which the claim
        keeper must then renew: it may wait at admission (flow control) or for a
        concurrency slot, or retry inline after a ``RetryAfter`` longer than its policy's
        longest delay. Otherwise its attempts, timeouts and backoffs are what the claim's
        lease is made of, plus a minute."""
        return (
            b.flow is not None
            or b.limiter is not None
            or self.runner.config.inline_limit(connector) > b.retry.max_delay
        )

    async def _dispatch(
        self,
        event: Event[Any],
        bound: Sequence[BoundHandler],
        keys: Sequence[tuple[str, str]],
        final: Mapping[tuple[str, str], str],
        leaders: Mapping[Pair, asyncio.Future[Run | None]],
        lead: _Lead,
        connector: str,
        replay: bool,
        resume: Resume | None,
    ) -> list[Run]:
        store = self.env.store
        flight = self._flight
        coros = []
        runs: list[Run] = []
        run = self.runner.run
        for b, pair in zip(bound, keys, strict=True):
            leader = leaders.get(pair)
            if leader is not None:
                coros.append(self._follow(event, b, pair, leader, connector, replay, resume))
                continue
            status = final.get(pair)
            if status in ("claimed", "running"):
                coros.append(self._one(event, b, pair, status, connector, replay, resume, lead))
                continue
            if (
                resume is not None
                and status is not None
                and await self._ended(pair, b.legacy_key(event), resume)
            ):
                # The run became final but the process died before forgetting it as parked.
                await store.parked_done([parked_run_id(event.id, b.id)])
                skipped = Run(b.id, "skipped")
                runs.append(skipped)
                self._resolve(lead, (pair,), skipped)
                continue
            if status in _DONE or (status == "dead_lettered" and not replay):
                skipped = Run(b.id, "skipped")
                runs.append(skipped)
                self._resolve(lead, (pair,), skipped)
                continue
            coro = run(event, b, pair[1], connector, resume)
            # A branch this fan-out leads lets its duplicates go when it ends; a duplicate
            # of a branch of this same event leads none, and needs no wrapper coroutine.
            held = flight.get(pair) is lead
            coros.append(self._led(lead, pair, coro) if held else coro)
        if not coros:
            return runs
        runs.extend(await gather(coros))
        return runs

    async def _ended(self, pair: tuple[str, str], legacy: str | None, resume: Resume) -> bool:
        """Whether a parked run's ledger entry records its end, not an earlier one (a dead
        letter that was replayed, and whose replay was parked, is not this run's end).
        ``legacy`` is the key of before the upgrade, if the handler has the default one."""
        old = (pair[0], legacy) if legacy is not None else None
        found = await self.env.store.ledger_get([pair] if old is None else [pair, old])
        entry = found.get(pair) or (found.get(old) if old is not None else None)
        if entry is None:
            return False
        if entry.status == "succeeded":
            return True
        last = max((a.started_at for a in resume.attempts), default=0.0)
        return entry.finished_at >= last


class _Lead:
    """A fan-out's hold of its branches in the single-flight map. A duplicate that comes
    while a branch runs waits on a future made for it then (most branches get none)."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting: dict[Pair, asyncio.Future[Run | None]] | None = None

    def follow(self, pair: Pair) -> asyncio.Future[Run | None]:
        """The future a duplicate of ``pair`` waits on: its run, once this lead lets it go."""
        waiting = self.waiting
        if waiting is None:
            waiting = self.waiting = {}
        future = waiting.get(pair)
        if future is None:
            future = waiting[pair] = asyncio.get_running_loop().create_future()
        return future
