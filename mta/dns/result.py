"""What an MX resolution gives the delivery engine: where to connect, or why not.

Owns the result types: `MxResult` (hosts in the order to try, each with its addresses,
and the site they roll up to) and `DnsFailure` (permanent or temporary, with the RFC 3463
enhanced status and text the DSN or the deferral will carry), and the failures' statuses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mta.rfc5321.reply import Reply

__all__ = ["DnsFailure", "DnsTemporaryError", "FailureReason", "MxHost", "MxKind", "MxResult"]


class MxKind(enum.Enum):
    MX = "mx"              # the domain's MX records (RFC 5321 5.1)
    IMPLICIT = "implicit"  # no MX records: the domain itself is the MX (RFC 5321 5.1)
    LITERAL = "literal"    # an address literal, "[192.0.2.1]" (RFC 5321 4.1.3)


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str  # "mx1.example.com", lower-case, no trailing dot; "[192.0.2.1]" for literals
    preference: int
    addresses: tuple[str, ...]  # IPv4 and IPv6, in the order to try


@dataclass(frozen=True, slots=True)
class MxResult:
    domain: str
    kind: MxKind
    hosts: tuple[MxHost, ...]  # preference order, equal preferences shuffled
    site: str  # mta.dns.site.site_name of the hosts: the queue/pool key

    @property
    def addresses(self) -> list[str]:
        """Every address, in the order to try."""
        return [a for h in self.hosts for a in h.addresses]


class FailureReason(enum.Enum):
    NULL_MX = "null_mx"        # RFC 7505: the domain accepts no mail
    NO_DOMAIN = "no_domain"    # NXDOMAIN (or not a valid domain name)
    NO_ADDRESS = "no_address"  # MX hosts (or the implicit MX) have no address
    TEMPORARY = "temporary"    # SERVFAIL, timeout: try again later


@dataclass(frozen=True, slots=True)
class DnsFailure:
    """A resolution that gives nowhere to connect. `reply()` is the status to record: a
    DSN for a permanent failure, a deferral for a temporary one."""

    permanent: bool
    enhanced: str  # RFC 3463: "5.1.10", "5.1.2", "5.4.4", "4.4.3"
    text: str
    reason: FailureReason = FailureReason.TEMPORARY

    @property
    def code(self) -> int:
        # 550 / 451: the basic codes RFC 3463 pairs with "bad address" and "try later".
        return 550 if self.permanent else 451

    def reply(self) -> Reply:
        return Reply(self.code, self.enhanced, self.text)


def null_mx(domain: str) -> DnsFailure:
    # RFC 7505 4.2: the sender SHOULD bounce with 5.1.10 "recipient address has null MX".
    return DnsFailure(True, "5.1.10", f"Domain {domain} does not accept mail (null MX)",
                      FailureReason.NULL_MX)


def no_domain(domain: str, detail: str = "") -> DnsFailure:
    # RFC 3463 X.1.2: the destination system does not exist.
    why = f": {detail}" if detail else ""
    return DnsFailure(True, "5.1.2", f"Domain {domain} not found{why}",
                      FailureReason.NO_DOMAIN)


def no_address(domain: str, hosts: list[str]) -> DnsFailure:
    # RFC 3463 X.4.4: unable to route: there is no next hop to connect to.
    where = ", ".join(hosts)
    return DnsFailure(True, "5.4.4", f"No address for the mail servers of {domain} ({where})",
                      FailureReason.NO_ADDRESS)


def temporary(domain: str, detail: str) -> DnsFailure:
    # RFC 3463 X.4.3: directory server failure (DNS unreachable or failing): defer.
    return DnsFailure(False, "4.4.3", f"DNS lookup for {domain} failed: {detail}",
                      FailureReason.TEMPORARY)


class DnsTemporaryError(Exception):
    """Raised by `resolve_addresses` / `resolve_txt` when DNS failed temporarily (SERVFAIL,
    timeout): the caller must defer, not treat the name as having no records."""

    def __init__(self, failure: DnsFailure) -> None:
        super().__init__(failure.text)
        self.failure = failure
