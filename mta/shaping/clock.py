"""Clock sources for shaping: wall-clock seconds since the epoch, injectable.

Shaping state is shared between nodes through Redis, so every decision is taken against
wall-clock time (nodes are expected to be NTP-synchronised; a skew of d seconds shifts a
node's view of a rate by d). Tests inject a `ManualClock` instead of patching `time`.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
