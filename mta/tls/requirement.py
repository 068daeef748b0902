"""What one delivery needs of its connection's TLS, and which policy said so.

Owns the choice, per recipient domain, between the path's own tls ([delivery] tls or
[shaping."site"] tls), a per-domain [tls] policy, the domain's MTA-STS policy and the
DANE TLSA records of its MX hosts, as a `TlsRequirement` that the connection pool can
check an open session against (`accepts`) and dial new ones by (`connect_modes`,
`may_use`). Pure: no I/O.

    enforce (RFC 8461 5): only MX hosts the policy names, each with a certificate that
        chains to a trusted root and names the MX host; anything else is refused (and
        the recipients deferred with the reason);
    testing: the same checks are made and any failure is recorded (`failure`), but the
        mail goes as the path's tls would send it;
    none, no policy, or MTA-STS off: the path's tls, as before.

DANE (RFC 7672) is per MX host and, where it applies, wins over MTA-STS for that host
(RFC 8461 2): a host with usable TLSA records is dialled only with "dane" (the presented
chain must match a record; never the clear, never another mode); one whose TLSA records
are all unusable with mandatory, unauthenticated TLS ("required", RFC 7672 3.1.3); one
whose TLSA lookup failed (bogus) not at all. `dane = "mandatory"` ([tls] policy
"dane-only") refuses every host without usable TLSA records too (RFC 8460 "dane-required").
"""

from __future__ import annotations

from dataclasses import dataclass

from mta.tls.dane import DANE_REQUIRED, DaneHost
from mta.tls.policy import StsPolicy, describe, mx_matches

__all__ = ["TlsRequirement", "choose"]


@dataclass(frozen=True, slots=True)
class TlsRequirement:
    mode: str  # what a session must have: disabled | opportunistic | required | verify
    label: str  # the policy applied (events, metrics): a mode, mta-sts-enforce/-testing
    domain: str = ""  # the policy domain, for MTA-STS
    sts: str = ""  # "enforce" | "testing" | "" (no MTA-STS policy applies)
    mx: tuple[str, ...] = ()  # the policy's MX patterns
    dane: str = ""  # "" (not looked at) | "opportunistic" (where published) | "mandatory"
    dane_hosts: tuple[DaneHost, ...] = ()  # per MX host, looked up for this delivery
    base_label: str = ""  # the label without DANE, for hosts DANE does not decide for

    def label_for(self, host: str) -> str:
        """The policy a session to `host` went under (events, metrics)."""
        if self.dane_for(host) is not None or self.dane == "mandatory":
            return self.label
        return self.base_label or self.label

    def matches(self, host: str) -> bool:
        return any(mx_matches(p, host) for p in self.mx)

    def dane_for(self, host: str) -> DaneHost | None:
        """The host's DANE state when DANE decides for it, else None."""
        if not self.dane:
            return None
        host = host.lower().rstrip(".")
        for d in self.dane_hosts:
            if d.host == host:
                return d if d.applies else None
        return None

    def may_use(self, host: str) -> bool:
        """Whether to connect to this MX host at all (enforce: only those it names; DANE:
        not after a failed TLSA lookup; dane-only: only hosts with usable TLSA)."""
        return not self.refusal(host)[0]

    def refusal(self, host: str) -> tuple[str, str]:
        """(reply text, RFC 8460 result type) for a host not to be dialled, or ("", "")."""
        d = self.dane_for(host)
        if d is not None and d.state == "failed":
            return self.dane_text(host, d.detail), d.result_type
        if self.dane == "mandatory" and (d is None or d.state != "usable"):
            why = self._dane_state(host) or f"no usable TLSA record for {host}"
            return self.dane_text(host, why), DANE_REQUIRED
        if d is None and self.sts == "enforce" and not self.matches(host):
            return self.refusal_text(f"MX host {host} does not match the policy (mx: "
                                     f"{describe(self.mx)})"), "validation-failure"
        return "", ""

    def _dane_state(self, host: str) -> str:
        for d in self.dane_hosts:
            if d.host == host.lower().rstrip("."):
                return d.detail
        return ""

    def connect_modes(self, host: str = "") -> tuple[str, ...]:
        """The tls to dial with, in order: a TLS failure with one tries the next.
        DANE: "dane" alone (usable records) or "required" alone (unusable ones).
        MTA-STS always tries "verify" first; testing then falls back to the path's
        mode (and opportunistic, as always, to the clear: RFC 7435)."""
        d = self.dane_for(host)
        if d is not None:
            return ("dane",) if d.state == "usable" else ("required",)
        if self.sts == "enforce":
            return ("verify",)
        first = ("verify",) if self.sts == "testing" and self.mode != "verify" else ()
        rest = (self.mode, "disabled") if self.mode == "opportunistic" else (self.mode,)
        return first + rest

    def accepts(self, host: str, *, tls_active: bool, tls_verified: bool,
                verify_tried: bool, dane_verified: bool = False) -> bool:
        """Whether an open session (to `host`) may carry this delivery. `tls_verified`:
        PKIX-verified (verify, MTA-STS); `dane_verified`: a TLSA record matched."""
        if self.refusal(host)[0]:
            return False
        d = self.dane_for(host)
        if d is not None:
            return dane_verified if d.state == "usable" else tls_active
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
        """What an MTA-STS policy would have refused on this session ("" if nothing).
        A host DANE decided for is not MTA-STS's (RFC 8461 2)."""
        if not self.sts or self.dane_for(host) is not None:
            return ""
        if not self.matches(host):
            return f"MX host {host} does not match the policy (mx: {describe(self.mx)})"
        if not tls_verified:
            return tls_error or "certificate not verified"
        return ""

    def refusal_text(self, what: str) -> str:
        """Reply text for a session an enforce policy refused."""
        return f"MTA-STS policy of {self.domain} (enforce): {what}"

    def dane_text(self, host: str, what: str) -> str:
        """Reply text for a session DANE refused."""
        only = " (dane-only)" if self.dane == "mandatory" else ""
        return f"DANE{only} for MX host {host} of {self.domain}: {what}"


def choose(domain: str, base: str, policy: StsPolicy | None,
           override: str | None = None, *, dane: bool = False,
           dane_hosts: tuple[DaneHost, ...] = ()) -> TlsRequirement:
    """The requirement for mail to `domain` on a path whose tls is `base`, given the
    domain's [tls] policy entry (`override`), its MTA-STS policy (None: none), whether
    DANE is on ([tls] dane) and its MX hosts' DANE states.

    "dane-only": DANE is mandatory; "dane": DANE where usable, else opportunistic (no
    MTA-STS); a fixed mode: that mode, without MTA-STS or DANE; otherwise MTA-STS and,
    when `dane`, DANE for the hosts that publish it."""
    if override == "dane-only":
        return TlsRequirement("required", "dane-only", domain, dane="mandatory",
                              dane_hosts=dane_hosts)
    if override == "dane":
        return _with_dane(TlsRequirement("opportunistic", "opportunistic", domain),
                          dane_hosts)
    if override is not None and override != "mta-sts":
        return TlsRequirement(override, override, domain)
    if policy is not None and policy.mode == "enforce":
        req = TlsRequirement("verify", "mta-sts-enforce", domain, "enforce", policy.mx)
    elif policy is not None and policy.mode == "testing":
        req = TlsRequirement(base, "mta-sts-testing", domain, "testing", policy.mx)
    else:
        req = TlsRequirement(base, base, domain)
    return _with_dane(req, dane_hosts) if dane else req


def _with_dane(req: TlsRequirement, hosts: tuple[DaneHost, ...]) -> TlsRequirement:
    """DANE on top of `req`; labelled "dane" when it decides for any MX host."""
    label = "dane" if any(h.applies for h in hosts) else req.label
    return TlsRequirement(req.mode, label, req.domain, req.sts, req.mx, "opportunistic",
                          hosts, req.label)
