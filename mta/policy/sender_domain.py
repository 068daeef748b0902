"""Sender-domain suspensions: which MAIL FROM domain a message claims, and how a domain is
named as the subject of a suspension in the policy store.

A suspension's subject is a tenant name, or "@" + a domain: "any tenant's mail whose MAIL
FROM domain is exactly that domain". Tenant names never start with "@" (PolicyAdmin and the
admin API refuse them), so the two kinds of subject cannot collide in the store.

Exact domain, not its subdomains: platforms give customers sibling subdomains of one
shared domain (alice.mail.example, bob.mail.example), and suspending a parent must not stop
every sibling; the operator suspends the domain the bad mail actually used, which is also
the one the reply names. It also keeps the check at one store subject per MAIL FROM
instead of one per label.
"""

from __future__ import annotations

import functools
import re

__all__ = ["SUBJECT_PREFIX", "domain_subject", "normalise_domain", "sender_domain"]

SUBJECT_PREFIX = "@"

# LDH labels (RFC 5321 §4.1.2 Domain, after IDNA: RFC 5890 A-labels), 1-63 each, 253 total.
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")


@functools.lru_cache(maxsize=4096)  # asked on every MAIL FROM; senders repeat
def normalise_domain(domain: str) -> str:
    """Lower case, no trailing dot, Unicode (SMTPUTF8) as its IDNA A-label, so that
    "Example.COM." and "example.com" are one subject. ValueError if not a domain name
    with at least two labels (a bare "com" would suspend nothing real)."""
    d = domain.strip().rstrip(".").lower()
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"not a domain name: {domain!r}") from None
    if len(d) > 253 or not _DOMAIN_RE.match(d):
        raise ValueError(f"not a domain name: {domain!r}")
    return d


def sender_domain(address: str) -> str | None:
    """The domain of a MAIL FROM address ("a@Example.com" or "<a@example.com>"), normalised;
    None for the null sender "<>" (bounces) or an address without a usable domain."""
    at = address.rfind("@")
    if at < 0:
        return None
    try:
        return normalise_domain(address[at + 1:].rstrip(">"))
    except ValueError:
        return None


def domain_subject(domain: str) -> str:
    """The store subject of a domain's suspension: "@example.com"."""
    return SUBJECT_PREFIX + domain
