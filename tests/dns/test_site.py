"""The MX rollup: domains with the same MX host set share one site, whatever the order,
case, trailing dots or preferences of their records."""

from __future__ import annotations

import pytest

from mta.dns import TestResolver, site_name


@pytest.mark.parametrize(("hosts", "site"), [
    (["mx.a.example"], "mx.a.example"),
    (["MX.A.Example."], "mx.a.example"),
    (["mx2.example.net", "mx1.example.net"], "(mx1|mx2).example.net"),
    (["aspmx.l.google.com", "alt2.aspmx.l.google.com", "alt1.aspmx.l.google.com"],
     "(alt1|alt2)?.aspmx.l.google.com"),
    (["mx.a.example", "mx.b.test"], "(mx.a.example|mx.b.test)"),
    (["mx1.a.example", "mx2.b.example"], "(mx1.a|mx2.b).example"),
    (["mx.example.com", "mx.example.com."], "mx.example.com"),
    ([], ""),
])
def test_site_name_of_an_mx_host_set(hosts: list[str], site: str) -> None:
    assert site_name(hosts) == site


def test_site_name_ignores_order_and_duplicates() -> None:
    hosts = ["c.mx.example", "a.mx.example", "b.mx.example"]
    assert site_name(hosts) == site_name(reversed(hosts)) == site_name(hosts + hosts[:1])


async def test_domains_hosted_by_one_provider_share_a_site() -> None:
    resolver = TestResolver({
        "provider.example": "mx1 A 127.0.0.2\nmx2 A 127.0.0.3\n",
        "one.test": "@ MX 10 mx1.provider.example.\n@ MX 20 MX2.provider.example.\n",
        "two.test": "@ MX 5 mx2.provider.example.\n@ MX 5 mx1.provider.example.\n",
        "own.test": "@ A 127.0.0.4\n",
    })
    one, two, own = [await resolver.resolve_mx(d) for d in ("one.test", "two.test", "own.test")]
    assert one.site == two.site == "(mx1|mx2).provider.example"  # type: ignore[union-attr]
    assert own.site == "own.test"  # type: ignore[union-attr]  # implicit MX: the domain


async def test_site_does_not_change_while_one_host_has_no_address() -> None:
    resolver = TestResolver({"example.test": "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A 127.0.0.2\n"})
    result = await resolver.resolve_mx("example.test")
    assert [h.name for h in result.hosts] == ["mx1.example.test"]  # type: ignore[union-attr]
    assert result.site == "(mx1|mx2).example.test"  # type: ignore[union-attr]
