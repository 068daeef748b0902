"""Wall-clock time, injectable: the one clock protocol every time-dependent rule asks.

Policy (calendar windows, lot expiry, suspensions that end) and shaping (rates, leases,
warm-up days) take decisions against wall-clock seconds since the epoch, because their
state is shared between nodes through Redis (nodes are expected to be NTP-synchronised).
Tests inject a `ManualClock` instead of patching `time`; `mta.policy.clock.FileClock`
moves a running daemon's clock.
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

    def __init__(self, start: float | datetime = 1_700_000_000.0) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float | datetime) -> None:
        self._now = when.timestamp() if isinstance(when, datetime) else float(when)
