"""Negative caching and coalescing as the DNS server sees them: query counts from the
real test server's query log (Unbound `log-queries`), not the resolver's own counters."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from mta.config import ConfigError, parse_config
from mta.dns import CachingResolver, make_resolver
from mta.dns.answer import Status
from mta.dns.live import LiveLookup
from tests.dns.conftest import ManualClock

# SOA minimum 0: RFC 2308 would keep the negative answer for 0 s, i.e. ask per message.
SOA_ZERO = "@ 3600 IN SOA ns hostmaster 1 3600 600 86400 0\n"


def live(srv, clock: ManualClock, **kwargs: object) -> CachingResolver:
    return CachingResolver(LiveLookup([srv.nameserver], timeout=5.0), clock=clock,
                           rng=random.Random(0), **kwargs)  # type: ignore[arg-type]


async def test_a_repeated_nodata_name_is_asked_once(dns_server_factory,
                                                    clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": "mx A 127.0.0.2\n"}, log_queries=True)
    resolver = live(srv, clock)
    for _ in range(5):
        assert await resolver.resolve_addresses("mx.example.test") == ["127.0.0.2"]
        clock.advance(10)
    assert srv.queries_seen("mx.example.test", "AAAA") == 1  # NODATA, kept 60 s
    assert srv.queries_seen("mx.example.test", "A") == 1
    clock.advance(20)  # 70 s after the first: past the SOA's negative TTL of 60 s
    await resolver.resolve_addresses("mx.example.test")
    assert srv.queries_seen("mx.example.test", "AAAA") == 2


async def test_a_zero_negative_ttl_is_raised_to_the_floor(dns_server_factory,
                                                          clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": SOA_ZERO + "mx A 127.0.0.2\n"},
                             log_queries=True)
    resolver = live(srv, clock, negative_min=60.0, negative_max=3600.0)
    for name in ("mx.example.test", "gone.example.test"):
        for _ in range(3):
            await resolver.lookup(name, "AAAA")
            clock.advance(1)
    assert srv.queries_seen("mx.example.test", "AAAA") == 1  # NODATA
    assert srv.queries_seen("gone.example.test", "AAAA") == 1  # NXDOMAIN
    assert resolver.cache.remaining("mx.example.test", "AAAA") == 54  # 60 - 6 s


async def test_negative_ttl_ceiling(dns_server_factory, clock: ManualClock) -> None:
    soa_day = "@ 86400 IN SOA ns hostmaster 1 3600 600 86400 86400\n"
    srv = dns_server_factory({"example.test": soa_day + "mx A 127.0.0.2\n"})
    resolver = live(srv, clock, negative_max=3600.0)
    answer = await resolver.lookup("mx.example.test", "AAAA")
    assert answer.status is Status.NODATA and answer.ttl == 86400
    assert resolver.cache.remaining("mx.example.test", "AAAA") == 3600


async def test_fifty_concurrent_lookups_of_one_name_send_one_query(
        dns_server_factory, clock: ManualClock) -> None:
    srv = dns_server_factory({"example.test": "@ MX 10 mx\nmx A 127.0.0.2\n"},
                             log_queries=True)
    resolver = live(srv, clock)
    answers = await asyncio.wait_for(asyncio.gather(
        *(resolver.lookup("example.test", "MX") for _ in range(50))), 30)
    assert all(a.status is Status.OK for a in answers)
    assert srv.queries_seen("example.test", "MX") == 1
    results = await asyncio.wait_for(asyncio.gather(
        *(resolver.resolve_mx("example.test") for _ in range(50))), 30)
    assert {tuple(r.addresses) for r in results} == {("127.0.0.2",)}  # type: ignore[union-attr]
    assert srv.queries_seen("mx.example.test", "A") == 1
    assert srv.queries_seen("mx.example.test", "AAAA") == 1


def test_config_bounds(tmp_path: Path) -> None:
    cfg = parse_config('[dns]\nnegative_ttl_min = "10s"\nnegative_ttl_max = "2h"\n',
                       "test.toml", tmp_path)
    r = make_resolver(cfg.dns)
    assert (r.cache.negative_min, r.cache.negative_max) == (10.0, 7200.0)
    with pytest.raises(ConfigError, match="dns"):
        parse_config('[dns]\nnegative_ttl_min = "2h"\nnegative_ttl_max = "1h"\n',
                     "test.toml", tmp_path)
