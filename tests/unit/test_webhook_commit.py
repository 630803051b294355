"""Group commit of webhook requests: concurrent requests share one inbox write, each
gets its own part of the answer, and a failure or a cancellation reaches every one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from bridge.errors import StoreError
from connectors.webhook.commit import GroupCommit


class Inbox:
    """An in-memory inbox with the ``accept`` contract: True for each new id."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.writes: list[list[str]] = []
        self.fail: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def accept(self, events: Sequence[Any]) -> list[bool]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.writes.append(list(events))
        fresh = []
        for event_id in events:
            fresh.append(event_id not in self.ids)
            self.ids.add(event_id)
        return fresh


async def test_concurrent_requests_share_one_write_and_get_their_own_flags() -> None:
    inbox = Inbox()
    commit = GroupCommit(inbox.accept)
    requests = [["a"], ["b", "c"], ["a"], ["d"]]  # the second "a" is a replay
    answers = await asyncio.gather(*(commit.accept(r) for r in requests))
    assert answers == [[True], [True, True], [False], [True]]
    assert inbox.writes == [["a", "b", "c", "a", "d"]]
    assert await commit.accept(["e"]) == [True]  # alone: a group of one
    assert len(inbox.writes) == 2


async def test_groups_are_capped() -> None:
    inbox = Inbox()
    commit = GroupCommit(inbox.accept, max_events=3)
    answers = await asyncio.gather(*(commit.accept([str(n)]) for n in range(7)))
    assert answers == [[True]] * 7
    assert [len(w) for w in inbox.writes] == [3, 3, 1]


async def test_a_failed_write_fails_every_request_of_the_group() -> None:
    inbox = Inbox()
    inbox.fail = StoreError("database is locked")
    commit = GroupCommit(inbox.accept)
    results = await asyncio.gather(
        *(commit.accept([str(n)]) for n in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, StoreError) for r in results)
    inbox.fail = None
    assert await commit.accept(["0"]) == [True]  # nothing of the failed group was kept


async def test_a_cancelled_leader_does_not_strand_the_others() -> None:
    inbox = Inbox()
    inbox.gate = asyncio.Event()
    commit = GroupCommit(inbox.accept)
    leader = asyncio.create_task(commit.accept(["a"]))
    member = asyncio.create_task(commit.accept(["b"]))  # joins the leader's group
    await asyncio.sleep(0.01)  # the leader now waits for its write
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    with pytest.raises(RuntimeError, match="cancelled"):
        await member
    assert inbox.writes == []
    inbox.gate.set()
    assert await commit.accept(["b"]) == [True]


async def test_requests_that_come_during_a_write_share_the_next_one() -> None:
    """One group is written at a time: requests arriving over many loop iterations while
    a write is under way wait for it and then share one write (one hand-off to the
    store's thread, not one per iteration); a waiting leader cancelled leaves its group
    answered and the writes going."""
    inbox = Inbox()
    inbox.gate = asyncio.Event()
    commit = GroupCommit(inbox.accept, patience=5.0)  # no stall lets a group go beside
    first = asyncio.create_task(commit.accept(["a"]))
    await asyncio.sleep(0.01)  # "a" is being written
    later = []
    for n in range(5):  # one request an iteration, five iterations
        later.append(asyncio.create_task(commit.accept([f"b{n}"])))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert inbox.writes == []
    inbox.gate.set()
    assert await first == [True]
    assert await asyncio.gather(*later) == [[True]] * 5
    assert inbox.writes == [["a"], [f"b{n}" for n in range(5)]]
    # A leader cancelled while it waits for the write before: its members are told.
    inbox.gate.clear()
    busy = asyncio.create_task(commit.accept(["c"]))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(commit.accept(["d"]))
    member = asyncio.create_task(commit.accept(["e"]))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(RuntimeError, match="cancelled"):
        await member
    inbox.gate.set()
    assert await busy == [True]
    assert await commit.accept(["d"]) == [True]
    assert inbox.writes[2:] == [["c"], ["d"]]


async def test_a_hung_write_holds_the_next_group_only_for_the_patience() -> None:
    """Behind a write that does not end (a hung store), the next group waits
    ``patience`` and then goes beside it, so its requests get their own answer (from
    the store's deadline) instead of queueing behind every write before them."""
    inbox = Inbox()
    hung = asyncio.Event()
    started: list[list[str]] = []
    plain = inbox.accept

    async def accept(events: Sequence[Any]) -> list[bool]:
        started.append(list(events))
        if events[0] == "stuck":
            await hung.wait()
        return await plain(events)

    commit = GroupCommit(accept, patience=0.05)
    stuck = asyncio.create_task(commit.accept(["stuck"]))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await asyncio.wait_for(commit.accept(["next"]), 2) == [True]
    waited = loop.time() - began
    assert started == [["stuck"], ["next"]]
    assert not stuck.done()
    assert waited >= 0.05  # it did wait for the write before it, that long
    hung.set()
    assert await stuck == [True]
    assert await commit.accept(["after"]) == [True]  # the lock was not left held
