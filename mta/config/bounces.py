"""[bounces]: the VERP return path and the inbound feedback domain(s) (mta/bounce/returnpath.py,
mta/bounce/inbound.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mta.config.values import Size

__all__ = ["BouncesConfig"]

_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
# 128 bits of key for a 80-bit tag: a shorter secret would be the weak part.
MIN_SECRET = 16


def _check_domain(key: str, value: str) -> None:
    if not _DOMAIN_RE.match(value):
        raise ValueError(f"{key}: {value!r} is not a domain name (lower case, with a dot)")


@dataclass(frozen=True)
class BouncesConfig:
    # Domain of the return path: each recipient's MAIL FROM becomes b+TOKEN@domain, and the
    # SMTP listener takes reports (DSN, ARF) and mailto unsubscribes for it from anyone.
    # Its MX must point at this server. "" (the default): the tenant's own MAIL FROM.
    domain: str = ""
    # HMAC key of the tokens (VERP, X-Mta-Ref, unsubscribe links); at least 16 characters.
    # Changing it invalidates every token already sent (bounces and links of old mail).
    secret: str = ""
    # Secrets being retired: their tokens still verify (new ones use `secret`). Rotate by
    # moving the old secret here and keeping it as long as bounces and links may come back.
    previous_secrets: list[str] = field(default_factory=list)
    # A tenant's own return-path domain (its MX pointing here too), replacing `domain`
    # for its mail: {shop = "bounces.shop.example"}. (Here, not in [tenants.X], so that
    # this section checks itself: the tokens need `secret`.)
    tenant_domains: dict[str, str] = field(default_factory=dict)
    # Bytes of an inbound report that are parsed; the rest (a returned original message)
    # is ignored. The report parts come first (RFC 3462/6522), so 1 MiB keeps them all.
    max_report_size: Size = 1024 * 1024

    def __post_init__(self) -> None:
        if self.domain:
            _check_domain("domain", self.domain)
        for tenant, d in self.tenant_domains.items():
            _check_domain(f"tenant_domains.{tenant}", d)
        if (self.domain or self.tenant_domains) and len(self.secret) < MIN_SECRET:
            raise ValueError(
                f"secret: at least {MIN_SECRET} characters are needed when a bounce domain is set"
            )
        if self.secret and len(self.secret) < MIN_SECRET:
            raise ValueError(f"secret: at least {MIN_SECRET} characters")
        if any(len(p) < MIN_SECRET for p in self.previous_secrets):
            raise ValueError(f"previous_secrets: each at least {MIN_SECRET} characters")
        if self.max_report_size < 4096:
            raise ValueError("max_report_size: must be at least 4KiB")

    def domains(self) -> frozenset[str]:
        """Every domain the listener takes feedback for."""
        return frozenset(d for d in (self.domain, *self.tenant_domains.values()) if d)
