"""[tls]: outbound transport security beyond [delivery] tls (MTA-STS, RFC 8461; DANE,
RFC 7672).

    [tls]
    mta_sts = true                    # honour published MTA-STS policies (the default)
    dane = true                       # honour DNSSEC-validated TLSA records (the default)
    ca_file = ""                      # what MX and policy-host certificates must chain to
    policy = { "example.com" = "verify" }   # per recipient domain, over everything else
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from mta.config.tls_reports import TlsReportsConfig
from mta.config.values import Duration, Size

__all__ = ["DOMAIN_POLICIES", "TlsConfig"]

# Per recipient domain: a fixed mode (those of [delivery] tls, neither MTA-STS nor DANE),
# "mta-sts" (the domain's published policy, opportunistic when it has none, even with
# [tls] mta_sts = false; DANE still wins where published, with [tls] dane), "dane" (DANE
# for MX hosts with usable TLSA records, opportunistic for the others, even with [tls]
# dane = false; no MTA-STS) or "dane-only" (mandatory DANE, Postfix's dane-only: an MX
# host without usable, DNSSEC-validated TLSA records is never used).
DOMAIN_POLICIES = ("opportunistic", "required", "verify", "disabled", "mta-sts", "dane",
                   "dane-only")


@dataclass(frozen=True)
class TlsConfig:
    # RFC 8461: look up `_mta-sts.<domain>` for every recipient domain and, when one is
    # published, fetch and apply its policy (enforce: only matching MX hosts with a
    # certificate that verifies; testing: deliver, and record what would have failed).
    # KumoMTA and Postfix (with its resolver) honour it by default; so does mta.
    mta_sts: bool = True
    # RFC 7672: for MX hosts whose MX, address and `_25._tcp.<host>` TLSA answers the
    # validating resolver ([dns] nameservers) authenticates (AD bit), the certificate
    # must match a TLSA record; a mismatch, a missing STARTTLS or a bogus TLSA answer
    # defers the mail, never sends it in the clear. Takes precedence over MTA-STS for
    # those hosts (RFC 8461 2). Postfix's smtp_tls_security_level = dane; on by default,
    # as it costs nothing where nothing is signed (no TLSA question is asked then).
    dane: bool = True
    # PEM bundle that MX certificates ("verify", MTA-STS) and mta-sts.<domain> web
    # servers must chain to; empty: [delivery] tls_ca_file, else the system's store.
    ca_file: str = ""
    # Recipient domain -> "opportunistic" | "required" | "verify" | "disabled" | "mta-sts"
    # | "dane" | "dane-only" (see DOMAIN_POLICIES); replaces the path's tls ([delivery] /
    # [shaping."site"]), MTA-STS and DANE for that domain (only that name, not its
    # subdomains).
    policy: dict[str, str] = field(default_factory=dict)
    # RFC 8461 3.3: a policy body is at most 64 KB; a bigger one is not a policy.
    max_policy_size: Size = 64 * 1024
    # The whole fetch (connect, TLS, headers, body). A policy is fetched once per max_age
    # or id change; a domain seen for the first time waits for it, so keep it short.
    fetch_timeout: Duration = 20.0
    # After a failed fetch, the domain's next try (meanwhile: its cached policy if any,
    # else no policy, RFC 8461 5.1). Spares a dead web server one request per message.
    fetch_retry: Duration = 300.0
    # The HTTPS port of mta-sts.<domain>: 443 (RFC 8461 3.3) everywhere but in tests.
    https_port: int = 443
    # [tls.reports]: TLS-RPT (RFC 8460) aggregate reports (mta/config/tls_reports.py).
    reports: TlsReportsConfig = field(default_factory=TlsReportsConfig)

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key under [tls], problem) for the loader to report, each at its own key."""
        if self.ca_file and not os.path.isfile(self.ca_file):
            yield "ca_file", f"file not found: {self.ca_file}"
        for domain, mode in self.policy.items():
            key = f'policy."{domain}"'
            if mode not in DOMAIN_POLICIES:
                near = str(mode).strip().lower().replace("_", "-").replace(" ", "-")
                hint = f' (did you mean "{near}"?)' if near in DOMAIN_POLICIES else ""
                yield key, ("must be one of " + ", ".join(f'"{m}"' for m in DOMAIN_POLICIES)
                            + f", not {mode!r}{hint}")
            if not domain or domain != domain.strip().lower().rstrip(".") or " " in domain:
                yield key, "must be a domain name in lower case, without a trailing dot"
        if not 1024 <= self.max_policy_size <= 1024 * 1024:
            yield "max_policy_size", "must be between 1KiB and 1MiB"
        if self.fetch_timeout <= 0:
            yield "fetch_timeout", "must be positive"
        if self.fetch_retry <= 0:
            yield "fetch_retry", "must be positive"
        if not 0 < self.https_port < 65536:
            yield "https_port", "must be a port number (1-65535)"
        for key, problem in self.reports.problems():
            yield f"reports.{key}", problem
