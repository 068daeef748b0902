"""GCRA throttles: "may one more event happen on this key now, or how long to wait?".

The Generic Cell Rate Algorithm keeps one number per counter, the theoretical arrival time
(TAT) of the next event at the steady pace. An event at `now` is admitted when, after it,
the TAT is at most `burst` intervals ahead of `now`; otherwise the answer is how long to
wait. One float per key, O(1) per decision, exact (to 1 us) with an injected clock.

The counter key is the caller's key plus `Rate.key` (limit, period and burst), so two limits
on one path never share a counter. An adaptive `scale` (0 < scale <= 1, from the feedback
loop) slows the pace of the same counter without starting a fresh one, so slowing down
never hands out a new burst.

`ThrottleStore` is the interface; `MemoryThrottle` is the in-process store and
`mta.shaping.redis_store.RedisThrottle` shares counters between workers and nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mta.shaping.rate import Rate

__all__ = ["EPSILON", "MemoryThrottle", "ThrottleState", "ThrottleStore", "counter_key",
           "gcra"]

# Float slack: a float64 holding today's epoch seconds resolves about 0.24 us, so decisions
# (and test comparisons) are exact to 1 us, far below any interval a rate can express.
EPSILON = 1e-6


def counter_key(key: str, rate: Rate) -> str:
    return f"{key}@{rate.key}"


def effective(rate: Rate, scale: float) -> tuple[float, int]:
    """(interval, burst) after the adaptive scale: slower pace, proportionally smaller burst."""
    if scale >= 1.0:
        return rate.interval, rate.burst
    scale = max(scale, 1e-6)
    return rate.interval / scale, max(1, int(rate.burst * scale))


def gcra(tat: float, now: float, interval: float, burst: int, n: int = 1) -> tuple[float, float]:
    """One GCRA decision. Returns (new_tat, wait): wait 0 means admitted and new_tat is to be
    stored; wait > 0 means refused, store nothing, retry after `wait` seconds."""
    tat = max(tat, now)
    new_tat = tat + interval * n
    wait = new_tat - now - interval * burst
    if wait > EPSILON:
        return tat, wait
    return new_tat, 0.0


@dataclass(frozen=True, slots=True)
class ThrottleState:
    """A counter as `explain` shows it."""

    tokens: int           # events admitted right now before the first refusal
    next_allowed: float   # epoch seconds at which one more event would be admitted
    burst: int
    interval: float

    def as_dict(self) -> dict[str, float | int]:
        return {"tokens": self.tokens, "next_allowed": self.next_allowed,
                "burst": self.burst, "interval": self.interval}


def state_of(tat: float, now: float, interval: float, burst: int) -> ThrottleState:
    ahead = max(tat, now) - now
    tokens = max(0, int((interval * burst - ahead + EPSILON) // interval))
    next_allowed = now + max(0.0, ahead + interval - interval * burst)
    return ThrottleState(tokens, next_allowed, burst, interval)


class ThrottleStore(Protocol):
    async def try_acquire(self, key: str, rate: Rate, now: float, *, scale: float = 1.0,
                          n: int = 1) -> float:
        """0.0 if admitted (and counted), else seconds to wait before asking again."""
        ...

    async def state(self, key: str, rate: Rate, now: float, *,
                    scale: float = 1.0) -> ThrottleState: ...


class MemoryThrottle:
    """In-process counters. Expired counters (TAT in the past, so equal to a fresh one) are
    swept when the table doubles, which keeps memory bounded by the active paths at O(1)
    amortised cost per decision."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._sweep_at = 1024

    def try_acquire_sync(self, key: str, rate: Rate, now: float, *, scale: float = 1.0,
                         n: int = 1) -> float:
        ck = counter_key(key, rate)
        interval, burst = effective(rate, scale)
        new_tat, wait = gcra(self._tat.get(ck, now), now, interval, burst, n)
        if wait == 0.0:
            self._tat[ck] = new_tat
            if len(self._tat) > self._sweep_at:
                self._sweep(now)
        return wait

    async def try_acquire(self, key: str, rate: Rate, now: float, *, scale: float = 1.0,
                          n: int = 1) -> float:
        return self.try_acquire_sync(key, rate, now, scale=scale, n=n)

    async def state(self, key: str, rate: Rate, now: float, *,
                    scale: float = 1.0) -> ThrottleState:
        interval, burst = effective(rate, scale)
        return state_of(self._tat.get(counter_key(key, rate), now), now, interval, burst)

    def __len__(self) -> int:
        return len(self._tat)

    def _sweep(self, now: float) -> None:
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        self._sweep_at = max(1024, 2 * len(self._tat))
