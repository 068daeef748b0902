"""Connection leases: a concurrency limit per key that survives its holders' deaths."""

import asyncio

import pytest

from mta.clock import ManualClock
from mta.shaping.lease import Leases, LeaseUnavailable
from mta.shaping.shaper import Stores


async def test_limit_is_enforced_and_release_frees_a_slot(stores: Stores) -> None:
    leases = Leases(stores.leases, ManualClock())
    a = await leases.try_acquire("ip1->gmail", 2)
    b = await leases.try_acquire("ip1->gmail", 2)
    assert a is not None and b is not None
    assert await leases.try_acquire("ip1->gmail", 2) is None
    assert await leases.try_acquire("ip1->yahoo", 2) is not None  # other key
    assert await leases.in_use("ip1->gmail") == 2
    await a.release()
    await a.release()  # idempotent
    assert await leases.in_use("ip1->gmail") == 1
    assert await leases.try_acquire("ip1->gmail", 2) is not None


async def test_context_manager_releases_on_error(stores: Stores) -> None:
    leases = Leases(stores.leases, ManualClock())
    lease = await leases.try_acquire("k", 1)
    assert lease is not None
    with pytest.raises(RuntimeError):
        async with lease:
            assert await leases.in_use("k") == 1
            raise RuntimeError("connection dropped")
    assert await leases.in_use("k") == 0


async def test_dead_holders_lease_expires_after_ttl(stores: Stores) -> None:
    """A holder that dies (never renews, never releases) loses its slot after the ttl."""
    clock = ManualClock()
    leases = Leases(stores.leases, clock, ttl=60.0)
    dead = await leases.try_acquire("k", 1)
    assert dead is not None
    clock.advance(59.9)
    assert await leases.try_acquire("k", 1) is None
    clock.advance(0.2)
    assert await leases.in_use("k") == 0
    assert await leases.try_acquire("k", 1) is not None
    assert await dead.renew() is False
    assert dead.lost


async def test_renewal_keeps_a_live_holder(stores: Stores) -> None:
    clock = ManualClock()
    leases = Leases(stores.leases, clock, ttl=60.0)
    lease = await leases.try_acquire("k", 1)
    assert lease is not None
    for _ in range(5):
        clock.advance(40)
        assert await lease.renew()
    assert await leases.try_acquire("k", 1) is None


async def test_background_renewal_runs_while_held(stores: Stores) -> None:
    """ttl 0.3 s of real time: renewal every 0.1 s keeps the lease past its first ttl."""
    from mta.clock import SystemClock

    leases = Leases(stores.leases, SystemClock(), ttl=0.3)
    async with leases.hold("k", 1) as lease:
        await asyncio.sleep(0.5)
        assert not lease.lost
        assert await leases.in_use("k") == 1
    assert await leases.in_use("k") == 0


async def test_acquire_waits_for_a_release(stores: Stores) -> None:
    leases = Leases(stores.leases, ManualClock())
    first = await leases.try_acquire("k", 1)
    assert first is not None

    async def release_soon() -> None:
        await asyncio.sleep(0.05)
        await first.release()

    task = asyncio.create_task(release_soon())
    second = await asyncio.wait_for(leases.acquire("k", 1, within=2.0), 3.0)
    await task
    assert second.key == "k"
    with pytest.raises(LeaseUnavailable, match="no free lease on 'k'"):
        await leases.acquire("k", 1, within=0.05)


async def test_concurrent_acquirers_never_exceed_the_limit(stores: Stores) -> None:
    leases = Leases(stores.leases, ManualClock())
    got = await asyncio.gather(*(leases.try_acquire("k", 5) for _ in range(50)))
    assert sum(g is not None for g in got) == 5
