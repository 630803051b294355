"""Flow control for handler runs: retry budgets, rate limits, concurrency per key.

Three asyncio primitives, each on an injectable clock (the engine's
``bridge.clock.Clock``: ``time()`` and ``async sleep()``), so tests drive time
by hand:

* ``RetryBudget``: retries may be at most ``ratio`` of first attempts over a
  sliding ``window`` (plus a floor of ``min_per_second``). A retry beyond the
  budget is *delayed* until the budget has room again, never dropped. One budget
  may be shared by several handlers that call the same downstream
  (``Budgets``, from the top-level ``retry_budgets``).
* ``RateLimiter``: at most ``count`` admissions in any window of length ``per``
  (a sliding log of the last ``count`` admission times). Unlike a token bucket,
  which lets through up to ``2 * count - 1`` in some windows, this never exceeds
  ``count`` in any window, so a downstream that enforces "N per period" never
  sees more.
* ``KeyedLimiter``: at most ``limit`` holders per key at once.

Every waiter queues FIFO; nothing polls (the head of a queue sleeps exactly as
long as it must); a cancelled waiter consumes nothing and passes its turn on.
``HandlerFlow`` bundles the three for one handler, built from its config. The
config models (``RateLimit``, ``RetryBudgetConfig``) live in ``bridge.limits``.
"""

from bridge.flow.budget import Budgets, RetryBudget
from bridge.flow.handler import HandlerFlow
from bridge.flow.keys import KeyedLimiter
from bridge.flow.rate import RateLimiter
from bridge.limits import RateLimit, RetryBudgetConfig

__all__ = [
    "Budgets",
    "HandlerFlow",
    "KeyedLimiter",
    "RateLimit",
    "RateLimiter",
    "RetryBudget",
    "RetryBudgetConfig",
]
