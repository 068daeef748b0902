"""Fixtures: a real redis-server on a free loopback port, and the shaping stores
parametrized over both backends (in memory and Redis) so one test checks both."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from mta.shaping.shaper import Stores, memory_stores


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    if request.param == "memory":
        yield memory_stores()
        return
    from mta.shaping.shaper import redis_stores

    url = request.getfixturevalue("redis_url")
    # A fresh key prefix per test: tests never see each other's counters.
    st = await redis_stores(url, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        yield st
    finally:
        await st.aclose()
