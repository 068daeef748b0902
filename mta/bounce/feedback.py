"""`Feedback`: the feedback loop's settings resolved from one config ([bounces],
[unsubscribe]): the token codec, the bounce domain of each tenant, the VERP return path of
a recipient, and whether an address is one of the feedback addresses.

Built once per (re)load (`Feedback.from_config`) and handed to delivery (return path),
ingress (headers, mta/bounce/stamp.py), the SMTP session (which domains take mail from
anyone) and the inbound side (mta/bounce/inbound.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from mta.bounce.token import Tokens

if TYPE_CHECKING:
    from mta.config import Config

__all__ = ["Feedback"]


class _Rcpt(Protocol):
    address: str


def domain_of(address: str) -> str:
    return address.strip().strip("<>").rpartition("@")[2].lower()


class Feedback:
    def __init__(self, cfg: Config) -> None:
        b, u = cfg.bounces, cfg.unsubscribe
        self.domain = b.domain
        self.tenant_domains = dict(b.tenant_domains)
        self.domains = b.domains()
        self.tokens = Tokens(b.secret, b.previous_secrets) if b.secret else None
        self.max_report_size = b.max_report_size
        self.base_url = u.base_url.rstrip("/")
        self.unsubscribe_required = u.required
        self.unsubscribe_classes = frozenset(u.classes)

    def domain_for(self, tenant: str) -> str:
        """The bounce domain of a tenant's mail; "" when there is none (or no secret)."""
        if self.tokens is None:
            return ""
        return self.tenant_domains.get(tenant, self.domain)

    def claims(self, address: str) -> bool:
        """Whether `address` is at one of the feedback domains."""
        return bool(self.domains) and domain_of(address) in self.domains

    def return_paths(
        self, queue_id: str, tenant: str, mail_from: str, recipients: Sequence[_Rcpt]
    ) -> list[str] | None:
        """Each recipient's VERP envelope sender, or None: the message goes with its own
        MAIL FROM (no bounce domain for the tenant, or the null sender of a DSN, which must
        stay null: RFC 3464 2, no bounce of a bounce)."""
        domain = self.domain_for(tenant)
        if not domain or not mail_from or self.tokens is None:
            return None
        make = self.tokens.make
        return [f"b+{make('b', queue_id, tenant, r.address)}@{domain}" for r in recipients]
