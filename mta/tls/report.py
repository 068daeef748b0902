"""SMTP TLS Reporting (RFC 8460): the `_smtp._tls` TXT record and the aggregate report.

Pure: no I/O. Owns
- `parse_record` / `select_record`: `v=TLSRPTv1; rua=mailto:...,https://...` (RFC 8460 3),
  strictly by the RFC's ABNF; a bad record is no record;
- `ReportPolicy`, `FailureDetail`: one policy applied to sessions, one kind of failure;
- `result_type`, `sts_fetch_result_type`: the RFC 8460 4.3 result type of a failure text;
- `build_report`: the JSON of one policy domain's UTC day (RFC 8460 4.4), and
  `report_filename` (5.1), `encode` (gzip, 5.2/5.3).

Result types (RFC 8460 4.3): TLS negotiation - starttls-not-supported,
certificate-host-mismatch, certificate-expired, certificate-not-trusted,
validation-failure; DANE - tlsa-invalid, dnssec-invalid, dane-required; MTA-STS -
sts-policy-fetch-error, sts-policy-invalid, sts-webpki-invalid.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "MEDIA_TYPE_GZIP",
    "POLICY_TYPES",
    "RESULT_TYPES",
    "FailureDetail",
    "PolicyCounts",
    "ReportPolicy",
    "TlsRptRecord",
    "TlsRptSyntaxError",
    "build_report",
    "day_bounds",
    "encode",
    "parse_record",
    "report_filename",
    "result_type",
    "select_record",
    "sts_fetch_result_type",
]

MEDIA_TYPE_GZIP = "application/tlsrpt+gzip"  # RFC 8460 6.4
POLICY_TYPES = ("sts", "tlsa", "no-policy-found")
RESULT_TYPES = frozenset({
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure",
    "tlsa-invalid", "dnssec-invalid", "dane-required",
    "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
})
_MAX_REASON = 256  # failure-reason-code: a short error text, not a log


# --- the TXT record (RFC 8460 3) -----------------------------------------------------------

class TlsRptSyntaxError(ValueError):
    """Not a valid TLSRPT record: the domain does not take reports (RFC 8460 3)."""


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    rua: tuple[str, ...]  # mailto: and https: URIs, in the record's order

    @property
    def mailto(self) -> tuple[str, ...]:
        """The addresses of the mailto: URIs (percent-decoded, without ?headers)."""
        return tuple(mailto_address(u) for u in self.rua if u.lower().startswith("mailto:"))

    @property
    def https(self) -> tuple[str, ...]:
        return tuple(u for u in self.rua if u.lower().startswith("https:"))


_WSP = " \t"
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E): no space, ";" or "=".
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
# A URI's characters (RFC 3986 2): unreserved, reserved and "%"; "," and ";" end it here
# (RFC 8460 3: commas in a URI must be percent-encoded).
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+=%]+")
_ADDR = re.compile(r"[^@\s]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")


def parse_record(text: str) -> TlsRptRecord:
    """One TXT record (its strings joined) -> TlsRptRecord, or TlsRptSyntaxError.

        tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
        field-delim   = *WSP ";" *WSP
        tlsrpt-field  = tlsrpt-rua / tlsrpt-extension
        tlsrpt-rua    = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)

    Extensions are checked and ignored; `rua` must be there, once. URIs of schemes other
    than mailto and https are skipped (RFC 8460 3: only those two are defined); a record
    left without one is no record."""
    parts = text.split(";")
    if parts[0] != "v=TLSRPTv1" and parts[0].rstrip(_WSP) != "v=TLSRPTv1":
        raise TlsRptSyntaxError("does not start with v=TLSRPTv1")
    fields = [p.strip(_WSP) for p in parts[1:]]
    if fields and fields[-1] == "":
        fields.pop()  # the optional trailing field-delim
    if not fields:
        raise TlsRptSyntaxError("no rua")
    rua: list[str] | None = None
    for f in fields:
        name, eq, value = f.partition("=")
        if not eq or not value:
            raise TlsRptSyntaxError(f"field {f!r} is not name=value")
        if name == "rua":
            if rua is not None:
                raise TlsRptSyntaxError("rua given twice")
            rua = []
            for uri in (u.strip(_WSP) for u in value.split(",")):
                if not _URI.fullmatch(uri):
                    raise TlsRptSyntaxError(f"rua: {uri!r} is not a URI")
                if _usable(uri):
                    rua.append(uri)
        elif not _EXT_NAME.fullmatch(name) or not _EXT_VALUE.fullmatch(value):
            raise TlsRptSyntaxError(f"field {f!r} is not a valid extension")
    if rua is None:
        raise TlsRptSyntaxError("no rua")
    if not rua:
        raise TlsRptSyntaxError("rua has no mailto: or https: URI")
    return TlsRptRecord(tuple(rua))


def _usable(uri: str) -> bool:
    scheme = uri.partition(":")[0].lower()
    if scheme == "mailto":
        return bool(_ADDR.fullmatch(mailto_address(uri)))
    if scheme == "https":
        return bool(urlsplit(uri).hostname)
    return False


def mailto_address(uri: str) -> str:
    """mailto:tlsrpt%2Bx@example.com?subject=x -> tlsrpt+x@example.com"""
    return unquote(uri.partition(":")[2].partition("?")[0])


def select_record(txts: Iterable[str]) -> TlsRptRecord | None:
    """RFC 8460 3: records not starting with "v=TLSRPTv1" are discarded; unless exactly one
    remains, the domain takes no reports. A malformed one is none too."""
    found = [t for t in txts if re.match(r"v=TLSRPTv1(?:[ \t]*;|$)", t)]
    if len(found) != 1:
        return None
    try:
        return parse_record(found[0])
    except TlsRptSyntaxError:
        return None


# --- what is counted --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """One policy applied to a domain's sessions (RFC 8460 4.4 "policy")."""

    type: str  # "sts" | "tlsa" | "no-policy-found"
    domain: str
    strings: tuple[str, ...] = ()  # the policy as published (STS: the file's lines)
    mx_hosts: tuple[str, ...] = ()  # STS: the policy's mx patterns

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy-type": self.type}
        if self.strings:
            out["policy-string"] = list(self.strings)
        out["policy-domain"] = self.domain
        if self.mx_hosts:
            out["mx-host"] = list(self.mx_hosts)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ReportPolicy:
        return cls(str(d["policy-type"]), str(d["policy-domain"]),
                   tuple(d.get("policy-string", ())), tuple(d.get("mx-host", ())))


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One kind of failed session (RFC 8460 4.4 "failure-details", without the count)."""

    result_type: str
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_mx_helo: str = ""
    receiving_ip: str = ""
    failure_reason_code: str = ""  # the error text, short
    additional_information: str = ""  # a URI, RFC 8460 4.4

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result-type": self.result_type}
        for key, value in (("sending-mta-ip", self.sending_mta_ip),
                           ("receiving-mx-hostname", self.receiving_mx_hostname),
                           ("receiving-mx-helo", self.receiving_mx_helo),
                           ("receiving-ip", self.receiving_ip),
                           ("additional-information", self.additional_information),
                           ("failure-reason-code", self.failure_reason_code)):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FailureDetail:
        g = d.get
        return cls(str(d["result-type"]), g("sending-mta-ip", ""),
                   g("receiving-mx-hostname", ""), g("receiving-mx-helo", ""),
                   g("receiving-ip", ""), g("failure-reason-code", ""),
                   g("additional-information", ""))


def reason_text(text: str) -> str:
    """An error text made fit for failure-reason-code: our policy prefix and the
    ssl module's source location dropped, cut to a sane length."""
    text = re.sub(r"^MTA-STS policy of \S+ \(\w+\): ", "", text.strip())
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
    return text[:_MAX_REASON]


def result_type(text: str) -> str:
    """The RFC 8460 4.3 result type of a TLS negotiation failure, from the error text the
    delivery client and connection pool give (mta.delivery.client, mta.tls.requirement)."""
    t = text.lower()
    if "starttls" in t and ("does not offer" in t or "refused" in t or "not offered" in t):
        return "starttls-not-supported"
    if "hostname mismatch" in t or "ip address mismatch" in t or \
            "certificate is not valid for" in t:
        return "certificate-host-mismatch"
    if "certificate has expired" in t or "certificate is not yet valid" in t:
        return "certificate-expired"
    if ("self-signed" in t or "self signed" in t or "unable to get local issuer" in t
            or "unable to get issuer" in t or "unable to verify" in t
            or "certificate signature failure" in t or "invalid ca" in t):
        return "certificate-not-trusted"
    # The MX host is not one the policy names, a handshake that broke, anything else.
    return "validation-failure"


def sts_fetch_result_type(detail: str) -> str:
    """An MTA-STS policy that could not be had (the `mta_sts` event's detail): the web
    server's certificate (sts-webpki-invalid), the fetch itself (sts-policy-fetch-error:
    its messages start with the URL, mta.tls.fetch), or a body that is no policy."""
    if detail.startswith("https://"):
        return "sts-webpki-invalid" if ": certificate:" in detail else "sts-policy-fetch-error"
    return "sts-policy-invalid"


@dataclass
class PolicyCounts:
    """A policy's sessions over the report's day."""

    policy: ReportPolicy
    successes: int = 0
    failures: dict[FailureDetail, int] = field(default_factory=dict)


# --- the report (RFC 8460 4, 5) ------------------------------------------------------------

def day_bounds(day: dt.date) -> tuple[int, int]:
    """The UTC day as unix seconds: its first and its last second."""
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    return start, start + 86399


def _rfc3339(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(*, organization: str, contact: str, report_id: str, day: dt.date,
                 policies: Iterable[PolicyCounts]) -> dict[str, Any]:
    """The report of one policy domain for one UTC day (RFC 8460 4.4), policies and
    failure details in a stable order."""
    start, end = day_bounds(day)
    out: list[dict[str, Any]] = []
    for pc in sorted(policies, key=lambda p: (p.policy.type, p.policy.strings)):
        details = [{**d.to_json(), "failed-session-count": n}
                   for d, n in sorted(pc.failures.items(),
                                      key=lambda kv: json.dumps(kv[0].to_json(),
                                                                sort_keys=True))
                   if n > 0]
        entry: dict[str, Any] = {
            "policy": pc.policy.to_json(),
            "summary": {"total-successful-session-count": pc.successes,
                        "total-failure-session-count": sum(d["failed-session-count"]
                                                           for d in details)},
        }
        if details:
            entry["failure-details"] = details
        out.append(entry)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _rfc3339(start), "end-datetime": _rfc3339(end)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": out,
    }


def report_filename(submitter: str, domain: str, day: dt.date, unique_id: str = "") -> str:
    """RFC 8460 5.1: submitter!policy-domain!begin-timestamp!end-timestamp[!unique-id]
    .json.gz (A-labels, as the domains come from DNS and SMTP)."""
    if unique_id and not unique_id.isalnum():
        raise ValueError(f"unique-id must be letters and digits: {unique_id!r}")
    start, end = day_bounds(day)
    tail = f"!{unique_id}" if unique_id else ""
    return f"{submitter}!{domain}!{start}!{end}{tail}.json.gz"


def encode(report: Mapping[str, Any]) -> bytes:
    """The report as gzip-compressed JSON (RFC 8460 5.2, 5.3), the same bytes for the same
    report (no time in the gzip header)."""
    return gzip.compress(json.dumps(report, separators=(",", ":")).encode(), mtime=0)
