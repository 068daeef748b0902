"""The in-memory backend: answers from RFC 1035 zone-file text, for unit tests of other
modules (like KumoMTA's dns-resolver `TestResolver`).

Owns authoritative answering from parsed zones: records, CNAME chains, NXDOMAIN versus
NODATA (an empty non-terminal is NODATA, RFC 8020), the SOA negative TTL, and names made
to fail temporarily (`servfail`). Wildcards and delegations are not served: tests name
what they need. A name outside every zone is SERVFAIL, as the test DNS server refuses it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone

from mta.dns.answer import Answer, Status, normalize_name
from mta.dns.records import to_record

__all__ = ["ZoneLookup", "parse_zone"]

_MAX_CNAME_CHAIN = 8


def parse_zone(origin: str, text: str) -> dns.zone.Zone:
    """Zone text -> zone. Relative names are relative to `origin` (unless `$ORIGIN` says
    otherwise); the text may be indented as a whole (a triple-quoted string in a test);
    records without a TTL get 300s unless `$TTL` says otherwise; a zone without an SOA is
    fine (the negative TTL then defaults)."""
    body = textwrap.dedent(text).strip("\n") + "\n"
    if "$TTL" not in body:
        body = "$TTL 300\n" + body
    return dns.zone.from_text(body, origin=normalize_name(origin) + ".", relativize=False,
                              check_origin=False)


class ZoneLookup:
    """`Lookup` over zones given as `{origin: zone text}`."""

    def __init__(self, zones: Mapping[str, str], servfail: Iterable[str] = ()) -> None:
        self.zones = {normalize_name(o): parse_zone(o, t) for o, t in zones.items()}
        self.servfail = {normalize_name(n) for n in servfail}

    async def lookup(self, name: str, rdtype: str) -> Answer:
        return self.answer(name, rdtype)

    def answer(self, name: str, rdtype: str) -> Answer:
        qname = normalize_name(name)
        records: list = []
        ttl: float | None = None
        for _ in range(_MAX_CNAME_CHAIN):
            if qname in self.servfail or any(qname.endswith("." + s) for s in self.servfail):
                return Answer(normalize_name(name), rdtype, Status.SERVFAIL,
                              detail=f"SERVFAIL for {qname} (test zone)")
            zone = self._zone_for(qname)
            if zone is None:
                return Answer(normalize_name(name), rdtype, Status.SERVFAIL,
                              detail=f"{qname} is in no test zone")
            dname = dns.name.from_text(qname + ".")
            node = zone.get_node(dname)
            soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
            # RFC 2308 5: min(SOA TTL, SOA MINIMUM), as mta.dns.records.negative_ttl.
            neg = None if soa is None else float(
                min(soa.ttl, soa[0].minimum))  # type: ignore[attr-defined]
            if node is None:
                if self._is_empty_non_terminal(zone, dname):
                    return Answer(normalize_name(name), rdtype, Status.NODATA, ttl=neg)
                return Answer(normalize_name(name), rdtype, Status.NXDOMAIN, ttl=neg)
            rds = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
            if rds is not None:
                records.extend(to_record(rdtype, rd) for rd in rds)
                ttl = rds.ttl if ttl is None else min(ttl, rds.ttl)
                return Answer(normalize_name(name), rdtype, Status.OK, tuple(records),
                              float(ttl))
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                return Answer(normalize_name(name), rdtype, Status.NODATA, ttl=neg)
            ttl = cname.ttl if ttl is None else min(ttl, cname.ttl)
            qname = normalize_name(cname[0].target.to_text())  # type: ignore[attr-defined]
        return Answer(normalize_name(name), rdtype, Status.SERVFAIL, detail="CNAME loop")

    def _zone_for(self, qname: str) -> dns.zone.Zone | None:
        best = None
        for origin in self.zones:
            if (qname == origin or qname.endswith("." + origin)) and (
                    best is None or len(origin) > len(best)):
                best = origin
        return None if best is None else self.zones[best]

    @staticmethod
    def _is_empty_non_terminal(zone: dns.zone.Zone, dname: dns.name.Name) -> bool:
        return any(n != dname and n.is_subdomain(dname) for n in zone.nodes)

