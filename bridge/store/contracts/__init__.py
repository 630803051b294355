"""The state store contract, one small protocol per concern, and its records.

Everything a bridge must remember across restarts lives behind these: the ledger of
final runs, dead letters, cancellations (``cancel_on``), the inbox of events accepted over HTTP (or emitted,
replayed, fired by cron), parked retries, durable step results, joins, cron
positions, flow-control state, and the run history the developer UI shows. Every write method
returns only once the write is durable (committed), except where noted.

Where replicas compete (parked retries, joins, cron), the contract is what makes
them safe: claims take a lease, a join closes once, a cron tick advances once.

A caller that needs one concern types against its protocol (``InboxStore``,
``ParkedRuns``...); ``Store`` combines them all.
"""

from __future__ import annotations

from bridge.store.contracts.attempts import Attempt
from bridge.store.contracts.cancellations import Cancellation, Cancellations
from bridge.store.contracts.cron import CronPositions
from bridge.store.contracts.dead_letters import DeadLetter, DeadLetters, DeadLetterStatus
from bridge.store.contracts.flow import DebounceState, FlowState
from bridge.store.contracts.history import (
    EventRecord,
    History,
    RunRecord,
    event_status,
    merged_event,
)
from bridge.store.contracts.inbox import InboxEntry, InboxStore
from bridge.store.contracts.joins import Join, Joins, JoinStatus
from bridge.store.contracts.ledger import Ledger, LedgerClaims, LedgerEntry
from bridge.store.contracts.parked import ParkedRun, ParkedRuns, parked_run_id
from bridge.store.contracts.steps import Steps
from bridge.store.contracts.store import Store

__all__ = [
    "Attempt",
    "Cancellation",
    "Cancellations",
    "CronPositions",
    "DeadLetter",
    "DeadLetterStatus",
    "DeadLetters",
    "DebounceState",
    "EventRecord",
    "FlowState",
    "History",
    "InboxEntry",
    "InboxStore",
    "Join",
    "JoinStatus",
    "Joins",
    "Ledger",
    "LedgerClaims",
    "LedgerEntry",
    "ParkedRun",
    "ParkedRuns",
    "RunRecord",
    "Steps",
    "Store",
    "event_status",
    "merged_event",
    "parked_run_id",
]
