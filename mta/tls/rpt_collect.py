"""What TLS-RPT counts: each delivery session's TLS outcome under the domain's policy.

The dispatcher tells `TlsSessions` about every session a delivery used (`used`) and every
session our TLS policy refused (`refused`); the MTA-STS discovery's `mta_sts` events tell
it about policies that could not be fetched (`on_event`). Each becomes one count for the
policy domain's UTC day (on the injected clock) in `SessionCounts`, as a success or as a
failure detail (RFC 8460 4.3 result type, MX host, addresses, error text).

A session is one SMTP connection as one policy domain's mail used it: a connection reused
for the same domain counts once, a connection reused for another domain counts once for
that one too (its TLS was checked against that domain's policy).

Which policy a session was under comes from its `TlsRequirement` and the MX host: DANE
where it decides for the host ("tlsa", with the host's usable TLSA records, RFC 7672 and
RFC 8461 2: DANE wins over MTA-STS), else an MTA-STS policy ("sts", with the policy's lines
and mx patterns), or none ("no-policy-found", counted only with [tls.reports] no_policy).
A result type the delivery side determined (DANE's, a connect attempt's) wins over the one
read from the error text.
"""

from __future__ import annotations

import datetime as dt
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from mta.clock import Clock
from mta.tls.policy import StsPolicy
from mta.tls.report import (
    RESULT_TYPES,
    FailureDetail,
    ReportPolicy,
    reason_text,
    result_type,
    sts_fetch_result_type,
)
from mta.tls.requirement import TlsRequirement
from mta.tls.rpt_store import SessionCounts

__all__ = ["TlsSessions"]

log = logging.getLogger("mta.tls")


class _Session(Protocol):
    """What is read of a delivery session (mta.delivery.client.SmtpClient)."""

    host: str
    address: str
    tls_active: bool
    tls_verified: bool
    tls_error: str

    @property
    def local_address(self) -> tuple[str, int] | None: ...


class _Attempt(Protocol):
    """A refused connection attempt (mta.delivery.pool.ConnectAttempt)."""

    host: str
    address: str
    reply: Any
    policy: bool


class TlsSessions:
    def __init__(self, counts: SessionCounts, clock: Clock,
                 sts_policy: Callable[[str], StsPolicy | None], *,
                 no_policy: bool = False) -> None:
        self.counts = counts
        self.clock = clock
        self.sts_policy = sts_policy  # the cached MTA-STS policy of a domain (no lookup)
        self.no_policy = no_policy
        self.report_from = ""  # the reports' sender: their sessions are not counted
        # Connection -> the policy domains it was already counted for.
        self._seen: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    def _day(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock.now(), dt.UTC).date()

    def policy_of(self, req: TlsRequirement, host: str = "") -> ReportPolicy | None:
        """The reported policy a requirement applied to MX `host` (None: nothing to
        report). DANE reports the host's TLSA records (RFC 8460 4.4: policy-string)."""
        if not req.domain:
            return None
        dane = req.dane_for(host) if host else None
        if dane is not None or (host and req.dane == "mandatory"):
            records = tuple(r.text for r in dane.records) if dane is not None else ()
            return ReportPolicy("tlsa", req.domain, records, (host.lower().rstrip("."),))
        if req.sts:
            policy = self.sts_policy(req.domain)
            text = policy.to_text() if policy is not None else "\r\n".join(
                ["version: STSv1", f"mode: {req.sts}", *(f"mx: {m}" for m in req.mx)])
            lines = tuple(line for line in text.split("\r\n") if line)
            return ReportPolicy("sts", req.domain, lines, tuple(req.mx))
        if self.no_policy:
            return ReportPolicy("no-policy-found", req.domain)
        return None

    # --- the hooks -------------------------------------------------------------------
    def used(self, req: TlsRequirement, client: _Session, *, sender: str = "") -> None:
        """A delivery to `req.domain` from `sender` goes over `client` (new or reused).
        Never raises: counting must not fail a delivery."""
        if sender and sender == self.report_from:
            return  # RFC 8460 5.3: a report's own session is not in the next report
        try:
            self._used(req, client)
        except Exception:
            log.exception("TLS-RPT: could not count a session to %s", req.domain)

    def _used(self, req: TlsRequirement, client: _Session) -> None:
        policy = self.policy_of(req, client.host)
        if policy is None:
            return
        try:
            seen = self._seen.setdefault(client, set())
        except TypeError:  # not weak-referenceable: count every use
            seen = set()
        if req.domain in seen:
            return
        seen.add(req.domain)
        local = client.local_address
        text = req.failure(client.host, tls_verified=client.tls_verified,
                           tls_error=client.tls_error)
        if not text:
            self.counts.add(self._day(), policy, None)
            return
        self.counts.add(self._day(), policy, self._failure(
            client, text, sending_ip=local[0] if local else "",
            receiving_ip=client.address, host=client.host))

    def refused(self, req: TlsRequirement, attempts: Iterable[_Attempt],
                source_ip: str = "", *, sender: str = "") -> None:
        """No session: every MX host was refused; those our TLS policy refused (an MX
        host the policy does not name, a certificate or STARTTLS it needs) are failed
        sessions. Hosts that were down are no TLS session at all. Never raises."""
        if sender and sender == self.report_from:
            return
        try:
            self._refused(req, attempts, source_ip)
        except Exception:
            log.exception("TLS-RPT: could not count refused sessions to %s", req.domain)

    def _refused(self, req: TlsRequirement, attempts: Iterable[_Attempt],
                 source_ip: str) -> None:
        day = self._day()
        for a in attempts:
            if not a.policy:
                continue
            policy = self.policy_of(req, a.host)
            if policy is None:
                continue
            text = str(getattr(a.reply, "text", a.reply))
            self.counts.add(day, policy, self._failure(
                a, text, sending_ip=source_ip, receiving_ip=a.address, host=a.host))

    def on_event(self, record: dict[str, Any]) -> None:
        """Events listener: an MTA-STS policy that could not be fetched or parsed is a
        failed session of that domain (once per fetch, RFC 8460 4.3.2.2). Never raises
        (it runs inside EventLog.emit)."""
        if record.get("event") != "mta_sts" or record.get("outcome") != "failed":
            return
        try:
            self._fetch_failed(record)
        except Exception:
            log.exception("TLS-RPT: could not count a policy fetch failure")

    def _fetch_failed(self, record: dict[str, Any]) -> None:
        domain = str(record.get("domain") or "")
        if not domain:
            return
        detail = str(record.get("detail") or "")
        policy = ReportPolicy("sts", domain)
        self.counts.add(self._day(), policy, FailureDetail(
            sts_fetch_result_type(detail), failure_reason_code=reason_text(detail)))

    @staticmethod
    def _failure(source: Any, text: str, *, sending_ip: str, receiving_ip: str,
                 host: str) -> FailureDetail:
        # A result type the delivery side determined itself (DANE) wins over the text's.
        given = (getattr(source, "result_type", "") or getattr(source, "tls_result", "")
                 or "")
        kind = given if given in RESULT_TYPES else result_type(text)
        return FailureDetail(kind, sending_mta_ip=sending_ip, receiving_mx_hostname=host,
                             receiving_ip=receiving_ip, failure_reason_code=reason_text(text))
