"""The Shaper: the one object the dispatcher holds, wiring rules, throttles, leases,
adaptive feedback, suspensions and egress together, and explaining a path's state.

Built once by `mta serve` (never a global) and passed down:

    shaper = Shaper(cfg, stores=await redis_stores(url) if url else memory_stores())
    shaper.note_domain_site(domain, site)   # per MX answer: lets [shaping."domain"] match
    src = shaper.choose_source(pool, rng, site=site, tenant=tenant)  # per message
    path = shaper.path(src.name, site)      # resolved once per (source, site), cached
    ticket = Ticket(path, tenant)           # per message: its way through the gate
    holds = await shaper.gate(ticket)       # [] = go now (every rate taken), else why not
    ... per new connection: await shaper.admit_connection(path) -> Lease | seconds
    ... per attempt: shaper.record(path, category, reply)
    shaper.holds(path, tenant)              # the same gate, taking nothing: for explain

The gate is the one place that says why mail waits: the path's suspension or dead-site
timer, the cross-path [rate_limits], the path's max_message_rate, and for a new connection
the volume licence's cap on outbound connections (`connection_cap`, wired by the owner of
the connections), the adaptive window and max_connection_rate. Workers go through it and
`holds()`/`explain()` read the same checks without taking anything, so `mta queue explain`
and `mta shaping explain` name every limit a worker would wait for.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mta.clock import Clock, SystemClock
from mta.config import Config
from mta.rfc5321.reply import Reply
from mta.shaping.adaptive import Adaptive, Change
from mta.shaping.egress import Egress, EgressSource
from mta.shaping.hold import Hold, at
from mta.shaping.lease import Lease, Leases, LeaseStore, MemoryLeaseStore
from mta.shaping.rate import Rate, parse_rate
from mta.shaping.rules import PathConfig, matching_keys, resolve_path
from mta.shaping.suspend import Suspension, Suspensions
from mta.shaping.throttle import MemoryThrottle, ThrottleStore

__all__ = ["LICENCE_WAIT", "Shaper", "Stores", "Ticket", "memory_stores", "redis_stores"]

# A connection refused by the licence's cap is asked for again after this many seconds.
LICENCE_WAIT = 0.5


@dataclass(slots=True)
class Ticket:
    """One message's way through the gate of one path: how many of its rate steps it has
    passed, so asking again after a wait never counts it twice on an earlier limit."""

    path: PathConfig
    tenant: str | None = None
    parents: tuple[str, ...] = ()  # the tenant's ancestors, from the envelope
    passed: int = 0


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
    except Exception as e:
        await client.aclose()
        raise ConnectionError(f"[cluster] redis_url {url}: {e}") from None  # one-line exit
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
        # [shaping] key (a domain) -> its MX rollup site, learnt from MX answers.
        self.key_sites: dict[str, str] = {}
        # () -> (the volume licence's cap on outbound connections, 0 = none; connections
        # open now over every path). Set by whoever owns the connections (the dispatcher).
        self.connection_cap: Callable[[], tuple[int, int]] | None = None
        self._parse_rate_limits(cfg)

    # --- configuration ---------------------------------------------------------------
    def path(self, source: str, site: str, *, domain: str = "",
             key_sites: Mapping[str, str] | None = None) -> PathConfig:
        """The resolved rules for (source, site), cached: resolve when a pool is built.
        `key_sites` maps configured [shaping] keys to their MX rollup site (added to what
        `note_domain_site` learnt)."""
        pc = self._paths.get((source, site))
        if pc is None:
            ks = {**self.key_sites, **key_sites} if key_sites else self.key_sites
            pc = resolve_path(self.cfg.shaping, self.cfg.delivery, source=source, site=site,
                              domain=domain, key_sites=ks)
            self._paths[(source, site)] = pc
        return pc

    def rate_limits(self, tenant: str, site: str) -> list[tuple[str, str, Rate]]:
        """The [rate_limits] that apply to one message of `tenant` to `site`, as
        (limit name, counter key, rate), in the order to take them."""
        out = []
        if self._global_rate is not None:
            out.append(("global_message_rate", "global", self._global_rate))
        if self._tenant_rate is not None:
            out.append(("tenant_message_rate", f"tenant:{tenant}", self._tenant_rate))
        for key, rate in self._provider_rates.items():
            if key == site or self.key_sites.get(key) == site:
                out.append(("provider_message_rate", f"provider:{key}", rate))
        return out

    def _parse_rate_limits(self, cfg: Config) -> None:
        rl = cfg.rate_limits
        self._global_rate = parse_rate(rl.global_message_rate) if rl.global_message_rate \
            else None
        self._tenant_rate = parse_rate(rl.tenant_message_rate) if rl.tenant_message_rate \
            else None
        self._provider_rates = {k: parse_rate(v) for k, v in
                                rl.provider_message_rate.items() if v}

    def rate_keys(self) -> list[str]:
        """Domains named by [shaping] or [rate_limits] provider keys: resolved at start so
        their rules govern their sites."""
        return [k for k in [*self.cfg.shaping, *self.cfg.rate_limits.provider_message_rate]
                if k != "default" and "." in k and not any(c in k for c in "()|?")]

    def note_domain_site(self, domain: str, site: str) -> bool:
        """An MX answer: `domain`'s mail goes to `site`. If the domain is a [shaping] key,
        remember it, so `[shaping."gmail.com"]` governs the site (and every domain rolled
        up into it). True when that changes the site's rules: the caller then re-reads its
        paths (cached ones for the site were dropped)."""
        key = next((k for k in [*self.cfg.shaping, *self.cfg.rate_limits.provider_message_rate]
                    if k != "default" and k.lower() == domain.lower()), None)
        if key is None or self.key_sites.get(key) == site:
            return False
        old = self.key_sites.get(key)
        self.key_sites[key] = site
        for s in (site, old):
            if s is not None:
                self.forget_site(s)
        return True

    def forget_site(self, site: str) -> None:
        """Drop the cached rules of every path to `site` (they are resolved again)."""
        for k in [k for k in self._paths if k[1] == site]:
            del self._paths[k]

    def reload(self, cfg: Config) -> None:
        """New [shaping] rules and [egress] sources and pools: paths resolve again on next
        use. Adaptive state, counters, leases, suspensions and today's warm-up counts
        stay."""
        self.cfg = cfg
        self.egress.reload(cfg.egress)
        self._paths.clear()
        self._parse_rate_limits(cfg)
        self.key_sites = {k: s for k, s in self.key_sites.items()
                          if k in cfg.shaping or k in cfg.rate_limits.provider_message_rate}

    def rule_keys(self, domain: str, site: str) -> list[str]:
        """The [shaping] keys that apply to a site (for explain)."""
        return matching_keys(self.cfg.shaping, domain=domain, site=site,
                             key_sites=self.key_sites)

    def choose_source(self, pool: str, rng: random.Random, *, site: str | None = None,
                      tenant: str | None = None,
                      parents: tuple[str, ...] = ()) -> EgressSource | None:
        """A source for one message: weighted, skipping suspended and capped sources. Counts
        the message toward the source's warm-up cap."""
        def skip(name: str) -> bool:
            if site is None:
                return self.suspensions.is_suspended(source=name, tenant=tenant) is not None
            return self.blocked(self.path(name, site), tenant, parents) is not None
        src = self.egress.choose(pool, rng, skip)
        if src is not None:
            self.egress.record_sent(src.name)
        return src

    # --- decisions -------------------------------------------------------------------
    def blocked(self, path: PathConfig, tenant: str | None = None,
                parents: tuple[str, ...] = ()) -> Suspension | None:
        """Why nothing may go on this path now (admin suspension or dead-site timer). A
        suspended ancestor of the tenant (`parents`, nearest first) holds its mail too."""
        s = self.suspensions.is_suspended(site=path.site, source=path.source, tenant=tenant)
        if s is None and parents:
            s = next(filter(None, (self.suspensions.is_suspended(tenant=p) for p in parents)),
                     None)
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
                                               self.clock.now())
        if wait > 0:
            await lease.release()
            return None
        return lease

    async def admit_connection(self, path: PathConfig) -> Lease | float:
        """Admission of one new connection on the path: a started Lease (held while the
        connection lives, released after it closed), or the seconds to wait before asking
        again: until max_connection_rate allows one, or a short poll while the window is
        full (a release on another node cannot wake us). The licence's cap counts the
        connection asked for (its pool already holds the slot), over every path."""
        cap, open_now = self.connection_cap() if self.connection_cap else (0, 0)
        if cap and open_now > cap:
            return LICENCE_WAIT
        window = self.adaptive.window(path)
        if window >= 1:
            lease = await self.leases.try_acquire(path.key, window)
            if lease is not None:
                if path.max_connection_rate is None:
                    await lease.__aenter__()
                    return lease
                wait = await self.throttle.try_acquire(
                    f"conn:{path.key}", path.max_connection_rate, self.clock.now())
                if wait <= 0:
                    await lease.__aenter__()
                    return lease
                await lease.release()
                return wait
        return 0.25  # window full or path dead: 250 ms polls are cheap and react fast

    async def message_wait(self, path: PathConfig) -> float:
        """0.0: send one message now (counted). Else seconds until max_message_rate, slowed
        by the adaptive scale, allows one."""
        if path.max_message_rate is None:
            return 0.0
        return await self.throttle.try_acquire(
            f"msg:{path.key}", path.max_message_rate, self.clock.now(),
            scale=self.adaptive.rate_scale(path))

    def record(self, path: PathConfig, category: str, reply: Reply | None = None) -> None:
        """Feed a classified reply (or "connection_failure") into the adaptive loop."""
        self.adaptive.record(path, category, reply)

    # --- the gate ----------------------------------------------------------------------
    def _steps(self, path: PathConfig, tenant: str | None) -> list[tuple[str, str, Rate, float]]:
        """The rates one message takes on this path, in order, as (limit name, counter
        key, rate, scale): the cross-path [rate_limits] first, then max_message_rate
        (slowed by receiver feedback)."""
        steps = [(name, key, rate, 1.0) for name, key, rate in self.rate_limits(
            tenant or "", path.site) if tenant is not None or name != "tenant_message_rate"]
        if path.max_message_rate is not None:
            steps.append(("max_message_rate", f"msg:{path.key}", path.max_message_rate,
                          self.adaptive.rate_scale(path)))
        return steps

    def _rate_hold(self, path: PathConfig, name: str, key: str, rate: Rate, scale: float,
                   until: float) -> Hold:
        if name == "max_message_rate":
            slowed = f", slowed to {scale:.3g}x by receiver feedback" if scale < 1 else ""
            return Hold(name, until, f"max_message_rate {rate}{slowed} on {path.key}: next "
                                     f"message allowed at {at(until)}")
        return Hold(name, until, f"[rate_limits] {name} {rate} (counter {key}, over every "
                                 f"path): next message allowed at {at(until)}")

    def _suspension_hold(self, path: PathConfig, blocked: Suspension) -> Hold:
        what = (f"dead-site timer of path {path.key}" if blocked.reason.startswith(
            "adaptive:") else f"suspension of {blocked.scope} {blocked.name}")
        end = "until lifted" if blocked.until is None else f"until {at(blocked.until)}"
        return Hold("suspension", blocked.until, f"{what}: {blocked.reason}, {end}")

    async def gate(self, ticket: Ticket) -> list[Hold]:
        """Let one message through the path's gate: [] when it may go now (each rate
        taken, once), else what it waits for. A "suspension" hold (an administrative
        suspension or the dead-site timer) means put it back; any other hold ends at its
        `until`, when the worker asks again with the same ticket."""
        path = ticket.path
        blocked = self.blocked(path, ticket.tenant, ticket.parents)
        if blocked is not None:
            return [self._suspension_hold(path, blocked)]
        steps = self._steps(path, ticket.tenant)
        while ticket.passed < len(steps):
            name, key, rate, scale = steps[ticket.passed]
            now = self.clock.now()
            wait = await self.throttle.try_acquire(key, rate, now, scale=scale)
            if wait > 0:
                return [self._rate_hold(path, name, key, rate, scale, now + wait)]
            ticket.passed += 1
        return []

    async def holds(self, path: PathConfig, tenant: str | None = None,
                    parents: tuple[str, ...] = ()) -> list[Hold]:
        """The gate read without taking anything: every limit that keeps a message (of
        `tenant`, if given) from leaving on this path at this instant, most decisive first
        (see hold.py). Empty: a message could go now."""
        now = self.clock.now()
        out: list[Hold] = []
        blocked = self.blocked(path, tenant, parents)
        if blocked is not None:
            out.append(self._suspension_hold(path, blocked))
        with contextlib.suppress(KeyError):
            cap = self.egress.cap_today(path.source)
            sent = self.egress.sent_today(path.source)
            if cap is not None and sent >= cap:
                out.append(Hold("warmup_cap", self.egress.next_day(), (
                    f"source {path.source} sent {sent} of its warm-up cap of {cap} today "
                    f"(day {self.egress.warmup_day(path.source)}); counts restart at "
                    f"{at(self.egress.next_day())}")))
        for name, key, rate, scale in self._steps(path, tenant):
            st = await self.throttle.state(key, rate, now, scale=scale)
            if st.tokens < 1:
                out.append(self._rate_hold(path, name, key, rate, scale, st.next_allowed))
        cap, open_now = self.connection_cap() if self.connection_cap else (0, 0)
        if cap and open_now >= cap:
            out.append(Hold("licence_connections", None, (
                f"{open_now} of the licence's {cap} outbound connection(s) open over "
                "every path")))
        window = self.adaptive.window(path)
        in_use = await self.leases.in_use(path.key)
        if blocked is None and in_use >= window:
            shrunk = (f" (adaptive window {window} of connection_limit "
                      f"{path.connection_limit})" if window < path.connection_limit else "")
            out.append(Hold("connection_limit", None,
                            f"{in_use} of {window} connection(s) on {path.key} busy{shrunk}"))
        if path.max_connection_rate is not None:
            st = await self.throttle.state(f"conn:{path.key}", path.max_connection_rate, now)
            if st.tokens < 1:
                out.append(Hold("max_connection_rate", st.next_allowed,
                                f"max_connection_rate {path.max_connection_rate} on "
                                f"{path.key}: next new connection at {at(st.next_allowed)}"))
        return out

    # --- explain ---------------------------------------------------------------------
    async def explain(self, path: PathConfig, tenant: str | None = None) -> dict[str, Any]:
        """Everything that decides this path now, as plain JSON types."""
        now = self.clock.now()
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
            "holds": [h.as_dict() for h in await self.holds(path, tenant)],
        }
        with contextlib.suppress(KeyError):
            out["egress"] = self.egress.explain(path.source)
        return out
