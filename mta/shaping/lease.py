"""Connection leases: at most `limit` holders of a key at once, across workers and nodes.

A lease is one slot of a concurrency limit (one open connection on a path). It carries an
expiry: its holder renews it while alive, so if the holder's process dies its slots come
back after `ttl` instead of leaking forever (this matters with the Redis store, shared by
processes that can crash). Use a granted lease as an async context manager:

    lease = await leases.try_acquire("ip1->gmail", limit=10)
    if lease is not None:
        async with lease:          # renewed in the background, released on exit
            ...

or wait for a slot: `async with leases.hold(key, limit, within=5.0) as lease: ...`.

`LeaseStore` is the interface; `MemoryLeaseStore` is in-process and
`mta.shaping.redis_store.RedisLeaseStore` is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

from mta.clock import Clock

__all__ = ["Lease", "LeaseStore", "LeaseUnavailable", "Leases", "MemoryLeaseStore"]


class LeaseUnavailable(TimeoutError):
    """No slot became free within the timeout."""


class LeaseStore(Protocol):
    async def acquire(self, key: str, limit: int, lease_id: str, ttl: float,
                      now: float) -> bool: ...

    async def renew(self, key: str, lease_id: str, ttl: float, now: float) -> bool:
        """False if the lease had already expired (its slot may be someone else's now)."""
        ...

    async def release(self, key: str, lease_id: str) -> None: ...

    async def count(self, key: str, now: float) -> int: ...


class MemoryLeaseStore:
    def __init__(self) -> None:
        self._held: dict[str, dict[str, float]] = {}  # key -> lease id -> expiry

    def _live(self, key: str, now: float) -> dict[str, float]:
        held = self._held.get(key)
        if held is None:
            return {}
        for lid in [lid for lid, exp in held.items() if exp <= now]:
            del held[lid]
        if not held:
            del self._held[key]
        return held

    async def acquire(self, key: str, limit: int, lease_id: str, ttl: float,
                      now: float) -> bool:
        held = self._live(key, now)
        if len(held) >= limit:
            return False
        self._held.setdefault(key, held)[lease_id] = now + ttl
        return True

    async def renew(self, key: str, lease_id: str, ttl: float, now: float) -> bool:
        held = self._live(key, now)
        if lease_id not in held:
            return False
        held[lease_id] = now + ttl
        return True

    async def release(self, key: str, lease_id: str) -> None:
        held = self._held.get(key)
        if held is not None:
            held.pop(lease_id, None)
            if not held:
                del self._held[key]

    async def count(self, key: str, now: float) -> int:
        return len(self._live(key, now))


class Lease:
    """One granted slot. Entering starts background renewal; leaving releases it."""

    def __init__(self, leases: Leases, key: str, lease_id: str) -> None:
        self.key = key
        self.id = lease_id
        self.lost = False  # set if a renewal found the lease already expired
        self._leases = leases
        self._renewer: asyncio.Task[None] | None = None
        self._released = False

    async def __aenter__(self) -> Lease:
        self._renewer = asyncio.create_task(self._renew_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def renew(self) -> bool:
        ok = await self._leases.store.renew(self.key, self.id, self._leases.ttl,
                                            self._leases.clock.now())
        self.lost = self.lost or not ok
        return ok

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if not self._released:
            self._released = True
            await self._leases.store.release(self.key, self.id)

    async def _renew_loop(self) -> None:
        # Renew at a third of the ttl: two renewals can fail (a Redis hiccup) before expiry.
        while True:
            await asyncio.sleep(self._leases.ttl / 3)
            with contextlib.suppress(OSError, ConnectionError):
                if not await self.renew():
                    return


class Leases:
    """Hands out leases from a store. `ttl`: how long a dead holder's slot stays taken;
    60s is long against a Redis hiccup and short against an outage of a path's capacity."""

    def __init__(self, store: LeaseStore, clock: Clock, ttl: float = 60.0) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl

    async def try_acquire(self, key: str, limit: int) -> Lease | None:
        lease_id = uuid.uuid4().hex
        if await self.store.acquire(key, limit, lease_id, self.ttl, self.clock.now()):
            return Lease(self, key, lease_id)
        return None

    async def acquire(self, key: str, limit: int, within: float) -> Lease:
        """Wait up to `within` seconds (real time) for a slot; raise LeaseUnavailable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        delay = 0.005
        while True:
            lease = await self.try_acquire(key, limit)
            if lease is not None:
                return lease
            left = deadline - loop.time()
            if left <= 0:
                raise LeaseUnavailable(f"no free lease on {key!r} (limit {limit}) "
                                       f"within {within:g}s")
            # Poll with backoff: a release on another node cannot wake us up.
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.25)

    @contextlib.asynccontextmanager
    async def hold(self, key: str, limit: int, within: float = 0.0) -> AsyncIterator[Lease]:
        lease = await self.acquire(key, limit, within)
        async with lease:
            yield lease

    async def in_use(self, key: str) -> int:
        return await self.store.count(key, self.clock.now())
