"""The Shaper: the one object the dispatcher holds, wiring rules, throttles, leases,
adaptive feedback, suspensions and egress together, and explaining a path's state.

Built once by `mta serve` (never a global) and passed down:

    shaper = Shaper(cfg, stores=await redis_stores(url) if url else memory_stores())
    path = shaper.path(source, site, domain=..., key_sites=...)   # once per pool
    if shaper.blocked(path, tenant) is None:
        lease = await shaper.try_connect(path)            # window + connection rate
        ... per message: wait = await shaper.message_wait(path); 0.0 means send now
        ... per reply:   shaper.record(path, category, reply)
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mta.config import Config
from mta.rfc5321.reply import Reply
from mta.shaping.adaptive import Adaptive, Change
from mta.shaping.clock import Clock, SystemClock
from mta.shaping.egress import Egress, EgressSource
from mta.shaping.lease import Lease, Leases, LeaseStore, MemoryLeaseStore
from mta.shaping.rules import PathConfig, resolve_path
from mta.shaping.suspend import Suspension, Suspensions
from mta.shaping.throttle import MemoryThrottle, ThrottleStore

__all__ = ["Shaper", "Stores", "memory_stores", "redis_stores"]


@dataclass
class Stores:
    throttle: ThrottleStore
    leases: LeaseStore
    close: Callable[[], Awaitable[None]] | None = None

    async def aclose(self) -> None:
        if self.close is not None:
            await self.close()


def memory_stores() -> Stores:
    return Stores(MemoryThrottle(), MemoryLeaseStore())


async def redis_stores(url: str, prefix: str = "mta:shaping:") -> Stores:
    """Stores shared through Redis at `url` ([cluster] redis_url). Fails fast if Redis is
    unreachable, so a misconfigured cluster does not start with per-process limits."""
    import redis.asyncio as aioredis  # only when configured: the embedded default needs none

    from mta.shaping.redis_store import RedisLeaseStore, RedisThrottle

    client = aioredis.from_url(url)
    try:
        await client.ping()
    except Exception:
        await client.aclose()
        raise
    return Stores(RedisThrottle(client, prefix), RedisLeaseStore(client, prefix),
                  client.aclose)


class Shaper:
    def __init__(self, cfg: Config, *, stores: Stores | None = None, clock: Clock | None = None,
                 on_change: Callable[[Change], None] | None = None,
                 persist: Callable[[Suspension, bool], None] | None = None,
                 lease_ttl: float = 60.0) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.stores = stores or memory_stores()
        self.throttle = self.stores.throttle
        self.leases = Leases(self.stores.leases, self.clock, lease_ttl)
        self.adaptive = Adaptive(self.clock, on_change)
        self.suspensions = Suspensions(self.clock, persist)
        self.egress = Egress(cfg.egress, self.clock)
        self._paths: dict[tuple[str, str], PathConfig] = {}

    # --- configuration ---------------------------------------------------------------
    def path(self, source: str, site: str, *, domain: str = "",
             key_sites: Mapping[str, str] | None = None) -> PathConfig:
        """The resolved rules for (source, site), cached: resolve when a pool is built.
        `key_sites` maps configured [shaping] keys to their MX rollup site."""
        pc = self._paths.get((source, site))
        if pc is None:
            pc = resolve_path(self.cfg.shaping, self.cfg.delivery, source=source, site=site,
                              domain=domain, key_sites=key_sites)
            self._paths[(source, site)] = pc
        return pc

    def choose_source(self, pool: str, rng: random.Random, *, site: str | None = None,
                      tenant: str | None = None) -> EgressSource | None:
        """A source for one message: weighted, skipping suspended and capped sources. Counts
        the message toward the source's warm-up cap."""
        def skip(name: str) -> bool:
            return self.suspensions.is_suspended(source=name, site=site,
                                                 tenant=tenant) is not None
        src = self.egress.choose(pool, rng, skip)
        if src is not None:
            self.egress.record_sent(src.name)
        return src

    # --- decisions -------------------------------------------------------------------
    def blocked(self, path: PathConfig, tenant: str | None = None) -> Suspension | None:
        """Why nothing may go on this path now (admin suspension or dead-site timer)."""
        s = self.suspensions.is_suspended(site=path.site, source=path.source, tenant=tenant)
        if s is not None:
            return s
        dead = self.adaptive.dead(path)
        if dead is None:
            return None
        until, category, reply = dead
        reason = f"adaptive: {category}" + (f": {reply}" if reply else "")
        return Suspension("path", path.key, reason, until - path.suspend_duration, until)

    async def try_connect(self, path: PathConfig) -> Lease | None:
        """A lease for one more connection on the path, or None when the adaptive window
        (at most connection_limit) is full, the path is dead, or max_connection_rate says
        not yet. Use the lease as `async with lease:` around the connection."""
        window = self.adaptive.window(path)
        if window < 1:
            return None
        lease = await self.leases.try_acquire(path.key, window)
        if lease is None or path.max_connection_rate is None:
            return lease
        wait = await self.throttle.try_acquire(f"conn:{path.key}", path.max_connection_rate,
                                               self.clock.time())
        if wait > 0:
            await lease.release()
            return None
        return lease

    async def message_wait(self, path: PathConfig) -> float:
        """0.0: send one message now (counted). Else seconds until max_message_rate, slowed
        by the adaptive scale, allows one."""
        if path.max_message_rate is None:
            return 0.0
        return await self.throttle.try_acquire(
            f"msg:{path.key}", path.max_message_rate, self.clock.time(),
            scale=self.adaptive.rate_scale(path))

    def record(self, path: PathConfig, category: str, reply: Reply | None = None) -> None:
        """Feed a classified reply (or "connection_failure") into the adaptive loop."""
        self.adaptive.record(path, category, reply)

    # --- explain ---------------------------------------------------------------------
    async def explain(self, path: PathConfig, tenant: str | None = None) -> dict[str, Any]:
        """Everything that decides this path now, as plain JSON types."""
        now = self.clock.time()
        scale = self.adaptive.rate_scale(path)
        rates: dict[str, Any] = {}
        for name, prefix, sc in (("max_message_rate", "msg", scale),
                                 ("max_connection_rate", "conn", 1.0)):
            rate = getattr(path, name)
            rates[name] = None if rate is None else (await self.throttle.state(
                f"{prefix}:{path.key}", rate, now, scale=sc)).as_dict()
        blocked = self.blocked(path, tenant)
        out: dict[str, Any] = {
            "path": path.key, "source": path.source, "site": path.site, "now": now,
            "rules": path.explain(),
            "throttles": rates,
            "connections": {"in_use": await self.leases.in_use(path.key),
                            "limit": path.connection_limit,
                            "window": self.adaptive.window(path)},
            "adaptive": self.adaptive.explain(path),
            "suspension": blocked.as_dict() if blocked else None,
        }
        with contextlib.suppress(KeyError):
            out["egress"] = self.egress.explain(path.source)
        return out
