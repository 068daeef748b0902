"""RFC 5321 5.1 and RFC 7505 against a real DNS server (Unbound on loopback): which hosts
a domain's mail goes to, in which order, or which status the failure carries."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mta.config import parse_config
from mta.dns import (
    CachingResolver,
    DnsFailure,
    DnsTemporaryError,
    FailureReason,
    MxKind,
    MxResult,
    make_resolver,
)
from tests.support.dnsserver import SERVFAIL_ZONE, TIMEOUT_ZONE, DnsServer, txt

ZONE = """
@        MX 10 mx1
@        MX 10 mx2
@        MX 10 mx3
@        MX 20 backup
mx1      A    127.0.0.2
mx1      AAAA ::1
mx2      A    127.0.0.3
mx3      A    127.0.0.4
backup   A    127.0.0.5
nomx     A    127.0.0.6
nomx     AAAA ::1
null     MX 0 .
noaddr   MX 10 gone
lame     MX 10 mx.servfail.test.
lame     MX 20 also.gone
alias    CNAME mx1
"""

QUICK = 0.3  # seconds: the resolver timeout for the timeout paths


def resolver_for(srv: DnsServer, seed: int = 0, timeout: float = 2.0) -> CachingResolver:
    cfg = parse_config(f'[dns]\nnameservers = ["{srv.nameserver}"]\ntimeout = "{timeout}s"\n',
                       "test.toml", Path("."))
    return make_resolver(cfg.dns, rng=random.Random(seed))


@pytest.fixture
def srv(dns_server_factory) -> DnsServer:
    return dns_server_factory({"example.test": ZONE})


async def test_5_1_mx_hosts_in_preference_order_with_their_addresses(srv: DnsServer) -> None:
    result = await resolver_for(srv).resolve_mx("Example.TEST.")
    assert isinstance(result, MxResult)
    assert result.kind is MxKind.MX and result.domain == "example.test"
    assert [h.preference for h in result.hosts] == [10, 10, 10, 20]
    assert {h.name for h in result.hosts[:3]} == {
        "mx1.example.test", "mx2.example.test", "mx3.example.test"}
    assert result.hosts[3].name == "backup.example.test"
    by_name = {h.name: h.addresses for h in result.hosts}
    assert by_name["mx1.example.test"] == ("127.0.0.2", "::1")  # IPv4 first, then IPv6
    assert result.site == "(backup|mx1|mx2|mx3).example.test"


async def test_5_1_equal_preferences_are_shuffled_with_the_injected_random(
        srv: DnsServer) -> None:
    orders = set()
    for seed in range(12):
        result = await resolver_for(srv, seed).resolve_mx("example.test")
        assert isinstance(result, MxResult)
        orders.add(tuple(h.name for h in result.hosts[:3]))
        assert result.hosts[3].name == "backup.example.test"  # never shuffled upward
    assert len(orders) > 1
    first = await resolver_for(srv, 3).resolve_mx("example.test")
    again = await resolver_for(srv, 3).resolve_mx("example.test")
    assert first == again  # same seed, same order: reproducible


async def test_5_1_no_mx_records_means_the_domain_is_its_own_implicit_mx(
        srv: DnsServer) -> None:
    result = await resolver_for(srv).resolve_mx("nomx.example.test")
    assert isinstance(result, MxResult)
    assert result.kind is MxKind.IMPLICIT
    assert [(h.name, h.preference, h.addresses) for h in result.hosts] == [
        ("nomx.example.test", 0, ("127.0.0.6", "::1"))]
    assert result.site == "nomx.example.test"


async def test_rfc7505_null_mx_is_a_permanent_5_1_10(srv: DnsServer) -> None:
    result = await resolver_for(srv).resolve_mx("null.example.test")
    assert isinstance(result, DnsFailure)
    assert result.permanent and result.enhanced == "5.1.10"
    assert result.reason is FailureReason.NULL_MX
    assert str(result.reply()).startswith("550 5.1.10 ")


async def test_nxdomain_is_a_permanent_5_1_2(srv: DnsServer) -> None:
    result = await resolver_for(srv).resolve_mx("nosuch.example.test")
    assert isinstance(result, DnsFailure)
    assert (result.permanent, result.enhanced, result.reason) == (
        True, "5.1.2", FailureReason.NO_DOMAIN)


async def test_servfail_is_a_temporary_4_4_3(srv: DnsServer) -> None:
    result = await resolver_for(srv).resolve_mx(f"x.{SERVFAIL_ZONE}")
    assert isinstance(result, DnsFailure)
    assert (result.permanent, result.enhanced) == (False, "4.4.3")
    assert "SERVFAIL" in result.text
    assert result.reply().is_transient


async def test_timeout_is_a_temporary_4_4_3(srv: DnsServer) -> None:
    result = await resolver_for(srv, timeout=QUICK).resolve_mx(f"x.{TIMEOUT_ZONE}")
    assert isinstance(result, DnsFailure)
    assert (result.permanent, result.enhanced) == (False, "4.4.3")
    assert "timed out" in result.text


async def test_mx_hosts_without_any_address_are_a_permanent_5_4_4(srv: DnsServer) -> None:
    result = await resolver_for(srv).resolve_mx("noaddr.example.test")
    assert isinstance(result, DnsFailure)
    assert (result.permanent, result.enhanced, result.reason) == (
        True, "5.4.4", FailureReason.NO_ADDRESS)


async def test_mx_hosts_whose_lookups_fail_temporarily_defer(srv: DnsServer) -> None:
    result = await resolver_for(srv).resolve_mx("lame.example.test")
    assert isinstance(result, DnsFailure)
    assert (result.permanent, result.enhanced) == (False, "4.4.3")


@pytest.mark.parametrize(("domain", "address", "site"), [
    ("[127.0.0.9]", "127.0.0.9", "[127.0.0.9]"),
    ("[IPv6:::1]", "::1", "[ipv6:::1]"),
])
async def test_4_1_3_address_literals_resolve_to_themselves(
        srv: DnsServer, domain: str, address: str, site: str) -> None:
    resolver = resolver_for(srv)
    result = await resolver.resolve_mx(domain)
    assert isinstance(result, MxResult) and result.kind is MxKind.LITERAL
    assert result.addresses == [address] and result.site == site
    assert resolver.counters.cache_miss == 0  # no DNS question at all


async def test_invalid_address_literal_is_a_permanent_failure(srv: DnsServer) -> None:
    result = await resolver_for(srv).resolve_mx("[999.1.1.1]")
    assert isinstance(result, DnsFailure) and result.permanent


async def test_addresses_follow_cnames_and_report_temporary_failures(srv: DnsServer) -> None:
    resolver = resolver_for(srv)
    assert await resolver.resolve_addresses("alias.example.test") == ["127.0.0.2", "::1"]
    assert await resolver.resolve_addresses("nosuch.example.test") == []
    assert await resolver.resolve_addresses("[127.0.0.1]") == ["127.0.0.1"]
    with pytest.raises(DnsTemporaryError) as e:
        await resolver.resolve_addresses(f"mx.{SERVFAIL_ZONE}")
    assert e.value.failure.enhanced == "4.4.3"


async def test_long_txt_records_are_joined_from_255_octet_strings(dns_server_factory) -> None:
    # A 4096-bit RSA DKIM key (~740 characters) spans 3 strings and exceeds the EDNS
    # payload, so this also goes through the TCP retry of a truncated answer.
    key = "MIIC" + "A" * 2000
    record = f"v=DKIM1; k=rsa; p={key}"
    srv = dns_server_factory({"example.test": f"s1._domainkey TXT {txt(record)}\n"
                                              f"spf TXT \"v=spf1 -all\"\n"})
    resolver = resolver_for(srv)
    assert await resolver.resolve_txt("s1._domainkey.example.test") == [record]
    assert await resolver.resolve_txt("spf.example.test") == ["v=spf1 -all"]
    assert await resolver.resolve_txt("none.example.test") == []
    with pytest.raises(DnsTemporaryError):
        await resolver.resolve_txt(f"x.{SERVFAIL_ZONE}")


async def test_changed_zones_are_served_after_set_zones(srv: DnsServer) -> None:
    srv.set_zones({"example.test": "@ MX 10 new\nnew A 127.0.0.10\n"})
    result = await resolver_for(srv).resolve_mx("example.test")
    assert isinstance(result, MxResult)
    assert [(h.name, h.addresses) for h in result.hosts] == [
        ("new.example.test", ("127.0.0.10",))]
