"""One DNS lookup's outcome, as a value: the records of one (name, type), or why there are none.

Owns the vocabulary shared by the lookup backends (real DNS, zone text) and the cache:
`Answer` with a `Status` (OK, NXDOMAIN, NODATA, SERVFAIL) and the time it may be kept,
and the `Lookup` interface a backend implements, and what a valid name is. Record data is
kept as plain strings and tuples so the layers above never touch dnspython types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.name

__all__ = ["Answer", "Lookup", "Record", "Status", "name_error", "normalize_name"]

# Per type, what a record is:
#   A / AAAA: "192.0.2.1" / "2001:db8::1"
#   MX: (preference, "exchange") with the exchange normalized ("" for the null MX ".")
#   TXT: the record's character-strings concatenated (RFC 7208 3.3, RFC 6376 3.6.2.2)
#   TLSA (and any other type): the rdata in presentation form, "3 1 1 <hex>"
Record = str | tuple[int, str]


class Status(enum.Enum):
    OK = "ok"              # records of the type exist
    NXDOMAIN = "nxdomain"  # RFC 1035 name error: the name does not exist
    NODATA = "nodata"      # RFC 2308 2.2: the name exists, no record of this type
    SERVFAIL = "servfail"  # no usable answer: SERVFAIL, REFUSED, timeout, network error

    @property
    def is_temporary(self) -> bool:
        return self is Status.SERVFAIL


@dataclass(frozen=True, slots=True)
class Answer:
    name: str  # normalized: lower-case, no trailing dot
    rdtype: str  # "MX", "A", "AAAA", "TXT"
    status: Status
    records: tuple[Record, ...] = ()
    # Seconds the answer may be kept: the smallest record TTL; for NXDOMAIN / NODATA the
    # SOA-derived negative TTL (RFC 2308 5) or None when the server sent no SOA, in which
    # case the cache applies its configured default.
    ttl: float | None = None
    detail: str = ""  # why, for SERVFAIL: "timed out", "SERVFAIL from 127.0.0.1:53"
    # The validating resolver set AD (RFC 4035 3.2.3, RFC 6840 5.7): every record of the
    # answer, or the denial, is DNSSEC-authenticated. Only DANE (mta.dns.dane) reads it.
    secure: bool = False
    # Where a CNAME chain ended ("" when there was none): DANE's TLSA base domain may be
    # the expanded name (RFC 7672 2.2.2).
    canonical: str = ""


class Lookup(Protocol):
    """A backend: asks one question, always returns an `Answer` (never raises for DNS
    errors: they are `Status.SERVFAIL` with a detail)."""

    async def lookup(self, name: str, rdtype: str) -> Answer: ...


def name_error(name: str) -> str | None:
    """Why `name` (normalized) cannot be a DNS name (RFC 1035 2.3.4: empty label, label over
    63 octets, name over 255), or None if it can."""
    if not name:
        return "empty name"
    try:
        dns.name.from_text(name + ".")
    except dns.exception.DNSException as e:
        return str(e) or type(e).__name__
    return None


def normalize_name(name: str) -> str:
    """DNS names compare case-insensitively (RFC 4343); the root dot is implied."""
    return name.strip().rstrip(".").lower()
