"""The fan-out engine: one event, every matched handler, each run on its own.

For each delivery: normalize (bad input -> dead letter), route, then run every
matched handler concurrently. A run has its own attempts, backoff, per-attempt
timeout, concurrency limit and idempotency key. A run that succeeds is written
to the ledger before the delivery is settled, so a redelivered message re-runs
only the branches that had not finished. A run that exhausts its attempts (or
raises ``Fatal``) becomes a dead letter. A retry whose delay is longer than the
source's inline limit is parked in the store (the scheduler brings it back when
due) and counts as final for the delivery. The returned ``Settlement`` is ACK
only when every run is final (or parked) and recorded; a store failure means
RETRY_LATER. When an event type has ``on_complete``, the event that lists every
branch's outcome is emitted once all of its runs are final. Anything else that
escapes ``Dispatcher.process`` is an internal error: the runtime tries the delivery
again up to ``limits.poison_limit`` times, then files it with
``Dispatcher.internal_error`` (reason ``internal_error``) and acks it.

The parts, each in its own module:

* ``dispatcher``: ``Dispatcher``, from a delivery to its settlement (normalize,
  reject, route, unrouted);
* ``fanout``: ``FanOut``, the runs of one event in parallel, and their outcomes;
* ``attempts``: ``Runner``, one run's attempts (flow control, timeout, retry);
* ``endings``: ``Endings``, how a run ends (ledger, dead letter, parked retry);
* ``completion``: ``Completions``, the ``on_complete`` events;
* ``storable``: what a run may hand to the store, and failures made storable;
* ``runs`` and ``env``: the values they share (``BoundHandler``, ``Run``,
  ``DispatchConfig``, ``DispatchEnv``).

Everything logs to the ``bridge.dispatch`` logger.
"""

from bridge.dispatch.completion import completion_event_id
from bridge.dispatch.dispatcher import Dispatcher
from bridge.dispatch.env import DispatchConfig, DispatchEnv
from bridge.dispatch.runs import (
    BoundHandler,
    Emitter,
    Resume,
    Run,
    RunStatus,
    jsonable_result,
    parked_run_id,
)

__all__ = [
    "BoundHandler",
    "DispatchConfig",
    "DispatchEnv",
    "Dispatcher",
    "Emitter",
    "Resume",
    "Run",
    "RunStatus",
    "completion_event_id",
    "jsonable_result",
    "parked_run_id",
]
