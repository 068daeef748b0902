"""Turning dnspython's record sets and messages into `Answer` values.

Owns the one place where dnspython types become plain records (see mta.dns.answer.Record)
and where the negative TTL of RFC 2308 is read from an SOA, so the real backend and the
zone-text backend agree to the byte on what a record looks like.
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from mta.dns.answer import Record, normalize_name

__all__ = ["negative_ttl", "to_record"]


def to_record(rdtype: str, rdata: dns.rdata.Rdata) -> Record:
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)  # type: ignore[attr-defined]
    if rdtype == "MX":
        # The null MX target "." normalizes to "" (RFC 7505 3).
        return (int(rdata.preference),  # type: ignore[attr-defined]
                normalize_name(rdata.exchange.to_text()))  # type: ignore[attr-defined]
    if rdtype == "TXT":
        # One record may hold several <character-string>s of up to 255 octets; DKIM
        # (RFC 6376 3.6.2.2) and SPF (RFC 7208 3.3) read them concatenated.
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    return rdata.to_text()


def negative_ttl(authority: Iterable[dns.rrset.RRset]) -> float | None:
    """RFC 2308 5: a negative answer may be kept for min(SOA TTL, SOA MINIMUM)."""
    for rrset in authority:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.rdclass == dns.rdataclass.IN:
            for soa in rrset:
                return float(min(rrset.ttl, soa.minimum))  # type: ignore[attr-defined]
    return None
