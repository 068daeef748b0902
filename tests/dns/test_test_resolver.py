"""TestResolver, the zone-text twin other modules' unit tests use: the same answers and the
same MX semantics as the real server, without a process."""

from __future__ import annotations

import random

from mta.dns import DnsFailure, MxKind, MxResult, Resolver, Status, TestResolver

ZONES = {
    "example.test.": """
        @         MX 10 mx
        @         MX 0 .
        mx        A  127.0.0.2
        www       CNAME mx
        a.b       TXT "deep"
        null      MX 0 .
    """,
}


def make() -> TestResolver:
    return TestResolver(ZONES, servfail=["broken.test"], rng=random.Random(0))


def test_test_resolver_implements_the_resolver_interface() -> None:
    assert isinstance(make(), Resolver)


async def test_answers_from_zone_text() -> None:
    r = make()
    assert await r.resolve_addresses("www.example.test") == ["127.0.0.2"]  # via CNAME
    assert (await r.lookup("b.example.test", "TXT")).status is Status.NODATA  # RFC 8020
    assert (await r.lookup("c.example.test", "TXT")).status is Status.NXDOMAIN
    assert (await r.lookup("x.broken.test", "A")).status is Status.SERVFAIL
    assert (await r.lookup("elsewhere.example", "A")).status is Status.SERVFAIL
    assert await r.resolve_txt("a.b.example.test") == ["deep"]


async def test_rfc7505_null_mx_mixed_with_real_hosts_is_ignored() -> None:
    result = await make().resolve_mx("example.test")
    assert isinstance(result, MxResult) and result.kind is MxKind.MX
    assert [h.name for h in result.hosts] == ["mx.example.test"]
    assert result.site == "mx.example.test"


async def test_same_failures_as_the_real_server() -> None:
    r = make()
    null, nx, tmp = [await r.resolve_mx(d) for d in
                     ("null.example.test", "nosuch.example.test", "broken.test")]
    assert isinstance(null, DnsFailure) and null.enhanced == "5.1.10"
    assert isinstance(nx, DnsFailure) and nx.enhanced == "5.1.2"
    assert isinstance(tmp, DnsFailure) and (tmp.permanent, tmp.enhanced) == (False, "4.4.3")


async def test_invalid_domain_names_are_permanent_failures() -> None:
    result = await make().resolve_mx("a..example.test")
    assert isinstance(result, DnsFailure) and result.permanent
