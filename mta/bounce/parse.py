"""Inbound reports: delivery status notifications (RFC 3464) and feedback reports (RFC 5965).

Owns reading a `multipart/report` that arrives by mail (an asynchronous bounce from a
remote MTA, or an ARF complaint from a feedback loop) into plain per-recipient results,
so the platform can learn from them the way it learns from SMTP replies: a DSN recipient's
`reply()` goes through the same `Classifier`. Tolerant on input: a malformed report gives
`None` or empty fields, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser, HeaderParser

from mta.rfc5321 import Reply, ReplyParseError

__all__ = [
    "DeliveryReport",
    "FeedbackReport",
    "ReportedRecipient",
    "parse_arf",
    "parse_dsn",
    "parse_report",
]

# compat32: header values as received, without the structured parsing of the newer
# policies (which, on hostile input, can raise from deep inside the stdlib).
_POLICY = email_policy.compat32

_STATUS_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True, slots=True)
class ReportedRecipient:
    """One per-recipient block of a DSN (RFC 3464 2.3)."""

    final_recipient: str  # the address, without its type ("rfc822;") or brackets
    action: str  # failed | delayed | delivered | relayed | expanded (lower case)
    status: str  # "5.1.1"; "" when missing or invalid
    original_recipient: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None  # Diagnostic-Code, e.g. "smtp; 550 5.1.1 User unknown"

    def reply(self) -> Reply:
        """The failure as a Reply, for `Classifier.classify`: the SMTP diagnostic when there
        is one, else a reply made of the status (550 for 5.x.x, 450 for 4.x.x)."""
        kind, _, text = (self.diagnostic or "").partition(";")
        if kind.strip().lower() == "smtp" and text.strip():
            try:
                reply = Reply.parse(text.strip())
                if not self.status or reply.code // 100 == int(self.status[0]):
                    return reply if reply.enhanced or not self.status else Reply(
                        reply.code, self.status, reply.text)
            except ReplyParseError:
                pass
        cls = int(self.status[0]) if self.status else 5
        detail = text.strip() if text else (self.diagnostic or "")
        return Reply(cls * 100 + 50, self.status or None, detail)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    reporting_mta: str | None
    original_envelope_id: str | None
    arrival_date: str | None
    recipients: tuple[ReportedRecipient, ...]
    # Headers of the returned original (message/rfc822 or text/rfc822-headers), to find
    # which of our messages this is about (Message-ID, our own trace headers).
    original_headers: tuple[tuple[str, str], ...] = ()

    @property
    def original_message_id(self) -> str | None:
        return _header(self.original_headers, "Message-ID")


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """An ARF report (RFC 5965 3.1 fields): a recipient complained about a message."""

    feedback_type: str  # abuse | fraud | virus | other | not-spam | auth-failure (lower)
    user_agent: str | None
    version: str | None
    original_mail_from: str | None
    original_rcpt_to: tuple[str, ...]
    arrival_date: str | None
    source_ip: str | None
    reported_domain: tuple[str, ...]
    reporting_mta: str | None
    original_headers: tuple[tuple[str, str], ...] = ()

    @property
    def original_message_id(self) -> str | None:
        return _header(self.original_headers, "Message-ID")

    @property
    def recipients(self) -> tuple[str, ...]:
        """Who complained: Original-Rcpt-To, else the To: of the returned headers (which
        feedback loops often redact; an address without "@" is not returned)."""
        if self.original_rcpt_to:
            return self.original_rcpt_to
        to = _header(self.original_headers, "To")
        addr = _bare_address(to or "")
        return (addr,) if "@" in addr else ()


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def _clean(value: object) -> str:
    return " ".join(str(value).split())


def _bare_address(value: str) -> str:
    """ "rfc822; <bob@example.com>" -> "bob@example.com"."""
    _, sep, addr = value.partition(";")
    addr = (addr if sep else value).strip()
    m = re.search(r"<([^<>]*)>", addr)
    return (m.group(1) if m else addr).strip()


def _field(block: Message, name: str) -> str | None:
    v = block.get(name)
    return _clean(v) if v is not None else None


def _fields(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part
    (the stdlib parses the first into a list of blocks, the second into one message)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):  # unparsed, e.g. a wrong Content-Transfer-Encoding
        raw = payload.replace("\r\n", "\n")
        return [HeaderParser(policy=_POLICY).parsestr(b.strip() + "\n")
                for b in re.split(r"\n\s*\n", raw) if b.strip()]
    return []


def _original_headers(parts: list[Message]) -> tuple[tuple[str, str], ...]:
    for part in parts[2:]:
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                return tuple((k, _clean(v)) for k, v in payload[0].items())
        elif ctype in ("text/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True) or b""
            hdrs = BytesParser(policy=_POLICY).parsebytes(
                raw, headersonly=True)
            return tuple((k, _clean(v)) for k, v in hdrs.items())
    return ()


def _subparts(msg: Message) -> list[Message]:
    payload = msg.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _find_report(data: bytes, report_type: str) -> Message | None:
    try:
        msg = BytesParser(policy=_POLICY).parsebytes(data)
        for part in msg.walk():  # the report may come forwarded inside another message
            if (part.get_content_type() == "multipart/report"
                    and str(part.get_param("report-type", "")).lower() == report_type):
                return part
    except (ValueError, TypeError, IndexError):
        return None
    return None


def parse_dsn(data: bytes) -> DeliveryReport | None:
    """A delivery status notification, or None if `data` is not one."""
    report = _find_report(data, "delivery-status")
    if report is None:
        return None
    parts = _subparts(report)
    status = next((p for p in parts if p.get_content_type() in (
        "message/delivery-status", "message/global-delivery-status")), None)
    if status is None:
        return None
    blocks = _fields(status)
    if not blocks:
        return None
    head, rcpt_blocks = blocks[0], blocks[1:]
    recipients = []
    for b in rcpt_blocks:
        final = _field(b, "Final-Recipient")
        if not final:
            continue
        status_s = (_field(b, "Status") or "").split(" ")[0]
        original = _field(b, "Original-Recipient")
        recipients.append(ReportedRecipient(
            final_recipient=_bare_address(final),
            action=(_field(b, "Action") or "").split(" ")[0].lower(),
            status=status_s if _STATUS_RE.match(status_s) else "",
            original_recipient=_bare_address(original) if original else None,
            remote_mta=_field(b, "Remote-MTA"),
            diagnostic=_field(b, "Diagnostic-Code"),
        ))
    return DeliveryReport(
        reporting_mta=_field(head, "Reporting-MTA"),
        original_envelope_id=_field(head, "Original-Envelope-Id"),
        arrival_date=_field(head, "Arrival-Date"),
        recipients=tuple(recipients),
        original_headers=_original_headers(parts),
    )


def parse_arf(data: bytes) -> FeedbackReport | None:
    """An ARF feedback report (RFC 5965), or None if `data` is not one."""
    report = _find_report(data, "feedback-report")
    if report is None:
        return None
    parts = _subparts(report)
    fb = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if fb is None:
        return None
    blocks = _fields(fb)
    if not blocks:
        return None
    f = blocks[0]
    return FeedbackReport(
        feedback_type=(_field(f, "Feedback-Type") or "other").lower(),
        user_agent=_field(f, "User-Agent"),
        version=_field(f, "Version"),
        original_mail_from=(_bare_address(v) if (v := _field(f, "Original-Mail-From"))
                            else None),
        original_rcpt_to=tuple(_bare_address(_clean(v))
                               for v in f.get_all("Original-Rcpt-To") or []),
        arrival_date=_field(f, "Arrival-Date") or _field(f, "Received-Date"),
        source_ip=_field(f, "Source-IP"),
        reported_domain=tuple(_clean(v) for v in f.get_all("Reported-Domain") or []),
        reporting_mta=_field(f, "Reporting-MTA"),
        original_headers=_original_headers(parts),
    )


def parse_report(data: bytes) -> DeliveryReport | FeedbackReport | None:
    """Whichever report `data` is: a DSN, an ARF report, or None."""
    return parse_dsn(data) or parse_arf(data)
