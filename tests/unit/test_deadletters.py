"""Dead-letter replay on the in-memory store: what it refuses, and the letter it leaves."""

from __future__ import annotations

import pytest

from bridge.deadletters import (
    ReplayError,
    force_flag,
    replay,
    replay_entry_id,
    replay_ran_nothing,
    replayed_letter_id,
)
from bridge.store import MemoryStore
from bridge.store.contracts import DeadLetter, LedgerEntry


def letter(**fields: object) -> DeadLetter:
    event = {"specversion": "1.0", "id": "e1", "source": "shop", "type": "job/run", "data": {}}
    base: dict[str, object] = {
        "reason": "boom",
        "connector": "api",
        "handler": "h",
        "event": event,
        "event_id": "e1",
        "key": "k1",
        "created_at": 100.0,
    }
    return DeadLetter(**{**base, **fields})  # type: ignore[arg-type]


def test_a_replay_entry_names_its_letter_and_no_other_entry_does() -> None:
    assert replayed_letter_id(replay_entry_id("abc123")) == "abc123"
    for other in ("e1", "replay-", "replay-abc", "replay-abc-short", "api-abc-0123456789ab"):
        assert replayed_letter_id(other) is None, other


def test_force_is_true_or_false() -> None:
    assert [force_flag(v) for v in (None, "", "false", "0", False)] == [False] * 5
    assert [force_flag(v) for v in ("true", "1", True)] == [True] * 3
    with pytest.raises(ReplayError) as refused:
        force_flag("yes")
    assert refused.value.status == 400


async def test_refused_replays_leave_the_letter_as_it_was() -> None:
    store = MemoryStore()
    await store.open()
    no_op, discarded = letter(), letter(status="discarded", key="k2")
    for d in (no_op, discarded):
        await store.dead_letter_add(d)
    await store.ledger_record([LedgerEntry("h", "k1", "e0", "succeeded")])
    with pytest.raises(ReplayError, match="already succeeded") as refused:
        await replay(store, no_op.id)
    assert refused.value.status == 409
    with pytest.raises(ReplayError, match="--force"):
        await replay(store, discarded.id)
    with pytest.raises(ReplayError) as missing:
        await replay(store, "ghost")
    assert missing.value.status == 404
    assert await store.inbox_pending(0, 10) == []
    statuses = {d.id: d.status for d in await store.dead_letters()}
    assert statuses == {no_op.id: "pending", discarded.id: "discarded"}
    entry = await replay(store, discarded.id, force=True)
    assert (entry.handler, replayed_letter_id(entry.id)) == ("h", discarded.id)
    got = await store.dead_letter_get(discarded.id)
    assert got is not None and got.status == "replayed"


async def test_a_replay_that_ran_nothing_is_pending_again_unless_its_own_event_ran() -> None:
    store = MemoryStore()
    await store.open()
    other, own = letter(), letter(key="k2", event_id="e2")
    for d in (other, own):
        await store.dead_letter_add(d)
        await store.dead_letter_set_status(d.id, "replayed")
    # k1 succeeded for another event; k2 for this letter's own event, after it was filed.
    await store.ledger_record(
        [
            LedgerEntry("h", "k1", "e9", "succeeded", finished_at=200.0),
            LedgerEntry("h", "k2", "e2", "succeeded", finished_at=200.0),
        ]
    )
    await replay_ran_nothing(store, other.id, [("h", "k1")])
    await replay_ran_nothing(store, own.id, [("h", "k2")])
    statuses = {d.id: d.status for d in await store.dead_letters()}
    assert statuses == {other.id: "pending", own.id: "replayed"}
