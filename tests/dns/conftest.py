"""Fixtures for the DNS tests: the real DNS server (tests/support/dnsserver.py) and a clock
that moves only when told to."""

from __future__ import annotations

import pytest

from tests.support.dnsserver import dns_server_factory

__all__ = ["ManualClock", "clock", "dns_server_factory"]


class ManualClock:
    """Monotonic seconds for the resolver's cache; `advance` moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
