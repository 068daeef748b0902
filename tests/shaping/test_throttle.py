"""GCRA throttles, exact against an injected clock, on both stores (memory and Redis)."""

import asyncio
import time

import pytest

from mta.shaping.rate import parse_rate
from mta.shaping.shaper import Stores
from mta.shaping.throttle import EPSILON

T0 = 1_700_000_000.0


def exactly(x: float) -> object:
    """Equal to 1 us (float64 resolution at epoch magnitudes is ~0.24 us)."""
    return pytest.approx(x, abs=EPSILON)


async def test_burst_then_steady_pace(stores: Stores) -> None:
    """"10/s burst 3": three at once, then one every 0.1 s; a refusal says how long to wait."""
    th, rate = stores.throttle, parse_rate("10/s burst 3")
    assert [await th.try_acquire("p", rate, T0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await th.try_acquire("p", rate, T0) == exactly(0.1)
    assert await th.try_acquire("p", rate, T0 + 0.05) == exactly(0.05)
    assert await th.try_acquire("p", rate, T0 + 0.1) == 0.0
    assert await th.try_acquire("p", rate, T0 + 0.1) == exactly(0.1)
    # Idle for a second: the burst is back, and no more than the burst.
    now = T0 + 1.1
    assert [await th.try_acquire("p", rate, now) for _ in range(4)][:3] == [0.0] * 3
    assert await th.try_acquire("p", rate, now) > 0


async def test_default_burst_is_the_limit(stores: Stores) -> None:
    rate = parse_rate("5/m")
    results = [await stores.throttle.try_acquire("p", rate, T0) for _ in range(6)]
    assert results[:5] == [0.0] * 5
    assert results[5] == exactly(12.0)  # one every 60/5 s


async def test_refusals_do_not_consume(stores: Stores) -> None:
    th, rate = stores.throttle, parse_rate("1/s burst 1")
    assert await th.try_acquire("p", rate, T0) == 0.0
    for _ in range(10):
        assert await th.try_acquire("p", rate, T0 + 0.5) == exactly(0.5)
    assert await th.try_acquire("p", rate, T0 + 1.0) == 0.0


async def test_two_limits_on_one_key_never_share_a_counter(stores: Stores) -> None:
    th = stores.throttle
    per_s, per_h = parse_rate("2/s"), parse_rate("3/h")
    for _ in range(2):
        assert await th.try_acquire("p", per_s, T0) == 0.0
        assert await th.try_acquire("p", per_h, T0) == 0.0
    assert await th.try_acquire("p", per_s, T0) > 0
    assert await th.try_acquire("p", per_h, T0) == 0.0  # its own counter: 1 of 3 left
    assert await th.try_acquire("q", per_s, T0) == 0.0  # other key, other counter


async def test_adaptive_scale_slows_the_same_counter(stores: Stores) -> None:
    """Halving the scale doubles the interval and halves the burst, without a fresh burst."""
    th, rate = stores.throttle, parse_rate("10/s burst 4")
    for _ in range(4):
        assert await th.try_acquire("p", rate, T0) == 0.0
    assert await th.try_acquire("p", rate, T0, scale=0.5) > 0
    st = await th.state("p", rate, T0 + 1.0, scale=0.5)
    assert (st.burst, st.interval) == (2, exactly(0.2))


async def test_state_reports_tokens_and_next_allowed(stores: Stores) -> None:
    th, rate = stores.throttle, parse_rate("10/s burst 5")
    st = await th.state("p", rate, T0)
    assert (st.tokens, st.next_allowed) == (5, T0)
    for _ in range(5):
        await th.try_acquire("p", rate, T0)
    st = await th.state("p", rate, T0)
    assert st.tokens == 0
    assert st.next_allowed == exactly(T0 + 0.1)
    assert (await th.state("p", rate, T0 + 0.25)).tokens == 2


async def test_memory_store_forgets_idle_counters() -> None:
    from mta.shaping.throttle import MemoryThrottle

    th, rate = MemoryThrottle(), parse_rate("1/s")
    for i in range(5000):
        th.try_acquire_sync(f"p{i}", rate, T0)
    assert len(th) == 5000  # all live: nothing to forget yet
    # 10 s later every earlier counter is back to full, the same as no counter at all;
    # the table is swept once it doubles (here at 8192 entries).
    for i in range(4000):
        th.try_acquire_sync(f"q{i}", rate, T0 + 10)
    assert len(th) == 4000


@pytest.mark.slow
async def test_real_time_50_per_second_over_2_seconds(stores: Stores) -> None:
    """A "50/s burst 5" throttle polled for 2 s admits at most 5 + 2 x 50 = 105 (+1 for the
    last poll's timing) and, with polls late by less than the burst's 100 ms, loses nothing:
    tolerance -5% / +1. (Burst 1 would lose every poll's lateness: no slack to absorb it.)"""
    th, rate = stores.throttle, parse_rate("50/s burst 5")
    admitted = 0
    start = time.time()
    while time.time() - start < 2.0:
        wait = await th.try_acquire("rt", rate, time.time())
        if wait == 0.0:
            admitted += 1
        else:
            await asyncio.sleep(min(wait, 0.01))
    assert 100 <= admitted <= 106


async def test_concurrent_decisions_admit_exactly_the_burst(stores: Stores) -> None:
    rate = parse_rate("1/h burst 5")
    waits = await asyncio.gather(*(stores.throttle.try_acquire("p", rate, T0)
                                   for _ in range(50)))
    assert waits.count(0.0) == 5


async def test_two_nodes_share_counters_and_leases_through_redis(redis_url: str) -> None:
    """Two independent clients (two workers or nodes) with the same prefix see one state."""
    import uuid

    from mta.clock import ManualClock
    from mta.shaping.lease import Leases
    from mta.shaping.shaper import redis_stores

    prefix = f"test:{uuid.uuid4().hex}:"
    a, b = await redis_stores(redis_url, prefix), await redis_stores(redis_url, prefix)
    try:
        rate = parse_rate("3/h")
        assert [await a.throttle.try_acquire("p", rate, T0) for _ in range(2)] == [0.0, 0.0]
        assert await b.throttle.try_acquire("p", rate, T0) == 0.0
        assert await a.throttle.try_acquire("p", rate, T0) == exactly(1200.0)
        clock = ManualClock(T0)
        la, lb = Leases(a.leases, clock), Leases(b.leases, clock)
        held = await la.try_acquire("conn", 1)
        assert held is not None
        assert await lb.try_acquire("conn", 1) is None
        await held.release()
        assert await lb.try_acquire("conn", 1) is not None
    finally:
        await a.aclose()
        await b.aclose()
