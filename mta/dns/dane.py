"""DANE's DNS (RFC 7672 2.2): whether TLSA records apply to an MX host, and which.

Owns the DNSSEC side of DANE for SMTP, as `dane_lookup(resolver, domain, hosts)`, one
`TlsaAnswer` per MX host, each in one of four states:

    secure    TLSA records at _25._tcp.<host>, DNSSEC-validated: DANE applies
    none      everything validated, but the host publishes no TLSA: no DANE
    insecure  the MX RRset, the host's addresses or its TLSA RRset are not validated
              (an unsigned zone, a non-validating resolver): no DANE, as if unpublished
    failed    the TLSA lookup failed (SERVFAIL: a bogus signature, or a DNS failure) for
              a host whose addresses are secure, or the MX or address lookup itself
              failed this time (the site's hosts were resolved earlier): the delivery
              must be deferred, never sent without DANE (an attacker could cause it)

The rules, as Postfix's smtp_tls_security_level = dane applies them:
- 2.2.1: the MX RRset must be secure (a validated NODATA for an implicit MX too); an
  insecure one lets an attacker choose the MX hosts, so their TLSA proves nothing;
- 2.2.2: the host's A/AAAA answers must be secure; when they came through a CNAME, the
  TLSA is first looked up at the expanded name, then at the original one, and both are
  reference identifiers for DANE-TA name checks (3.2.2);
- 2.1.1: only a validating resolver's AD bit counts (mta.dns.answer.Answer.secure).
Every question goes through the resolver's cache (mta.dns.resolver.CachingResolver.lookup),
so TLSA answers are kept to their TTL and failures for failure_ttl, like any others.
The SMTP port in the TLSA name is 25: RFC 7672 is about MX delivery on port 25, and
[delivery] port exists for tests and smart hosts, where no TLSA would be published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mta.dns.answer import Answer, Status, normalize_name
from mta.dns.mx import parse_literal

__all__ = ["TLSA_PORT", "TlsaAnswer", "dane_lookup", "tlsa_name"]

TLSA_PORT = 25

LookupFn = Callable[[str, str], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    host: str  # the MX host name
    state: str  # "secure" | "none" | "insecure" | "failed"
    records: tuple[str, ...] = ()  # TLSA rdata, "3 1 1 <hex>" (secure only)
    names: tuple[str, ...] = ()  # reference identifiers: the host, then its CNAME target
    tlsa_name: str = ""  # the name the records are at (or were looked up at)
    detail: str = ""  # why it is not "secure", for replies and events


def tlsa_name(host: str, port: int = TLSA_PORT) -> str:
    return f"_{port}._tcp.{host}"


async def dane_lookup(lookup: LookupFn, domain: str,
                      hosts: Sequence[str]) -> tuple[TlsaAnswer, ...]:
    """The TLSA state of each of `domain`'s MX `hosts` (names as the MX answer gave them).
    `lookup` is CachingResolver.lookup: answers come from the cache when fresh."""
    name = normalize_name(domain)
    try:
        literal = parse_literal(domain) is not None
    except ValueError:
        literal = True
    if literal:
        return tuple(TlsaAnswer(h, "insecure", detail="an address literal has no TLSA")
                     for h in hosts)
    mx = await lookup(name, "MX")
    if mx.status is Status.SERVFAIL:
        # Bogus or failed now (the site's hosts come from an earlier answer): an attacker
        # who can break the answer must not turn DANE off (RFC 7672 2.2.1).
        why = f"MX lookup of {name} failed: {mx.detail or 'SERVFAIL'}"
        return tuple(TlsaAnswer(h, "failed", detail=why) for h in hosts)
    # An implicit MX (NODATA) is as good as its validated denial (RFC 7672 2.2.1).
    if not mx.secure or mx.status not in (Status.OK, Status.NODATA):
        why = f"the MX records of {name} are not DNSSEC-validated"
        return tuple(TlsaAnswer(h, "insecure", detail=why) for h in hosts)
    return tuple(await asyncio.gather(*(_host(lookup, h) for h in hosts)))


async def _host(lookup: LookupFn, host: str) -> TlsaAnswer:
    host = normalize_name(host)
    a, aaaa = await asyncio.gather(lookup(host, "A"), lookup(host, "AAAA"))
    broken = next((x for x in (a, aaaa) if x.status is Status.SERVFAIL), None)
    if broken is not None:  # as for the MX: a failure must not mean "no DANE"
        return TlsaAnswer(host, "failed", names=(host,), detail=(
            f"{broken.rdtype} lookup of {host} failed: {broken.detail or 'SERVFAIL'}"))
    found = [x for x in (a, aaaa) if x.status is Status.OK]
    # Every address we may connect to must be validated: one forged family is enough to
    # lead us to an attacker's server (RFC 7672 2.2.2).
    if not found or not all(x.secure for x in found):
        return TlsaAnswer(host, "insecure",
                          detail=f"the addresses of {host} are not DNSSEC-validated")
    canonical = next((x.canonical for x in found if x.canonical), "")
    names = (host, canonical) if canonical else (host,)
    if canonical:
        # RFC 7672 2.2.2: the CNAME-expanded name first; if it has no TLSA, the original.
        first = await _tlsa(lookup, host, canonical, names)
        if first.state != "none":
            return first
    return await _tlsa(lookup, host, host, names)


async def _tlsa(lookup: LookupFn, host: str, base: str,
                names: tuple[str, ...]) -> TlsaAnswer:
    qname = tlsa_name(base)
    answer = await lookup(qname, "TLSA")
    if answer.status is Status.SERVFAIL:
        return TlsaAnswer(host, "failed", names=names, tlsa_name=qname, detail=(
            f"TLSA lookup of {qname} failed (DNSSEC validation or DNS failure): "
            f"{answer.detail or 'SERVFAIL'}"))
    if not answer.secure:
        return TlsaAnswer(host, "insecure", names=names, tlsa_name=qname,
                          detail=f"the TLSA records of {qname} are not DNSSEC-validated")
    if answer.status is not Status.OK or not answer.records:
        return TlsaAnswer(host, "none", names=names, tlsa_name=qname,
                          detail=f"{host} publishes no TLSA record ({qname})")
    return TlsaAnswer(host, "secure", tuple(str(r) for r in answer.records), names, qname)
