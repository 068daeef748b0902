"""Clock sources for policy decisions.

Every time-dependent rule (calendar windows, lot expiry, licence validity, suspensions that
end) asks an injected clock, so tests move time forward instead of patching `time`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start: float | datetime) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float | datetime) -> None:
        self._now = when.timestamp() if isinstance(when, datetime) else float(when)
