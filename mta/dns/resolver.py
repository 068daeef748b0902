"""The resolver other packages use: MX, addresses and TXT, cached and coalesced.

Owns the `Resolver` interface and its one implementation, `CachingResolver`, which puts
the answer cache (mta.dns.cache) and the coalescing of concurrent identical questions in
front of a backend: real DNS (`make_resolver(cfg.dns)`, mta.dns.live) or zone text
(`TestResolver`, mta.dns.zone). Counters are plain attributes of `resolver.counters`, for
the metrics module to read.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mta.config import DnsConfig
from mta.dns import mx as mx_rules
from mta.dns.answer import Answer, Lookup, Status, name_error, normalize_name
from mta.dns.cache import AnswerCache
from mta.dns.live import LiveLookup
from mta.dns.result import DnsFailure, DnsTemporaryError, MxResult, temporary
from mta.dns.site import site_name
from mta.dns.zone import ZoneLookup

__all__ = ["CachingResolver", "DnsCounters", "Resolver", "TestResolver", "make_resolver"]

log = logging.getLogger("mta.dns")

# Defaults for a resolver built without a config (tests, tools): the same as DnsConfig's.
_DEFAULTS = DnsConfig()


@runtime_checkable
class Resolver(Protocol):
    async def resolve_mx(self, domain: str) -> MxResult | DnsFailure:
        """Where to deliver mail for `domain`, or why not (see mta.dns.mx)."""
        ...

    async def resolve_addresses(self, host: str) -> list[str]:
        """A then AAAA addresses; [] if the host has none; DnsTemporaryError if DNS failed."""
        ...

    async def resolve_txt(self, name: str) -> list[str]:
        """Each TXT record's strings concatenated; [] if none; DnsTemporaryError if DNS
        failed."""
        ...

    def cached_site(self, domain: str) -> str | None:
        """The domain's site if its MX answer is cached and fresh, without waiting."""
        ...


@dataclass
class DnsCounters:
    in_progress: int = 0  # questions sent to DNS, not answered yet
    ok: int = 0           # questions answered (records, NXDOMAIN or NODATA)
    fail: int = 0         # questions that failed: SERVFAIL, timeout, network error
    cache_hit: int = 0    # questions answered from the cache
    cache_miss: int = 0   # questions that had to wait for DNS (including coalesced ones)
    coalesced: int = 0    # misses that joined a question already in flight


MX_RESULT_TTL = 5.0  # seconds; see CachingResolver.resolve_mx


class CachingResolver:
    """`Resolver` over any `Lookup` backend."""

    def __init__(self, backend: Lookup, *, cache_size: int = _DEFAULTS.cache_size,
                 negative_ttl: float = _DEFAULTS.negative_ttl,
                 failure_ttl: float = _DEFAULTS.failure_ttl,
                 negative_min: float = _DEFAULTS.negative_ttl_min,
                 negative_max: float = _DEFAULTS.negative_ttl_max,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None,
                 max_in_flight: int = _DEFAULTS.max_queries_in_flight,
                 observe: Callable[[float, str, str], None] | None = None) -> None:
        self.backend = backend
        # Called with (seconds, record type, outcome) for each question sent (metrics).
        self.observe = observe
        self._slots = asyncio.Semaphore(max(1, max_in_flight))
        self.cache = AnswerCache(cache_size, negative_ttl=negative_ttl,
                                 failure_ttl=failure_ttl, negative_min=negative_min,
                                 negative_max=negative_max, clock=clock)
        self.rng = rng or random.Random()
        self.counters = DnsCounters()
        self._clock = clock
        self._mx_results: dict[str, tuple[float, MxResult | DnsFailure]] = {}
        self._in_flight: dict[tuple[str, str], asyncio.Future[Answer]] = {}

    # --- one question ----------------------------------------------------------------

    def cached(self, name: str, rdtype: str) -> Answer | None:
        """The cached answer to (name, type), without asking or awaiting anything; None
        when there is none. For callers that look up many names per message (URI
        blocklists): a hit costs no task."""
        # The cache holds only names that passed name_error (an invalid one is never
        # asked, so never stored): a hit needs no validation (dnspython's, ~7 us a name).
        answer = self.cache.get(normalize_name(name), rdtype)
        if answer is not None:
            self.counters.cache_hit += 1
        return answer

    async def lookup(self, name: str, rdtype: str) -> Answer:
        """One (name, type) question: from the cache, or joined to the same question
        already in flight, or asked of the backend."""
        name = normalize_name(name)
        cached = self.cache.get(name, rdtype)  # valid names only (see `cached`)
        if cached is not None:
            self.counters.cache_hit += 1
            return cached
        error = name_error(name)
        if error is not None:
            # Nothing can ever exist there: as final as NXDOMAIN, and not worth a question.
            return Answer(name, rdtype, Status.NXDOMAIN, detail=f"invalid name: {error}")
        self.counters.cache_miss += 1
        key = (name, rdtype)
        future = self._in_flight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._ask(name, rdtype))
            self._in_flight[key] = future
            future.add_done_callback(lambda _f: self._in_flight.pop(key, None))
        else:
            self.counters.coalesced += 1
        # Shielded: one waiter giving up (its delivery timed out) must not cancel the
        # question for the others.
        return await asyncio.shield(future)

    async def _ask(self, name: str, rdtype: str) -> Answer:
        self.counters.in_progress += 1
        started = time.monotonic()
        try:
            async with self._slots:
                answer = await self.backend.lookup(name, rdtype)
        except Exception as e:  # a backend bug must not strand every waiter
            log.exception("DNS lookup %s %s raised", name, rdtype)
            answer = Answer(name, rdtype, Status.SERVFAIL, detail=f"internal error: {e}")
        finally:
            self.counters.in_progress -= 1
        if answer.status is Status.SERVFAIL:
            self.counters.fail += 1
        else:
            self.counters.ok += 1
        self.cache.put(answer)
        if self.observe is not None:
            self.observe(time.monotonic() - started, rdtype, answer.status.name.lower())
        return answer

    # --- the Resolver interface ------------------------------------------------------

    async def resolve_mx(self, domain: str) -> MxResult | DnsFailure:
        # Every message asks this for each recipient domain. Assembling the answer from
        # the record cache (MX, then A and AAAA of each host, gathered in tasks) cost
        # ~50 us a time, so the result itself is kept for MX_RESULT_TTL: far below any
        # record TTL worth honouring, long enough to serve a burst of mail at dict speed.
        now = self._clock()
        hit = self._mx_results.get(domain)
        if hit is not None and hit[0] > now:
            self.counters.cache_hit += 1
            return hit[1]
        result = await mx_rules.resolve_mx(self.lookup, domain, self.rng)
        # Never past the MX answer's own lifetime (RFC 2308 negative TTLs included).
        ttl = min(MX_RESULT_TTL, self.cache.remaining(normalize_name(domain), "MX") or 0.0)
        if ttl > 0:
            if len(self._mx_results) >= self.cache.size:
                self._mx_results.clear()
            self._mx_results[domain] = (now + ttl, result)
        return result

    async def resolve_addresses(self, host: str) -> list[str]:
        try:
            literal = mx_rules.parse_literal(host)
        except ValueError:
            return []
        if literal is not None:
            return [literal]
        found = await mx_rules.host_addresses(self.lookup, normalize_name(host))
        if not found.addresses and found.temporary_error:
            raise DnsTemporaryError(temporary(normalize_name(host), found.temporary_error))
        return found.addresses

    async def resolve_txt(self, name: str) -> list[str]:
        answer = await self.lookup(name, "TXT")
        if answer.status is Status.SERVFAIL:
            raise DnsTemporaryError(temporary(answer.name, answer.detail or "SERVFAIL"))
        return [str(r) for r in answer.records]

    def cached_site(self, domain: str) -> str | None:
        try:
            if mx_rules.parse_literal(domain) is not None:
                return site_name([domain.strip()])
        except ValueError:
            return None
        name = normalize_name(domain)
        answer = self.cache.get(name, "MX")
        if answer is None:
            return None
        if answer.status is Status.NODATA:
            return name  # implicit MX
        if answer.status is Status.OK:
            return site_name(str(r[1]) for r in answer.records if isinstance(r, tuple)) or None
        return None


def make_resolver(cfg: DnsConfig, *, clock: Callable[[], float] = time.monotonic,
                  rng: random.Random | None = None,
                  observe: Callable[[float, str, str], None] | None = None) -> CachingResolver:
    """The production resolver: `[dns]` nameservers (or /etc/resolv.conf), cached."""
    return CachingResolver(LiveLookup(cfg.nameservers, cfg.timeout),
                           cache_size=cfg.cache_size, negative_ttl=cfg.negative_ttl,
                           failure_ttl=cfg.failure_ttl,
                           negative_min=cfg.negative_ttl_min,
                           negative_max=cfg.negative_ttl_max, clock=clock, rng=rng,
                           max_in_flight=cfg.max_queries_in_flight, observe=observe)


class TestResolver(CachingResolver):
    """A resolver answering from zone text, for unit tests of other modules:

        TestResolver({"example.com": '''
            @    MX 10 mx1
            mx1  A  127.0.0.2
        '''})

    `servfail` names (and everything under them) fail temporarily. Names in no zone fail
    temporarily too, as the test DNS server refuses them."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, zones: Mapping[str, str], *, servfail: Iterable[str] = (),
                 **kwargs: object) -> None:
        super().__init__(ZoneLookup(zones, servfail), **kwargs)  # type: ignore[arg-type]
