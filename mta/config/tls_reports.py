"""[tls.reports]: the TLS-RPT (RFC 8460) aggregate reports mta sends as a sender.

    [tls.reports]
    enabled = true
    organization = "Example Mail Platform"       # organization-name of every report
    contact = "mailto:tlsrpt@example.net"        # contact-info
    report_from = "tlsrpt-noreply@example.net"   # From (and envelope sender) of mailed ones

Each UTC day's TLS sessions are counted per recipient domain that had a policy (MTA-STS,
DANE), then reported once to the `rua` of the domain's `_smtp._tls` TXT record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mta.config.values import Duration

__all__ = ["TlsReportsConfig"]

_ADDR = re.compile(r"[^@\s<>]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+")


@dataclass(frozen=True)
class TlsReportsConfig:
    # Off until an operator names who is reporting: a report carries that name to every
    # domain mta sends to.
    enabled: bool = False
    # organization-name (RFC 8460 4.4): who sends the reports. Required when enabled.
    organization: str = ""
    # contact-info: an address or URL receivers can write to. Required when enabled.
    contact: str = ""
    # From of the mailed reports (and their envelope sender, so a bounce comes back to
    # it). DKIM-signed like any mail, so it should be in a domain [dkim] signs.
    report_from: str = ""
    # The reporting domain (TLS-Report-Submitter, the file name); empty: report_from's.
    submitter: str = ""
    # Also count sessions to domains without a policy ("no-policy-found") and report them
    # to those that publish a TLSRPT record: one TXT lookup per such domain and day.
    no_policy: bool = False
    # How long after the UTC day ends its reports go (late deliveries of other nodes,
    # receivers' preference for reports a little after midnight).
    send_after: Duration = 900.0
    # How often the counts of this process reach the shared store (and on shutdown); what
    # a kill -9 can lose at most.
    flush_interval: Duration = 5.0
    # How often worker 0 of each node looks for days to report.
    check_interval: Duration = 60.0
    # https rua: each POST's deadline, how many tries, and the wait between tries.
    http_timeout: Duration = 30.0
    http_attempts: int = 3
    http_retry: Duration = 60.0

    def domain(self) -> str:
        """The submitter domain: `submitter`, else report_from's domain."""
        return (self.submitter or self.report_from.rpartition("@")[2]).lower()

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key under [tls.reports], problem)."""
        if self.enabled:
            if not self.organization.strip():
                yield "organization", "required when reports are enabled (organization-name)"
            if not self.contact.strip():
                yield "contact", "required when reports are enabled (contact-info)"
            if not self.report_from:
                yield "report_from", "required when reports are enabled (the From address)"
        if self.report_from and not _ADDR.fullmatch(self.report_from):
            yield "report_from", f"must be an address like tlsrpt@example.net, " \
                                 f"not {self.report_from!r}"
        if self.submitter and not _DOMAIN.fullmatch(self.submitter):
            yield "submitter", "must be a domain name in lower case"
        for key in ("flush_interval", "check_interval", "http_timeout"):
            if getattr(self, key) <= 0:
                yield key, "must be positive"
        if not 1 <= self.http_attempts <= 20:
            yield "http_attempts", "must be between 1 and 20"
        if self.send_after > 86400:
            yield "send_after", "must be at most 1d"
