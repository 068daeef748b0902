"""[identity]: sending domains of tenants and forged trace headers (mta/policy/identity.py).

Whether identity is enforced for authenticated tenants is `[policy] sender_identity`; this
section holds the rest: the relay-network tenant's own setting, where the verification TXT
record lives, how often verified domains are checked again, and the authserv-id whose
Authentication-Results a client may not bring with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mta.config.values import Duration

__all__ = ["IDENTITY_MODES", "IdentityConfig"]

# "enforce": a tenant with registered domains sends only from its verified ones;
# "strict": also a tenant with none registered is refused; "off": nothing is checked.
IDENTITY_MODES = ("enforce", "strict", "off")


@dataclass(frozen=True)
class IdentityConfig:
    # The tenant "default" (clients in [smtp] relay_networks, users without a tenant):
    # usually the operator's own applications, hence "off" unless set.
    default_tenant: str = "off"
    # The verification record is TXT "mta-verify=TOKEN" at "<verify_label>.<domain>", or at
    # the domain itself when empty (some DNS hosts allow one TXT per name: use a label).
    verify_label: str = ""
    # Verified domains are looked up again this often; a domain whose record is gone is
    # unverified (a customer who left must not keep sending as the domain).
    recheck_interval: Duration = 6 * 3600.0
    # Our authserv-id (RFC 8601): Authentication-Results naming it are removed at ingress,
    # as are Received: lines claiming [server] hostname. Empty: [server] hostname.
    authserv_id: str = ""
    strip_forged_trace: bool = True

    def __post_init__(self) -> None:
        if self.default_tenant not in IDENTITY_MODES:
            raise ValueError(f"default_tenant must be one of {', '.join(IDENTITY_MODES)}")
        if self.recheck_interval <= 0:
            raise ValueError("recheck_interval must be positive")
        label = self.verify_label.strip(".")
        if label and not all(p and len(p) < 64 and p.replace("-", "").replace("_", "")
                             .isalnum() for p in label.split(".")):
            raise ValueError(f"verify_label {self.verify_label!r} is not a DNS label")
