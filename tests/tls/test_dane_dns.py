"""DANE's DNS side (RFC 7672 2.2) against the real parts: Unbound validating a zone signed
by ldns (tests/support/dnssec.py) beside an unsigned one, asked through mta's resolver.

    dane.test (signed)   secure MX, addresses and TLSA; a host without TLSA; a host whose
                         TLSA signature is broken (bogus); an MX host behind a CNAME
    plain.test           publishes TLSA too, but nothing there is signed
"""

from __future__ import annotations

import pytest

from mta.config import parse_config
from mta.dns import Status, TlsaAnswer, dane_lookup, make_resolver
from tests.support.dnssec import sign_zone

H = "ab" * 32  # a SHA-256 worth of TLSA data
SIGNED = f"""
@                  MX    10 mx
mx                 A     127.0.0.2
_25._tcp.mx        TLSA  3 1 1 {H}
notlsa             MX    10 mx.notlsa
mx.notlsa          A     127.0.0.3
bogus              MX    10 mx.bogus
mx.bogus           A     127.0.0.4
_25._tcp.mx.bogus  TLSA  3 1 1 {H}
alias              MX    10 mxalias.alias
mxalias.alias      CNAME mx.target
mx.target          A     127.0.0.5
_25._tcp.mx.target TLSA  2 0 1 {H}
away               MX    10 mx.plain.test.
implicit           A     127.0.0.7
_25._tcp.implicit  TLSA  3 1 1 {H}
"""
PLAIN = f"""
@                  MX    10 mx
mx                 A     127.0.0.6
_25._tcp.mx        TLSA  3 1 1 {H}
"""


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    from tests.support.dnsserver import DnsServer
    d = tmp_path_factory.mktemp("dane-dns")
    zone = sign_zone("dane.test", SIGNED, d, bogus=["_25._tcp.mx.bogus.dane.test"])
    with DnsServer({"plain.test": PLAIN}, d / "unbound", signed=[zone]) as srv:
        yield srv


@pytest.fixture
def resolver(dns):
    return make_resolver(parse_config(
        f'[dns]\nnameservers = ["{dns.nameserver}"]\ntimeout = "2s"\n').dns)


async def test_the_validating_resolver_marks_signed_answers_secure(resolver):
    signed = await resolver.lookup("dane.test", "MX")
    plain = await resolver.lookup("plain.test", "MX")
    assert signed.status is Status.OK and signed.secure
    assert plain.status is Status.OK and not plain.secure
    # A validated denial is secure too (NSEC): what "no TLSA here" must rest on.
    assert (await resolver.lookup("_25._tcp.mx.notlsa.dane.test", "TLSA")).secure


async def test_rfc7672_2_2_secure_mx_and_host_give_the_tlsa_records(resolver):
    [a] = await dane_lookup(resolver.lookup, "dane.test", ["mx.dane.test"])
    assert a == TlsaAnswer("mx.dane.test", "secure", (f"3 1 1 {H}",), ("mx.dane.test",),
                           "_25._tcp.mx.dane.test")
    # The second time, from the resolver's cache (its TTL rules apply to TLSA too).
    hits = resolver.counters.cache_hit
    assert await dane_lookup(resolver.lookup, "dane.test", ["mx.dane.test"]) == (a,)
    assert resolver.counters.cache_hit > hits


async def test_no_tlsa_at_a_secure_host_is_no_dane(resolver):
    [a] = await dane_lookup(resolver.lookup, "notlsa.dane.test", ["mx.notlsa.dane.test"])
    assert a.state == "none" and "publishes no TLSA" in a.detail


async def test_a_bogus_tlsa_answer_is_a_failure_to_defer_on(resolver):
    [a] = await dane_lookup(resolver.lookup, "bogus.dane.test", ["mx.bogus.dane.test"])
    assert a.state == "failed" and "_25._tcp.mx.bogus.dane.test" in a.detail, a
    # The validating resolver says why (RFC 8914), and mta passes it on.
    assert "EDE 6 DNSSEC Bogus" in a.detail, a


async def test_rfc7672_2_2_1_an_unsigned_zone_publishes_no_usable_tlsa(resolver):
    [a] = await dane_lookup(resolver.lookup, "plain.test", ["mx.plain.test"])
    assert a.state == "insecure" and "MX records of plain.test" in a.detail
    # A secure MX RRset naming a host in an unsigned zone: its addresses are insecure.
    [b] = await dane_lookup(resolver.lookup, "away.dane.test", ["mx.plain.test"])
    assert b.state == "insecure" and "addresses of mx.plain.test" in b.detail


async def test_rfc7672_2_2_2_a_cname_host_uses_the_expanded_name_first(resolver):
    [a] = await dane_lookup(resolver.lookup, "alias.dane.test", ["mxalias.alias.dane.test"])
    assert a.state == "secure" and a.tlsa_name == "_25._tcp.mx.target.dane.test"
    # Both names are reference identifiers for DANE-TA (RFC 7672 3.2.2).
    assert a.names == ("mxalias.alias.dane.test", "mx.target.dane.test")


async def test_rfc7672_2_2_1_an_implicit_mx_rests_on_its_validated_denial(resolver):
    # No MX at implicit.dane.test (a validated NODATA): the domain is its own MX host.
    [a] = await dane_lookup(resolver.lookup, "implicit.dane.test", ["implicit.dane.test"])
    assert a.state == "secure" and a.tlsa_name == "_25._tcp.implicit.dane.test"


async def test_an_address_literal_has_no_dane(resolver):
    [a] = await dane_lookup(resolver.lookup, "[127.0.0.2]", ["[127.0.0.2]"])
    assert a.state == "insecure"


async def test_rfc7672_2_2_1_a_failing_mx_lookup_is_no_downgrade(resolver):
    # The site's hosts were resolved before; if the MX answer now fails (bogus, or DNS
    # down), DANE is not silently off: the hosts are "failed" and the mail waits.
    [a] = await dane_lookup(resolver.lookup, "servfail.test", ["mx.dane.test"])
    assert a.state == "failed" and "MX lookup of servfail.test failed" in a.detail
