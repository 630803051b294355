"""Handing work to a thread of our own while the event loop is busy.

A thread woken by the loop (``queue.put``, ``Event.set``) must take the GIL to run.
A busy loop gives the GIL up only for an instant at each system call (``select``,
``send``), and a woken thread rarely catches it in time: CPython makes the holder
give it up only to a thread that waited a whole switch interval (5 ms) without being
woken meanwhile, and every such instant wakes it again. Measured here, with the
bridge running flat out on the memory connector: a thread took 100 ms (median) and up
to 216 ms to pick up what the loop handed it. The store's SQLite thread then writes
late (the deliveries waiting for it hold their slots), and the span exporter's queue
overflowed: two spans of three were dropped at 100 % sampling.

``nudge()`` right after the hand-off gives the woken thread the GIL at once (0.1 ms
median in the same measurement): a blocking ``sleep(0)`` lets go of the GIL long
enough for the thread that was just signalled to take it.

It is not free: ``sleep(0)`` sleeps for the kernel's timer slack (50 µs by default),
75 µs of the loop's time here (18 µs of it CPU). So a nudge follows a hand-off to a
thread that is waiting for it, never a thread asleep until its next turn.
"""

from __future__ import annotations

import time


def nudge() -> None:
    """Let a thread that was just handed work take the GIL now (see the module's text)."""
    time.sleep(0)
