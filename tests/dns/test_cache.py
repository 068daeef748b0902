"""The answer cache: TTLs (RFC 1035 3.2.1, RFC 2181 8), negative caching (RFC 2308),
failures kept briefly, the size bound, and coalescing of concurrent questions. Time is an
injected clock, so expiry is exact: no sleeping, no tolerance needed."""

from __future__ import annotations

import asyncio
import random

from mta.dns import CachingResolver, DnsFailure, MxResult, TestResolver
from mta.dns.answer import Answer, Status
from mta.dns.cache import AnswerCache
from mta.dns.live import LiveLookup
from tests.dns.conftest import ManualClock
from tests.support.dnsserver import SERVFAIL_ZONE, DnsServer

SOA = "@ 3600 IN SOA ns hostmaster 1 3600 600 86400 120\n"  # negative TTL: 120s


def live(srv: DnsServer, clock: ManualClock, **kwargs: object) -> CachingResolver:
    return CachingResolver(LiveLookup([srv.nameserver], timeout=2.0), clock=clock,
                           rng=random.Random(0), **kwargs)  # type: ignore[arg-type]


async def test_answers_are_kept_for_their_ttl_then_asked_again(
        dns_server_factory, clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": SOA + "mx 30 IN A 127.0.0.2\n"})
    resolver = live(srv, clock)
    assert await resolver.resolve_addresses("mx.example.test") == ["127.0.0.2"]
    srv.set_zones({"example.test": SOA + "mx 30 IN A 127.0.0.3\n"})

    clock.advance(29.9)
    assert await resolver.resolve_addresses("mx.example.test") == ["127.0.0.2"]  # cached
    clock.advance(0.1)
    assert await resolver.resolve_addresses("mx.example.test") == ["127.0.0.3"]  # expired
    c = resolver.counters
    # A: miss, hit, miss. AAAA (NODATA, kept for the SOA's 120s): miss, hit, hit.
    assert (c.cache_miss, c.cache_hit, c.ok, c.fail, c.in_progress) == (3, 3, 3, 0, 0)


async def test_rfc2308_nxdomain_is_cached_for_the_soa_negative_ttl(
        dns_server_factory, clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": SOA})
    resolver = live(srv, clock)
    first = await resolver.resolve_mx("new.example.test")
    assert isinstance(first, DnsFailure) and first.enhanced == "5.1.2"
    assert resolver.cache.remaining("new.example.test", "MX") == 120  # min(3600, 120)

    srv.set_zones({"example.test": SOA + "new MX 10 mx\nmx A 127.0.0.2\n"})
    clock.advance(119)
    assert isinstance(await resolver.resolve_mx("new.example.test"), DnsFailure)
    clock.advance(1)
    assert isinstance(await resolver.resolve_mx("new.example.test"), MxResult)


async def test_rfc2308_nodata_is_cached_like_nxdomain(
        dns_server_factory, clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": SOA + "host A 127.0.0.2\n"})
    resolver = live(srv, clock)
    assert await resolver.resolve_txt("host.example.test") == []
    answer = resolver.cache.get("host.example.test", "TXT")
    assert answer is not None and answer.status is Status.NODATA
    assert resolver.cache.remaining("host.example.test", "TXT") == 120


async def test_servfail_is_kept_for_the_short_failure_ttl(
        dns_server_factory, clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": SOA})
    resolver = live(srv, clock, failure_ttl=30.0)
    name = f"x.{SERVFAIL_ZONE}"
    assert isinstance(await resolver.resolve_mx(name), DnsFailure)
    assert isinstance(await resolver.resolve_mx(name), DnsFailure)
    assert (resolver.counters.fail, resolver.counters.cache_hit) == (1, 1)
    clock.advance(30)
    await resolver.resolve_mx(name)
    assert resolver.counters.fail == 2  # asked again once the failure expired


async def test_concurrent_questions_for_one_name_are_asked_once(
        dns_server_factory, clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": SOA + "@ MX 10 mx\nmx A 127.0.0.2\n"})
    resolver = live(srv, clock)
    results = await asyncio.wait_for(
        asyncio.gather(*(resolver.resolve_mx("example.test") for _ in range(20))), 10)
    assert all(isinstance(r, MxResult) and r.addresses == ["127.0.0.2"] for r in results)
    c = resolver.counters
    assert c.ok == 3  # MX, then A and AAAA of mx.example.test: one question each
    assert c.coalesced == 57  # the other 19 callers joined each of the 3 questions
    assert c.in_progress == 0


async def test_a_waiter_giving_up_does_not_cancel_the_question_for_others(
        dns_server_factory, clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": SOA + "@ MX 10 mx\nmx A 127.0.0.2\n"})
    resolver = live(srv, clock)
    impatient = asyncio.ensure_future(resolver.lookup("example.test", "MX"))
    patient = asyncio.ensure_future(resolver.lookup("example.test", "MX"))
    await asyncio.sleep(0)
    impatient.cancel()
    answer = await asyncio.wait_for(patient, 5)
    assert answer.status is Status.OK and resolver.counters.ok == 1


def test_ttl_zero_answers_are_not_kept(clock: ManualClock) -> None:
    cache = AnswerCache(10, negative_ttl=300, failure_ttl=30, clock=clock)
    cache.put(Answer("a.test", "A", Status.OK, ("127.0.0.1",), ttl=0))
    assert cache.get("a.test", "A") is None and len(cache) == 0


def test_negative_answers_without_soa_use_the_configured_negative_ttl(
        clock: ManualClock) -> None:
    cache = AnswerCache(10, negative_ttl=300, failure_ttl=30, clock=clock)
    cache.put(Answer("a.test", "MX", Status.NXDOMAIN))
    assert cache.remaining("a.test", "MX") == 300


def test_cache_size_is_bounded_least_recently_used_first(clock: ManualClock) -> None:
    cache = AnswerCache(2, negative_ttl=300, failure_ttl=30, clock=clock)
    for name in ("a.test", "b.test"):
        cache.put(Answer(name, "A", Status.OK, ("127.0.0.1",), ttl=60))
    assert cache.get("a.test", "A") is not None  # a is now the most recently used
    cache.put(Answer("c.test", "A", Status.OK, ("127.0.0.1",), ttl=60))
    assert len(cache) == 2
    assert cache.get("b.test", "A") is None
    assert cache.get("a.test", "A") is not None and cache.get("c.test", "A") is not None


async def test_cached_site_answers_without_waiting(clock: ManualClock) -> None:
    resolver = TestResolver({"example.test": "@ 300 MX 10 mx1\n@ 300 MX 20 mx2\n"
                                             "mx1 A 127.0.0.2\nnomx A 127.0.0.3\n"},
                            clock=clock)
    assert resolver.cached_site("example.test") is None  # never asked
    await resolver.resolve_mx("example.test")
    await resolver.resolve_mx("nomx.example.test")
    assert resolver.cached_site("example.test") == "(mx1|mx2).example.test"
    assert resolver.cached_site("nomx.example.test") == "nomx.example.test"
    assert resolver.cached_site("[127.0.0.1]") == "[127.0.0.1]"
    clock.advance(300)
    assert resolver.cached_site("example.test") is None  # expired
