"""URL hosts against a URI blocklist served by the real test DNS server (Unbound), through
the daemon's resolver: RFC 5782 names, return codes, error codes, failures, and the cache
that keeps a campaign's thousand copies of one link from asking DNS a thousand times."""

from __future__ import annotations

from mta.config import DnsConfig
from mta.content.blocklist import check_hosts
from mta.dns import make_resolver
from tests.support.dnsserver import SERVFAIL_ZONE

ZONE = """
listed.example     IN A 127.0.0.2
c.example          IN A 127.0.0.4
7.2.0.192          IN A 127.0.0.3
error.example      IN A 127.255.255.254
public.example     IN A 192.0.2.1
"""


def _resolver(server):
    return make_resolver(DnsConfig(nameservers=[server.nameserver], timeout=2.0))


async def test_listings_codes_and_what_is_not_a_listing(dns_server_factory):
    server = dns_server_factory({"uribl.test": ZONE})
    r = _resolver(server)
    found = await check_hosts(r, ["listed.example", "a.b.c.example", "192.0.2.7",
                                  "error.example", "public.example", "clean.example"],
                              ["uribl.test"])
    assert found == [("listed.example", "uribl.test", "127.0.0.2"),
                     ("a.b.c.example", "uribl.test", "127.0.0.4"),
                     ("192.0.2.7", "uribl.test", "127.0.0.3")]


async def test_a_failing_list_is_not_a_listing(dns_server_factory):
    server = dns_server_factory({"uribl.test": ZONE})
    assert await check_hosts(_resolver(server), ["listed.example"], [SERVFAIL_ZONE]) == []


async def test_answers_are_cached(dns_server_factory):
    server = dns_server_factory({"uribl.test": ZONE})
    r = _resolver(server)
    for _ in range(50):
        assert len(await check_hosts(r, ["listed.example", "clean.example"],
                                     ["uribl.test"])) == 1
    # Two names asked once each (NXDOMAIN cached too); every later check from the cache.
    assert r.counters.cache_miss == 2
    assert r.counters.cache_hit == 98
