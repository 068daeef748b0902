"""MX semantics: from a recipient domain to the hosts to try, in order (RFC 5321 5.1).

Owns the rules, over any `lookup(name, rdtype) -> Answer` (the cached resolver's):
- an address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]") is its own, only host;
- MX records: hosts by ascending preference, equal preferences shuffled (RFC 5321 5.1
  says the sender MUST randomize them to spread the load), each with its IPv4 then IPv6
  addresses (sender reputation is mostly built, and checked, on IPv4);
- no MX records (NODATA): the domain itself is the implicit MX, preference 0;
- null MX (a single "0 ." record, RFC 7505): permanent failure 5.1.10. A "." mixed with
  real hosts is a broken zone; the real hosts are used and the "." is ignored;
- NXDOMAIN (or a name that cannot exist): permanent failure 5.1.2;
- SERVFAIL / timeout on the MX question: temporary failure 4.4.3 (defer);
- hosts without any address are dropped; if none is left: temporary 4.4.3 if any host's
  lookup failed temporarily, else permanent 5.4.4 (no route).
The site is rolled up from every MX host name (mta.dns.site), so it does not change when
one host's address lookup fails for a while.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Awaitable, Callable
from itertools import groupby

from mta.dns.answer import Answer, Status, normalize_name
from mta.dns.result import (
    DnsFailure,
    MxHost,
    MxKind,
    MxResult,
    no_address,
    no_domain,
    null_mx,
    temporary,
)
from mta.dns.site import site_name

__all__ = ["HostAddresses", "host_addresses", "order_mx", "parse_literal", "resolve_mx"]

LookupFn = Callable[[str, str], Awaitable[Answer]]


def parse_literal(domain: str) -> str | None:
    """RFC 5321 4.1.3: "[192.0.2.1]" -> "192.0.2.1", "[IPv6:2001:db8::1]" -> "2001:db8::1";
    None if `domain` is not bracketed; ValueError if it is bracketed but not an address."""
    d = domain.strip()
    if not (d.startswith("[") and d.endswith("]")):
        return None
    inner = d[1:-1]
    if inner[:5].lower() == "ipv6:":
        return str(ipaddress.IPv6Address(inner[5:]))
    return str(ipaddress.IPv4Address(inner))


def order_mx(records: list[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Ascending preference; within one preference a random order (RFC 5321 5.1). A host
    listed more than once is tried once, at its best preference."""
    best: dict[str, int] = {}
    for pref, host in records:
        best[host] = min(pref, best.get(host, pref))
    out: list[tuple[int, str]] = []
    # Sorted before shuffling, so a seeded `rng` gives the same order in every process.
    for _pref, group in groupby(sorted((p, h) for h, p in best.items()), key=lambda r: r[0]):
        same = list(group)
        rng.shuffle(same)
        out.extend(same)
    return out


class HostAddresses:
    """A host's addresses, and why there are none if there are none."""

    __slots__ = ("addresses", "temporary_error")

    def __init__(self, addresses: list[str], temporary_error: str | None) -> None:
        self.addresses = addresses
        self.temporary_error = temporary_error  # set when a lookup failed temporarily


async def host_addresses(lookup: LookupFn, host: str) -> HostAddresses:
    """A and AAAA, asked at the same time; IPv4 first."""
    try:
        return HostAddresses([str(ipaddress.ip_address(host))], None)
    except ValueError:
        pass
    a, aaaa = await asyncio.gather(lookup(host, "A"), lookup(host, "AAAA"))
    addresses = [str(r) for ans in (a, aaaa) if ans.status is Status.OK for r in ans.records]
    errors = [ans.detail or "SERVFAIL" for ans in (a, aaaa) if ans.status.is_temporary]
    return HostAddresses(addresses, errors[0] if errors else None)


async def resolve_mx(lookup: LookupFn, domain: str, rng: random.Random
                     ) -> MxResult | DnsFailure:
    try:
        literal = parse_literal(domain)
    except ValueError:
        return no_domain(domain.strip(), "invalid address literal")
    if literal is not None:
        name = f"[IPv6:{literal}]" if ":" in literal else f"[{literal}]"  # canonical form
        return MxResult(name, MxKind.LITERAL, (MxHost(name, 0, (literal,)),), site_name([name]))

    name = normalize_name(domain)
    mx = await lookup(name, "MX")
    if mx.status is Status.SERVFAIL:
        return temporary(name, mx.detail or "SERVFAIL")
    if mx.status is Status.NXDOMAIN:
        return no_domain(name, mx.detail)
    if mx.status is Status.NODATA:
        kind, records = MxKind.IMPLICIT, [(0, name)]
    else:
        kind = MxKind.MX
        records = [r for r in mx.records if isinstance(r, tuple)]
        if all(host == "" for _, host in records):
            return null_mx(name)
        records = [r for r in records if r[1] != ""]

    ordered = order_mx(records, rng)
    found = await asyncio.gather(*(host_addresses(lookup, host) for _, host in ordered))
    hosts = tuple(MxHost(host, pref, tuple(f.addresses))
                  for (pref, host), f in zip(ordered, found, strict=True) if f.addresses)
    if not hosts:
        errors = [f.temporary_error for f in found if f.temporary_error]
        if errors:
            return temporary(name, f"no address for its mail servers: {errors[0]}")
        return no_address(name, [host for _, host in ordered])
    return MxResult(name, kind, hosts, site_name(host for _, host in records))
