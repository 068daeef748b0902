"""What one delivery needs of its connection's TLS, and which policy said so.

Owns the choice, per recipient domain, between the path's own tls ([delivery] tls or
[shaping."site"] tls), a per-domain [tls] policy and the domain's MTA-STS policy, as a
`TlsRequirement` that the connection pool can check an open session against (`accepts`)
and dial new ones by (`connect_modes`, `may_use`). Pure: no I/O.

    enforce (RFC 8461 5): only MX hosts the policy names, each with a certificate that
        chains to a trusted root and names the MX host; anything else is refused (and
        the recipients deferred with the reason);
    testing: the same checks are made and any failure is recorded (`failure`), but the
        mail goes as the path's tls would send it;
    none, no policy, or MTA-STS off: the path's tls, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from mta.tls.policy import StsPolicy, describe, mx_matches

__all__ = ["TlsRequirement", "choose"]


@dataclass(frozen=True, slots=True)
class TlsRequirement:
    mode: str  # what a session must have: disabled | opportunistic | required | verify
    label: str  # the policy applied (events, metrics): a mode, mta-sts-enforce/-testing
    domain: str = ""  # the policy domain, for MTA-STS
    sts: str = ""  # "enforce" | "testing" | "" (no MTA-STS policy applies)
    mx: tuple[str, ...] = ()  # the policy's MX patterns

    def matches(self, host: str) -> bool:
        return any(mx_matches(p, host) for p in self.mx)

    def may_use(self, host: str) -> bool:
        """Whether to connect to this MX host at all (enforce: only those it names)."""
        return self.sts != "enforce" or self.matches(host)

    def connect_modes(self) -> tuple[str, ...]:
        """The tls to dial with, in order: a TLS failure with one tries the next.
        MTA-STS always tries "verify" first; testing then falls back to the path's
        mode (and opportunistic, as always, to the clear: RFC 7435)."""
        if self.sts == "enforce":
            return ("verify",)
        first = ("verify",) if self.sts == "testing" and self.mode != "verify" else ()
        rest = (self.mode, "disabled") if self.mode == "opportunistic" else (self.mode,)
        return first + rest

    def accepts(self, host: str, *, tls_active: bool, tls_verified: bool,
                verify_tried: bool) -> bool:
        """Whether an open session (to `host`) may carry this delivery."""
        if self.sts == "enforce":
            return tls_verified and self.matches(host)
        if self.sts == "testing" and not (tls_verified or verify_tried):
            return False  # the check was never made on it: open one that makes it
        if self.mode == "verify":
            return tls_verified
        if self.mode == "required":
            return tls_active
        return True

    def failure(self, host: str, *, tls_verified: bool, tls_error: str) -> str:
        """What an MTA-STS policy would have refused on this session ("" if nothing)."""
        if not self.sts:
            return ""
        if not self.matches(host):
            return f"MX host {host} does not match the policy (mx: {describe(self.mx)})"
        if not tls_verified:
            return tls_error or "certificate not verified"
        return ""

    def refusal_text(self, what: str) -> str:
        """Reply text for a session an enforce policy refused."""
        return f"MTA-STS policy of {self.domain} (enforce): {what}"


def choose(domain: str, base: str, policy: StsPolicy | None,
           override: str | None = None) -> TlsRequirement:
    """The requirement for mail to `domain` on a path whose tls is `base`, given the
    domain's [tls] policy entry (`override`) and its MTA-STS policy (None: none)."""
    if override is not None and override != "mta-sts":
        return TlsRequirement(override, override, domain)
    if policy is not None and policy.mode == "enforce":
        return TlsRequirement("verify", "mta-sts-enforce", domain, "enforce", policy.mx)
    if policy is not None and policy.mode == "testing":
        return TlsRequirement(base, "mta-sts-testing", domain, "testing", policy.mx)
    return TlsRequirement(base, base, domain)
