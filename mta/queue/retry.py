"""The retry schedule: when a deferred recipient is tried again, and when it expires.

Built from `[delivery] retry` (a list of intervals; the last one repeats) and
`[delivery] max_age`. Each interval gets +-10% jitter so recipients deferred together (a
site's outage) do not all come back in the same second. The random source is injected, so
tests can pin it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mta.config import DeliveryConfig

__all__ = ["JITTER", "RetrySchedule"]

# +-10%: enough to spread a burst over a minute at the 5-minute step, small enough that
# the operator's schedule still reads true.
JITTER = 0.10


@dataclass(frozen=True)
class RetrySchedule:
    steps: Sequence[float]
    max_age: float
    # Returns a float in [0, 1); random.random by default.
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a retry schedule needs at least one interval")

    @classmethod
    def from_config(cls, delivery: DeliveryConfig,
                    rand: Callable[[], float] = random.random) -> RetrySchedule:
        return cls(tuple(delivery.retry), delivery.max_age, rand)

    def delay(self, attempt: int) -> float:
        """The interval after attempt number `attempt` (1 = the first attempt), jittered."""
        step = self.steps[min(max(attempt, 1), len(self.steps)) - 1]
        return step * (1.0 + JITTER * (2.0 * self.rand() - 1.0))

    def next_retry(self, attempt: int, now: float) -> float:
        """Unix time of the next try after attempt number `attempt` failed at `now`."""
        return now + self.delay(attempt)

    def expired(self, received_at: float, now: float) -> bool:
        """True once a message has been queued for max_age: its recipients expire."""
        return now - received_at >= self.max_age
