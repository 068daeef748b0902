"""The console's shared counts (mta.console.snapshots): served fresh, then stale while one
refresh runs, counted once for concurrent pages, dropped by clear()."""

from __future__ import annotations

import asyncio

from mta.console.snapshots import Snapshots


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_fresh_then_stale_while_refreshing_then_waited_for():
    clock, counts = Clock(), []

    async def count() -> int:
        counts.append(clock.now)
        await asyncio.sleep(0.01)
        return len(counts)

    snaps = Snapshots(fresh=10, stale=60, clock=clock)
    # Three pages at once: one count.
    got = await asyncio.gather(*(snaps.get("k", count) for _ in range(3)))
    assert [v for v, _ in got] == [1, 1, 1] and len(counts) == 1
    clock.now += 5
    assert await snaps.get("k", count) == (1, 5.0)  # fresh: no count
    clock.now += 10
    assert await snaps.get("k", count) == (1, 15.0)  # stale: served, refreshed behind
    await asyncio.sleep(0.05)
    assert len(counts) == 2
    assert (await snaps.get("k", count))[0] == 2
    clock.now += 100  # too old to serve: the page waits for a new count
    assert await snaps.get("k", count) == (3, 0.0)
    snaps.clear()  # an action changed the queue
    assert await snaps.get("k", count) == (4, 0.0)


async def test_keep_warm_refreshes_what_was_looked_at_lately():
    clock, counts = Clock(), []

    async def count() -> int:
        counts.append(clock.now)
        return len(counts)

    snaps = Snapshots(fresh=0.02, stale=60, idle=1000, clock=clock)
    await snaps.get("k", count)
    task = asyncio.get_running_loop().create_task(snaps.keep_warm())
    try:
        clock.now += 1
        await asyncio.sleep(0.1)
        assert len(counts) >= 2  # refreshed without a page asking
        clock.now += 5000  # nobody looked for longer than idle: no more counts
        await asyncio.sleep(0.05)
        n = len(counts)
        await asyncio.sleep(0.1)
        assert len(counts) == n
    finally:
        task.cancel()
        await snaps.aclose()
